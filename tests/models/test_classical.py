"""Classical pipeline: smoothing, threshold, distance-transform watershed."""

from __future__ import annotations

import numpy as np
import pytest

from semkit.errors import InputError
from semkit.models.classical import remove_small_instances, segment_classical, watershed_split


def discs(shape=(96, 128), r=20, centres=((48, 44), (48, 80))):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, dtype=np.int32)
    for i, (cy, cx) in enumerate(centres, start=1):
        labels[((yy - cy) ** 2 + (xx - cx) ** 2 < r**2) & (labels == 0)] = i
    return labels


def iou_matrix(pred, truth):
    return np.array([[np.logical_and(pred == p, truth == t).sum() / np.logical_or(pred == p, truth == t).sum()
                      for t in range(1, truth.max() + 1)] for p in range(1, pred.max() + 1)])


def sem_image(labels, seed=0, background=None):
    rng = np.random.default_rng(seed)
    img = 0.2 + 0.5 * (labels > 0) + rng.normal(0, 0.05, labels.shape)
    if background is not None:
        img = img + background
    return img.astype(np.float32)


def test_two_touching_discs_give_two_instances():
    truth = discs()
    pred = segment_classical(sem_image(truth))
    assert pred.dtype == np.int32 and pred.max() == 2
    ious = iou_matrix(pred, truth)
    assert sorted(ious.max(axis=1)) == pytest.approx([1, 1], abs=0.05)


def test_dark_particles():
    truth = discs()
    pred = segment_classical(1.0 - sem_image(truth), bright_particles=False)
    assert pred.max() == 2 and iou_matrix(pred, truth).max(axis=1).min() > 0.95


def test_local_threshold_handles_uneven_illumination():
    truth = discs(shape=(96, 256), r=14, centres=((48, 30), (48, 56), (48, 200), (48, 226)))
    ramp = np.linspace(0, 0.9, 256)[None, :] * np.ones((96, 1))
    img = sem_image(truth, background=ramp)
    local = segment_classical(img, threshold="local", block_size=61)
    assert local.max() == 4 and iou_matrix(local, truth).max(axis=1).min() > 0.9
    # a global threshold merges the bright end of the background with the particles there
    otsu = segment_classical(img, threshold="otsu")
    assert iou_matrix(otsu, truth).max(axis=0)[2:].max() < 0.5


def test_uniform_image_and_bad_input():
    assert segment_classical(np.full((32, 32), 0.5, np.float32)).max() == 0
    with pytest.raises(InputError, match="a.tif: image must be 2-D"):
        segment_classical(np.zeros((3, 8, 8)), source="a.tif")
    bad = np.zeros((8, 8))
    bad[0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        segment_classical(bad)
    with pytest.raises(InputError, match="otsu, local"):
        segment_classical(np.zeros((8, 8)), threshold="triangle")


def test_watershed_split_and_small_instance_removal():
    assert watershed_split(np.zeros((5, 5), bool)).max() == 0
    labels = np.array([[1, 1, 0, 3], [1, 1, 0, 0], [0, 0, 0, 5]])
    out = remove_small_instances(labels, min_area=2)
    np.testing.assert_array_equal(out, [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]])
