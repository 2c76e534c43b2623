"""``semkit bench train``: where a Mask R-CNN training step spends its time on this machine, lever by lever.

One step = a batch of random training crops (the real :class:`semkit.train.data.InstanceDataset` with its
augmentation, on BAM TiO2 when the folder is given, else synthetic SEM images of similar particle density),
the forward pass with its losses, the backward pass and the AdamW update. Forward time is split by module with
hooks: the encoder, the feature pyramid, the RPN (anchors, proposals, its losses), and inside the RoI heads the
box RoI pooling, box head, box predictor, mask RoI pooling, mask head, mask predictor and the confidence head;
"roi other" is the rest of the RoI heads (proposal matching and sampling, losses). Backward and optimizer are
timed as wholes (autograd interleaves the modules' backward kernels).

Variants (:data:`VARIANTS`) are configurations of the same step -- Mask R-CNN settings (RoI sampling, head
widths, channels-last memory layout), torch threads -- timed side by side in one run, interleaved step by step on identical batches,
so that a busy shared CPU slows all of them alike; the first step of each variant is a warm-up and not counted.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from pathlib import Path

#: Named configurations of a training step: ``maskrcnn`` overrides :class:`semkit.models.MaskRCNNConfig`;
#: ``threads`` (torch intra-op threads) acts on the step. ``cpu6ep`` is what the 6-epoch
#: CPU recipe (BENCHMARKS.md section 1) trained with; ``defaults`` are the current ``MaskRCNNConfig`` defaults.
VARIANTS: dict[str, dict] = {
    "cpu6ep": {"maskrcnn": {"box_batch_size_per_image": 64, "detections_per_img": 200}},
    "defaults": {"maskrcnn": {}},
    "rois256": {"maskrcnn": {"box_batch_size_per_image": 256}},
    "rois256_fpn128": {"maskrcnn": {"box_batch_size_per_image": 256, "fpn_channels": 128}},
    "rois256_mask128x2": {"maskrcnn": {"box_batch_size_per_image": 256, "mask_head_channels": 128,
                                       "mask_head_depth": 2}},
    "rois256_fpn128_mask128x2": {"maskrcnn": {"box_batch_size_per_image": 256, "fpn_channels": 128,
                                              "mask_head_channels": 128, "mask_head_depth": 2}},
    "rois256_channels_last": {"maskrcnn": {"box_batch_size_per_image": 256, "channels_last": True}},
    "rois256_threads1": {"maskrcnn": {"box_batch_size_per_image": 256}, "threads": 1},
    "rois256_threads2": {"maskrcnn": {"box_batch_size_per_image": 256}, "threads": 2},
}
#: Modules timed in the forward pass: label → attribute path from the model.
COMPONENTS = {
    "transform": "transform",
    "encoder": "backbone.body",
    "fpn": "backbone.fpn",
    "rpn": "rpn",
    "roi heads": "roi_heads",
    "box pool": "roi_heads.box_roi_pool",
    "box head": "roi_heads.box_head",
    "box predictor": "roi_heads.box_predictor",
    "mask pool": "roi_heads.mask_roi_pool",
    "mask head": "roi_heads.mask_head",
    "mask predictor": "roi_heads.mask_predictor",
    "confidence head": "roi_heads.uncertainty_head",
}
ROI_PARTS = ("box pool", "box head", "box predictor", "mask pool", "mask head", "mask predictor", "confidence head")


def _module(model, path: str):
    obj = model
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


class _ForwardTimer:
    """Accumulates wall time per named module through forward pre-hooks and hooks."""

    def __init__(self, model):
        self.seconds: dict[str, float] = defaultdict(float)
        self._start: dict[str, list[float]] = defaultdict(list)
        self._handles = []
        for label, path in COMPONENTS.items():
            module = _module(model, path)
            if module is None:
                continue
            self._handles.append(module.register_forward_pre_hook(self._pre(label)))
            self._handles.append(module.register_forward_hook(self._post(label)))

    def _pre(self, label):
        def hook(module, args):
            self._start[label].append(time.perf_counter())
        return hook

    def _post(self, label):
        def hook(module, args, output):
            self.seconds[label] += time.perf_counter() - self._start[label].pop()
        return hook

    def take(self) -> dict[str, float]:
        out = dict(self.seconds)
        self.seconds.clear()
        return out

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def _records(dataset: str | Path | None, crop_size: int, seed: int):
    """Training records: the BAM training split, or synthetic 512-px images with BAM-like particle density."""
    if dataset is not None:
        from semkit.train.data import bam_split

        return bam_split(dataset, min_area_px=10)["train"], f"BAM TiO2 training split ({dataset})"
    from semkit.data.synthetic import SyntheticConfig, make_sem_dataset

    # BAM holds ~13 particles per 256-px crop (radius 8-20 px); the same density here
    cfg = SyntheticConfig(height=512, width=512, radius_px=(8.0, 20.0), n_particles=(40, 70))
    return make_sem_dataset(8, seed=seed, config=cfg), "synthetic SEM images (512 px, BAM-like density)"


def bench_train(backbones: tuple[str, ...] = ("convnextv2_pico", "resnet50"),
                variants: tuple[str, ...] = ("cpu6ep", "defaults", "rois256", "rois256_fpn128",
                                             "rois256_channels_last"),
                dataset: str | Path | None = None, crop_size: int = 256, batch_size: int = 2, steps: int = 4,
                threads: int | None = None, uncertainty: bool = False, seed: int = 0, echo=print) -> dict:
    """Time training steps of Mask R-CNN for every backbone × variant, interleaved on identical batches.

    Args:
        backbones: encoder names (random initialisation).
        variants: names in :data:`VARIANTS`.
        dataset: a BAM TiO2 folder (its training split is cropped); ``None`` = synthetic images.
        crop_size: side of the training crops.
        batch_size: crops per step.
        steps: timed steps per variant (after one warm-up step each).
        threads: torch threads for variants that do not set their own (``None``: torch's default).
        uncertainty: include the confidence head.
        seed: seed of the weights and of the crops.
        echo: where to print the table (``None`` = silent).

    Returns:
        ``{"data": str, "crop_size", "batch_size", "steps", "data_ms_per_step", "variants": {"<backbone>/<variant>":
        {"step_s" (median), "steps_per_s", "forward_ms": {component: median ms}, "backward_ms", "optimizer_ms",
        "positives_per_image"}}}``.

    Raises:
        KeyError: an unknown variant name (the message lists them).
    """
    import torch

    from semkit.models import build_maskrcnn
    from semkit.train.data import DataConfig, InstanceDataset, collate

    for name in variants:
        if name not in VARIANTS:
            raise KeyError(f"unknown variant {name!r}; choose from: {', '.join(VARIANTS)}")
    default_threads = torch.get_num_threads() if threads is None else int(threads)
    records, source = _records(dataset, crop_size, seed)
    data = InstanceDataset(records, DataConfig(crop_size=crop_size, crops_per_image=1, batch_size=batch_size))
    torch.manual_seed(seed)
    batches, data_s = [], []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        idx = torch.randint(0, len(data), (batch_size,)).tolist()
        images, targets = collate([data[i] for i in idx])
        data_s.append(time.perf_counter() - t0)
        keys = ("boxes", "labels", "masks", "certain") if uncertainty else ("boxes", "labels", "masks")
        batches.append((images, [{k: t[k] for k in keys} for t in targets]))

    setups = {}
    for backbone in backbones:
        for name in variants:
            spec = VARIANTS[name]
            torch.manual_seed(seed)
            model = build_maskrcnn(**{**spec.get("maskrcnn", {}), "backbone": backbone, "init": "random",
                                      "uncertainty": uncertainty})
            model.train()
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
            setups[f"{backbone}/{name}"] = (model, opt, spec, _ForwardTimer(model))

    records_out = {key: defaultdict(list) for key in setups}
    for step, (images, targets) in enumerate(batches):
        for key, (model, opt, spec, timer) in setups.items():
            torch.set_num_threads(int(spec.get("threads", default_threads)))
            t0 = time.perf_counter()
            losses = model(list(images), [dict(t) for t in targets])
            loss = sum(losses.values())
            t1 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            t2 = time.perf_counter()
            opt.step()
            t3 = time.perf_counter()
            parts = timer.take()
            if step == 0:
                continue  # warm-up: first-call allocations, oneDNN primitive creation
            rec = records_out[key]
            rec["step"].append(t3 - t0)
            rec["forward"].append(t1 - t0)
            rec["backward"].append(t2 - t1)
            rec["optimizer"].append(t3 - t2)
            for label, seconds in parts.items():
                rec[f"fw:{label}"].append(seconds)
            heads = getattr(model.roi_heads, "last_positives", None)
            if heads is not None:
                rec["positives"].append(heads)
    torch.set_num_threads(default_threads)
    for _, _, _, timer in setups.values():
        timer.remove()

    def ms(values):
        return 1000 * statistics.median(values) if values else float("nan")

    result = {"data": source, "crop_size": crop_size, "batch_size": batch_size, "steps": steps,
              "threads": default_threads, "data_ms_per_step": ms(data_s[1:]), "variants": {}}
    for key, rec in records_out.items():
        fw = {label: ms(rec[f"fw:{label}"]) for label in COMPONENTS if rec.get(f"fw:{label}")}
        if "roi heads" in fw:
            fw["roi other"] = fw["roi heads"] - sum(fw.get(p, 0.0) for p in ROI_PARTS)
        step_s = statistics.median(rec["step"])
        result["variants"][key] = {
            "step_s": step_s, "steps_per_s": 1.0 / step_s, "forward_ms": fw, "backward_ms": ms(rec["backward"]),
            "optimizer_ms": ms(rec["optimizer"]),
            "positives_per_image": statistics.mean(rec["positives"]) if rec.get("positives") else None}
    if echo is not None:
        echo(format_train_bench(result))
    return result


def format_train_bench(result: dict) -> str:
    """The benchmark as a text table: one column per variant, one row per component (median ms per step)."""
    keys = list(result["variants"])
    rows = ["encoder", "fpn", "rpn", "box pool", "box head", "box predictor", "mask pool", "mask head",
            "mask predictor", "confidence head", "roi other", "transform"]
    lines = [f"Mask R-CNN training step: {result['batch_size']} crops of {result['crop_size']} px from {result['data']}; "
             f"median of {result['steps']} steps after a warm-up; data loading {result['data_ms_per_step']:.0f} ms "
             f"per step (not in the step time)"]
    width = max(16, *(len(k) + 2 for k in keys))
    lines.append(f"{'ms per step':<22}" + "".join(f"{k:>{width}}" for k in keys))
    for row in rows:
        values = [result["variants"][k]["forward_ms"].get(row) for k in keys]
        if all(v is None for v in values):
            continue
        lines.append(f"{'  fw ' + row:<22}" + "".join(f"{(v if v is not None else float('nan')):>{width}.0f}"
                                                     for v in values))
    for label, field in (("backward", "backward_ms"), ("optimizer", "optimizer_ms")):
        lines.append(f"{label:<22}" + "".join(f"{result['variants'][k][field]:>{width}.0f}" for k in keys))
    lines.append(f"{'step (s)':<22}" + "".join(f"{result['variants'][k]['step_s']:>{width}.2f}" for k in keys))
    lines.append(f"{'steps per s':<22}" + "".join(f"{result['variants'][k]['steps_per_s']:>{width}.3f}" for k in keys))
    pos = [result["variants"][k]["positives_per_image"] for k in keys]
    if any(p is not None for p in pos):
        lines.append(f"{'mask positives/img':<22}" + "".join(
            f"{(p if p is not None else float('nan')):>{width}.0f}" for p in pos))
    return "\n".join(lines)
