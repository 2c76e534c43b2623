"""Tiny throwaway notebooks and specs for the batch tests (imported as ``batch_helpers``).

The notebooks take a second to execute, so the batch machinery (grid expansion, resume, failures, kills,
collection, report) is tested without training anything. ``fake_pretrain`` and ``fake_finetune`` write the
metrics and per-image tables that notebooks 02 and 03 write, with values computed from their parameters, so
the report's study figures can be checked against hand-computed numbers.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import yaml
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

TOY_PARAMETERS = '''x: int = 0  # a grid value
y: str = "a"  # another grid value
fail_dir: str = ""  # the run fails while this folder holds a file named "<x>-<y>"
hold_file: str = ""  # the run waits while this file exists
output_dir: str = "."  # run folder
figures_dir: str = "."  # figures folder'''

TOY_CODE = '''import time
from pathlib import Path

from semkit.batch import write_results

print(f"toy run x={x} y={y}", flush=True)
while hold_file and Path(hold_file).exists():
    time.sleep(0.1)
if fail_dir and Path(fail_dir, f"{x}-{y}").exists():
    raise RuntimeError(f"run x={x} y={y} was made to fail")
Path(figures_dir, "toy.txt").write_text("figure")
write_results(output_dir, {"score": 10 * x + len(y), "nested": {"half": x / 2}, "tags": [x, y]})'''

FAKE_PRETRAIN_PARAMETERS = '''method: str = "fcmae"  # pretraining method
subset_fraction: float = 1.0  # share of a 100-image pool
seed: int = 0  # seed
output_dir: str = "."  # run folder'''

FAKE_PRETRAIN_CODE = '''from pathlib import Path

from semkit.batch import write_results

Path(output_dir, "encoder.pt").write_text(f"{method} {subset_fraction}")
write_results(output_dir, {"method": method, "n_train_images": round(100 * subset_fraction),
                           "encoder_path": str(Path(output_dir, "encoder.pt"))})'''

# AJI+ = 0.5 + 0.01 * seed, + 0.1 with an encoder (+ 0.001 per pretraining image), + 0.05 for pico
FAKE_FINETUNE_PARAMETERS = '''backbone: str = "convnextv2_atto"  # encoder
init: str = "random"  # random, imagenet or an encoder file
seed: int = 0  # seed
output_dir: str = "."  # run folder'''

FAKE_FINETUNE_CODE = '''from pathlib import Path

import pandas as pd

from semkit.batch import write_results

bonus = 0.0
if init == "imagenet":
    bonus = 0.05
elif init != "random":
    method, fraction = Path(init).read_text().split()
    bonus = 0.1 + 0.001 * round(100 * float(fraction))
aji = 0.5 + 0.01 * seed + bonus + (0.05 if backbone == "convnextv2_pico" else 0.0)
folder = Path(output_dir, "finetune", f"seed_{seed}")
folder.mkdir(parents=True, exist_ok=True)
pd.DataFrame({"method": "maskrcnn", "image": ["a", "b"], "aji_plus": [aji - 0.05, aji + 0.05]}).to_csv(
    folder / "test_per_image.csv", index=False)
write_results(output_dir, {"method": "maskrcnn", "test_aji_plus": aji, "test_ap": aji / 2})'''


def make_notebook(path: Path, parameters: str = TOY_PARAMETERS, code: str = TOY_CODE) -> Path:
    """Write a notebook with a ``parameters`` cell and one code cell."""
    nb = new_notebook(cells=[new_markdown_cell("# toy"), new_code_cell(parameters, metadata={"tags": ["parameters"]}),
                             new_code_cell(code)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def write_spec(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def toy_spec(tmp_path: Path, **extra) -> Path:
    """A 2 x 2 grid (x in 1, 2; y in a, bb) of the toy notebook; ``extra`` overrides spec keys."""
    make_notebook(tmp_path / "toy.ipynb")
    spec = {"name": "tiny", "notebook": "./toy.ipynb", "parameters": {"fail_dir": str(tmp_path / "fail")},
            "grid": {"x": [1, 2], "y": ["a", "bb"]}, "timeout_s": 60, **extra}
    return write_spec(tmp_path / "tiny.yaml", spec)


def study_spec(tmp_path: Path) -> Path:
    """Pretraining at two sizes x two seeds, fine-tuning per encoder and seed, plus baselines on two backbones."""
    make_notebook(tmp_path / "pretrain.ipynb", FAKE_PRETRAIN_PARAMETERS, FAKE_PRETRAIN_CODE)
    make_notebook(tmp_path / "finetune.ipynb", FAKE_FINETUNE_PARAMETERS, FAKE_FINETUNE_CODE)
    spec = {"name": "study", "description": "fake study", "timeout_s": 60, "stages": [
        {"name": "pretrain", "notebook": "./pretrain.ipynb", "grid": {"subset_fraction": [0.2, 0.8], "seed": [0, 1]}},
        {"name": "finetune", "notebook": "./finetune.ipynb",
         "parameters": {"init": "${pretrain.output_dir}/encoder.pt"}, "grid": {"seed": [0, 1]}},
        {"name": "baseline", "notebook": "./finetune.ipynb",
         "grid": {"init": ["random", "imagenet"], "backbone": ["convnextv2_atto", "convnextv2_pico"], "seed": [0, 1]}},
    ]}
    return write_spec(tmp_path / "study.yaml", spec)
