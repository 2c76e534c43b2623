"""Execute notebooks with papermill and keep their results next to them; batches of runs from YAML specs.

Each executed notebook lives in its own run folder together with ``parameters.json`` (what it was run with),
``metrics.json`` (scalar results the notebook wrote through :func:`write_results`), ``status.json`` and its log;
batch tools and reports read those files, never the notebook JSON.

* :func:`load_spec`, :func:`plan_batch` -- a YAML spec (notebook or stages, parameters, grid, zip, references to
  earlier stages) expanded into :class:`Run` objects with content-derived ids;
* :func:`run_batch` -- execute them (local thread pool or SLURM through submitit), skipping finished runs;
* :func:`collect` -- one tidy table per batch (Parquet + CSV); :func:`render_report` -- figures and one HTML.
"""

from semkit.batch.collect import collect
from semkit.batch.execute import (
    NOTEBOOK_DIR,
    NotebookExecutionError,
    execute_notebook,
    read_results,
    write_results,
)
from semkit.batch.report import render_report, study_table
from semkit.batch.runner import (
    EXECUTORS,
    BatchBusyError,
    BatchSummary,
    batch_dir_for,
    batch_status,
    execute_run,
    read_status,
    run_batch,
)
from semkit.batch.spec import (
    SPEC_DIR,
    BatchSpec,
    Run,
    Stage,
    load_spec,
    notebook_parameters,
    plan_batch,
    run_id,
)

__all__ = [
    "EXECUTORS",
    "NOTEBOOK_DIR",
    "SPEC_DIR",
    "BatchBusyError",
    "BatchSpec",
    "BatchSummary",
    "Run",
    "Stage",
    "batch_dir_for",
    "batch_status",
    "collect",
    "NotebookExecutionError",
    "execute_notebook",
    "execute_run",
    "load_spec",
    "notebook_parameters",
    "plan_batch",
    "read_results",
    "read_status",
    "render_report",
    "run_batch",
    "run_id",
    "study_table",
    "write_results",
]
