"""Gather the runs of a batch into one tidy table (one row per run), and their per-image tables into another.

Columns of ``results.parquet``/``.csv``:

* ``batch, stage, run_id, notebook, state, wall_s, error, started, finished, run_dir``;
* every parameter of the run, the notebook's defaults included (lists and dicts as JSON text), e.g.
  ``backbone``, ``seed``; ``output_dir`` and ``figures_dir`` are left out (the run folder is ``run_dir``);
* every metric of its ``metrics.json``, nested keys joined with dots (``summary.mild.aji_plus``), lists as JSON
  text; a metric named like a parameter or a column above is prefixed ``metric.`` (notebook 02 reports the
  ``backbone`` it really used, which quick mode may change);
* for each upstream run it refers to, ``<stage>.run_id`` and that run's parameters and metrics prefixed
  ``<stage>.`` (a fine-tuning row carries ``pretrain.method`` and ``pretrain.n_train_images``).

``per_image.parquet``/``.csv`` stacks every ``*per_image.parquet``/``*per_image.csv`` found in finished run
folders (notebook 03's ``finetune/seed_<s>/test_per_image.csv``, notebook 04's ``per_image.parquet``), with
``batch, stage, run_id, source`` added.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pandas as pd

from semkit.batch.execute import RESULTS_FILE
from semkit.batch.runner import TIMING_FILE, batch_dir_for, read_plan, read_status
from semkit.batch.spec import RESERVED, notebook_defaults

BASE_COLUMNS = ("batch", "stage", "run_id", "notebook", "state", "wall_s", "error", "started", "finished",
                "run_dir")
RESULTS_TABLE = "results"
PER_IMAGE_TABLE = "per_image"


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts → one level with dotted keys; lists → JSON text (a cell holds one value)."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, list | dict):
            flat[name] = json.dumps(value, default=str)
        else:
            flat[name] = value
    return flat


def _json_cells(values: dict[str, Any]) -> dict[str, Any]:
    return {k: json.dumps(v, default=str) if isinstance(v, list | dict) else v for k, v in values.items()}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}


def _run_columns(parameters: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    columns = _json_cells(parameters)
    for key, value in flatten(metrics).items():
        columns[f"metric.{key}" if key in columns or key in BASE_COLUMNS else key] = value
    return columns


@functools.cache
def _defaults(notebook: str) -> dict[str, Any]:
    if not Path(notebook).is_file():  # moved or deleted since the batch ran: the set parameters still show
        return {}
    return {k: v for k, v in notebook_defaults(notebook).items() if k not in RESERVED}


def _parquet_safe(table: pd.DataFrame) -> pd.DataFrame:
    """Columns holding several Python types (a parameter that is a number in one stage and text in another)
    become text, which Parquet can store."""
    table = table.copy()
    for col in [c for c in table.columns if pd.api.types.is_object_dtype(table[c])]:
        kinds = {type(v) for v in table[col] if v is not None and not (isinstance(v, float) and pd.isna(v))}
        if len(kinds) > 1:
            table[col] = table[col].map(lambda v: v if v is None or (isinstance(v, float) and pd.isna(v))
                                        else str(v))
    return table


def collect(batch: str | Path, runs_root: str | Path = "papermill_runs", write: bool = True) -> pd.DataFrame:
    """One row per planned run of a batch (done, failed, blocked or pending), with parameters and metrics.

    Args:
        batch: batch name (``<runs_root>/<name>``), batch folder or spec file.
        runs_root: parent of the batch folders.
        write: write ``results.parquet``/``.csv`` (and ``per_image.*`` when there are per-image tables) into
            the batch folder.

    Returns:
        The results table (see the module docstring for its columns).

    Raises:
        FileNotFoundError: if the batch has never been run.
    """
    batch_dir = batch_dir_for(batch, runs_root)
    plan = read_plan(batch_dir)
    own: dict[str, dict[str, Any]] = {}
    rows = []
    for run in plan["runs"]:
        run_dir = batch_dir / run["run_id"]
        status = read_status(run_dir) or {}
        wall_s = status.get("wall_s", _read_json(run_dir / TIMING_FILE).get("wall_s"))
        parameters = {**_defaults(run["notebook"]), **run["parameters"]}
        own[run["run_id"]] = _run_columns(parameters, _read_json(run_dir / RESULTS_FILE))
        rows.append({"batch": plan["name"], "stage": run["stage"], "run_id": run["run_id"],
                     "notebook": Path(run["notebook"]).stem, "state": status.get("state", "pending"),
                     "wall_s": wall_s, "error": status.get("error"), "started": status.get("started"),
                     "finished": status.get("finished"), "run_dir": str(run_dir), **own[run["run_id"]]})
    for row, run in zip(rows, plan["runs"], strict=True):
        for stage, rid in run["dependencies"].items():
            row[f"{stage}.run_id"] = rid
            row.update({f"{stage}.{k}": v for k, v in own.get(rid, {}).items()})
    table = _parquet_safe(pd.DataFrame(rows, columns=list(dict.fromkeys(c for r in rows for c in r))
                                       or list(BASE_COLUMNS)))
    per_image = collect_per_image(batch_dir, table)
    if write:
        table.to_parquet(batch_dir / f"{RESULTS_TABLE}.parquet", index=False)
        table.to_csv(batch_dir / f"{RESULTS_TABLE}.csv", index=False)
        if not per_image.empty:
            per_image.to_parquet(batch_dir / f"{PER_IMAGE_TABLE}.parquet", index=False)
            per_image.to_csv(batch_dir / f"{PER_IMAGE_TABLE}.csv", index=False)
    return table


def collect_per_image(batch_dir: str | Path, results: pd.DataFrame) -> pd.DataFrame:
    """Stack the per-image tables of the finished runs in ``results`` (Parquet preferred over the same CSV)."""
    parts = []
    for row in results[results["state"] == "done"].itertuples():
        run_dir = Path(batch_dir) / row.run_id
        files = {f.with_suffix(""): f for f in sorted(run_dir.rglob("*per_image.csv"))}
        files.update({f.with_suffix(""): f for f in sorted(run_dir.rglob("*per_image.parquet"))})
        for path in sorted(files.values()):
            part = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
            meta = {"batch": row.batch, "stage": row.stage, "run_id": row.run_id,
                    "source": str(path.relative_to(run_dir))}
            parts.append(part.assign(**meta)[[*meta, *part.columns]])
    return _parquet_safe(pd.concat(parts, ignore_index=True)) if parts else pd.DataFrame()
