"""Checks on the arrays handed to the metrics, so bad input fails early with the image's name.

Two instance representations are accepted everywhere in :mod:`semkit.metrics`:

* a **label map**: integer array (H, W), 0 = background, every other value one instance (labels need not be
  consecutive; a label that does not occur is not an instance);
* a **mask stack**: boolean array (N, H, W), one (possibly overlapping) mask per instance, as Mask R-CNN
  produces. Integer stacks holding only 0 and 1 are accepted too. An all-False mask is not an instance.

Anything else — floating-point labels (even integral ones: the cast is the caller's decision), NaNs, negative
labels, empty images, mismatched shapes — raises :class:`~semkit.errors.InputError` naming the image.
"""

from __future__ import annotations

import numpy as np

from semkit.errors import InputError


def check_instances(instances, name: str | None = None, role: str = "instances") -> np.ndarray:
    """Validate a label map (H, W) or a mask stack (N, H, W) and return it as an array.

    Args:
        instances: the array to check.
        name: image name (or file) used in the error message.
        role: what the array is (``"ground truth"``, ``"prediction"``), used in the error message.

    Returns:
        The array (a bool mask stack for 3-D input, the integer label map for 2-D input).

    Raises:
        InputError: naming ``name``, for ``None``, non-numeric, floating-point or NaN values, negative labels,
            a mask stack with values other than 0/1, an image with no pixels, or a dimension other than 2 or 3.
    """
    if instances is None:
        raise InputError(f"{role} is missing (None)", name)
    arr = np.asarray(instances)
    if arr.ndim not in (2, 3):
        raise InputError(
            f"{role} must be a label map (H, W) or a mask stack (N, H, W), got shape {arr.shape}", name
        )
    if arr.shape[-1] == 0 or arr.shape[-2] == 0:
        raise InputError(f"{role} is empty: image shape {arr.shape[-2:]} has no pixels", name)
    if arr.dtype == np.bool_:
        return arr
    if np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.complexfloating):
        if arr.size and not np.all(np.isfinite(arr)):
            raise InputError(f"{role} contains NaN or infinite values", name)
        raise InputError(
            f"{role} must hold integer labels, got {arr.dtype}; cast explicitly if the values are integral", name
        )
    if not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"{role} must hold integer labels, got dtype {arr.dtype}", name)
    if arr.dtype == np.uint64 and arr.size and arr.max() > np.iinfo(np.int64).max:
        raise InputError(f"{role} has labels above 2**63 - 1 (max {int(arr.max())}); relabel consecutively", name)
    if arr.size and arr.min() < 0:
        raise InputError(f"{role} has negative labels (min {int(arr.min())}); 0 is background", name)
    if arr.ndim == 3:
        if arr.size and arr.max() > 1:
            raise InputError(
                f"{role} mask stack (N, H, W) must hold only 0/1, found value {int(arr.max())}", name
            )
        return arr.astype(bool)
    return arr


def check_pair(gt, pred, name: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Validate ground truth and prediction of one image and check that their image sizes agree.

    Raises:
        InputError: naming ``name``, for any problem :func:`check_instances` finds or an (H, W) mismatch.
    """
    gt = check_instances(gt, name, "ground truth")
    pred = check_instances(pred, name, "prediction")
    if gt.shape[-2:] != pred.shape[-2:]:
        raise InputError(
            f"ground truth image size {gt.shape[-2:]} does not match prediction image size {pred.shape[-2:]}",
            name,
        )
    return gt, pred


def check_scores(scores, n: int, name: str | None = None, role: str = "scores") -> np.ndarray:
    """Validate per-instance confidences: finite floats in [0, 1], one per instance.

    Raises:
        InputError: naming ``name``, for a wrong length, NaNs or values outside [0, 1].
    """
    arr = np.asarray(scores, dtype=np.float64).ravel()
    if arr.shape[0] != n:
        raise InputError(f"{arr.shape[0]} {role} for {n} instances", name)
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{role} contain NaN or infinite values", name)
    if arr.size and (arr.min() < 0 or arr.max() > 1):
        raise InputError(f"{role} must lie in [0, 1], got range [{arr.min():.3g}, {arr.max():.3g}]", name)
    return arr
