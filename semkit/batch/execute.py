"""Run one notebook through papermill into a run folder."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

#: The numbered notebooks shipped with semkit (``<repo>/notebooks``).
NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
RESULTS_FILE = "metrics.json"
_REQUEST_FILE = ".execute_request.json"
_ERROR_FILE = ".execute_error.json"


class NotebookExecutionError(RuntimeError):
    """A notebook run failed: a cell raised (``ename``, ``evalue`` and the notebook's ``traceback``, as papermill
    reports it), or papermill itself failed (``ename`` is the exception's type)."""

    def __init__(self, ename: str, evalue: str, traceback: list[str] | None = None, notebook: str = ""):
        self.ename, self.evalue, self.traceback = ename, evalue, list(traceback or [])
        tail = "\n".join(self.traceback[-3:])
        super().__init__(f"{notebook}: {ename}: {evalue}" + (f"\n{tail}" if tail else ""))


def execute_notebook(
    notebook: str | Path,
    run_dir: str | Path,
    parameters: dict[str, Any] | None = None,
    timeout_s: int = 1800,
    log_output: bool = False,
    log_file: str | Path | None = None,
) -> Path:
    """Execute ``notebook`` with papermill into ``run_dir``, in a process of its own.

    The notebook's ``output_dir`` parameter is set to ``run_dir`` (unless given), so its results file lands next
    to the executed copy. Relative paths inside the notebook resolve against the notebook's own folder, exactly
    as when a person opens it in Jupyter: the run's process (and so its kernel) starts there. The calling
    process's working directory is never changed: papermill changes the working directory of the whole process
    around a run and around every file it reads or writes, which from several threads at once leaves the
    process in the wrong folder (``make demo`` once looked for its batch under ``notebooks/``). One process per
    run makes any number of parallel runs safe.

    Args:
        notebook: path, or a bare name such as ``"01_dataset_curation"`` looked up in :data:`NOTEBOOK_DIR`.
        run_dir: folder for the executed notebook, ``parameters.json`` and the notebook's outputs.
        parameters: values injected after the ``parameters``-tagged cell.
        timeout_s: per-cell execution timeout.
        log_output: stream the notebook's output to this process's stderr (papermill ``--log-output``).
        log_file: also write the notebook's stdout and stderr to this file as the cells run (papermill's
            ``stdout_file``/``stderr_file``), so a long or killed run can be followed and diagnosed.

    Returns:
        Path of the executed notebook.

    Raises:
        FileNotFoundError: if the notebook does not exist.
        NotebookExecutionError: if a cell fails (the partially executed copy is kept) or papermill fails.
    """
    nb = Path(notebook)
    if not nb.suffix:
        nb = NOTEBOOK_DIR / f"{nb.name}.ipynb"
    if not nb.exists():
        available = ", ".join(sorted(p.stem for p in NOTEBOOK_DIR.glob("*.ipynb")))
        raise FileNotFoundError(f"notebook {nb} not found; shipped notebooks: {available}")
    nb = nb.resolve()
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    params = {"output_dir": str(run_dir), **(parameters or {})}
    (run_dir / "parameters.json").write_text(json.dumps(params, indent=2, default=str))
    out = run_dir / nb.name
    error_file = run_dir / _ERROR_FILE
    error_file.unlink(missing_ok=True)
    request = {"notebook": str(nb), "output": str(out), "parameters": params, "timeout_s": timeout_s,
               "log_output": log_output, "log_file": None if log_file is None else str(Path(log_file).resolve()),
               "error_file": str(error_file)}
    request_file = run_dir / _REQUEST_FILE
    request_file.write_text(json.dumps(request, default=str))
    start = time.perf_counter()
    code = "import sys; from semkit.batch.execute import main; main(sys.argv[1])"
    proc = subprocess.run([sys.executable, "-c", code, str(request_file)], cwd=nb.parent,
                          stdin=subprocess.DEVNULL, check=False)
    request_file.unlink(missing_ok=True)
    if proc.returncode != 0:
        try:
            error = json.loads(error_file.read_text())
        except (OSError, ValueError):
            error = {"ename": "RunProcessError", "evalue": f"the run's process exited with code {proc.returncode} "
                     "before reporting an error (killed, or out of memory?)"}
        raise NotebookExecutionError(error.get("ename", "Error"), error.get("evalue", ""), error.get("traceback"),
                                     nb.name)
    (run_dir / "timing.json").write_text(json.dumps({"wall_s": time.perf_counter() - start}))
    return out


def _execute_in_this_process(request: dict) -> None:
    """The run's own process: papermill in the current folder (the notebook's), the error written for the
    caller. Exits when the calling process disappears, so a killed driver leaves no run behind."""
    import papermill as pm

    parent = os.getppid()

    def watch_parent():
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(3)

    threading.Thread(target=watch_parent, daemon=True).start()
    nb = Path(request["notebook"])
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(_quiet_false_parameter_warnings(nb))
            log_file = request["log_file"]
            log = stack.enter_context(open(log_file, "a", encoding="utf-8")) if log_file else None
            pm.execute_notebook(
                str(nb),
                request["output"],
                parameters=request["parameters"],
                kernel_name="python3",
                execution_timeout=request["timeout_s"],
                log_output=request["log_output"],
                stdout_file=log,
                stderr_file=log,
                progress_bar=False,
                config=_kernel_config(),
            )
    except Exception as exc:  # reported to the caller, which raises NotebookExecutionError
        if hasattr(exc, "ename") and hasattr(exc, "evalue"):  # papermill.PapermillExecutionError: a cell failed
            error = {"ename": exc.ename, "evalue": str(exc.evalue), "traceback": list(exc.traceback or [])}
        else:
            error = {"ename": type(exc).__name__, "evalue": str(exc),
                     "traceback": traceback.format_exception(exc)}
        Path(request["error_file"]).write_text(json.dumps(error))
        sys.exit(1)


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


def main(request_file: str) -> None:
    """Entry point of a run's own process (see :func:`execute_notebook`)."""
    _execute_in_this_process(json.loads(Path(request_file).read_text()))
