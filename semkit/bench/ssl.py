"""``semkit bench ssl``: FCMAE throughput of the dense (masked emulation) and MinkowskiEngine (sparse) backends.

Both backends get the same weights and the same batches and masks; per mask ratio they are timed interleaved,
repeat by repeat, so a busy shared CPU slows them alike. Two numbers per backend and ratio: images/s of the
encoder forward alone (what sparse computation saves) and of a full training step (mask, encoder, decoder, loss,
backward). The dense backend computes every position whatever the ratio; the sparse one only visible positions,
so its advantage grows with the ratio and with the image size, and depends on the device (MinkowskiEngine's
CPU kernels are scatter/gather loops, its GPU kernels are what the ConvNeXt V2 paper timed).
"""

from __future__ import annotations

import gc
import time

import numpy as np
import torch


def bench_ssl(
    backbone: str = "convnextv2_atto",
    crop_size: int = 224,
    batch_size: int = 8,
    ratios: tuple[float, ...] = (0.5, 0.75),
    repeats: int = 5,
    backends: tuple[str, ...] = ("dense", "minkowski"),
    decoder_dim: int = 512,
    seed: int = 0,
    echo=print,
) -> dict:
    """Time FCMAE encoder forwards and training steps per backend and mask ratio.

    Args:
        backbone: ConvNeXt V2 encoder.
        crop_size: square input side (a multiple of 32).
        batch_size: images per step.
        ratios: mask ratios.
        repeats: timed repeats per backend and ratio (after one warm-up); the median is kept.
        backends: ``"dense"`` and/or ``"minkowski"``; an unavailable MinkowskiEngine is reported, not fatal.
        decoder_dim: FCMAE decoder width (512 as in the paper).
        seed: weights, batch and masks.
        echo: where to print the table (``None`` = silent).

    Returns:
        ``{"rows": [{"backend", "mask_ratio", "encoder_images_per_s", "train_images_per_s", "encoder_ms",
        "train_step_ms"}], "skipped": {backend: reason}, "settings": {...}, "max_abs_diff": {ratio: float}}``
        where ``max_abs_diff`` compares the two backends' encoder outputs when both ran.
    """
    from semkit.ssl.fcmae import FCMAE
    from semkit.ssl.sparse import minkowski_status

    torch.manual_seed(seed)
    models, skipped = {}, {}
    base = FCMAE(backbone, decoder_dim=decoder_dim)
    for name in backends:
        if name == "dense":
            models[name] = base
        elif name == "minkowski":
            ok, why = minkowski_status()
            if not ok:
                skipped[name] = why
                continue
            sparse = FCMAE(backbone, decoder_dim=decoder_dim, backend="minkowski")
            sparse.load_state_dict(_sparse_state(base, sparse))
            models[name] = sparse
        else:
            raise KeyError(f"unknown backend {name!r}; choose dense or minkowski")
    images = torch.randn(batch_size, 1, crop_size, crop_size, generator=torch.Generator().manual_seed(seed))
    grid = (crop_size // 32, crop_size // 32)
    rows, diffs = [], {}
    for ratio in ratios:
        mask = base.random_mask(batch_size, grid, ratio, generator=torch.Generator().manual_seed(seed))
        enc = {n: [] for n in models}
        step = {n: [] for n in models}
        outputs = {}
        for k in range(repeats + 1):  # the first round warms up allocators and MinkowskiEngine's maps
            for name, model in models.items():
                model.train()
                gc.disable()
                try:
                    t0 = time.perf_counter()
                    with torch.no_grad():
                        out = model.forward_encoder(images, mask)
                    t1 = time.perf_counter()
                    loss, _, _ = model(images, mask=mask)
                    loss.backward()
                    t2 = time.perf_counter()
                finally:
                    gc.enable()
                model.zero_grad(set_to_none=True)
                outputs[name] = out
                if k:
                    enc[name].append(t1 - t0)
                    step[name].append(t2 - t1)
        if len(outputs) == 2:
            diffs[ratio] = float((outputs["dense"] - outputs["minkowski"]).abs().max())
        for name in models:
            e, s = float(np.median(enc[name])), float(np.median(step[name]))
            rows.append({"backend": name, "mask_ratio": ratio, "encoder_images_per_s": batch_size / e,
                         "train_images_per_s": batch_size / s, "encoder_ms": 1e3 * e, "train_step_ms": 1e3 * s})
    settings = {"backbone": backbone, "crop_size": crop_size, "batch_size": batch_size, "repeats": repeats,
                "decoder_dim": decoder_dim,
                "threads": torch.get_num_threads(), "device": "cpu"}
    result = {"rows": rows, "skipped": skipped, "settings": settings, "max_abs_diff": diffs}
    if echo is not None:
        echo(format_table(result))
    return result


def _sparse_state(dense_model, sparse_model) -> dict:
    """The dense FCMAE's weights in the sparse FCMAE's names (encoder converted, decoder copied)."""
    from semkit.ssl.sparse import timm_to_sparse

    state = {k: v for k, v in dense_model.state_dict().items() if not k.startswith("encoder.")}
    enc = timm_to_sparse(dense_model.encoder.model.state_dict(), sparse_model.encoder.state_dict())
    state.update({f"encoder.{k}": v for k, v in enc.items()})
    return state


def format_table(result: dict) -> str:
    """The benchmark as a text table, backends side by side per mask ratio."""
    s = result["settings"]
    lines = [f"FCMAE {s['backbone']}, {s['batch_size']} x {s['crop_size']}^2 crops, {s['threads']} CPU threads, "
             f"median of {s['repeats']}",
             f"{'mask ratio':>10} | {'backend':>9} | {'encoder img/s':>13} | {'train step img/s':>16}"]
    for r in result["rows"]:
        lines.append(f"{r['mask_ratio']:>10.2f} | {r['backend']:>9} | {r['encoder_images_per_s']:>13.1f} | "
                     f"{r['train_images_per_s']:>16.1f}")
    for ratio, d in result["max_abs_diff"].items():
        lines.append(f"ratio {ratio}: max |dense - sparse| encoder output = {d:.2e}")
    for name, why in result["skipped"].items():
        lines.append(f"{name}: skipped ({why})")
    return "\n".join(lines)
