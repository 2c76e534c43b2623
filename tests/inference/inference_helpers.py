"""Constants and image helpers shared by the inference tests (imported as ``inference_helpers``)."""

from __future__ import annotations

import numpy as np

from semkit.models import CombineThresholds

# few proposals and detections keep every forward pass well under a second on a CPU
TINY = dict(backbone="convnextv2_atto", detections_per_img=12, rpn_pre_nms_top_n_test=120,
            rpn_post_nms_top_n_test=60)
# random weights give objectness around 0.5: keep every detection so that label maps are not empty
KEEP_ALL = CombineThresholds(certain_score=0.0, uncertain_score=0.0)


def gray_image(shape=(96, 128), seed=0) -> np.ndarray:
    """A float32 image in [0, 1] with a few bright blobs (detections of a random model vary with content)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img = 0.15 + 0.05 * rng.random(shape)
    for _ in range(4):
        cy, cx, r = rng.uniform(0, shape[0]), rng.uniform(0, shape[1]), rng.uniform(5, 15)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] += 0.5
    return np.clip(img, 0, 1).astype(np.float32)
