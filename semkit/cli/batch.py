"""``semkit batch``: run a YAML spec of notebook runs, show its state, collect its results, render its report."""

from __future__ import annotations

import json
from pathlib import Path

import click

RUNS_ROOT = "papermill_runs"
FIGURES_ROOT = "figures"


def _runs_root(f):
    return click.option("--runs-root", default=RUNS_ROOT, show_default=True, type=click.Path(file_okay=False),
                        help="Parent folder of the batch folders (<runs-root>/<batch>/<run id>/).")(f)


def _figures_root(f):
    return click.option("--figures-root", default=FIGURES_ROOT, show_default=True,
                        type=click.Path(file_okay=False),
                        help="Parent folder of the figures (<figures-root>/<batch>/).")(f)


def _fail(exc: Exception) -> click.ClickException:
    message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    return click.ClickException(message)


def select_stages(spec, only: tuple[str, ...]) -> list[str]:
    """Stage names from ``--only`` values: a stage name, or a notebook prefix such as ``03``."""
    names = []
    for value in only:
        hits = [s.name for s in spec.stages if s.name == value or s.notebook.stem.startswith(value)]
        if not hits:
            raise click.BadParameter(f"no notebooks selected by {value!r}: it is neither a stage name nor a "
                                     f"notebook prefix; stages: {', '.join(s.name for s in spec.stages)}",
                                     param_hint="--only")
        names += [h for h in hits if h not in names]
    return names


@click.group()
def batch() -> None:
    """Batches of notebook runs from YAML specs (shipped ones: papermill_runs/specs/).

    A run's id derives from its notebook's code and parameters, so running a spec again skips finished runs
    and executes failed, killed and new ones.
    """


@batch.command("run")
@click.argument("spec")
@click.option("--workers", "-j", default=1, show_default=True, type=click.IntRange(min=1),
              help="Runs executed at once (local executor).")
@click.option("--force", is_flag=True, help="Execute runs that are already done again.")
@click.option("--executor", type=click.Choice(["local", "slurm", "submitit-local"]), default="local",
              show_default=True, help="local: threads on this machine; slurm: one SLURM job per run (submitit, "
              "resources from the spec's 'resources'); submitit-local: submitit's local subprocesses.")
@click.option("--only", multiple=True, help="Execute only this stage (name or notebook prefix such as 03); "
              "repeatable. Upstream runs must be done already.")
@click.option("--dry-run", is_flag=True, help="List the runs (id, state, parameters) without executing anything.")
@click.option("--notebook-dir", type=click.Path(file_okay=False, exists=True), default=None,
              help="Folder where bare notebook names are looked up (default: the shipped notebooks/).")
@_runs_root
@_figures_root
def run(spec: str, workers: int, force: bool, executor: str, only: tuple[str, ...], dry_run: bool,
        notebook_dir: str | None, runs_root: str, figures_root: str) -> None:
    """Execute the runs of SPEC (a YAML file, or the name of a shipped spec such as 'demo').

    Each run goes to <runs-root>/<batch>/<run id>/ (executed notebook, parameters.json, metrics.json,
    status.json, run.log). A failed run is recorded with its traceback and the others go on; the command
    exits with an error if any run failed or was blocked, after a summary.
    """
    from semkit.batch import NOTEBOOK_DIR, load_spec, plan_batch, read_status, run_batch

    try:
        loaded = load_spec(spec, notebook_dir=notebook_dir or NOTEBOOK_DIR)
        stages = select_stages(loaded, only)
        if dry_run:
            runs = plan_batch(loaded, Path(runs_root).resolve() / loaded.name,
                              Path(figures_root).resolve() / loaded.name)
            states = {}
            for r in runs:
                if stages and r.stage not in stages:
                    continue
                state = (read_status(r.run_dir) or {}).get("state", "pending")
                states[state] = states.get(state, 0) + 1
                deps = f" <- {', '.join(r.dependencies.values())}" if r.dependencies else ""
                click.echo(f"{r.stage:<18} {r.run_id:<34} {state:<8} {json.dumps(r.coordinates)}{deps}")
                click.echo(f"    {json.dumps(r.parameters, default=str)}")
            counts = ", ".join(f"{n} {s}" for s, n in states.items())
            click.echo(f"{sum(states.values())} runs in batch {loaded.name} ({counts})")
            return
        summary = run_batch(loaded, runs_root, figures_root, workers=workers, force=force, executor=executor,
                            only=stages)
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        raise _fail(exc) from exc
    click.echo(str(summary))
    if not summary.ok:
        raise click.ClickException(f"{len(summary.failed)} failed, {len(summary.blocked)} blocked")


@batch.command("status")
@click.argument("batch_or_spec")
@_runs_root
def status(batch_or_spec: str, runs_root: str) -> None:
    """State of every run of a batch (its name or folder) or of a spec's current plan."""
    import pandas as pd

    from semkit.batch import batch_status

    try:
        table = batch_status(batch_or_spec, runs_root)
    except (OSError, KeyError, ValueError) as exc:
        raise _fail(exc) from exc
    with pd.option_context("display.max_rows", None, "display.width", 160, "display.max_colwidth", 60):
        click.echo(table.to_string(index=False))
    click.echo(", ".join(f"{n} {s}" for s, n in table["state"].value_counts().items()))


@batch.command("collect")
@click.argument("batch_name")
@_runs_root
def collect_command(batch_name: str, runs_root: str) -> None:
    """Gather all runs of a batch into <batch>/results.parquet + .csv (one row per run)."""
    from semkit.batch import batch_dir_for, collect

    try:
        table = collect(batch_name, runs_root)
    except (OSError, KeyError, ValueError) as exc:
        raise _fail(exc) from exc
    folder = batch_dir_for(batch_name, runs_root)
    click.echo(f"{len(table)} runs x {table.shape[1]} columns -> {folder / 'results.parquet'} (and .csv)")


@batch.command("report")
@click.argument("batch_name")
@_runs_root
@_figures_root
def report(batch_name: str, runs_root: str, figures_root: str) -> None:
    """Collect a batch and render its summary figures and one self-contained HTML report."""
    from semkit.batch import render_report

    try:
        path = render_report(batch_name, runs_root, figures_root)
    except (OSError, KeyError, ValueError) as exc:
        raise _fail(exc) from exc
    click.echo(f"report -> {path}")


commands = [batch]
