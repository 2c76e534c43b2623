"""Semantic metrics: hand-computed per-class IoU/Dice, and the two aggregations kept apart."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from semkit.errors import InputError
from semkit.metrics import confusion_matrix, semantic_metrics, semantic_scores

# Image 1 (2 x 2): gt [[0,0],[1,1]], pred [[0,1],[1,1]] -> class 0: TP 1, FN 1 -> IoU 1/2, Dice 2/3;
#   class 1: TP 2, FP 1 -> IoU 2/3, Dice 4/5; class 2 absent -> NaN. mIoU 7/12, accuracy 3/4.
# Image 2 (1 x 6): gt [2,2,2,0,0,0], pred [2,2,0,0,0,0] -> class 0: TP 3, FP 1 -> 3/4; class 2: TP 2, FN 1 -> 2/3;
#   class 1 absent. mIoU 17/24, accuracy 5/6.
# Dataset level (summed confusion): class 0: TP 4, FP 1, FN 1 -> 4/6; class 1: 2/3; class 2: 2/3 -> mIoU 2/3;
#   accuracy 8/10. Image-averaged: mIoU (7/12 + 17/24) / 2 = 31/48; accuracy (3/4 + 5/6) / 2 = 19/24.
GT = [np.array([[0, 0], [1, 1]]), np.array([[2, 2, 2, 0, 0, 0]])]
PRED = [np.array([[0, 1], [1, 1]]), np.array([[2, 2, 0, 0, 0, 0]])]


def test_per_image_scores_by_hand():
    s = semantic_scores(confusion_matrix(GT[0], PRED[0], 3))
    np.testing.assert_allclose(s["iou"], [1 / 2, 2 / 3, np.nan])
    np.testing.assert_allclose(s["dice"], [2 / 3, 4 / 5, np.nan])
    assert s["miou"] == pytest.approx(7 / 12) and s["pixel_accuracy"] == 0.75


def test_dataset_level_and_image_averaged_differ_as_computed_by_hand():
    ev = semantic_metrics(GT, PRED, 3, class_names=["bg", "a", "b"])
    assert ev.summary["miou_dataset_level"] == pytest.approx(2 / 3)
    assert ev.summary["miou_image_averaged"] == pytest.approx(31 / 48)
    assert ev.summary["pixel_accuracy_dataset_level"] == pytest.approx(0.8)
    assert ev.summary["pixel_accuracy_image_averaged"] == pytest.approx(19 / 24)
    per_class = ev.per_class.set_index("class")
    np.testing.assert_allclose(per_class["iou_dataset_level"], [4 / 6, 2 / 3, 2 / 3])
    # Image-averaged per class: over the images where the class is defined only.
    np.testing.assert_allclose(per_class["iou_image_averaged"], [(1 / 2 + 3 / 4) / 2, 2 / 3, 2 / 3])
    assert per_class["gt_pixels"].tolist() == [5, 2, 3]
    np.testing.assert_array_equal(ev.confusion, [[4, 1, 0], [0, 2, 0], [1, 0, 2]])
    assert ev.per_image["miou"].tolist() == pytest.approx([7 / 12, 17 / 24])


def test_ignore_index_pixels_are_not_counted():
    gt = np.array([[0, 255], [1, 255]])
    pred = np.array([[0, 1], [1, 0]])
    np.testing.assert_array_equal(confusion_matrix(gt, pred, 2, ignore_index=255), [[1, 0], [0, 1]])


def test_mapping_input_and_bad_input_names_the_image():
    ev = semantic_metrics({"x": GT[0]}, {"x": PRED[0]}, 3)
    assert ev.per_image["image"].tolist() == ["x"]
    with pytest.raises(InputError, match="img9") as err:
        confusion_matrix(np.zeros((2, 2), int), np.zeros((2, 3), int), 2, name="img9")
    assert err.value.path == "img9"
    with pytest.raises(InputError, match="NaN"):
        confusion_matrix(np.full((2, 2), np.nan), np.zeros((2, 2), int), 2, name="img9")
    with pytest.raises(InputError, match="integer"):
        confusion_matrix(np.zeros((2, 2)), np.zeros((2, 2), int), 2, name="img9")
    with pytest.raises(InputError, match="outside 0..1"):
        confusion_matrix(np.full((2, 2), 3), np.zeros((2, 2), int), 2, name="img9")
    with pytest.raises(InputError, match="no prediction"):
        semantic_metrics({"a": GT[0]}, {"b": PRED[0]}, 3)
    with pytest.raises(InputError, match="no images"):
        semantic_metrics([], [], 3)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(arrays(np.int64, (3, 4), elements=st.integers(0, 2)),
                          arrays(np.int64, (3, 4), elements=st.integers(0, 2))), min_size=1, max_size=4))
def test_confusion_matrix_equals_a_loop_and_iou_bounds(pairs):
    for g, p in pairs:
        cm = confusion_matrix(g, p, 3)
        loop = np.zeros((3, 3), int)
        for a, b in zip(g.ravel(), p.ravel(), strict=True):
            loop[a, b] += 1
        np.testing.assert_array_equal(cm, loop)
    ev = semantic_metrics([g for g, _ in pairs], [p for _, p in pairs], 3)
    for key in ("miou_dataset_level", "miou_image_averaged", "pixel_accuracy_dataset_level"):
        assert 0.0 <= ev.summary[key] <= 1.0
    # Dice >= IoU for every class (2x/(1+x) >= x on [0, 1]).
    d, i = ev.per_class["dice_dataset_level"].to_numpy(), ev.per_class["iou_dataset_level"].to_numpy()
    ok = ~np.isnan(i)
    assert np.all(d[ok] >= i[ok] - 1e-12)
