"""Run one notebook through papermill into a run folder."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

#: The numbered notebooks shipped with semkit (``<repo>/notebooks``).
NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
RESULTS_FILE = "metrics.json"


def execute_notebook(
    notebook: str | Path,
    run_dir: str | Path,
    parameters: dict[str, Any] | None = None,
    timeout_s: int = 1800,
    log_output: bool = False,
) -> Path:
    """Execute ``notebook`` with papermill into ``run_dir``.

    The notebook's ``output_dir`` parameter is set to ``run_dir`` (unless given), so its results file lands next
    to the executed copy. Relative paths inside the notebook resolve against the notebook's own folder, exactly
    as when a person opens it in Jupyter.

    Args:
        notebook: path, or a bare name such as ``"01_dataset_curation"`` looked up in :data:`NOTEBOOK_DIR`.
        run_dir: folder for the executed notebook, ``parameters.json`` and the notebook's outputs.
        parameters: values injected after the ``parameters``-tagged cell.
        timeout_s: per-cell execution timeout.
        log_output: stream the notebook's output to the log (papermill ``--log-output``).

    Returns:
        Path of the executed notebook.

    Raises:
        FileNotFoundError: if the notebook does not exist.
        papermill.PapermillExecutionError: if a cell fails (the partially executed copy is kept).
    """
    import papermill as pm

    nb = Path(notebook)
    if not nb.suffix:
        nb = NOTEBOOK_DIR / f"{nb.name}.ipynb"
    if not nb.exists():
        available = ", ".join(sorted(p.stem for p in NOTEBOOK_DIR.glob("*.ipynb")))
        raise FileNotFoundError(f"notebook {nb} not found; shipped notebooks: {available}")
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    params = {"output_dir": str(run_dir), **(parameters or {})}
    (run_dir / "parameters.json").write_text(json.dumps(params, indent=2, default=str))
    out = run_dir / nb.name
    start = time.perf_counter()
    pm.execute_notebook(
        str(nb),
        str(out),
        parameters=params,
        cwd=str(nb.resolve().parent),
        kernel_name="python3",
        execution_timeout=timeout_s,
        log_output=log_output,
        progress_bar=False,
    )
    (run_dir / "timing.json").write_text(json.dumps({"wall_s": time.perf_counter() - start}))
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; None says "not available" explicitly
    if isinstance(value, Path):
        return str(value)
    return value


def write_results(output_dir: str | Path, results: dict[str, Any]) -> Path:
    """Write a notebook's scalar results to ``output_dir/metrics.json`` (merged with earlier writes)."""
    path = Path(output_dir) / RESULTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    merged = read_results(output_dir) if path.exists() else {}
    merged.update(_jsonable(results))
    path.write_text(json.dumps(merged, indent=2, sort_keys=True))
    return path


def read_results(output_dir: str | Path) -> dict[str, Any]:
    """Read ``output_dir/metrics.json``."""
    return json.loads((Path(output_dir) / RESULTS_FILE).read_text())
