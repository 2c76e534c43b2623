"""Box placement (Algorithms 1 and 2), the largest-square map and coordinate mapping."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage as ndi

from semkit.errors import InputError
from semkit.stem.boxes import (
    ALGORITHMS,
    boxes_from_parent,
    boxes_largest_first,
    boxes_raster,
    boxes_to_parent,
    coverage,
    largest_squares,
    place_boxes,
    size_cap,
)

# ---------------------------------------------------------------------------------------------------------------
# slow references, one pixel and one growing square at a time


def ref_largest_squares(lab):
    h, w = lab.shape
    out = np.zeros((h, w), dtype=int)
    for i in range(h):
        for j in range(w):
            if lab[i, j] == 0:
                continue
            s = 1
            while i + s < h and j + s < w and (lab[i : i + s + 1, j : j + s + 1] == lab[i, j]).all():
                s += 1
            out[i, j] = s
    return out


def _fits(lab, cov, i, j, s):
    blk = lab[i : i + s, j : j + s]
    return blk.shape == (s, s) and blk[0, 0] > 0 and (blk == blk[0, 0]).all() and not cov[i : i + s, j : j + s].any()


def ref_raster(lab, cap):
    cov = np.zeros(lab.shape, dtype=bool)
    out = []
    for i in range(lab.shape[0]):
        for j in range(lab.shape[1]):
            if lab[i, j] == 0 or cov[i, j]:
                continue
            s = 1
            while s < cap and _fits(lab, cov, i, j, s + 1):
                s += 1
            cov[i : i + s, j : j + s] = True
            out.append((i, j, s, lab[i, j]))
    return np.array(out, dtype=int).reshape(-1, 4)


def ref_largest_first(lab, cap):
    cov = np.zeros(lab.shape, dtype=bool)
    out = []
    while True:
        best = next(((i, j, s) for s in range(cap, 0, -1) for i in range(lab.shape[0]) for j in range(lab.shape[1])
                     if _fits(lab, cov, i, j, s)), None)
        if best is None:
            return np.array(out, dtype=int).reshape(-1, 4)
        i, j, s = best
        cov[i : i + s, j : j + s] = True
        out.append((i, j, s, lab[i, j]))


# Label maps with blobs (dilated seeds) and holes: the shapes boxes meet in practice, plus pure noise.
@st.composite
def label_maps(draw, max_side=18):
    shape = draw(st.tuples(st.integers(1, max_side), st.integers(1, max_side)))
    seeds = draw(arrays(np.int32, shape, elements=st.integers(0, 3)))
    grow = draw(st.integers(1, 4))
    lab = ndi.grey_dilation(seeds, size=(grow, grow))
    holes = draw(arrays(np.bool_, shape))
    return np.where(holes & draw(st.booleans()), 0, lab).astype(np.int32)


def check_cover(lab, boxes, cap):
    """Exact cover of every region pixel, boxes inside one region, no overlap, cap respected."""
    assert boxes.shape[1] == 4 and boxes.dtype == np.int32
    assert (boxes[:, 2] >= 1).all() and (boxes[:, 2] <= cap).all()
    np.testing.assert_array_equal(coverage(boxes, lab.shape), (lab > 0).astype(np.int32))
    for r, c, s, label in boxes:
        assert r + s <= lab.shape[0] and c + s <= lab.shape[1]
        assert (lab[r : r + s, c : c + s] == label).all() and label > 0


@settings(max_examples=150, deadline=None)
@given(lab=label_maps(), cap=st.integers(1, 8), algorithm=st.sampled_from([1, 2]))
def test_exact_cover_inside_region_no_overlap_cap(lab, cap, algorithm):
    boxes = place_boxes(lab, algorithm, cap)
    check_cover(lab, boxes, cap)
    # Determinism: the same input gives the same boxes.
    np.testing.assert_array_equal(place_boxes(lab.copy(), algorithm, cap), boxes)


@settings(max_examples=80, deadline=None)
@given(lab=label_maps(max_side=11), cap=st.integers(1, 5))
def test_parity_with_one_square_at_a_time_references(lab, cap):
    np.testing.assert_array_equal(largest_squares(lab), ref_largest_squares(lab))
    np.testing.assert_array_equal(largest_squares(lab, cap), np.minimum(ref_largest_squares(lab), cap))
    np.testing.assert_array_equal(boxes_raster(lab, cap), ref_raster(lab, cap))
    np.testing.assert_array_equal(boxes_largest_first(lab, cap), ref_largest_first(lab, cap))


def test_hand_computed_case_where_the_algorithms_differ():
    lab = np.array([[1, 1, 0, 0],
                    [1, 1, 1, 1],
                    [0, 1, 1, 1],
                    [0, 1, 1, 1]])
    np.testing.assert_array_equal(largest_squares(lab), [[2, 1, 0, 0], [1, 3, 2, 1], [0, 2, 2, 1], [0, 1, 1, 1]])
    # Raster: the 2x2 at the first pixel blocks the 3x3 below-right.
    assert boxes_raster(lab).tolist() == [[0, 0, 2, 1], [1, 2, 2, 1], [2, 1, 1, 1], [3, 1, 1, 1], [3, 2, 1, 1],
                                          [3, 3, 1, 1]]
    # Largest first: the 3x3, then three single pixels in raster order.
    assert boxes_largest_first(lab).tolist() == [[1, 1, 3, 1], [0, 0, 1, 1], [0, 1, 1, 1], [1, 0, 1, 1]]
    # With a cap of 2 the 3x3 is no longer possible: both place 2x2 first.
    assert boxes_largest_first(lab, 2)[:, 2].tolist() == [2, 2, 1, 1, 1, 1]


def test_cap_and_labels_split_a_uniform_square():
    lab = np.ones((6, 6), dtype=np.int32)
    assert boxes_raster(lab).tolist() == [[0, 0, 6, 1]]
    assert boxes_raster(lab, 3).tolist() == [[0, 0, 3, 1], [0, 3, 3, 1], [3, 0, 3, 1], [3, 3, 3, 1]]
    lab[:, 3:] = 2  # two regions side by side: no box straddles them
    assert boxes_raster(lab).tolist() == [[0, 0, 3, 1], [0, 3, 3, 2], [3, 0, 3, 1], [3, 3, 3, 2]]


def test_empty_and_bad_label_maps():
    assert boxes_raster(np.zeros((5, 5), int)).shape == (0, 4)
    assert boxes_largest_first(np.zeros((5, 5), int)).shape == (0, 4)
    with pytest.raises(InputError, match="choose one of \\[1, 2\\]"):
        place_boxes(np.ones((3, 3), int), algorithm=3)
    with pytest.raises(InputError, match="integers"):
        place_boxes(np.ones((3, 3), float))
    with pytest.raises(InputError, match=">= 1"):
        place_boxes(np.ones((3, 3), int), cap=0)
    assert set(ALGORITHMS) == {1, 2}


def test_size_cap_is_twenty_percent_of_the_shorter_side():
    assert size_cap((60, 100)) == 12
    assert size_cap((4, 100)) == 1  # never below one pixel
    assert size_cap((50, 50), 0.1) == 5
    with pytest.raises(InputError):
        size_cap((10, 10), 0)


@settings(max_examples=60, deadline=None)
@given(lab=label_maps(), r0=st.integers(0, 100), c0=st.integers(0, 100), scale=st.sampled_from([1.0, 4.0, 8.0, 7.8125]))
def test_coordinate_mapping_round_trip(lab, r0, c0, scale):
    boxes = boxes_raster(lab, 4)
    xys = boxes_to_parent(boxes, (r0, c0), scale)
    np.testing.assert_array_equal(boxes_from_parent(xys, (r0, c0), scale), boxes[:, :3])
    if len(boxes):
        # Hand check of the first box: x is the column, y the row, both shifted by the crop and scaled.
        r, c, s, _ = boxes[0]
        np.testing.assert_allclose(xys[0], [(c + c0) * scale, (r + r0) * scale, s * scale])


def test_mapping_rejects_off_grid_boxes():
    with pytest.raises(InputError, match="grid"):
        boxes_from_parent(np.array([[3.0, 8.0, 8.0]]), (0, 0), 8.0)
