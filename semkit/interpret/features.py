"""Feature maps after the GRN layers of a ConvNeXt V2 encoder (η1…η4 of the SSL study's Fig. 5).

ConvNeXt V2 puts a Global Response Normalization (GRN) layer inside the inverted-bottleneck MLP of every block
(``fc1 → GELU → GRN → fc2``), so the GRN output has the *expanded* width: four times the stage width, e.g.
160, 320, 640, 1280 channels for ``convnextv2_atto`` (stage widths 40, 80, 160, 320) and 256, 512, 1024, 2048
for ``convnextv2_pico`` (64, 128, 256, 512), at strides 4, 8, 16, 32. These are the activations whose
collapse GRN was introduced to prevent (Woo et al., Fig. 3), so they are what we look at.

:class:`GRNCapture` puts one forward hook on the GRN of the **last block of each stage**; the model is run in
eval mode under ``torch.no_grad`` and its weights are never touched. The hooks find the layers by module type
inside the encoder's stages (:func:`encoder_stages`), so the same code works on a bare
:func:`semkit.models.create_backbone` encoder, on the encoder inside a Mask R-CNN (``backbone.body``) and on an
smp U-Net's ``tu-`` encoder (timm ``FeatureListNet``, ``stages_0`` … ``stages_3``).

:func:`select_channels` draws the channels to show from ``numpy.random.default_rng([seed, stage])``: the
choice depends only on the seed, the stage and the channel count, so every checkpoint of the same architecture
shows the same channels and the maps can be compared side by side.

Reference: Woo et al., "ConvNeXt V2: Co-designing and Scaling ConvNets with Masked Autoencoders", CVPR 2023.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

STAGES = (1, 2, 3, 4)
#: Type name of timm's GRN layer (``timm.layers.grn.GlobalResponseNorm``).
GRN_TYPE = "GlobalResponseNorm"


def encoder_stages(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The four stages of the (outermost) ConvNeXt or ResNet encoder inside ``model``, as ``(name, module)``.

    Recognised layouts, searched outermost first: timm ConvNeXt (``stages.0`` … ``stages.3``), timm
    ``FeatureListNet`` as used by smp ``tu-`` encoders (``stages_0`` … ``stages_3``), ResNet (``layer1`` …
    ``layer4``; timm, torchvision and smp).

    Raises:
        ValueError: ``model`` holds no such encoder.
    """
    for prefix, module in model.named_modules():
        dot = f"{prefix}." if prefix else ""
        stages = getattr(module, "stages", None)
        if isinstance(stages, nn.Sequential | nn.ModuleList) and len(stages) == 4:
            return [(f"{dot}stages.{i}", stage) for i, stage in enumerate(stages)]
        children = dict(module.named_children())
        if all(f"stages_{i}" in children for i in range(4)):
            return [(f"{dot}stages_{i}", children[f"stages_{i}"]) for i in range(4)]
        if all(f"layer{i}" in children for i in range(1, 5)):
            return [(f"{dot}layer{i}", children[f"layer{i}"]) for i in range(1, 5)]
    raise ValueError(f"no four-stage ConvNeXt or ResNet encoder found in {type(model).__name__}")


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode inside the block; on exit every submodule gets back its own train/eval flag."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes.items():
            module.training = training


def check_stages(stages: Sequence[int]) -> tuple[int, ...]:
    """Validate stage numbers (1-based, η1…η4); raise ``ValueError`` listing the valid ones."""
    stages = tuple(int(s) for s in stages)
    bad = [s for s in stages if s not in STAGES]
    if bad or not stages or len(set(stages)) != len(stages):
        raise ValueError(f"stages must be distinct values from {STAGES}, got {stages}")
    return stages


def grn_layers(model: nn.Module, stages: Sequence[int] = STAGES) -> dict[int, tuple[str, nn.Module]]:
    """The GRN layer of the last block of each requested stage: ``{stage: (qualified name, module)}``.

    Args:
        model: anything holding a ConvNeXt V2 encoder (see :func:`encoder_stages`).
        stages: 1-based stage numbers.

    Raises:
        ValueError: bad stage numbers, or a stage without GRN (ConvNeXt V1, ResNet).
    """
    stages = check_stages(stages)
    all_stages = encoder_stages(model)
    out = {}
    for s in stages:
        name, stage = all_stages[s - 1]
        found = [(n, m) for n, m in stage.named_modules() if type(m).__name__ == GRN_TYPE]
        if not found:
            raise ValueError(f"stage {s} ({name}) has no GRN layer: feature maps after GRN need a ConvNeXt V2 "
                             f"encoder, got {type(stage).__name__}")
        sub, module = found[-1]  # modules are listed in forward order: the last one is in the last block
        out[s] = (f"{name}.{sub}", module)
    return out


class GRNCapture:
    """Context manager: forward hooks on the GRN of the last block of each stage; removed on exit.

    Attributes:
        layers: ``{stage: (name, module)}`` from :func:`grn_layers`.
        features: ``{stage: tensor}`` -- the latest GRN output of each stage, detached, on the CPU.
        calls: ``{stage: count}`` -- how often each hook fired (one forward pass = once per stage).

    Example::

        with GRNCapture(encoder) as cap:
            encoder(x)
        cap.features[1].shape  # (B, 4 * C_1, H / 4, W / 4)
    """

    def __init__(self, model: nn.Module, stages: Sequence[int] = STAGES):
        self.layers = grn_layers(model, stages)
        self.features: dict[int, torch.Tensor] = {}
        self.calls: dict[int, int] = {s: 0 for s in self.layers}
        self._handles: list = []

    def _hook(self, stage: int):
        def save(_module, _inputs, output):
            self.features[stage] = output.detach().float().cpu()
            self.calls[stage] += 1

        return save

    def __enter__(self) -> GRNCapture:
        self._handles = [module.register_forward_hook(self._hook(s)) for s, (_, module) in self.layers.items()]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def as_batch(images) -> torch.Tensor:
    """(B, 1, H, W) float32 tensor from an (H, W) array, a list of same-sized (H, W) arrays or a tensor."""
    if isinstance(images, torch.Tensor):
        x = images.float()
    elif isinstance(images, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    else:
        x = torch.from_numpy(np.stack([np.asarray(im, dtype=np.float32) for im in images]))
    while x.dim() < 4:
        x = x.unsqueeze(0) if x.dim() == 2 else x.unsqueeze(1)
    if x.dim() != 4 or x.shape[1] != 1:
        raise ValueError(f"expected grayscale images (H, W), (B, H, W) or (B, 1, H, W), got {tuple(x.shape)}")
    return x


@torch.no_grad()
def capture_features(encoder: nn.Module, images, stages: Sequence[int] = STAGES,
                     normalise_input: bool = True) -> dict[int, np.ndarray]:
    """GRN outputs of the last block of each stage for a batch of images (one forward pass, eval mode).

    Args:
        encoder: a module that runs the encoder on ``(B, 1, H, W)`` input (a :func:`create_backbone` model,
            ``maskrcnn.backbone.body``, ``unet.encoder``); its train/eval mode is restored afterwards.
        images: see :func:`as_batch`; values in [0, 1].
        stages: 1-based stages to capture.
        normalise_input: normalise like fine-tuning and FCMAE do (:func:`semkit.ssl.fcmae.normalise`: timm's
            grayscale ImageNet statistics) -- right for Mask R-CNN and SSL encoders; ``False`` for
            U-Net encoders, which are trained on raw [0, 1] input.

    Returns:
        ``{stage: float32 array (B, 4 * C_s, floor(H / 2^(s+1)), floor(W / 2^(s+1)))}`` for ConvNeXt (its
        stem and downsampling layers are unpadded strided convolutions).

    Raises:
        RuntimeError: a hook fired more or less than once per forward pass (a stage skipped or re-entered).
    """
    from semkit.ssl.fcmae import normalise

    x = as_batch(images)
    device = next(encoder.parameters()).device
    x = normalise(x) if normalise_input else x
    with eval_mode(encoder), GRNCapture(encoder, stages) as cap:
        encoder(x.to(device))
    if any(n != 1 for n in cap.calls.values()):
        raise RuntimeError(f"expected one GRN output per stage, got call counts {cap.calls}")
    return {s: cap.features[s].numpy() for s in cap.layers}


def select_channels(n_total: int, n: int = 16, seed: int = 0, stage: int = 1) -> np.ndarray:
    """``n`` distinct channel indices out of ``n_total``, sorted, fixed by ``(seed, stage)``.

    The draw depends only on ``(seed, stage, n_total, n)``, never on a checkpoint, so every checkpoint of one
    architecture shows the same channels. ``n >= n_total`` returns all channels.
    """
    if n_total < 1 or n < 1:
        raise ValueError(f"need n_total >= 1 and n >= 1, got n_total={n_total}, n={n}")
    rng = np.random.default_rng([int(seed), int(stage)])
    return np.sort(rng.choice(n_total, size=min(n, n_total), replace=False))


def channel_selection(features: Mapping[int, np.ndarray], n: int = 16, seed: int = 0) -> dict[int, np.ndarray]:
    """:func:`select_channels` for every stage of a capture (``{stage: (..., C, h, w)}``)."""
    return {s: select_channels(f.shape[-3], n, seed, s) for s, f in features.items()}


def capture_all(encoders: Sequence, records: Sequence, stages: Sequence[int] = STAGES,
                progress: bool = True) -> dict[str, dict[str, dict[int, np.ndarray]]]:
    """GRN feature maps of every available encoder on every image, one image at a time.

    Args:
        encoders: :class:`semkit.interpret.Encoder` objects; unavailable ones (``module is None``) are skipped.
        records: images as :class:`semkit.data.SEMRecord` (``.image`` (H, W) in [0, 1], ``.name``).
        stages: 1-based stages.
        progress: show a tqdm bar.

    Returns:
        ``{encoder label: {image name: {stage: (4 * C_s, h, w) float32 array}}}``.
    """
    from tqdm.auto import tqdm

    out: dict[str, dict[str, dict[int, np.ndarray]]] = {}
    jobs = [(e, r) for e in encoders if e.module is not None for r in records]
    for enc, rec in tqdm(jobs, desc="feature maps", disable=not progress):
        feats = capture_features(enc.module, rec.image, stages, normalise_input=enc.normalise_input)
        out.setdefault(enc.label, {})[rec.name] = {s: f[0] for s, f in feats.items()}
    return out
