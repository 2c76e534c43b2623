"""``semkit demo``: the demo batch (``papermill_runs/specs/demo.yaml``) on synthetic data, then its report."""

from __future__ import annotations

import time
from pathlib import Path

import click


@click.command()
@click.option("--out", "out_dir", default="papermill_runs", show_default=True, type=click.Path(file_okay=False),
              help="Parent of the batch folder: runs go to OUT/demo/<run id>/.")
@click.option("--figures", "figures_dir", default="figures", show_default=True, type=click.Path(file_okay=False),
              help="Parent of the figures: FIGURES/demo/<run id>/ per run, FIGURES/demo/report.html.")
@click.option("--only", multiple=True, help="Run only these stages of demo.yaml (stage name, or notebook prefix "
              "such as 03); repeatable. Upstream runs must be done already.")
@click.option("--workers", "-j", default=2, show_default=True, type=click.IntRange(min=1),
              help="Runs executed at once.")
@click.option("--force", is_flag=True, help="Execute runs that are already done again.")
def demo(out_dir: str, figures_dir: str, only: tuple[str, ...], workers: int, force: bool) -> None:
    """Run the demo batch in quick mode on synthetic data, then collect it and render its report.

    Finished runs are skipped, so running it again after an interruption only executes what is missing.
    """
    from semkit.batch import SPEC_DIR, load_spec, render_report, run_batch
    from semkit.cli.batch import select_stages

    start = time.perf_counter()
    # resolved once, against the folder the command was started in, before any run starts
    out_dir, figures_dir = str(Path(out_dir).resolve()), str(Path(figures_dir).resolve())
    try:
        spec = load_spec(SPEC_DIR / "demo.yaml")
        summary = run_batch(spec, out_dir, figures_dir, workers=workers, force=force,
                            only=select_stages(spec, only))
        click.echo(str(summary))
        report = render_report(spec.name, out_dir, figures_dir)
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"report -> {report}  ({time.perf_counter() - start:.0f} s)")
    if not summary.ok:
        raise click.ClickException(f"{len(summary.failed)} run(s) failed, {len(summary.blocked)} blocked")


commands = [demo]
