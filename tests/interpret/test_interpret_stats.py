"""Collapse statistics on hand-constructed activations: dead, saturated, mean pairwise cosine similarity."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from semkit.interpret import (
    channel_stats,
    classify_channels,
    feature_stats_table,
    mean_pairwise_cosine,
    stats_by_checkpoint,
    summarise_stats,
)


def _noise(c: int, h: int = 16, w: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(c, h, w))


def test_all_constant_layer_is_all_dead():
    stats = channel_stats(np.full((8, 5, 5), 3.0))
    assert stats == {"n_channels": 8, "dead_fraction": 1.0, "saturated_fraction": 0.0,
                     "near_constant_fraction": 1.0, "mean_cosine": pytest.approx(1.0)}  # identical maps


def test_all_zero_layer_is_dead_and_has_no_directions():
    stats = channel_stats(np.zeros((2, 4, 6, 6), dtype=np.float32))
    assert stats["dead_fraction"] == 1.0 and stats["saturated_fraction"] == 0.0
    assert math.isnan(stats["mean_cosine"])


def test_varying_channels_are_neither_dead_nor_saturated():
    stats = channel_stats(_noise(32, 64, 64))
    assert stats["dead_fraction"] == 0.0 and stats["saturated_fraction"] == 0.0
    assert abs(stats["mean_cosine"]) < 0.01  # independent noise maps are nearly orthogonal


def test_flat_low_channel_is_dead_and_flat_high_channel_is_saturated():
    x = _noise(10)
    x[3] = 0.0  # dark everywhere
    x[7] = 100.0  # bright everywhere: far above the layer's 90th percentile
    x[5] = 0.5  # flat but at an ordinary level: dead, not saturated
    dead, saturated = classify_channels(x)
    assert np.flatnonzero(dead).tolist() == [3, 5] and np.flatnonzero(saturated).tolist() == [7]
    stats = channel_stats(torch.from_numpy(x))  # tensors are accepted too
    assert (stats["dead_fraction"], stats["saturated_fraction"], stats["near_constant_fraction"]) == (0.2, 0.1, 0.3)


def test_near_constant_threshold_is_relative_to_the_layer_scale():
    x = _noise(4, 32, 32)  # RMS about 1
    rng = np.random.default_rng(5)
    x[0] = 0.3 + 1e-4 * rng.normal(size=(32, 32))  # std 1e-4 << 1 % of the scale, at an ordinary level
    x[1] = 0.3 + 0.05 * rng.normal(size=(32, 32))  # std 0.05: above 1 %, below 10 %
    dead, _ = classify_channels(x)
    assert dead.tolist() == [True, False, False, False]
    dead, _ = classify_channels(x, constant_tol=0.1)
    assert dead.tolist() == [True, True, False, False]
    dead_scaled, _ = classify_channels(x * 1e-6)  # same layer a million times smaller: same verdict
    assert dead_scaled.tolist() == [True, False, False, False]
    with pytest.raises(ValueError):
        classify_channels(x, constant_tol=-1)


def test_many_bright_flat_channels_are_all_saturated():
    x = _noise(10)
    x[[0, 4, 6, 9]] = 8.0  # 40 % of the layer flat and bright: they must not set the reference level themselves
    dead, saturated = classify_channels(x)
    assert np.flatnonzero(saturated).tolist() == [0, 4, 6, 9] and not dead.any()


def test_saturation_quantile_is_a_parameter():
    x = _noise(10)
    x[2] = 1.5  # flat at about the 93rd percentile of a standard normal (the other channels)
    assert classify_channels(x)[1].tolist()[2] is True
    assert classify_channels(x, saturation_quantile=0.99)[1].tolist()[2] is False
    assert classify_channels(x, saturation_quantile=0.99)[0].tolist()[2] is True  # then it counts as dead


def test_cosine_of_identical_orthogonal_and_hand_computed_maps():
    base = _noise(1)[0]
    assert mean_pairwise_cosine(np.stack([base] * 5)) == pytest.approx(1.0)
    assert mean_pairwise_cosine(np.eye(6).reshape(6, 2, 3)) == pytest.approx(0.0)  # one-hot maps: orthogonal
    two = np.array([[1.0, 0.0], [1.0, 1.0]]).reshape(2, 1, 2)
    assert mean_pairwise_cosine(two) == pytest.approx(1 / math.sqrt(2))
    three = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]).reshape(3, 1, 2)
    # pairs: (a, b) = 0, (a, c) = (b, c) = 1/sqrt(2)
    assert mean_pairwise_cosine(three) == pytest.approx((0 + 2 / math.sqrt(2)) / 3)
    assert mean_pairwise_cosine(np.stack([base, -base])) == pytest.approx(-1.0)


def test_zero_maps_are_left_out_of_the_cosine():
    two = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]).reshape(3, 1, 2)
    assert mean_pairwise_cosine(two) == pytest.approx(1 / math.sqrt(2))
    assert math.isnan(mean_pairwise_cosine(np.array([[1.0, 2.0], [0.0, 0.0]]).reshape(2, 1, 2)))


def test_centered_cosine_ignores_offsets():
    base = _noise(1)[0]
    x = np.stack([base, base + 5.0])
    assert mean_pairwise_cosine(x) < 0.3
    assert mean_pairwise_cosine(x, center=True) == pytest.approx(1.0)


def test_batches_pool_images_per_channel():
    a, b = _noise(3, seed=1), _noise(3, seed=2)
    batch = np.stack([a, b])
    flat = np.concatenate([a, b], axis=2)  # same values per channel, side by side
    assert channel_stats(batch) == pytest.approx(channel_stats(flat))


@settings(max_examples=60, deadline=None)
@given(x=arrays(np.float64, (5, 3, 4), elements=st.floats(-10, 10, allow_subnormal=False)),
       scale=st.floats(1e-3, 1e3), seed=st.integers(0, 1000))
def test_statistics_are_scale_and_order_invariant_and_cosine_matches_brute_force(x, scale, seed):
    perm = np.random.default_rng(seed).permutation(5)
    ref = channel_stats(x)
    for other in (channel_stats(x * scale), channel_stats(x[perm])):
        for key in ("dead_fraction", "saturated_fraction", "near_constant_fraction"):
            assert other[key] == ref[key]
        if math.isnan(ref["mean_cosine"]):
            assert math.isnan(other["mean_cosine"])
        else:
            assert other["mean_cosine"] == pytest.approx(ref["mean_cosine"], abs=1e-9)
    flat = x.reshape(5, -1)
    flat = flat / max(np.abs(flat).max(), 1e-300)  # avoid underflow in the squares of tiny values
    norms = np.linalg.norm(flat, axis=1)
    keep = norms > 1e-12 * max(norms.max(), 1e-300)
    pairs = [float(flat[i] @ flat[j] / (norms[i] * norms[j]))
             for i, j in itertools.permutations(np.flatnonzero(keep), 2)]
    if pairs:
        assert ref["mean_cosine"] == pytest.approx(np.mean(pairs), abs=1e-9)


def test_bad_input_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        channel_stats(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="NaN"):
        channel_stats(np.full((2, 3, 3), np.nan))


def test_tables_per_image_and_per_checkpoint():
    flat_layer = np.full((4, 3, 3), 1.0)
    noisy = _noise(4, 3, 3)
    captures = {"a": {"img1": {1: flat_layer, 2: noisy}, "img2": {1: noisy, 2: noisy}},
                "b": {"img1": {1: noisy, 2: noisy}}}
    table = feature_stats_table(captures)
    assert list(table.columns) == ["checkpoint", "image", "stage", "n_channels", "dead_fraction",
                                   "saturated_fraction", "near_constant_fraction", "mean_cosine"]
    assert len(table) == 6
    summary = summarise_stats(table)
    a1 = summary[(summary["checkpoint"] == "a") & (summary["stage"] == 1)].iloc[0]
    assert a1["dead_fraction"] == 0.5 and a1["n_channels"] == 4  # all dead on img1, none on img2
    nested = stats_by_checkpoint(table)
    assert set(nested) == {"a", "b"} and set(nested["a"]) == {"eta1", "eta2"}
    assert nested["a"]["eta1"]["dead_fraction"] == 0.5 and nested["b"]["eta2"]["dead_fraction"] == 0.0
    assert isinstance(table, pd.DataFrame)
