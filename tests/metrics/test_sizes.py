"""Particle size descriptors and distribution comparison: hand-computed shapes and unit scaling."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.draw import disk, polygon
from skimage.measure import regionprops

from semkit.errors import InputError
from semkit.metrics import compare_distributions, particle_sizes
from semkit.metrics.size import min_feret_diameter


def rectangle_map() -> np.ndarray:
    lab = np.zeros((40, 50), dtype=np.int32)
    lab[5:25, 10:16] = 3  # 20 rows x 6 columns
    lab[30, 30] = 7  # one pixel
    return lab


def test_rectangle_and_single_pixel_by_hand():
    t = particle_sizes(rectangle_map()).set_index("id")
    rect = t.loc[3]
    assert rect["area_px"] == 120
    assert rect["ecd_px"] == pytest.approx(np.sqrt(4 * 120 / np.pi))
    # Half-pixel contour of a 20 x 6 block: the sides are straight (width exactly 6); the corners are cut, so
    # the longest chord joins (−0.5, 0) to (19.5, 5): sqrt(20² + 5²).
    assert rect["feret_min_px"] == pytest.approx(6.0)
    assert rect["feret_max_px"] == pytest.approx(np.sqrt(20**2 + 5**2))
    assert rect["aspect_ratio"] == pytest.approx(6 / np.sqrt(425))
    px = t.loc[7]  # the contour of one pixel is a diamond with half-diagonal 0.5
    assert px["feret_max_px"] == pytest.approx(1.0) and px["feret_min_px"] == pytest.approx(np.sqrt(0.5))


def _caliper_widths(convex_image: np.ndarray) -> tuple[float, float]:
    """Slow reference: projections of the half-pixel contour on 36,000 directions; (min, max) width."""
    from skimage.measure import find_contours

    pts = np.vstack(find_contours(np.pad(convex_image, 2), 0.5, fully_connected="high"))
    angles = np.linspace(0, np.pi, 36_000, endpoint=False)
    proj = pts @ np.stack([np.cos(angles), np.sin(angles)])
    widths = proj.max(axis=0) - proj.min(axis=0)
    return float(widths.min()), float(widths.max())


def test_feret_of_a_rotated_bar_equals_a_brute_force_caliper():
    lab = np.zeros((80, 80), dtype=np.int32)
    # A 40 x 10 bar rotated by 30 degrees.
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    corners = np.array([[-20, -5], [20, -5], [20, 5], [-20, 5]]) @ np.array([[c, -s], [s, c]]).T + 40
    rr, cc = polygon(corners[:, 0], corners[:, 1], lab.shape)
    lab[rr, cc] = 1
    t = particle_sizes(lab).iloc[0]
    region = regionprops(lab)[0]
    assert t["feret_max_px"] == pytest.approx(region.feret_diameter_max)
    ref_min, ref_max = _caliper_widths(region.image_convex)
    assert t["feret_min_px"] == pytest.approx(ref_min, abs=1e-3)
    assert t["feret_max_px"] == pytest.approx(ref_max, abs=1e-3)
    # Pixel centres span the bar's width 10; the half-pixel outline adds 0.5 (|cos 30°| + |sin 30°|) per side.
    assert t["feret_min_px"] == pytest.approx(10 + c + s, abs=0.6)


def test_disk():
    lab = np.zeros((64, 64), dtype=np.int32)
    rr, cc = disk((32, 32), 20)  # pixel centres closer than 20: rows and columns 13..51, flat edges 39 wide
    lab[rr, cc] = 1
    t = particle_sizes(lab).iloc[0]
    assert t["ecd_px"] == pytest.approx(40.0, rel=0.02)
    assert t["feret_min_px"] == pytest.approx(39.0)
    assert t["feret_max_px"] == pytest.approx(_caliper_widths(regionprops(lab)[0].image_convex)[1], abs=1e-3)
    assert t["aspect_ratio"] > 0.9


def test_physical_units_scale_areas_with_the_square_of_the_pixel_size():
    px_nm = 2.5
    t = particle_sizes(rectangle_map(), pixel_size_nm=px_nm).set_index("id")
    assert t.loc[3, "area_nm2"] == pytest.approx(120 * 2.5**2)  # 750 nm², not 120 * 2.5 = 300
    assert t.loc[3, "area_nm2"] != pytest.approx(120 * 2.5)
    assert t.loc[3, "ecd_nm"] == pytest.approx(t.loc[3, "ecd_px"] * 2.5)
    assert t.loc[3, "feret_min_nm"] == pytest.approx(15.0)
    # The area of the circle of diameter ECD is the area, in any unit.
    assert np.pi * t.loc[3, "ecd_nm"] ** 2 / 4 == pytest.approx(t.loc[3, "area_nm2"])
    um = particle_sizes(rectangle_map(), pixel_size_nm=px_nm, unit="um").set_index("id")
    assert um.loc[3, "area_um2"] == pytest.approx(120 * 0.0025**2)
    assert um.loc[3, "feret_min_um"] == pytest.approx(0.015)
    with pytest.raises(InputError, match="positive"):
        particle_sizes(rectangle_map(), pixel_size_nm=0.0, name="img")
    with pytest.raises(KeyError, match="nm, um"):
        particle_sizes(rectangle_map(), pixel_size_nm=1.0, unit="mm")


def test_mask_stack_gives_the_same_sizes():
    lab = rectangle_map()
    stack = np.stack([lab == 7, np.zeros_like(lab, bool), lab == 3])
    t = particle_sizes(stack)
    assert t["id"].tolist() == [0, 2]  # stack indices; the empty mask is skipped
    ref = particle_sizes(lab)
    np.testing.assert_allclose(t.drop(columns="id").to_numpy(), ref.sort_values("id", ascending=False)
                               .drop(columns="id").to_numpy())


def test_min_feret_of_a_square():
    assert min_feret_diameter(np.ones((7, 7), bool)) == pytest.approx(7.0)


def test_compare_distributions_by_hand():
    cmp = compare_distributions([1, 2, 3, 4], [2, 3, 4, 5], names=("gt", "pred"))
    assert cmp.table.loc["mean", "gt"] == 2.5 and cmp.table.loc["mean", "pred"] == 3.5
    assert cmp.table.loc["median", "difference"] == 1.0 and cmp.table.loc["n", "gt"] == 4
    # Empirical CDFs differ by at most 1/4 (e.g. at x = 1: 0.25 vs 0).
    assert cmp.ks_statistic == pytest.approx(0.25)
    d = cmp.to_dict()
    assert d["mean_difference"] == 1.0 and d["ks_statistic"] == pytest.approx(0.25) and 0 < d["ks_pvalue"] <= 1
    with pytest.raises(InputError, match="empty"):
        compare_distributions([], [1.0])
    with pytest.raises(InputError, match="NaN"):
        compare_distributions([1.0, np.nan], [1.0])
