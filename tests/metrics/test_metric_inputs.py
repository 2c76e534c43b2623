"""Bad input to the metrics: a clear InputError naming the image, never a silently wrong number."""

from __future__ import annotations

import numpy as np
import pytest

from semkit.errors import InputError
from semkit.metrics import InstanceSet, aji_plus, evaluate, match_instances, particle_sizes

GOOD = np.zeros((4, 4), dtype=np.int32)
GOOD[1:3, 1:3] = 1


@pytest.mark.parametrize(("gt", "pred", "message"), [
    (GOOD, np.zeros((4, 5), np.int32), "image size"),
    (GOOD, GOOD.astype(np.float32), "integer labels"),
    (GOOD.astype(np.float64), GOOD, "integer labels"),
    (GOOD, np.where(GOOD > 0, np.nan, 0.0), "NaN"),
    (GOOD, -GOOD, "negative"),
    (GOOD, np.zeros((0, 0), np.int32), "empty"),
    (GOOD, np.zeros(16, np.int32), "label map"),
    (GOOD, np.zeros((1, 1, 4, 4), np.int32), "label map"),
    (GOOD, np.full((2, 4, 4), 2, np.int32), "0/1"),
    (GOOD, None, "missing"),
    (GOOD, np.array([["a"] * 4] * 4), "integer labels"),
])
def test_bad_arrays_raise_input_error_naming_the_image(gt, pred, message):
    for fn in (aji_plus, match_instances):
        with pytest.raises(InputError, match=message) as err:
            fn(gt, pred, name="sample_042.tif")
        assert err.value.path == "sample_042.tif"
        assert str(err.value).startswith("sample_042.tif: ")


def test_bad_arrays_inside_an_evaluation_name_the_image():
    with pytest.raises(InputError, match="integer labels") as err:
        evaluate({"ok": GOOD, "broken": GOOD}, {"ok": GOOD, "broken": GOOD.astype(float)})
    assert err.value.path == "broken"
    with pytest.raises(InputError, match="image size") as err:
        evaluate({"a": GOOD}, {"a": np.zeros((3, 3), np.int32)})
    assert err.value.path == "a"


def test_bad_scores_and_flags_name_the_image():
    with pytest.raises(InputError, match="2 scores for 1") as err:
        InstanceSet({"p": GOOD}, scores={"p": [0.5, 0.5]})
    assert err.value.path == "p"
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        InstanceSet({"p": GOOD}, scores={"p": [1.5]})
    with pytest.raises(InputError, match="NaN"):
        InstanceSet({"p": GOOD}, scores={"p": [np.nan]})
    with pytest.raises(InputError, match="certainty flags"):
        InstanceSet({"p": GOOD}, certain={"p": [True, False]})
    with pytest.raises(InputError, match="unknown images"):
        InstanceSet({"p": GOOD}, scores={"q": [0.5]})
    with pytest.raises(InputError, match="single array"):
        evaluate(GOOD, GOOD)


def test_sizes_reject_bad_arrays():
    with pytest.raises(InputError, match="negative") as err:
        particle_sizes(-GOOD, name="im7")
    assert err.value.path == "im7"
