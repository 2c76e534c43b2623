"""``semkit demo``: run the notebook pipeline on the embedded synthetic data."""

from __future__ import annotations

import time
from pathlib import Path

import click


@click.command()
@click.option("--out", "out_dir", default="papermill_runs/demo", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the executed notebooks and their results.")
@click.option("--figures", "figures_dir", default="figures/demo", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the figures the notebooks save.")
@click.option("--only", multiple=True, help="Run only these notebooks (name prefix, e.g. 01). Repeatable.")
def demo(out_dir: str, figures_dir: str, only: tuple[str, ...]) -> None:
    """Run every numbered notebook in quick mode on synthetic data, in order."""
    from semkit.batch import NOTEBOOK_DIR, execute_notebook

    notebooks = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    if only:
        notebooks = [nb for nb in notebooks if any(nb.stem.startswith(o) for o in only)]
    if not notebooks:
        raise click.ClickException(f"no notebooks selected in {NOTEBOOK_DIR}")
    failures = []
    for nb in notebooks:
        run_dir = Path(out_dir) / nb.stem
        click.echo(f"[demo] {nb.stem} -> {run_dir}")
        start = time.perf_counter()
        try:
            execute_notebook(nb, run_dir, {"quick": True, "figures_dir": str(Path(figures_dir).resolve() / nb.stem)})
        except Exception as exc:  # keep going: one broken notebook should not hide the others' results
            failures.append((nb.stem, exc))
            click.echo(f"[demo] {nb.stem} FAILED: {type(exc).__name__}: {exc}", err=True)
            continue
        click.echo(f"[demo] {nb.stem} done in {time.perf_counter() - start:.0f} s")
    if failures:
        raise click.ClickException(f"{len(failures)} notebook(s) failed: {', '.join(n for n, _ in failures)}")


commands = [demo]
