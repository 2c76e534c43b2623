"""Class activation maps of the particle segmenters with grad-cam (``pytorch_grad_cam``): SSL study, Fig. 6.

Two methods (:data:`CAM_METHODS`): **Ablation-CAM** (the study's method; gradient-free: each channel of the
target layer is set to zero in turn and the drop of the target score weights that channel's map) and
**Grad-CAM** (channel weights = spatially averaged gradients of the target score). The target layer is an
encoder stage's output (:func:`semkit.interpret.encoder_stages`; stage 4, the last, by default), so the maps
say which encoder features the decision rests on -- the part that pretraining changes.

Targets, i.e. what the map explains:

* **Mask R-CNN** (:func:`maskrcnn_cam`): grad-cam's ``FasterRCNNBoxScoreTarget`` on the image's detections --
  for every reference detection, IoU + score of the best-matching detection of the same class (0 when none
  overlaps by ``iou_threshold``), summed. The reference detections are those scoring at least
  ``score_threshold`` (at most ``max_targets``, the best one if none reaches it), or one chosen particle.
  The mask branch and the uncertainty head are switched off while the CAM runs (:func:`boxes_only`: the
  target reads boxes and scores only, and masks would cost most of the time), and restored afterwards.
* **U-Net / U-Net++** (:func:`unet_cam`): grad-cam's ``SemanticSegmentationTarget`` -- the sum of the
  foreground *probability* over the predicted foreground region (the whole image if nothing is predicted).
  Probabilities rather than logits keep the score positive, which Ablation-CAM's relative drop
  ``(score - ablated) / score`` needs.

Images are padded (bottom/right) to a multiple of 32 before the CAM, with the value each model pads with
itself (the normalisation mean for Mask R-CNN, 0 for the U-Net), so the stage's grid covers the input exactly
and the map, resized by grad-cam to the input, lines up with the image; it is then cropped back.

Grad-CAM's final ReLU can leave an all-zero map when the gradient-weighted activations are negative everywhere,
which happens at the last stage of barely trained models (ConvNeXt stages end without a ReLU); ``cam_std`` of
:func:`cam_summary` is then 0.

Cost: Ablation-CAM runs the network once per channel of the target layer (batched by ``batch_size``), e.g.
320 channels at stage 4 of ``convnextv2_atto``; on a CPU keep images and models small or use Grad-CAM.

References: Desai & Ramaswamy, "Ablation-CAM", WACV 2020; Selvaraju et al., "Grad-CAM", ICCV 2017;
Gildenblat et al., pytorch-grad-cam (https://github.com/jacobgil/pytorch-grad-cam).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_grad_cam import AblationCAM, GradCAM
from pytorch_grad_cam.ablation_layer import AblationLayer
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget, SemanticSegmentationTarget
from torch import nn

from semkit.interpret.features import encoder_stages, eval_mode

#: CAM methods by name.
CAM_METHODS: dict[str, type[BaseCAM]] = {"ablationcam": AblationCAM, "gradcam": GradCAM}
#: Input sides are padded to a multiple of this (the encoders' total stride).
PAD_DIVISOR = 32


def cam_class(name: str) -> type[BaseCAM]:
    """The grad-cam class registered under ``name``; ``KeyError`` lists the valid names."""
    if name not in CAM_METHODS:
        raise KeyError(f"unknown CAM method {name!r}; choose one of: {', '.join(CAM_METHODS)}")
    return CAM_METHODS[name]


class ZeroAblationLayer(AblationLayer):
    """Ablation as the Ablation-CAM paper defines it: the ablated channel is set to zero.

    grad-cam's ``AblationLayer`` zeroes a channel only when the layer's minimum is exactly 0 (ReLU networks) and
    otherwise writes ``min - 1e7``; ConvNeXt stages end without a ReLU, and such a value swamps every later
    layer so that all channels look equally important. Everything else (batching, channel selection) is
    grad-cam's.
    """

    def __call__(self, x):
        output = self.activations
        for i in range(output.size(0)):
            output[i, self.indices[i]] = 0
        return output


@dataclass
class CAMResult:
    """One class activation map with the prediction it explains.

    Attributes:
        cam: float32 (H, W) in [0, 1] (grad-cam's ReLU + min-max scaling), 1 = most important.
        labels: int32 (H, W) predicted instances (post-processed as the model's thresholds say).
        certain_ids: label values predicted certain (all of them for a U-Net).
        method: :data:`CAM_METHODS` key.
        layer: qualified name of the target layer.
        target: what the map explains, in words.
        n_targets: reference detections (Mask R-CNN) or foreground pixels (U-Net) in the target; 0 = nothing
            to explain (the map is then all zeros).
        score: the target score on the unmodified image.
    """

    cam: np.ndarray
    labels: np.ndarray
    certain_ids: np.ndarray
    method: str
    layer: str
    target: str
    n_targets: int
    score: float


def target_layer(model: nn.Module, stage: int = 4) -> tuple[str, nn.Module]:
    """``(name, module)`` of encoder stage ``stage`` (1-4) inside ``model``."""
    if stage not in (1, 2, 3, 4):
        raise ValueError(f"stage must be 1, 2, 3 or 4, got {stage}")
    return encoder_stages(model)[stage - 1]


def pad_image(image: np.ndarray, value: float = 0.0, divisor: int = PAD_DIVISOR) -> torch.Tensor:
    """(H, W) image → (1, 1, H', W') float32 tensor padded bottom/right with ``value`` to multiples of ``divisor``."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2:
        raise ValueError(f"expected a grayscale (H, W) image, got shape {image.shape}")
    h, w = image.shape
    x = torch.from_numpy(np.ascontiguousarray(image))[None, None]
    return F.pad(x, (0, (-w) % divisor, 0, (-h) % divisor), value=float(value))


def run_cam(model: nn.Module, x: torch.Tensor, layer: nn.Module, method: str, targets: Sequence,
            batch_size: int = 32, **cam_kwargs) -> np.ndarray:
    """Run a grad-cam method on one input; returns the (H', W') map of ``x``'s size.

    Args:
        model: called as ``model(x)``; its outputs, one per image, are what ``targets`` score.
        x: (1, C, H', W') input.
        layer: the target layer (a module inside ``model``).
        method: :data:`CAM_METHODS` key.
        targets: one grad-cam target per image.
        batch_size: Ablation-CAM: ablated copies run per forward pass.
        **cam_kwargs: passed to the grad-cam class (e.g. ``ratio_channels_to_ablate``).
    """
    cls = cam_class(method)
    if cls is AblationCAM:
        cam_kwargs = {"ablation_layer": ZeroAblationLayer(), "batch_size": batch_size, **cam_kwargs}
    with eval_mode(model):  # grad-cam switches the model to eval mode; eval_mode puts each module back after
        cam = cls(model=model, target_layers=[layer], **cam_kwargs)
        try:
            with torch.enable_grad():
                out = cam(input_tensor=x, targets=list(targets))
        finally:
            # not grad-cam's context manager: its __exit__ swallows IndexError
            cam.activations_and_grads.release()
            model.zero_grad(set_to_none=True)
    return np.asarray(out[0], dtype=np.float32)


@contextmanager
def boxes_only(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block a Mask R-CNN returns boxes, labels and scores only: the mask branch and the uncertainty
    head (:class:`semkit.models.maskrcnn.ParticleRoIHeads`, which only reads the box features, so boxes and
    scores are the same without it) are switched off, and restored on exit."""
    heads = model.roi_heads
    names = [n for n in ("mask_roi_pool", "mask_head", "mask_predictor", "uncertainty_head") if hasattr(heads, n)]
    saved = {n: getattr(heads, n) for n in names}
    for n in names:
        setattr(heads, n, None)
    try:
        yield model
    finally:
        for n, module in saved.items():
            setattr(heads, n, module)


def maskrcnn_cam(model: nn.Module, image: np.ndarray, method: str = "ablationcam", stage: int = 4,
                 thresholds=None, particle: int | None = None, score_threshold: float = 0.5,
                 max_targets: int = 50, iou_threshold: float = 0.5, batch_size: int = 32,
                 **cam_kwargs) -> CAMResult:
    """CAM of a particle Mask R-CNN (:func:`semkit.models.build_maskrcnn`) for its detections on one image.

    Args:
        model: the Mask R-CNN (from :func:`semkit.models.load_model` or built directly).
        image: (H, W) float image in [0, 1].
        method: ``"ablationcam"`` or ``"gradcam"``.
        stage: encoder stage whose output is the target layer (1-4).
        thresholds: :class:`semkit.models.CombineThresholds` for the predicted label map (``None`` = defaults).
        particle: explain only this detection (index in score order, 0 = best); ``None`` = all reference
            detections.
        score_threshold: reference detections score at least this.
        max_targets: at most this many reference detections (the best-scoring).
        iou_threshold: a detection of the ablated/perturbed model counts for a reference box above this IoU.
        batch_size, **cam_kwargs: see :func:`run_cam`.

    Raises:
        IndexError: ``particle`` is not a detection index.
    """
    from semkit.models.postprocess import combine_detections

    h, w = image.shape
    x = pad_image(image, value=model.transform.image_mean[0]).to(next(model.parameters()).device)
    name, layer = target_layer(model, stage)
    with eval_mode(model), torch.no_grad():
        det = {k: v.detach().cpu() for k, v in model([x[0]])[0].items()}
    labels, table = combine_detections(det, tuple(x.shape[-2:]), thresholds)
    labels = np.ascontiguousarray(labels[:h, :w]).astype(np.int32)
    certain_ids = table.loc[table["certain"].astype(bool), "id"].to_numpy(dtype=np.int64)
    scores = det["scores"]
    if particle is not None:
        if not 0 <= particle < len(scores):
            raise IndexError(f"particle {particle} out of range: {len(scores)} detections")
        chosen = torch.tensor([particle])
        what = f"detection {particle} (score {float(scores[particle]):.2f})"
    else:
        chosen = torch.nonzero(scores >= score_threshold).flatten()[:max_targets]
        what = f"{len(chosen)} detections with score >= {score_threshold:g}"
        if len(chosen) == 0 and len(scores):
            chosen = torch.tensor([0])
            what = f"the best detection (score {float(scores[0]):.2f} < {score_threshold:g})"
    if len(chosen) == 0:
        return CAMResult(np.zeros((h, w), np.float32), labels, certain_ids, method, name, "no detections", 0, 0.0)
    target = FasterRCNNBoxScoreTarget(det["labels"][chosen], det["boxes"][chosen], iou_threshold=iou_threshold)
    score = float(target(det).sum())
    with boxes_only(model):
        cam = run_cam(model, x, layer, method, [target], batch_size=batch_size, **cam_kwargs)
    return CAMResult(cam[:h, :w], labels, certain_ids, method, name, what, len(chosen), score)


class ForegroundProbability(nn.Module):
    """A U-Net returning sigmoid probabilities (the target of :func:`unet_cam`) instead of logits."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from semkit.models.unet import unet_logits

        return torch.sigmoid(unet_logits(self.unet, x))


def unet_cam(model: nn.Module, image: np.ndarray, method: str = "ablationcam", stage: int = 4,
             postprocess=None, batch_size: int = 32, **cam_kwargs) -> CAMResult:
    """CAM of a distance-map U-Net / U-Net++ (:func:`semkit.models.build_unet`) for its foreground on one image.

    Args:
        model: the smp model (from :func:`semkit.models.load_model` or built directly).
        image: (H, W) float image in [0, 1].
        method: ``"ablationcam"`` or ``"gradcam"``.
        stage: encoder stage whose output is the target layer (1-4).
        postprocess: :class:`semkit.models.UNetPostprocess` (or a dict of its fields) for the predicted
            instances and the foreground threshold; ``None`` = defaults.
        batch_size, **cam_kwargs: see :func:`run_cam`.
    """
    from semkit.models.unet import CHANNELS, UNetPostprocess, instances_from_prediction

    params = (postprocess if isinstance(postprocess, UNetPostprocess)
              else UNetPostprocess(**dict(postprocess or {}))).to_dict()
    h, w = image.shape
    x = pad_image(image, value=0.0).to(next(model.parameters()).device)
    name, layer = target_layer(model, stage)
    wrapped = ForegroundProbability(model)
    with eval_mode(model), torch.no_grad():
        probs = wrapped(x)[0].cpu()
    labels = instances_from_prediction(probs[:, :h, :w], logits=False, **params).astype(np.int32)
    fg = CHANNELS.index("foreground")
    mask = np.zeros(tuple(x.shape[-2:]), np.float32)
    predicted = (probs[fg, :h, :w] > params["foreground_threshold"]).numpy()
    if predicted.any():
        mask[:h, :w] = predicted
        what = f"foreground probability over the {int(predicted.sum())} predicted foreground pixels"
    else:
        mask[:h, :w] = 1.0
        what = "foreground probability over the whole image (no foreground predicted)"
    target = SemanticSegmentationTarget(fg, mask)
    score = float(target(probs))
    cam = run_cam(wrapped, x, layer, method, [target], batch_size=batch_size, **cam_kwargs)
    certain_ids = np.unique(labels[labels > 0]).astype(np.int64)
    return CAMResult(cam[:h, :w], labels, certain_ids, method, name, what, int(mask.sum()), score)


def compute_cam(model: nn.Module, image: np.ndarray, method: str = "ablationcam", stage: int = 4,
                postprocess=None, **kwargs) -> CAMResult:
    """:func:`maskrcnn_cam` for a torchvision Mask R-CNN, :func:`unet_cam` for any other (smp) model.

    ``postprocess`` is the model's thresholds (what :func:`semkit.models.load_model` returns second).
    """
    from torchvision.models.detection import MaskRCNN

    if isinstance(model, MaskRCNN):
        return maskrcnn_cam(model, image, method, stage, thresholds=postprocess, **kwargs)
    return unet_cam(model, image, method, stage, postprocess=postprocess, **kwargs)


def compute_cams(models: Mapping[str, tuple[nn.Module, object]], records: Sequence, method: str = "ablationcam",
                 stage: int = 4, progress: bool = True, **kwargs) -> dict[str, dict[str, CAMResult]]:
    """:func:`compute_cam` for every model on every image: ``{image name: {model label: CAMResult}}``.

    Args:
        models: ``{label: (model, postprocess)}``, e.g. from :func:`semkit.interpret.load_models`.
        records: images (``.image``, ``.name``).
        method, stage, **kwargs: see :func:`compute_cam`.
        progress: show a tqdm bar over (image, model) pairs.
    """
    from tqdm.auto import tqdm

    cam_class(method)  # fail before any work on a bad name
    out: dict[str, dict[str, CAMResult]] = {}
    jobs = [(rec, label) for rec in records for label in models]
    for rec, label in tqdm(jobs, desc=f"{method} maps", disable=not progress):
        model, post = models[label]
        out.setdefault(rec.name, {})[label] = compute_cam(model, rec.image, method, stage, post, **kwargs)
    return out


def energy_inside(cam: np.ndarray, mask: np.ndarray) -> float:
    """Share of the map's total inside ``mask``: ``sum(cam · mask) / sum(cam)``; NaN for an all-zero map.

    Compare it with the mask's area fraction: a map that ignores the particles puts about that share inside.
    """
    cam = np.asarray(cam, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if cam.shape != mask.shape:
        raise ValueError(f"cam {cam.shape} and mask {mask.shape} differ in shape")
    total = cam.sum()
    return float(cam[mask].sum() / total) if total > 0 else float("nan")


def cam_summary(result: CAMResult, ground_truth: np.ndarray | None = None) -> dict[str, float]:
    """Numbers that go with a map: ``n_targets``, ``score``, ``cam_mean``, ``cam_std``, the map's share inside
    the predicted particles (``energy_in_prediction``, with their area fraction ``prediction_area``) and, with a
    ground-truth label map, inside the true particles (``energy_in_ground_truth``, ``ground_truth_area``)."""
    pred = result.labels > 0
    out = {"n_targets": result.n_targets, "score": result.score, "cam_mean": float(result.cam.mean()),
           "cam_std": float(result.cam.std()), "energy_in_prediction": energy_inside(result.cam, pred),
           "prediction_area": float(pred.mean())}
    if ground_truth is not None:
        gt = np.asarray(ground_truth) > 0
        out["energy_in_ground_truth"] = energy_inside(result.cam, gt)
        out["ground_truth_area"] = float(gt.mean())
    return out


def cam_summaries(cams: Mapping[str, Mapping[str, CAMResult]], records: Sequence = ()) -> dict[str, dict]:
    """:func:`cam_summary` of every map: ``{model label: {image name: summary}}`` (ground truth from the records
    that carry ``instances``)."""
    truth = {r.name: r.instances for r in records}
    out: dict[str, dict] = {}
    for image, by_model in cams.items():
        for label, result in by_model.items():
            out.setdefault(label, {})[image] = cam_summary(result, truth.get(image))
    return out


def cam_table(cams: Mapping[str, Mapping[str, CAMResult]], records: Sequence = ()):
    """:func:`cam_summaries` as a DataFrame: one row per (model, image) with ``method``, ``layer`` and ``target``."""
    import pandas as pd

    summaries = cam_summaries(cams, records)
    rows = [{"model": label, "image": image, "method": cams[image][label].method,
             "layer": cams[image][label].layer, "target": cams[image][label].target, **values}
            for label, by_image in summaries.items() for image, values in by_image.items()]
    return pd.DataFrame(rows)
