"""Run one notebook through papermill into a run folder."""

from __future__ import annotations

import contextlib
import json
import logging
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
    log_file: str | Path | None = None,
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
        log_file: also write the notebook's stdout and stderr to this file as the cells run (papermill's
            ``stdout_file``/``stderr_file``), so a long or killed run can be followed and diagnosed.

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
    with contextlib.ExitStack() as stack:
        stack.enter_context(_quiet_false_parameter_warnings(nb))
        log = stack.enter_context(open(log_file, "a", encoding="utf-8")) if log_file is not None else None
        pm.execute_notebook(
            str(nb),
            str(out),
            parameters=params,
            cwd=str(nb.resolve().parent),
            kernel_name="python3",
            execution_timeout=timeout_s,
            log_output=log_output,
            stdout_file=log,
            stderr_file=log,
            progress_bar=False,
            config=_kernel_config(),
        )
    (run_dir / "timing.json").write_text(json.dumps({"wall_s": time.perf_counter() - start}))
    return out


class _DeclaredParameterFilter(logging.Filter):
    """Drop papermill's false alarms about parameters the notebook does declare.

    papermill's inspector cannot parse annotated lines such as ``x: str | None = None`` (or comments with
    parentheses): it warns "Unable to parse line" and then "Passed unknown parameter" for valid parameters.
    Warnings about names that really are unknown still show.
    """

    def __init__(self, declared: set[str]):
        super().__init__()
        self.declared = declared

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("Unable to parse line"):
            return False
        return not (message.startswith("Passed unknown parameter: ")
                    and message.removeprefix("Passed unknown parameter: ") in self.declared)


@contextlib.contextmanager
def _quiet_false_parameter_warnings(notebook: Path):
    from semkit.batch.spec import notebook_parameters

    try:
        declared = set(notebook_parameters(notebook))
    except ValueError:  # no parameters cell: papermill injects at the top and warns as it should
        yield
        return
    filt = _DeclaredParameterFilter(declared)
    loggers = [logging.getLogger("papermill"), logging.getLogger("papermill.translators")]
    for lg in loggers:
        lg.addFilter(filt)
    try:
        yield
    finally:
        for lg in loggers:
            lg.removeFilter(filt)


def _kernel_config():
    """Kernel-manager settings: encrypt the local kernel connection (CurveZMQ) when pyzmq can, which also keeps
    ipykernel >= 7.3 from printing its "running over TCP without encryption" warning at every run."""
    import zmq
    from traitlets.config import Config

    return Config({"KernelManager": {"transport_encryption": "auto" if zmq.has("curve") else "disabled"}})


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
