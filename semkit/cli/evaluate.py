"""``semkit evaluate``: score predictions against ground truth and write the evaluation tables."""

from __future__ import annotations

from pathlib import Path

import click


def _parse_prediction(value: str) -> tuple[str, str]:
    """``NAME=PATH`` or ``PATH`` (the method is then named after the file/folder)."""
    if "=" in value and not Path(value).exists():
        name, path = value.split("=", 1)
        if name and path:
            return name, path
    return Path(value).stem or Path(value).name, value


@click.command()
@click.option("--gt", "ground_truth", required=True, type=click.Path(exists=True),
              help="Ground truth: folder of label maps (TIFF/PNG), instance folder (images/ + labels/), "
                   "label-map file, or COCO JSON.")
@click.option("--pred", "predictions", required=True, multiple=True, metavar="[NAME=]PATH",
              help="Predictions in any of the same forms (COCO results lists too, against a COCO ground "
                   "truth). Repeat for several methods; NAME labels the method (default: the file stem).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for per_image / per_particle / summary tables (.parquet and .csv).")
@click.option("--iou-threshold", default=0.4, show_default=True, type=click.FloatRange(0, 1),
              help="IoU of a correct particle (counts, precision, recall, F1).")
@click.option("--pq-threshold", default=0.5, show_default=True, type=click.FloatRange(0, 1),
              help="IoU a match must exceed for panoptic quality.")
@click.option("--sizes/--no-sizes", default=True, show_default=True,
              help="Compute per-particle size descriptors (area, ECD, Feret).")
@click.option("--coco-ap/--no-coco-ap", default=True, show_default=True, help="Compute COCO mask AP.")
def evaluate(ground_truth: str, predictions: tuple[str, ...], out_dir: str, iou_threshold: float,
             pq_threshold: float, sizes: bool, coco_ap: bool) -> None:
    """Evaluate instance predictions: AJI+, matching counts, PQ, precision/recall/F1, AP, particle sizes."""
    from semkit.errors import InputError
    from semkit.metrics import EvaluationSettings, evaluate_paths

    preds = dict(_parse_prediction(p) for p in predictions)
    if len(preds) != len(predictions):
        raise click.BadParameter("two predictions share a method name; use NAME=PATH", param_hint="--pred")
    try:
        settings = EvaluationSettings(iou_threshold=iou_threshold, pq_threshold=pq_threshold, sizes=sizes,
                                      coco_ap=coco_ap)
        result = evaluate_paths(ground_truth, preds, out_dir, settings)
    except InputError as exc:
        raise click.ClickException(str(exc)) from exc
    cols = [c for c in ("method", "n_images", "aji_plus_image_averaged", "aji_plus_dataset_level", "correct",
                        "missed", "false_positive", "f1", "pq", "ap") if c in result.summary.columns]
    click.echo(result.summary[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    click.echo(f"tables written to {Path(out_dir)}")


commands = [evaluate]
