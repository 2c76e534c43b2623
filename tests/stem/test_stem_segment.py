"""Steps 1–6 of the STEM segmentation: k rule, profile cutoff, peaks, k-means, resize, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from semkit.errors import InputError
from semkit.stem import box_image, make_haadf_image, segment_particle
from semkit.stem.segment import (
    SegmentSettings,
    choose_k,
    count_peaks,
    diagonal_profile,
    kmeans_1d,
    profile_cutoff,
    resize_to_grid,
)


# (peaks p, elements n) → k: n + 1 when p < 2 or |p − n| >= 2, else p + 1.
@pytest.mark.parametrize(
    ("p", "n", "k"),
    [(0, 1, 2), (1, 1, 2), (2, 1, 3), (3, 1, 2), (0, 2, 3), (1, 2, 3), (2, 2, 3), (3, 2, 4), (4, 2, 3),
     (1, 3, 4), (2, 3, 3), (3, 3, 4), (4, 3, 5), (5, 3, 4), (2, 4, 5), (3, 4, 4), (5, 4, 6), (6, 4, 5),
     (3, 5, 6), (4, 5, 5), (6, 5, 7), (7, 5, 6)],
)
def test_k_selection_rule(p, n, k):
    assert choose_k(p, n) == k


def test_k_rule_rejects_nonsense():
    with pytest.raises(InputError):
        choose_k(2, 0)
    with pytest.raises(InputError):
        choose_k(-1, 2)


def test_profile_cutoff_on_a_hand_made_step_profile():
    p = np.array([10.0] * 10 + [40, 70] + [100.0] * 20 + [70, 40] + [12.0] * 10)
    cutoff, (first, last) = profile_cutoff(p, rise_fraction=0.06, slope_fraction=0.02)
    # Central differences: the slope turns positive at the last background sample (index 9: (40 - 10) / 2)
    # and, mirrored, at the first background sample on the right (index 34: (12 - 40) / 2).
    assert (first, last) == (9, 34)
    # Background levels 10 (left) and 12 (right): the cutoff is 6 % of the range (90) above the higher one.
    assert cutoff == pytest.approx(12 + 0.06 * 90)
    # A known noise level raises the margin to 3 sigma.
    assert profile_cutoff(p, 0.06, 0.02, noise=5.0)[0] == pytest.approx(12 + 15)
    # Dark phase in the middle of a bright particle stays above the cutoff.
    q = np.array([8.0] * 8 + [250] * 8 + [45] * 20 + [120] * 8 + [6.0] * 8)
    assert profile_cutoff(q)[0] < 45
    # Flat profiles and profiles without a background have no edge: everything is particle.
    assert profile_cutoff(np.full(20, 7.0))[0] == -np.inf
    assert profile_cutoff(np.linspace(100, 101, 30), 0.06, 2.0)[0] == -np.inf


def test_diagonal_profile_samples_corner_to_corner():
    img = np.arange(12.0).reshape(3, 4)
    np.testing.assert_array_equal(diagonal_profile(img), [0, 5, 6, 11])  # rows 0,1,1,2 / cols 0,1,2,3


def test_count_peaks_bins_of_20_and_end_bins():
    rng = np.random.default_rng(0)
    two = np.concatenate([rng.normal(60, 4, 500), rng.normal(180, 4, 300)])
    peaks, counts, edges = count_peaks(two)
    assert len(peaks) == 2 and np.allclose(np.diff(edges), 20.0)
    assert counts.sum() == two.size
    centers = (edges[peaks] + 10).tolist()
    assert abs(centers[0] - 60) <= 20 and abs(centers[1] - 180) <= 20
    # All values in one bin: the single (end) bin is a peak; an empty input has none.
    assert len(count_peaks(np.full(50, 33.0))[0]) == 1
    assert len(count_peaks(np.array([]))[0]) == 0
    # A bump below 5 % of the highest bin is not a peak.
    small = np.concatenate([np.full(1000, 50.0), np.full(40, 200.0)])
    assert len(count_peaks(small)[0]) == 1


def test_kmeans_1d_sorted_deterministic_and_correct():
    rng = np.random.default_rng(1)
    v = rng.permutation(np.concatenate([rng.normal(m, 2, 400) for m in (200, 50, 120)]))
    centers, labels = kmeans_1d(v, 3, seed=0)
    np.testing.assert_allclose(centers, [50, 120, 200], atol=1)
    assert (labels[v < 85] == 0).all() and (labels[v > 160] == 2).all()
    c2, l2 = kmeans_1d(v, 3, seed=0)
    np.testing.assert_array_equal(l2, labels)
    np.testing.assert_array_equal(c2, centers)
    # Fewer distinct values than clusters: k shrinks.
    c, lab = kmeans_1d(np.array([1.0, 1.0, 5.0]), 4)
    assert c.tolist() == [1.0, 5.0] and lab.tolist() == [0, 0, 1]


def test_resize_is_an_exact_block_mean_for_integer_factors():
    rng = np.random.default_rng(2)
    img = rng.random((1024, 1024), dtype=np.float32)
    ref = img.reshape(128, 8, 128, 8).mean(axis=(1, 3))
    np.testing.assert_allclose(resize_to_grid(img), ref, rtol=1e-5, atol=1e-6)


def test_synthetic_particles_segment_into_clusters_ordered_by_intensity():
    rec = make_haadf_image(512, n_elements=2, layout="janus", seed=4)
    seg = segment_particle(rec.image, 2)
    assert seg.ok and seg.k == choose_k(len(seg.peaks), 2)
    assert seg.labels.max() == seg.k - 1 == len(seg.centers)
    assert np.all(np.diff(seg.centers) > 0)
    means = [seg.brightened[seg.labels == c].mean() for c in range(1, seg.k)]
    assert np.all(np.diff(means) > 0)  # cluster 1 is the darkest
    # Background is exactly the outside of the hull.
    np.testing.assert_array_equal(seg.labels > 0, seg.hull)


# ---------------------------------------------------------------------------------------------------------------
# bad input: a clear message or an empty box list, never a crash inside a library


def test_non_square_image_is_rejected_naming_the_image():
    with pytest.raises(InputError, match="square") as info:
        box_image(np.zeros((100, 120), np.float32), 2, source="grid_7.tif")
    assert "grid_7.tif" in str(info.value)


def test_missing_element_count_is_a_clear_error():
    rec = make_haadf_image(256, 2, seed=1)
    rec.meta.pop("n_elements")
    with pytest.raises(InputError, match="element count") as info:
        box_image(rec)
    assert rec.source in str(info.value)
    with pytest.raises(InputError, match="element count"):
        segment_particle(rec.image, 0)


@pytest.mark.parametrize("value", [0.0, 0.5, 1.0])
def test_constant_image_gives_an_empty_box_list(value):
    res = box_image(np.full((256, 256), value, np.float32), 2)
    assert res.n_boxes == 0 and res.boxes.shape == (0, 4)
    assert "constant" in res.reason
    assert len(res.table()) == 0


@pytest.mark.parametrize("seed", range(4))
def test_noise_without_particle_gives_an_empty_box_list(seed):
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    carbon = 0.05 + 0.01 * ndi.gaussian_filter(rng.standard_normal((512, 512)), 1.5)
    noisy = rng.poisson(carbon * 200) / 200.0 + rng.normal(0, 0.01, carbon.shape)
    res = box_image(noisy.astype(np.float32), 3)
    assert res.n_boxes == 0 and res.reason.startswith("no particle")


def test_sixteen_bit_input_matches_the_eight_bit_image():
    rec = make_haadf_image(512, 3, layout="core-shell", seed=8)
    img8 = np.rint(rec.image * 255).astype(np.uint8)
    img16 = img8.astype(np.uint16) * 257  # the same picture using the full 16-bit range
    low16 = img8.astype(np.uint16) * 4  # a 16-bit file using only 1/64 of its range
    b8, b16, low = (box_image(x, 3).boxes for x in (img8, img16, low16))
    assert len(b8) > 50
    np.testing.assert_array_equal(b16, b8)
    np.testing.assert_array_equal(low, b8)


def test_rgb_nan_and_non_numeric_input_are_rejected():
    with pytest.raises(InputError, match="2-D"):
        box_image(np.zeros((64, 64, 3), np.float32), 1, source="rgb.png")
    nan = np.zeros((64, 64), np.float32)
    nan[3, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        box_image(nan, 1)
    with pytest.raises(InputError, match="numbers"):
        box_image(np.zeros((64, 64), bool), 1)
    with pytest.raises(InputError, match="8×8"):
        box_image(np.zeros((4, 4), np.float32), 1)


def test_settings_round_trip_as_dict():
    cfg = SegmentSettings(bin_width=10.0)
    assert SegmentSettings(**cfg.to_dict()) == cfg


def test_convex_hull_matches_skimage_on_particle_masks():
    from skimage.morphology import convex_hull_image

    from semkit.stem.segment import convex_hull

    for seed in range(6):
        seg = segment_particle(make_haadf_image(512, 1 + seed % 5, seed=seed).image, 1 + seed % 5)
        mask = seg.hull.copy()
        mask[::5, ::3] = False  # holes and ragged edges: the hull must fill them again
        ours, ref = convex_hull(mask), convex_hull_image(mask)
        assert (ours >= mask).all() and (ours <= ref).all()  # skimage's corner hull adds a few edge pixels
        assert (ours != ref).sum() <= 0.01 * ref.sum()
    assert not convex_hull(np.zeros((5, 5), bool)).any()
    single = np.zeros((5, 5), bool)
    single[2, 3] = True
    np.testing.assert_array_equal(convex_hull(single), single)


@pytest.mark.parametrize(("sigma", "mode", "truncate"),
                         [(1.0, "nearest", 4.0), (8.333, "reflect", 3.0), (1.0, "constant", 4.0), (2.5, "reflect", 4.0)])
def test_opencv_gaussian_equals_scipy(sigma, mode, truncate):
    from scipy import ndimage as ndi

    from semkit.stem.segment import gaussian

    img = np.random.default_rng(3).random((70, 90)).astype(np.float32) * 255
    ref = ndi.gaussian_filter(img.astype(np.float64), sigma, mode=mode, truncate=truncate)
    np.testing.assert_allclose(gaussian(img, sigma, mode, truncate), ref, atol=2e-3)
