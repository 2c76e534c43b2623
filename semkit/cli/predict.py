"""``semkit predict``: segment the particles of a folder of SEM images with a trained Mask R-CNN."""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

import click

SUMMARY_FILE = "summary.csv"


def _parse_resize(value: str):
    """``study`` (7680 × 4800 → 1920 × 1200 only), ``none``, or ``HxW``."""
    text = value.strip().lower()
    if text == "study":
        return True
    if text in ("none", "no", "off"):
        return False
    try:
        h, w = (int(v) for v in text.split("x"))
    except ValueError:
        raise click.BadParameter(f"{value!r}: use 'study', 'none' or HxW such as 1200x1920",
                                 param_hint="--resize") from None
    return h, w


def collect_images(sources: tuple[str, ...]) -> tuple[list[Path], list[Path]]:
    """Image files named by ``sources`` (files as given, folders searched recursively).

    Returns:
        ``(images, ignored)``: the files to predict (in order, duplicates removed) and the non-image files found
        in the folders, which are reported, not silently skipped.
    """
    from semkit.data.io import IMAGE_SUFFIXES, list_images

    images: list[Path] = []
    ignored: list[Path] = []
    for src in sources:
        p = Path(src)
        if p.is_dir():
            images.extend(list_images(p))
            ignored.extend(f for f in sorted(p.rglob("*"))
                           if f.is_file() and f.suffix.lower() not in IMAGE_SUFFIXES)
        else:
            images.append(p)  # a named file is always attempted; an unreadable one is reported as failed
    seen, unique = set(), []
    for f in images:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique, ignored


def output_stems(images: list[Path]) -> list[str]:
    """File stems for the outputs, made unique (``name``, ``name-2``...) when two inputs share a stem."""
    counts: dict[str, int] = {}
    stems = []
    for f in images:
        n = counts.get(f.stem, 0) + 1
        counts[f.stem] = n
        stems.append(f.stem if n == 1 else f"{f.stem}-{n}")
    return stems


@click.command()
@click.option("--model", "model_path", required=True, type=click.Path(exists=True),
              help="Model folder written by training (config.json + weights.pt + thresholds.json) or an .onnx "
                   "file from semkit.inference.export_onnx.")
@click.option("--images", "sources", required=True, multiple=True, type=click.Path(exists=True),
              help="Image file or folder (searched recursively for .tif/.tiff/.png/.jpg). Repeat for several.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder: per image NAME_labels.tif, NAME_particles.csv, NAME_coco.json, "
                   "NAME_overlay.png, NAME_rois.zip; plus summary.csv.")
@click.option("--tile", default=0, show_default=True, type=click.IntRange(min=0),
              help="Tile side in px; 0 = whole image in one pass (as the study did for 1920 x 1200 images).")
@click.option("--overlap", default=128, show_default=True, type=click.IntRange(min=0),
              help="Minimum tile overlap in px; larger than the largest particle.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1, mps (ONNX: cpu or cuda).")
@click.option("--resize", "resize", default="study", show_default=True,
              help="'study': shrink 7680 x 4800 images to 1920 x 1200 as the study did, others unchanged; "
                   "'none'; or HxW.")
@click.option("--pixel-size", "pixel_size_nm", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Pixel size in nm for images without calibration metadata (calibrated files keep theirs).")
@click.option("--databar/--no-databar", default=True, show_default=True,
              help="Exclude a detected instrument databar at the bottom of the image.")
def predict(model_path: str, sources: tuple[str, ...], out_dir: str, tile: int, overlap: int, device: str,
            resize: str, pixel_size_nm: float | None, databar: bool) -> None:
    """Segment particles (certain/uncertain) in SEM images and write label maps, tables, COCO, overlays, ROIs.

    Every image is attempted; failures are listed in the summary and make the exit status 1.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    from semkit.data.io import load_image
    from semkit.errors import InputError
    from semkit.inference.outputs import write_outputs
    from semkit.inference.predict import load_predictor, predict_image

    resize_value = _parse_resize(resize)
    if tile and overlap >= tile:
        raise click.BadParameter(f"overlap {overlap} must be smaller than the tile {tile}", param_hint="--overlap")
    try:
        detector = load_predictor(model_path, device=device)
    except (InputError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    images, ignored = collect_images(sources)
    if ignored:
        click.echo(f"ignored {len(ignored)} non-image file(s): {', '.join(f.name for f in ignored[:10])}"
                   + (" ..." if len(ignored) > 10 else ""), err=True)
    if not images:
        raise click.ClickException("no image files found in " + ", ".join(sources))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for path, stem in tqdm(list(zip(images, output_stems(images), strict=True)), desc="predict", unit="image",
                           file=sys.stderr):
        row = {"image": str(path), "output": stem, "status": "ok", "particles": 0, "certain": 0,
               "seconds": float("nan"), "pixel_size_nm": float("nan"), "error": ""}
        try:
            image, meta = load_image(path)
            px = pixel_size_nm if meta.pixel_size_nm is None else meta.pixel_size_nm
            pred = predict_image(detector, image, tile=tile or None, overlap=overlap, resize=resize_value,
                                 crop_databar=databar, pixel_size_nm=px, device=device, name=str(path))
            write_outputs(pred, out, name=stem)
            row.update(particles=pred.n_particles, certain=pred.n_certain, seconds=round(pred.seconds, 3),
                       pixel_size_nm=pred.pixel_size_nm if pred.pixel_size_nm is not None else float("nan"))
        except InputError as exc:
            row.update(status="failed", error=str(exc))
        except Exception as exc:  # one bad image must not end the batch; it is reported and fails the run
            row.update(status="failed", error=f"{type(exc).__name__}: {exc}")
            traceback.print_exc(file=sys.stderr)
        rows.append(row)
    summary = pd.DataFrame(rows)
    summary.to_csv(out / SUMMARY_FILE, index=False)
    failed = summary[summary["status"] != "ok"]
    shown = summary.assign(image=[Path(p).name for p in summary["image"]])
    click.echo(shown[["image", "status", "particles", "certain", "seconds"]].to_string(index=False))
    click.echo(f"{len(summary) - len(failed)} of {len(summary)} images done; outputs in {out}")
    if len(failed):
        click.echo(f"{len(failed)} image(s) FAILED:", err=True)
        for r in failed.itertuples():
            click.echo(f"  {r.image}: {r.error}", err=True)
        raise SystemExit(1)


commands = [predict]
