"""``semkit bench predict``: seconds per 1920 × 1200 image for Mask R-CNN on the CPU, PyTorch vs onnxruntime.

Backbones (ConvNeXtV2-Pico and ResNet-50 by default) and runtimes are timed side by side in one run,
interleaved repeat by repeat, so a busy shared CPU slows every variant alike. Each timing is a full
:func:`semkit.inference.predict_image` call (forward pass, the study's post-processing into a label map); the
forward pass alone is reported too. Without a checkpoint the models have random weights: their detections are
meaningless but numerous (up to ``detections_per_img``), which is the expensive case for the mask head and
the post-processing. For reference, the SSL study reports about 9 s per image for Pico in ONNX on a 6-core
desktop CPU.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np


def bench_predict(
    backbones: tuple[str, ...] = ("convnextv2_pico", "resnet50"),
    runtimes: tuple[str, ...] = ("torch", "onnx"),
    shape: tuple[int, int] = (1200, 1920),
    repeats: int = 3,
    image: str | Path | None = None,
    checkpoints: dict[str, str] | None = None,
    threads: int | None = None,
    seed: int = 0,
    model_kwargs: dict | None = None,
    echo=print,
) -> dict:
    """Time Mask R-CNN prediction per image for every backbone × runtime.

    Args:
        backbones: encoder names (random weights unless ``checkpoints`` names a model folder for them).
        runtimes: ``"torch"`` and/or ``"onnx"`` (exported once per backbone, export time reported).
        shape: (H, W) of the synthetic test image (ignored with ``image``).
        repeats: timed runs per variant after one warm-up run; the median is reported.
        image: optional image file to time on instead of a synthetic SEM image.
        checkpoints: backbone → model folder (:func:`semkit.models.io.save_model`).
        threads: CPU threads for both runtimes (``None``: their defaults, all cores).
        seed: seed of the random weights and the synthetic image.
        model_kwargs: :class:`semkit.models.MaskRCNNConfig` overrides for the random models (defaults: the
            particle defaults, up to 500 detections).
        echo: where to print the report (``None`` = silent).

    Returns:
        ``{"shape", "repeats", "threads", "variants": {"<backbone>/<runtime>": {"median_s", "min_s",
        "forward_median_s", "detections", "particles"}}, "export_s": {backbone: s}}``.
    """
    import torch

    from semkit.inference.onnx import OnnxDetector, export_onnx
    from semkit.inference.predict import TorchDetector, predict_image
    from semkit.models import build_maskrcnn
    from semkit.models.io import load_model

    if threads is not None:
        torch.set_num_threads(int(threads))
    img = _test_image(image, shape, seed)
    detectors: dict[str, object] = {}
    export_s: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in backbones:
            torch.manual_seed(seed)
            if checkpoints and name in checkpoints:
                model, _, _ = load_model(checkpoints[name])
            else:
                model = build_maskrcnn(**{**(model_kwargs or {}), "backbone": name, "init": "random"})
            if "torch" in runtimes:
                detectors[f"{name}/torch"] = TorchDetector(model, "cpu")
            if "onnx" in runtimes:
                t0 = time.perf_counter()
                path = export_onnx(model, Path(tmp) / f"{name}.onnx")
                export_s[name] = time.perf_counter() - t0
                detectors[f"{name}/onnx"] = OnnxDetector(path, threads=threads)
        total = {k: [] for k in detectors}
        forward = {k: [] for k in detectors}
        counts: dict[str, tuple[int, int]] = {}
        for k, det in detectors.items():  # warm-up (first-call allocations, lazy initialisation)
            timed = _Timed(det)
            pred = predict_image(timed, img, resize=False, crop_databar=False)
            counts[k] = (timed.detections, pred.n_particles)
        for _ in range(repeats):
            for k, det in detectors.items():
                timed = _Timed(det)
                t0 = time.perf_counter()
                predict_image(timed, img, resize=False, crop_databar=False)
                total[k].append(time.perf_counter() - t0)
                forward[k].append(timed.seconds)
    variants = {
        k: {"median_s": float(np.median(total[k])), "min_s": float(np.min(total[k])),
            "forward_median_s": float(np.median(forward[k])), "detections": counts[k][0],
            "particles": counts[k][1]}
        for k in detectors
    }
    result = {"shape": tuple(img.shape), "repeats": repeats,
              "threads": threads if threads is not None else torch.get_num_threads(),
              "variants": variants, "export_s": export_s}
    if echo is not None:
        echo(f"Mask R-CNN prediction on one {img.shape[1]} x {img.shape[0]} image, CPU, "
             f"{result['threads']} threads, median of {repeats} runs after a warm-up, variants interleaved"
             + ("" if checkpoints else "; random weights"))
        for k, v in variants.items():
            echo(f"  {k:28s} {v['median_s']:7.2f} s/image (forward {v['forward_median_s']:6.2f} s, "
                 f"min {v['min_s']:6.2f} s; {v['detections']} detections, {v['particles']} particles)")
        for name, s in export_s.items():
            echo(f"  ONNX export {name}: {s:.1f} s")
    return result


class _Timed:
    """Detector wrapper that records the time spent in the forward pass."""

    def __init__(self, detector):
        self.detector = detector
        self.thresholds = getattr(detector, "thresholds", None)
        self.seconds = 0.0
        self.detections = 0

    def __call__(self, image):
        t0 = time.perf_counter()
        det = self.detector(image)
        self.seconds += time.perf_counter() - t0
        self.detections += len(det)
        return det


def _test_image(image, shape, seed) -> np.ndarray:
    if image is not None:
        from semkit.data.io import load_image

        return load_image(image)[0]
    from semkit.data.synthetic import SyntheticConfig, make_sem_record

    # a dense powder: several hundred particles, the case that loads the mask head and post-processing
    config = SyntheticConfig(height=shape[0], width=shape[1], n_particles=(400, 500))
    return make_sem_record(seed, config).image


if __name__ == "__main__":  # pragma: no cover
    bench_predict()
