"""``semkit stem-box``: adaptive acquisition boxes for HAADF particle images."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command("stem-box")
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--elements", "-n", type=click.IntRange(min=1), default=None,
              help="Elements in each particle's composition (used for images the counts CSV does not list).")
@click.option("--counts", "counts_csv", type=click.Path(dir_okay=False), default=None,
              help="CSV with columns file,n_elements giving the element count per image.")
@click.option("--algorithm", type=click.Choice(["1", "2"]), default="2", show_default=True,
              help="1: largest squares first; 2: raster scan (the study's choice, faster).")
@click.option("--cap-fraction", type=click.FloatRange(0, 1, min_open=True), default=0.2, show_default=True,
              help="Largest box side as a fraction of the cropped image's shorter side.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for <image>_boxes.csv/.json, <image>_boxes.png and settings.json.")
@click.option("--no-figure", is_flag=True, help="Skip the overlay figures.")
def stem_box(images, elements, counts_csv, algorithm, cap_fraction, out_dir, no_figure) -> None:
    """Segment each HAADF IMAGE and write its acquisition boxes (parent pixels and nm) and an overlay."""
    from semkit.data.io import load_image
    from semkit.errors import InputError
    from semkit.stem import BoxSettings, box_image, read_element_counts, write_boxes

    settings = BoxSettings(algorithm=int(algorithm), size_cap_fraction=cap_fraction)
    out = Path(out_dir)
    try:
        counts = read_element_counts(counts_csv) if counts_csv else {}
        jobs = []
        for name in images:
            path = Path(name)
            n = counts.get(path.name, counts.get(path.stem, elements))
            if n is None:
                raise InputError("no element count: pass --elements N or list the file in --counts CSV", path)
            jobs.append((path, n))
        out.mkdir(parents=True, exist_ok=True)
        (out / "settings.json").write_text(json.dumps(settings.to_dict(), indent=2))
        for path, n in jobs:
            image, meta = load_image(path)
            result = box_image(image, n, settings, pixel_size_nm=meta.pixel_size_nm, source=str(path))
            write_boxes(result, out / f"{path.stem}_boxes.csv")
            write_boxes(result, out / f"{path.stem}_boxes.json", settings)
            if not no_figure:
                _save_overlay(result, image, out / f"{path.stem}_boxes.png")
            note = f" ({result.reason})" if result.reason else ""
            click.echo(f"{path.name}: {result.n_boxes} boxes, k={result.segmentation.k}{note}")
    except InputError as exc:
        raise click.ClickException(str(exc)) from None


def _save_overlay(result, image, path: Path) -> None:
    # A bare Figure (no pyplot) needs no display backend, so the command works on headless machines.
    from matplotlib.figure import Figure

    from semkit.plotting.stem import plot_boxes

    fig = Figure(figsize=(6, 6))
    plot_boxes(result, image, ax=fig.subplots(), title=f"{Path(result.source).name}: {result.n_boxes} boxes")
    fig.savefig(path, dpi=150, bbox_inches="tight")


commands = [stem_box]
