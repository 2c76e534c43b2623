"""Fine-tuning under DDP on a CPU: two gloo processes train together and only rank 0 evaluates and saves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from semkit.train import FinetuneConfig, finetune
    config = FinetuneConfig(synthetic_images=8, synthetic_size=64, crop_size=64, crops_per_image=2, batch_size=1,
                            threshold_grid="none", enable_progress_bar=False, accelerator="cpu", devices=2,
                            strategy="ddp", epochs=1, output_dir=sys.argv[1], save_predictions=False)
    results = finetune(config)
    with open(os.path.join(sys.argv[1], f"rank{os.environ['RANK']}.json"), "w") as f:
        json.dump({"results": results, "world": int(os.environ["WORLD_SIZE"])}, f)
    """
)


@pytest.mark.slow
def test_finetune_ddp_on_cpu_with_two_gloo_processes(tmp_path):
    from semkit.metrics import aji_plus
    from semkit.models import load_model
    from semkit.models.postprocess import combine_detections
    from semkit.train import FinetuneConfig, load_splits
    from semkit.train.thresholds import predict_detections

    script = tmp_path / "ddp_finetune.py"
    script.write_text(SCRIPT)
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script),
           str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rank0, rank1 = (json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1))
    assert rank0["world"] == rank1["world"] == 2
    assert rank1["results"] == {"global_rank": 1}  # only rank 0 evaluates, saves and writes results.json
    rep = rank0["results"]["repeats"][0]
    assert json.loads((out / "results.json").read_text())["test"] == pytest.approx(rank0["results"]["test"])
    # the model rank 0 saved reproduces the test AJI+ it reported
    model, thresholds, _ = load_model(rep["model_dir"])
    test = load_splits(FinetuneConfig(**rank0["results"]["config"]))["test"]
    scores = [aji_plus(r.instances, combine_detections(d, r.image.shape, thresholds)[0])
              for r, d in zip(test, predict_detections(model, [r.image for r in test]), strict=True)]
    assert sum(scores) / len(scores) == pytest.approx(rep["test"]["aji_plus"], abs=1e-9)
