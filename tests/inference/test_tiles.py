"""Tile grids and the stitching of particles cut by tile borders, with an oracle detector.

The oracle reads the ground-truth label map straight from the pixel values of the tile it is given
(image = labels / 255) and returns each visible particle as a full-tile mask, exactly cut at the tile border --
what a perfect detector sees. Stitching must then reproduce the ground truth exactly: one instance per particle,
whether it lies inside a tile, inside an overlap, across one border or across several tiles.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from skimage.draw import disk, ellipse

from semkit.inference.tiles import Detections, predict_tiled, tile_grid, tile_starts
from semkit.models.postprocess import CombineThresholds, combine_masks

CERTAIN = np.array([0, 0, 0, 0, 0, 1.0], dtype=np.float32)


def oracle(calls: list | None = None):
    def detect(window: np.ndarray) -> Detections:
        labels = np.rint(window * 255).astype(np.int32)
        ids = [i for i in np.unique(labels) if i > 0]
        if calls is not None:
            calls.append(window.shape)
        masks = np.stack([labels == i for i in ids]).astype(np.float32)[:, None] if ids else \
            np.zeros((0, 1) + window.shape, np.float32)
        # objectness 0.9 - i/1000: distinct, so the painting order is defined
        return Detections(boxes=np.zeros((len(ids), 4), np.float32),
                          scores=np.array([0.9 - i / 1000 for i in ids], np.float32),
                          mask_probs=masks, bin_probs=np.tile(CERTAIN, (len(ids), 1)), cropped=False)
    return detect


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal label maps up to renumbering (a bijection between labels, background fixed)."""
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def stitched(gt: np.ndarray, tile: int | None, overlap: int):
    return predict_tiled(oracle(), gt.astype(np.float32) / 255, CombineThresholds(mask_threshold=0.5), tile,
                         overlap)


def test_tile_starts_cover_evenly():
    assert tile_starts(100, 128, 32) == [0]
    assert tile_starts(112, 64, 16) == [0, 48]
    assert tile_starts(1920, 512, 128) == [0, 352, 704, 1056, 1408]  # 4 tiles would overlap by only 43 px
    assert tile_starts(1200, 512, 128) == [0, 344, 688]
    grid = tile_grid((1200, 1920), 512, 128)
    assert len(grid) == 3 * 5 and {t.shape for t in grid} == {(512, 512)}
    assert grid[0].inner == (False, False, True, True) and grid[-1].inner == (True, True, False, False)
    assert tile_grid((50, 70), 128, 32)[0].shape == (50, 70)  # image smaller than a tile: one tile, no edges
    assert tile_grid((50, 300), 128, 32)[0].shape == (50, 128)


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 400), w=st.integers(1, 400), tile=st.integers(8, 160), frac=st.floats(0, 0.9))
def test_grid_covers_the_image_with_the_requested_overlap(h, w, tile, frac):
    overlap = int(frac * tile)
    grid = tile_grid((h, w), tile, overlap)
    cover = np.zeros((h, w), dtype=np.int32)
    for t in grid:
        assert 0 <= t.y0 < t.y1 <= h and 0 <= t.x0 < t.x1 <= w
        assert t.shape == (min(tile, h), min(tile, w))
        cover[t.slices] += 1
    assert cover.min() >= 1
    for starts, length in ((sorted({t.y0 for t in grid}), h), (sorted({t.x0 for t in grid}), w)):
        size = min(tile, length)
        gaps = np.diff(starts)
        assert np.all(size - gaps >= overlap)  # neighbours overlap by at least the requested amount
        assert len(starts) == (1 if length <= tile else math.ceil((length - tile) / (tile - overlap)) + 1)


def test_particles_cut_by_tile_borders_become_one_instance():
    # tiles x in [0, 64) and [48, 112): inner edges at x = 64 (left tile) and x = 48 (right tile)
    gt = np.zeros((64, 112), dtype=np.int32)
    gt[disk((20, 64), 9, shape=gt.shape)] = 1  # cut by the left tile's edge, whole in the right tile
    gt[disk((45, 56), 6, shape=gt.shape)] = 2  # inside the overlap: whole in both tiles
    gt[disk((12, 46), 7, shape=gt.shape)] = 3  # cut by the right tile's edge, whole in the left tile
    gt[ellipse(52, 60, 6, 40, shape=gt.shape)] = 4  # wider than the overlap: cut in both tiles
    calls = []
    labels, table = predict_tiled(oracle(calls), gt.astype(np.float32) / 255,
                                  CombineThresholds(mask_threshold=0.5), tile=64, overlap=16)
    assert calls == [(64, 64), (64, 64)]
    assert same_partition(labels, gt) and len(table) == 4
    by_area = table.set_index("area_px")
    assert by_area.loc[int((gt == 4).sum()), "pieces"] == 2  # the ellipse: union of its two cut pieces
    assert by_area.loc[int((gt == 1).sum()), "tile"] == 1  # the right tile saw particle 1 whole
    assert by_area.loc[int((gt == 3).sum()), "tile"] == 0
    # each tile sees (part of) all four particles: naive concatenation would count eight
    assert sum(len(np.unique(gt[t.slices])) - 1 for t in tile_grid(gt.shape, 64, 16)) == 8


def test_single_tile_equals_combine_masks():
    rng = np.random.default_rng(3)
    n, shape = 40, (90, 120)
    boxes = np.sort(rng.uniform(0, 90, (n, 2, 2)), axis=1).reshape(n, 4)[:, [0, 2, 1, 3]].astype(np.float32)
    scores = rng.uniform(0.2, 1, n).astype(np.float32)
    masks = rng.uniform(0, 1, (n, 1, 28, 28)).astype(np.float32)
    bins = rng.dirichlet(np.ones(6), n).astype(np.float32)
    expected, table = combine_masks(boxes, scores, masks, shape, bin_probs=bins, cropped=True)

    def detect(window):
        return Detections(boxes, scores, masks, bins)

    for tile in (None, 128):  # 128 > both sides: still one tile
        labels, stitched_table = predict_tiled(detect, np.zeros(shape, np.float32), tile=tile, overlap=32)
        assert np.array_equal(labels, expected)
        pd.testing.assert_frame_equal(stitched_table[["id", "objectness", "certain", "area_px"]],
                                      table[["id", "objectness", "certain", "area_px"]])
        assert set(stitched_table["pieces"]) == {1}


def test_no_detections_give_an_empty_map():
    labels, table = stitched(np.zeros((70, 90), np.int32), 32, 8)
    assert labels.shape == (70, 90) and labels.max() == 0 and len(table) == 0
    assert list(table.columns) == ["id", "objectness", "confidence", "certain", "area_px", "tile", "pieces"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), tile=st.integers(16, 64), frac=st.floats(0.05, 0.8))
def test_oracle_stitching_reproduces_any_layout(seed, tile, frac):
    # random, possibly touching disks and ellipses of any size relative to tiles and overlaps
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(20, 110)), int(rng.integers(20, 150)))
    gt = np.zeros(shape, dtype=np.int32)
    for i in range(1, int(rng.integers(1, 14))):
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        rr, cc = ellipse(cy, cx, rng.uniform(2, 25), rng.uniform(2, 25), shape=shape,
                         rotation=rng.uniform(0, np.pi))
        gt[rr, cc] = i  # later particles occlude earlier ones (convex shapes, so an occluded one may split)
    # keep only labels that are still one connected piece (a split particle is a different test)
    from scipy import ndimage

    for i in np.unique(gt[gt > 0]):
        if ndimage.label(gt == i)[1] > 1:
            gt[gt == i] = 0
    overlap = max(1, int(frac * tile))
    labels, table = stitched(gt, tile, overlap)
    assert same_partition(labels, gt)
    assert len(table) == len(np.unique(gt[gt > 0]))
