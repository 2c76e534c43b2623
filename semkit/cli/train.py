"""``semkit finetune``: train a particle segmenter, tune its thresholds on validation, evaluate on test."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click


def _parse_value(text: str):
    """JSON when it parses (numbers, booleans, null, lists, dicts), else the plain string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _config_values(config_file: str | None, settings: tuple[str, ...], config_class) -> dict:
    """The fields of ``config_class`` from a saved config file, overridden by ``--set KEY=VALUE`` items."""
    values = json.loads(Path(config_file).read_text()) if config_file else {}
    known = {f.name for f in dataclasses.fields(config_class)}
    for item in settings:
        if "=" not in item:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--set")
        key, value = item.split("=", 1)
        if key not in known:
            raise click.BadParameter(f"unknown field {key!r}; fields: {', '.join(sorted(known))}",
                                     param_hint="--set")
        values[key] = _parse_value(value)
    return values


@click.command()
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="A finetune_config.json (e.g. from an earlier run); --set values override it.")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="A FinetuneConfig field, e.g. --set model=unet --set epochs=10 "
                   "--set 'maskrcnn={\"detections_per_img\": 200}'. Values are read as JSON when possible.")
@click.option("--out", "output_dir", type=click.Path(file_okay=False), help="Run folder (FinetuneConfig.output_dir).")
def finetune(config_file: str | None, settings: tuple[str, ...], output_dir: str | None) -> None:
    """Fine-tune Mask R-CNN / U-Net (or tune the classical pipeline) and write results.json.

    Without --config the FinetuneConfig defaults apply (synthetic data, convnextv2_atto Mask R-CNN with the
    uncertainty head). The fields and their meaning are those of semkit.train.FinetuneConfig.
    """
    from semkit.errors import InputError
    from semkit.train.finetune import FinetuneConfig
    from semkit.train.finetune import finetune as run_finetune

    values = _config_values(config_file, settings, FinetuneConfig)
    if output_dir is not None:
        values["output_dir"] = output_dir
    try:
        config = FinetuneConfig(**values)
        results = run_finetune(config)
    except (InputError, KeyError, TypeError) as err:
        raise click.ClickException(str(err)) from err
    test = results.get("test", {})
    click.echo(f"{results.get('method')}: test AJI+ {test.get('aji_plus')} "
               f"(results in {Path(config.output_dir) / 'results.json'})")


@click.command("finetune-semantic")
@click.option("--encoder", default=None, metavar="PATH",
              help="Encoder checkpoint (semkit pretrain / notebook 02's encoder.pt), or 'imagenet' (downloads "
                   "timm weights); default: random initialisation.")
@click.option("--root", type=click.Path(exists=True, file_okay=False), default=None,
              help="Folder of the splits (<root>/<split>/{train,val,test} and *_annot); default: the config's "
                   "root, else ../shared/data/nasa-ebc.")
@click.option("--split", "splits", multiple=True,
              help="Split folder (repeatable); default: the config's split, else EBC1, EBC2 and EBC3.")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="A finetune_config.json of an earlier semantic run (notebook 02's downstream/<encoder>/<split>); "
                   "--set values override it.")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="A SemanticFinetuneConfig field, e.g. --set epochs=6 --set crop=128 --set seed=1.")
@click.option("--out", "output_dir", type=click.Path(file_okay=False), required=True,
              help="Parent folder: each split's run goes to <out>/<split> (config, checkpoints, results.json).")
def finetune_semantic(encoder: str | None, root: str | None, splits: tuple[str, ...], config_file: str | None,
                      settings: tuple[str, ...], output_dir: str) -> None:
    """Fine-tune a U-Net++ (semantic segmentation, e.g. NASA EBC) from an encoder on each split; test mIoU.

    The same fine-tuning as notebook 02's downstream section, for one encoder: rerun a baseline with another
    seed, or score an encoder pretrained elsewhere. Prints the per-split test scores; `semkit compare` reads the
    output folder. A config's root is relative to where its run ran (notebooks/ for notebook 02): give --root
    when running from elsewhere. Example (the random baseline of a notebook 02 run, seed 1, from the repository):

    \b
    semkit finetune-semantic --config RUN/downstream/random/EBC1/finetune_config.json --set seed=1 \\
      --root ../shared/data/nasa-ebc --split EBC1 --split EBC2 --split EBC3 --out runs/random_seed1
    """
    from semkit.errors import InputError
    from semkit.ssl.matssl_downstream import (
        DEFAULT_ROOT,
        EBC_SPLITS,
        SemanticFinetuneConfig,
        finetune_semantic_splits,
    )

    values = _config_values(config_file, settings, SemanticFinetuneConfig)
    saved_split, saved_root = values.pop("split", None), values.pop("root", None)  # finetune_config.json keeps them
    values.pop("output_dir", None)  # every split gets its own folder under --out
    splits = splits or ((saved_split,) if saved_split else EBC_SPLITS)
    root = root or saved_root or DEFAULT_ROOT
    try:
        config = SemanticFinetuneConfig(**values)
        table = finetune_semantic_splits(encoder, root, splits, output_dir=output_dir, config=config)
    except (InputError, KeyError, TypeError) as err:
        raise click.ClickException(str(err)) from err
    columns = [c for c in ("test_miou_dataset_level", "test_miou_image_averaged", "best_val_miou") if c in table]
    click.echo(table[columns].round(4).to_string())
    click.echo(f"results in {Path(output_dir)}/<split>/results.json")


@click.command("compare")
@click.argument("runs", nargs=-1, required=True, metavar="NAME=FOLDER...")
@click.option("--reference", default=None, help="Configuration the ERR is computed against (default: the first).")
@click.option("--figures", "figures_dir", type=click.Path(file_okay=False), default=None,
              help="Write aji_by_seed.png, aji_per_image.png and, for uncertainty heads, "
                   "confidence_histograms.png here.")
@click.option("--json", "as_json", is_flag=True, help="Also print the per-seed table as JSON.")
@click.option("--published", multiple=True, metavar="LABEL=SPLIT:VALUE,...",
              help="Semantic runs only: a literature figure to draw beside the bars, e.g. "
                   "'MatSSL (paper)=EBC1:0.968,EBC2:0.947,EBC3:0.845' (repeatable).")
def compare(runs: tuple[str, ...], reference: str | None, figures_dir: str | None, as_json: bool,
            published: tuple[str, ...]) -> None:
    """Compare finished fine-tuning folders (semkit finetune --out, or a notebook 03 run folder).

    Prints test AJI+ mean ± std over seeds, per-seed values, matching counts (IoU >= 0.4), mask AP and the ERR
    against the reference as a Markdown table, then the uncertainty-head table (AUROC, calibration) for runs
    with a confidence head. A NAME given several times pools the seeds of its folders.

    Semantic fine-tuning folders (U-Net++ on NASA EBC: one results.json per split, e.g. a notebook 02 run's
    downstream/<encoder>) give test mIoU per split instead, mean ± std over seeds, and --figures draws
    miou_by_split.png.
    Example: semkit compare random=runs/random fcmae=runs/fcmae --figures figs/
    """
    from semkit.errors import InputError
    from semkit.train.compare import (
        confidence_table,
        load_runs,
        markdown_table,
        semantic_results_files,
        summary_table,
    )

    named: dict[str, list[str]] = {}
    for item in runs:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise click.BadParameter(f"expected NAME=FOLDER, got {item!r}", param_hint="RUNS")
        named.setdefault(name, []).append(folder)  # a name given again pools the seeds of its folders
    semantic = {folder: bool(semantic_results_files(folder)) for folders in named.values() for folder in folders}
    if any(semantic.values()):
        if not all(semantic.values()):
            raise click.ClickException(
                "cannot compare semantic (per-split mIoU) with instance (AJI+) folders; without semantic results: "
                + ", ".join(f for f, is_semantic in semantic.items() if not is_semantic))
        _compare_semantic(named, figures_dir, as_json, _parse_published(published))
        return
    if published:
        raise click.BadParameter("only semantic runs (per-split mIoU) take published figures",
                                 param_hint="--published")
    try:
        comparison = load_runs(named)
        summary = summary_table(comparison, reference=reference or next(iter(named)))
    except InputError as err:
        raise click.ClickException(str(err)) from err
    click.echo(markdown_table(summary))
    confidence = confidence_table(comparison)
    if not confidence.empty:
        click.echo("\nConfidence of the uncertainty head (per seed; matched = correct particles):")
        click.echo(confidence.round(3).to_string(index=False))
    if as_json:
        click.echo(comparison.seeds.drop(columns=["run_dir"]).to_json(orient="records", indent=1))
    if figures_dir:
        _compare_figures(comparison, summary.attrs.get("reference"), Path(figures_dir))


def _compare_figures(comparison, reference: str | None, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from semkit.plotting.evaluation import plot_confidence_histograms, plot_metric_per_image, plot_seeds

    out.mkdir(parents=True, exist_ok=True)
    figures = {"aji_by_seed.png": plot_seeds(comparison.seeds, reference=reference)}
    if not comparison.per_image.empty:
        mean = comparison.per_image.groupby(["name", "image"], sort=False, as_index=False)["aji_plus"].mean()
        fig = plot_metric_per_image(mean, method_col="name")
        fig.axes[0].set_title("test AJI+ per image (mean over seeds)", fontsize="medium")
        figures["aji_per_image.png"] = fig
    parts = comparison.particles
    if not parts.empty and "confidence" in parts and parts["confidence"].notna().any():
        matched = parts[(parts["status"] == "correct") & parts["confidence"].notna()]
        figures["confidence_histograms.png"] = plot_confidence_histograms(
            matched.rename(columns={"confidence": "score"}), method_col="name")
    for name, fig in figures.items():
        fig.savefig(out / name, dpi=120)
        plt.close(fig)
        click.echo(f"wrote {out / name}")


def _parse_published(items: tuple[str, ...]) -> dict[str, dict[str, float]]:
    published: dict[str, dict[str, float]] = {}
    for item in items:
        label, sep, values = item.partition("=")
        try:
            if not sep or not label:
                raise ValueError
            pairs = [v.split(":") for v in values.split(",")]
            published[label] = {split.strip(): float(value) for split, value in pairs}
        except ValueError:
            raise click.BadParameter(f"expected LABEL=SPLIT:VALUE,..., got {item!r}",
                                     param_hint="--published") from None
    return published


def _compare_semantic(named: dict[str, list[str]], figures_dir: str | None, as_json: bool,
                      published: dict[str, dict[str, float]]) -> None:
    from semkit.errors import InputError
    from semkit.train.compare import load_semantic_runs, semantic_markdown_table, semantic_summary

    try:
        table = load_semantic_runs(named)
    except InputError as err:
        raise click.ClickException(str(err)) from err
    click.echo(semantic_markdown_table(semantic_summary(table)))
    classes = sorted(c for c in table.columns if c.startswith("test_iou_class_"))
    if classes:
        click.echo("\nTest IoU per class (mean over seeds):")
        click.echo(table.groupby(["name", "split"], sort=False)[classes].mean().round(3).to_string())
    for label, values in published.items():
        click.echo(f"published {label}: " + ", ".join(f"{s} {v:.3f}" for s, v in values.items()))
    if as_json:
        click.echo(table.drop(columns=["run_dir"]).to_json(orient="records", indent=1))
    if figures_dir:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from semkit.plotting.evaluation import plot_miou_by_split

        out = Path(figures_dir)
        out.mkdir(parents=True, exist_ok=True)
        fig = plot_miou_by_split(table, published=published)
        fig.savefig(out / "miou_by_split.png", dpi=120, bbox_inches="tight")
        plt.close(fig)
        click.echo(f"wrote {out / 'miou_by_split.png'}")


commands = [finetune, finetune_semantic, compare]

if __name__ == "__main__":  # pragma: no cover
    finetune()
