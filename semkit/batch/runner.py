"""Execute the runs of a batch: locally on a thread pool, or as SLURM jobs through submitit.

Every run keeps its state in ``<run_dir>/status.json``; only ``"done"`` counts as finished, so a run that was
killed (state ``"running"``, or no status at all) or failed is executed again by the next :func:`run_batch`,
and finished runs are skipped unless ``force``. A failed run records its error and traceback and the others go
on; runs whose upstream run is not done are ``"blocked"``. Stages run in order, each waiting for the previous.
The batch folder holds ``batch.json`` (the expanded plan, read by ``collect`` and ``report``) and a ``.lock``
while a ``semkit batch run`` works on it, so two drivers never execute the same runs at once.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import socket
import time
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from semkit.batch.execute import RESULTS_FILE, execute_notebook
from semkit.batch.spec import BatchSpec, Run, load_spec, plan_batch

STATUS_FILE = "status.json"
LOG_FILE = "run.log"
BATCH_FILE = "batch.json"
LOCK_FILE = ".lock"
TIMING_FILE = "timing.json"
#: ``local``: a thread pool on this machine; ``slurm``: one SLURM job per run (submitit); ``submitit-local``:
#: submitit's local executor (one subprocess per run), the SLURM code path without a cluster.
EXECUTORS = {"local": None, "slurm": "slurm", "submitit-local": "local"}
ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class BatchBusyError(RuntimeError):
    """Another ``semkit batch run`` holds the batch's lock."""


@dataclass
class BatchSummary:
    """What one :func:`run_batch` call did, as lists of run ids."""

    batch: str
    batch_dir: Path
    done: list[str] = field(default_factory=list)  # executed now, successfully
    skipped: list[str] = field(default_factory=list)  # already done before this call
    failed: list[str] = field(default_factory=list)  # executed now, failed (retried by the next call)
    blocked: list[str] = field(default_factory=list)  # not executed: an upstream run is not done
    errors: dict[str, str] = field(default_factory=dict)  # run id → one-line error

    @property
    def ok(self) -> bool:
        return not self.failed and not self.blocked

    def __str__(self) -> str:
        total = len(self.done) + len(self.skipped) + len(self.failed) + len(self.blocked)
        text = (f"{self.batch}: {total} runs: {len(self.done)} done, {len(self.skipped)} skipped (already done), "
                f"{len(self.failed)} failed, {len(self.blocked)} blocked (dependency not done)")
        for rid, error in self.errors.items():
            text += f"\n  {rid}: {error}"
        if self.failed or self.blocked:
            text += ("\n  failed and blocked runs are executed again by the next `semkit batch run`; details in "
                     f"{self.batch_dir}/<run id>/{STATUS_FILE} and {LOG_FILE}")
        return text


# --------------------------------------------------------------------------------------------- status files


def _now() -> str:
    return dt.datetime.now().astimezone().isoformat(timespec="seconds")


def _write_json(path: Path, data: dict) -> None:
    # write then rename: a run killed mid-write never leaves half a status file behind
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def read_status(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's ``status.json``, or ``None`` if it has none (never started)."""
    path = Path(run_dir) / STATUS_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        return {"state": "unknown", "error": f"unreadable {STATUS_FILE}"}


def _status(run: Run, state: str, **extra) -> dict[str, Any]:
    status = {"run_id": run.run_id, "stage": run.stage, "notebook": run.notebook.stem, "state": state,
              "host": socket.gethostname(), "pid": os.getpid(), "dependencies": run.dependencies,
              "coordinates": run.coordinates, "parameters": run.parameters, **extra}
    run.run_dir.mkdir(parents=True, exist_ok=True)
    _write_json(run.run_dir / STATUS_FILE, status)
    return status


def _error_details(exc: BaseException) -> tuple[str, str]:
    """One-line error and the traceback; for a failing cell, the notebook's own traceback."""
    if hasattr(exc, "ename") and hasattr(exc, "evalue"):  # NotebookExecutionError: a cell failed
        tb = "\n".join(ANSI_RE.sub("", line) for line in getattr(exc, "traceback", []) or [])
        return f"{exc.ename}: {exc.evalue}", tb
    return f"{type(exc).__name__}: {exc}", "".join(traceback.format_exception(exc))


def execute_run(run: Run) -> dict[str, Any]:
    """Execute one run into its folder and record the outcome in ``status.json``; never raises on a failing
    notebook (the error and traceback go into the status), so the other runs of the batch go on.

    The notebook gets ``output_dir = run.run_dir`` and, if it has the parameter, ``figures_dir``; its output
    streams into ``run.log``. Results of an earlier attempt (``metrics.json``, ``timing.json``, the log) are
    removed first, so a re-run never mixes old and new values.

    Returns:
        The status written: ``state`` ``"done"`` or ``"failed"`` with ``error`` and ``traceback``.
    """
    for name in (RESULTS_FILE, TIMING_FILE, LOG_FILE):
        (run.run_dir / name).unlink(missing_ok=True)
    started, start = _now(), time.perf_counter()
    _status(run, "running", started=started)
    params = dict(run.parameters)
    if run.figures_dir is not None:
        run.figures_dir.mkdir(parents=True, exist_ok=True)
        params["figures_dir"] = str(run.figures_dir)
    try:
        execute_notebook(run.notebook, run.run_dir, params, timeout_s=run.timeout_s,
                         log_file=run.run_dir / LOG_FILE)
    except Exception as exc:  # any failure of this run is recorded; the batch goes on with the others
        error, tb = _error_details(exc)
        return _status(run, "failed", started=started, finished=_now(), wall_s=time.perf_counter() - start,
                       error=error, traceback=tb)
    return _status(run, "done", started=started, finished=_now(), wall_s=time.perf_counter() - start)


# ------------------------------------------------------------------------------------------------------ lock


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class _BatchLock:
    """``<batch_dir>/.lock`` naming the driver (host, pid); a lock left by a dead driver on this host is taken
    over, since a killed ``semkit batch run`` cannot remove it."""

    def __init__(self, batch_dir: Path):
        self.path = batch_dir / LOCK_FILE

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"host": socket.gethostname(), "pid": os.getpid(), "since": _now()}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    holder = json.loads(self.path.read_text())
                except (OSError, ValueError):
                    holder = {}
                if holder.get("host") == me["host"] and not _pid_alive(int(holder.get("pid", -1))):
                    self.path.unlink(missing_ok=True)  # stale: its driver was killed
                    continue
                raise BatchBusyError(
                    f"batch {self.path.parent.name} is being run by pid {holder.get('pid')} on "
                    f"{holder.get('host')} since {holder.get('since')}; if no such run is active, delete "
                    f"{self.path}") from None
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            return self
        raise BatchBusyError(f"cannot take the lock {self.path}")

    def __exit__(self, *exc):
        self.path.unlink(missing_ok=True)


# -------------------------------------------------------------------------------------------------- running


def batch_dir_for(batch: str | Path, runs_root: str | Path = "papermill_runs") -> Path:
    """The folder of a batch given its folder, its spec file (``.yaml``) or its name (``<runs_root>/<name>``)."""
    path = Path(batch)
    if path.suffix in (".yaml", ".yml"):
        return (Path(runs_root) / load_spec(path).name).resolve()
    if (path / BATCH_FILE).is_file() or (len(path.parts) > 1 and path.is_dir()):
        return path.resolve()
    return (Path(runs_root) / path.name).resolve()


def write_plan(spec: BatchSpec, runs: list[Run], batch_dir: Path) -> Path:
    """Write ``batch.json``: the spec's name, description and source, and every planned run."""
    batch_dir.mkdir(parents=True, exist_ok=True)
    path = batch_dir / BATCH_FILE
    _write_json(path, {"name": spec.name, "description": spec.description,
                       "spec": None if spec.path is None else str(spec.path.resolve()),
                       "stages": [s.name for s in spec.stages], "planned": _now(),
                       "runs": [r.to_json() for r in runs]})
    return path


def run_batch(spec: BatchSpec | str | Path, runs_root: str | Path = "papermill_runs",
              figures_root: str | Path | None = "figures", *, workers: int = 1, force: bool = False,
              executor: str = "local", only: Iterable[str] = (), progress: bool = True) -> BatchSummary:
    """Execute a batch into ``<runs_root>/<name>/<run id>/``, skipping runs that are already done.

    Args:
        spec: a :class:`BatchSpec`, a spec file or the name of a shipped spec.
        runs_root: parent of the batch folder.
        figures_root: the notebooks' figures go to ``<figures_root>/<name>/<run id>/``; ``None`` = inside each
            run folder.
        workers: runs executed at once by the local executor (each in its own Jupyter kernel).
        force: execute runs that are already done again.
        executor: one of :data:`EXECUTORS`.
        only: names of the stages to execute (default all); runs of other stages are left as they are and
            must be done already where the selected ones depend on them.
        progress: show a progress bar.

    Returns:
        A :class:`BatchSummary`.

    Raises:
        ValueError: unknown executor or stage name (the message lists the valid ones).
        BatchBusyError: another driver is running this batch.
    """
    from tqdm.auto import tqdm

    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; choose one of: {', '.join(EXECUTORS)}")
    spec = spec if isinstance(spec, BatchSpec) else load_spec(spec)
    only = list(only)
    for name in only:
        spec.stage(name)  # KeyError listing the stages
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    batch_dir = (Path(runs_root) / spec.name).resolve()
    figures = None if figures_root is None else Path(figures_root).resolve() / spec.name
    runs = plan_batch(spec, batch_dir, figures)
    summary = BatchSummary(spec.name, batch_dir)
    selected = [r for r in runs if not only or r.stage in only]
    with _BatchLock(batch_dir):
        write_plan(spec, runs, batch_dir)
        bar = tqdm(total=len(selected), desc=spec.name, unit="run", disable=not progress)
        try:
            for stage in spec.stages:
                todo = []
                for run in (r for r in selected if r.stage == stage.name):
                    status = read_status(run.run_dir) or {}
                    if status.get("state") == "done" and not force:
                        summary.skipped.append(run.run_id)
                        bar.update(1)
                        continue
                    pending = {s: rid for s, rid in run.dependencies.items()
                               if (read_status(batch_dir / rid) or {}).get("state") != "done"}
                    if pending:
                        error = "dependency not done: " + ", ".join(f"{s} {rid}" for s, rid in pending.items())
                        _status(run, "blocked", error=error, finished=_now())
                        summary.blocked.append(run.run_id)
                        summary.errors[run.run_id] = error
                        bar.update(1)
                        continue
                    todo.append(run)
                if not todo:
                    continue
                if executor == "local":
                    results = _run_local(todo, workers)
                else:
                    results = _run_submitit(todo, EXECUTORS[executor], batch_dir, stage.resources)
                for run, status in results:
                    if status.get("state") == "done":
                        summary.done.append(run.run_id)
                    else:
                        summary.failed.append(run.run_id)
                        summary.errors[run.run_id] = status.get("error", "failed")
                        bar.write(f"FAILED {run.run_id} ({run.stage}): {summary.errors[run.run_id]}")
                    bar.update(1)
                    bar.set_postfix(done=len(summary.done), failed=len(summary.failed), refresh=False)
        finally:
            bar.close()
    return summary


def _run_local(todo: list[Run], workers: int):
    """Yield ``(run, status)`` as runs finish; threads suffice since each run executes in a process (and a kernel)
    of its own, started in its notebook's folder: the driver's working directory never changes."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        futures = {pool.submit(execute_run, run): run for run in todo}
        for future in as_completed(futures):
            yield futures[future], future.result()
    except GeneratorExit:
        # the driver stopped (Ctrl-C): start no queued run; runs executing stay "running" and are re-run
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


def _run_submitit(todo: list[Run], cluster: str, batch_dir: Path, resources: dict):
    """Submit each run as a job (a job array on SLURM) and yield ``(run, status)`` as jobs finish."""
    import submitit

    executor = submitit.AutoExecutor(folder=batch_dir / "submitit" / "%j", cluster=cluster)
    executor.update_parameters(name=f"semkit-{batch_dir.name}", **resources)
    with executor.batch():
        jobs = [executor.submit(execute_run, run) for run in todo]
    by_job = {}
    for run, job in zip(todo, jobs, strict=True):
        by_job[job.job_id] = run
        _status(run, "submitted", job_id=job.job_id, submitted=_now())
    poll = 1.0 if cluster == "local" else 30.0
    for job in submitit.helpers.as_completed(jobs, poll_frequency=poll):
        run = by_job[job.job_id]
        try:
            status = job.result()
        except Exception as exc:  # the job itself died (time limit, out of memory, node failure)
            error, tb = _error_details(exc)
            status = _status(run, "failed", job_id=job.job_id, finished=_now(), error=f"job failed: {error}",
                             traceback=tb)
        yield run, status


def batch_status(batch: str | Path | BatchSpec, runs_root: str | Path = "papermill_runs") -> pd.DataFrame:
    """State of every planned run of a batch.

    Args:
        batch: a spec (object or ``.yaml`` file) for its current plan; or a batch folder or name, whose
            ``batch.json`` (written by the last :func:`run_batch`) gives the plan; a name without one is looked
            up as a shipped spec.

    Returns:
        One row per run: ``stage, run_id, state`` (``pending`` if never started), ``wall_s, error`` and the
        run's grid values as ``coordinates``.
    """
    spec = batch if isinstance(batch, BatchSpec) else None
    if spec is None:
        batch_dir = batch_dir_for(batch, runs_root)
        if Path(batch).suffix in (".yaml", ".yml") or not (batch_dir / BATCH_FILE).is_file():
            spec = load_spec(batch)
    if spec is not None:
        batch_dir = (Path(runs_root) / spec.name).resolve()
        planned = [r.to_json() for r in plan_batch(spec, batch_dir)]
    else:
        planned = read_plan(batch_dir)["runs"]
    rows = []
    for r in planned:
        status = read_status(batch_dir / r["run_id"]) or {}
        rows.append({"stage": r["stage"], "run_id": r["run_id"], "state": status.get("state", "pending"),
                     "wall_s": status.get("wall_s"), "error": status.get("error"),
                     "coordinates": json.dumps(r["coordinates"], default=str)})
    return pd.DataFrame(rows, columns=["stage", "run_id", "state", "wall_s", "error", "coordinates"])


def read_plan(batch_dir: str | Path) -> dict[str, Any]:
    """``batch.json`` of a batch folder.

    Raises:
        FileNotFoundError: if the batch has never been run (the message says how to run it).
    """
    path = Path(batch_dir) / BATCH_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the batch first (semkit batch run SPEC)")
    return json.loads(path.read_text())
