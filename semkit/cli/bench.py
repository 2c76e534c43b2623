"""``semkit bench …``: speed benchmarks that users run on their own hardware.

Every benchmark prints its numbers and compares alternatives side by side in one run (machines are noisy, so
timings from different runs are not compared).
"""

from __future__ import annotations

import json

import click


@click.group()
def bench() -> None:
    """Speed benchmarks (print numbers; add --json to also print the result as JSON)."""


def _emit(result: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))


@bench.command("metrics")
@click.option("--height", default=1200, show_default=True)
@click.option("--width", default=1920, show_default=True)
@click.option("--instances", "n_instances", default=300, show_default=True, help="Ground-truth particles.")
@click.option("--repeats", default=20, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the result dictionary as JSON.")
def bench_metrics(height: int, width: int, n_instances: int, repeats: int, seed: int, as_json: bool) -> None:
    """AJI+ evaluation time on a full-size image (overlap table and Hungarian matching separately)."""
    from semkit.bench.metrics import bench_aji

    _emit(bench_aji(height=height, width=width, n_instances=n_instances, repeats=repeats, seed=seed), as_json)


@bench.command("stem")
@click.option("--images", "n_images", default=20, show_default=True, help="Synthetic HAADF images.")
@click.option("--size", default=1024, show_default=True, help="Image side in pixels.")
@click.option("--repeats", default=30, show_default=True, help="Runs per image; the per-image median is kept.")
@click.option("--seed", default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the result dictionary as JSON.")
@click.option("--figures", "figures_dir", type=click.Path(file_okay=False), default=None,
              help="Draw stem_boxes.png (boxes on the first images) and stem_times.png here.")
def bench_stem(n_images: int, size: int, repeats: int, seed: int, as_json: bool, figures_dir: str | None) -> None:
    """STEM boxing time per image (segmentation, Algorithm 1 and 2) and box-count reduction."""
    from semkit.bench.stem import bench_stem as run

    _emit(run(n_images=n_images, size=size, repeats=repeats, seed=seed, figures_dir=figures_dir), as_json)


@bench.command("predict")
@click.option("--backbone", "backbones", multiple=True, default=("convnextv2_pico", "resnet50"), show_default=True,
              help="Backbones to compare (repeatable).")
@click.option("--runtime", "runtimes", multiple=True, default=("torch", "onnx"), show_default=True,
              type=click.Choice(["torch", "onnx"]), help="Runtimes to compare (repeatable).")
@click.option("--size", "shape", default=(1200, 1920), nargs=2, type=int, show_default=True, help="Image H W.")
@click.option("--repeats", default=3, show_default=True)
@click.option("--threads", default=None, type=int, help="CPU threads (default: all).")
@click.option("--seed", default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the result dictionary as JSON.")
def bench_predict(backbones, runtimes, shape, repeats, threads, seed, as_json) -> None:
    """Seconds per image of Mask R-CNN inference, backbones x runtimes side by side (random weights)."""
    from semkit.bench.predict import bench_predict as run

    _emit(run(backbones=tuple(backbones), runtimes=tuple(runtimes), shape=tuple(shape), repeats=repeats,
              threads=threads, seed=seed), as_json)


@bench.command("ssl")
@click.option("--backbone", default="convnextv2_atto", show_default=True)
@click.option("--crop", "crop_size", default=224, show_default=True, help="Square crop side (multiple of 32).")
@click.option("--batch-size", default=8, show_default=True)
@click.option("--ratio", "ratios", multiple=True, type=float, default=(0.5, 0.75), show_default=True,
              help="Mask ratios (repeatable).")
@click.option("--repeats", default=5, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the result dictionary as JSON.")
def bench_ssl(backbone, crop_size, batch_size, ratios, repeats, seed, as_json) -> None:
    """FCMAE images/s, dense vs MinkowskiEngine sparse backend, at each mask ratio side by side."""
    from semkit.bench.ssl import bench_ssl as run

    _emit(run(backbone=backbone, crop_size=crop_size, batch_size=batch_size, ratios=tuple(ratios),
              repeats=repeats, seed=seed), as_json)


@bench.command("train")
@click.option("--backbone", "backbones", multiple=True, default=("convnextv2_pico", "resnet50"), show_default=True,
              help="Backbones to compare (repeatable).")
@click.option("--variant", "variants", multiple=True,
              default=("cpu6ep", "defaults", "rois256", "rois256_fpn128", "rois256_channels_last"),
              show_default=True, help="Step configurations to compare (repeatable); see --list-variants.")
@click.option("--list-variants", is_flag=True, help="Print the variants and their settings, then exit.")
@click.option("--data", "dataset", type=click.Path(file_okay=False, exists=True), default=None,
              help="A BAM TiO2 folder whose training split is cropped (default: synthetic images).")
@click.option("--crop", "crop_size", default=256, show_default=True, help="Training crop side in pixels.")
@click.option("--batch-size", default=2, show_default=True)
@click.option("--steps", default=4, show_default=True, help="Timed steps per variant (after one warm-up step).")
@click.option("--threads", default=None, type=int, help="torch threads for variants that set none (default: all).")
@click.option("--uncertainty", is_flag=True, help="Include the confidence head.")
@click.option("--seed", default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the result dictionary as JSON.")
def bench_train(backbones, variants, list_variants, dataset, crop_size, batch_size, steps, threads, uncertainty, seed,
                as_json) -> None:
    """Mask R-CNN training step time per component (encoder, FPN, RPN, box and mask heads, backward,
    optimizer), step configurations side by side on identical batches."""
    from semkit.bench.train import VARIANTS
    from semkit.bench.train import bench_train as run

    if list_variants:
        for name, spec in VARIANTS.items():
            click.echo(f"{name:<28} {json.dumps(spec)}")
        return
    try:
        result = run(backbones=tuple(backbones), variants=tuple(variants), dataset=dataset, crop_size=crop_size,
                     batch_size=batch_size, steps=steps, threads=threads, uncertainty=uncertainty, seed=seed,
                     echo=click.echo)
    except KeyError as exc:
        raise click.ClickException(str(exc.args[0])) from exc
    _emit(result, as_json)


commands = [bench]
