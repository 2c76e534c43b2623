"""The summary figures and tables of a batch (those of notebook 04, on real runs) as PNGs and one HTML file.

:func:`render_report` collects the batch, derives the study table of its fine-tuning runs
(:func:`study_table`) and draws, with :mod:`semkit.plotting.evaluation` and :func:`semkit.metrics.err_matrix`:
AJI+ against backbone size per pretraining method, ERR matrices, AJI+ against pretraining-set size with
standard-error bands, per-image comparisons, mIoU tables, and a table of every stage's runs. A section renders
only when the table has what it needs; otherwise it says in one line what is missing. The HTML embeds the
images (base64) and tables, so it can be mailed or archived as one file.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from semkit.batch.collect import BASE_COLUMNS, collect
from semkit.batch.runner import batch_dir_for, read_plan
from semkit.batch.spec import notebook_parameters

#: The fine-tuning notebook's test score (notebook 03's ``metrics.json``).
SCORE = "test_aji_plus"
#: ``init`` values of notebook 03 that are not a checkpoint, and the pretraining name they stand for.
INIT_NAMES = {"random": "none", "imagenet": "imagenet"}
#: Metrics shown first in the per-stage tables, when present.
KEY_METRICS = ("test_aji_plus", "test_ap", "test_pq", "test_f1", "best_val_loss", "fit_seconds", "train_seconds",
               "n_train_images", "median_ms", "reduction_mean", "boxes_mean")
MAX_METRICS = 8
REPORT_FILE = "report.html"


@dataclass
class Section:
    """One part of the report: a title, HTML body, and whether it had the data it needs."""

    title: str
    body: str
    rendered: bool = True


@functools.cache
def backbone_size_m(name: str) -> float:
    """Parameters (millions) of a semkit backbone (grayscale, feature pyramid), counted on PyTorch's meta
    device so that even ``convnextv2_huge`` costs no memory; NaN for a name semkit does not know."""
    import torch

    from semkit.models.backbones import count_parameters, create_backbone

    try:
        with torch.device("meta"):
            return count_parameters(create_backbone(name, init="random")) / 1e6
    except KeyError:
        return math.nan


def _stages_with(table: pd.DataFrame, column: str) -> list[str]:
    """Upstream stages whose ``<stage>.<column>`` is in the table (in order of the table's stages)."""
    return [s for s in dict.fromkeys(table["stage"]) if f"{s}.{column}" in table.columns]


def study_table(results: pd.DataFrame) -> pd.DataFrame:
    """Finished fine-tuning runs (rows with ``test_aji_plus``) in the study layout of notebook 04.

    ``pretraining`` is ``none`` for ``init="random"``, ``imagenet`` for ``init="imagenet"``, and for an
    encoder checkpoint the ``method`` of the upstream run it came from (``checkpoint`` if none is known);
    ``pretrain_images`` is that run's ``n_train_images`` (0 without pretraining). ``method`` is notebook 03's
    method name without the words all runs share; ``label`` names each configuration by the parts that differ
    between the runs (method, pretraining, pretraining size).

    Returns:
        Columns ``run_id, stage, seed, method, backbone, backbone_params_m, pretraining, pretrain_images,
        aji_plus, label`` (empty when no run has a score).
    """
    columns = ["run_id", "stage", "seed", "method", "backbone", "backbone_params_m", "pretraining",
               "pretrain_images", "aji_plus", "label"]
    if SCORE not in results.columns:
        return pd.DataFrame(columns=columns)
    runs = results[(results["state"] == "done") & results[SCORE].notna()]
    method_stages = _stages_with(results, "method")
    rows = []
    for _, row in runs.iterrows():
        init = str(row.get("init", "random"))
        pretraining, images = INIT_NAMES.get(init, "checkpoint"), 0
        if init not in INIT_NAMES:
            for stage in method_stages:
                if pd.notna(row.get(f"{stage}.run_id")) and pd.notna(row.get(f"{stage}.method")):
                    pretraining = str(row[f"{stage}.method"])
                    images = row.get(f"{stage}.n_train_images", 0)
                    break
        backbone = str(row.get("backbone", "unknown"))
        rows.append({"run_id": row["run_id"], "stage": row["stage"], "seed": row.get("seed"),
                     "method": str(row.get("method", row.get("model", "model"))), "backbone": backbone,
                     "backbone_params_m": round(backbone_size_m(backbone), 2), "pretraining": pretraining,
                     "pretrain_images": int(images) if pd.notna(images) else 0, "aji_plus": float(row[SCORE])})
    study = pd.DataFrame(rows, columns=columns[:-1])
    if study.empty:
        return pd.DataFrame(columns=columns)
    short = _short_names(study["method"].unique())
    study["method"] = study["method"].map(short)
    vary_method = study["method"].nunique() > 1
    vary_pretraining = study["pretraining"].nunique() > 1
    vary_images = study.loc[study["pretrain_images"] > 0, "pretrain_images"].nunique() > 1
    labels = []
    for r in study.itertuples():
        parts = [r.method if vary_method else "", r.pretraining if vary_pretraining else "",
                 f"{r.pretrain_images} images" if vary_images and r.pretrain_images > 0 else ""]
        labels.append(" · ".join(p for p in parts if p) or r.method)
    study["label"] = labels
    return study


def _short_names(names) -> dict[str, str]:
    """Drop the ``_``-separated words every name shares: ``maskrcnn_convnextv2_atto_uncertainty`` and
    ``maskrcnn_convnextv2_femto_uncertainty`` become ``atto`` and ``femto``."""
    names = [str(n) for n in names]
    if len(names) < 2:
        return {n: n for n in names}
    common = set.intersection(*(set(n.split("_")) for n in names))
    return {n: "_".join(w for w in n.split("_") if w not in common) or n for n in names}


# ------------------------------------------------------------------------------------------------- rendering


def _figure_html(fig, path: Path) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    path.write_bytes(buffer.getvalue())
    data = base64.b64encode(buffer.getvalue()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(path.stem)}">'


def _table_html(table: pd.DataFrame) -> str:
    return table.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="", border=0, classes="table")


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def _mean_std(table: pd.DataFrame, by: list[str], values: list[str]) -> pd.DataFrame:
    grouped = table.groupby(by, sort=False)[values]
    out = grouped.mean().add_suffix(" mean").join(grouped.std().add_suffix(" std")).join(grouped.size().rename("runs"))
    return out.reset_index()


def _parameter_names(plan: dict, stage: str) -> set[str]:
    """Parameters of a stage's runs: those the spec sets and the notebook's own (their defaults are columns)."""
    runs = [r for r in plan["runs"] if r["stage"] == stage]
    names = {k for r in runs for k in r["parameters"]}
    notebooks = {r["notebook"] for r in runs}
    return names.union(*(notebook_parameters(nb) for nb in notebooks if Path(nb).is_file()))


def _overview(results: pd.DataFrame, plan: dict, **_) -> Section:
    counts = pd.crosstab(results["stage"], results["state"]).reindex(list(dict.fromkeys(results["stage"])))
    counts = counts.rename_axis(columns=None).reset_index()
    total = pd.to_numeric(results["wall_s"], errors="coerce").sum()
    body = (f"<p>{html.escape(plan.get('description') or '')}</p><p>{len(results)} runs, "
            f"{total / 60:.1f} min of execution in total. Spec: {html.escape(str(plan.get('spec')))}</p>"
            + _table_html(counts))
    bad = results[results["state"] != "done"]
    if not bad.empty:
        body += "<h3>Runs not done</h3>" + _table_html(bad[["stage", "run_id", "state", "error"]])
    return Section("Runs", body)


def _stage_tables(results: pd.DataFrame, plan: dict, **_) -> Section:
    stages = [s for s in plan["stages"] if s in set(results["stage"])]
    prefixes = tuple(f"{s}." for s in stages)
    body = ""
    for stage in stages:
        rows = results[results["stage"] == stage].dropna(axis=1, how="all")
        params = _parameter_names(plan, stage)
        varying = [c for c in rows.columns if c in params and rows[c].astype(str).nunique() > 1]
        metrics = [c for c in rows.columns if c not in params and c not in BASE_COLUMNS
                   and not c.startswith(prefixes) and pd.api.types.is_numeric_dtype(rows[c])]
        metrics = ([c for c in KEY_METRICS if c in metrics] + [c for c in metrics if c not in KEY_METRICS])
        columns = ["run_id", "state", "wall_s", *varying, *metrics[:MAX_METRICS]]
        body += f"<h3>{html.escape(stage)} ({html.escape(str(rows['notebook'].iloc[0]))})</h3>"
        body += _table_html(rows[columns])
    return Section("Results by stage", body)


def _backbone(study: pd.DataFrame, out: Path, **_) -> Section:
    from semkit.plotting.evaluation import plot_metric_vs_backbone_size

    title = "AJI+ against backbone size, per pretraining method"
    if study["backbone"].nunique() < 2:
        return Section(title, _note("Needs fine-tuning runs (test_aji_plus) of at least two backbones."), False)
    fig = plot_metric_vs_backbone_size(study)
    table = _mean_std(study, ["pretraining", "backbone", "backbone_params_m"], ["aji_plus"])
    return Section(title, _figure_html(fig, out / "aji_vs_backbone_size.png") + _table_html(table))


def _err(study: pd.DataFrame, out: Path, **_) -> Section:
    from semkit.metrics.err import err_matrix
    from semkit.plotting.evaluation import plot_err_matrix

    title = "Error reduction rate (ERR, %) of each method (columns) over each baseline (rows)"
    groups = []
    if study["pretraining"].nunique() >= 2:
        groups.append(("pretraining", "pretraining methods"))
    if study["label"].nunique() >= 2 and study["label"].nunique() != study["pretraining"].nunique():
        groups.append(("label", "configurations"))  # only when it splits the runs differently
    body = ""
    for column, what in groups:
        err = err_matrix(study, method_col=column, score_col="aji_plus")
        body += (f"<h3>{what}</h3>" + _figure_html(plot_err_matrix(err), out / f"err_matrix_{column}.png")
                 + _table_html(err.rename_axis(columns=None).reset_index()))
    if not body:
        return Section(title, _note("Needs fine-tuning runs of at least two methods or pretraining methods."),
                       False)
    return Section(title, body)


def _pretraining_size(study: pd.DataFrame, out: Path, **_) -> Section:
    from semkit.plotting.evaluation import plot_metric_vs_pretraining_size

    title = "AJI+ against pretraining-set size (mean ± standard error)"
    if study.loc[study["pretrain_images"] > 0, "pretrain_images"].nunique() < 2:
        return Section(title, _note("Needs fine-tuning runs from encoders pretrained on at least two set sizes."),
                       False)
    # the backbone with the most pretrained runs (the largest of those on a tie), not simply the largest one
    pretrained = study[study["pretrain_images"] > 0]
    counts = pretrained.groupby("backbone")["backbone_params_m"].agg(["size", "max"])
    backbone = counts.sort_values(["size", "max"]).index[-1]
    fig = plot_metric_vs_pretraining_size(study, backbone=backbone)
    rows = study[study["backbone"] == backbone]
    table = _mean_std(rows, ["pretraining", "pretrain_images"], ["aji_plus"])
    return Section(title, _figure_html(fig, out / "aji_vs_pretraining_size.png") + _table_html(table))


def _per_image(study: pd.DataFrame, per_image: pd.DataFrame, out: Path, **_) -> Section:
    from semkit.plotting.evaluation import plot_metric_per_image, plot_paired_comparison

    title = "Per-image comparison (test images, mean over seeds)"
    if per_image.empty or study.empty or "aji_plus" not in per_image.columns:
        return Section(title, _note("Needs per-image tables (test_per_image.csv) of finished fine-tuning runs."),
                       False)
    rows = per_image[per_image["run_id"].isin(study["run_id"])].drop(columns=["method"], errors="ignore")
    rows = rows.merge(study[["run_id", "label"]], on="run_id")
    if rows.empty:
        return Section(title, _note("No per-image rows belong to the fine-tuning runs."), False)
    import seaborn as sns

    fig = plot_metric_per_image(rows, method_col="label")
    sns.move_legend(fig.axes[0], "upper left", bbox_to_anchor=(1.0, 1.0))  # long labels would hide the bars
    body = _figure_html(fig, out / "aji_per_image.png")
    means = study.groupby("label", sort=False)["aji_plus"].mean()
    if len(means) >= 2:
        # no pretraining (else the first configuration) against the best other one
        plain = study.loc[study["pretraining"] == "none", "label"]
        baseline = plain.iloc[0] if len(plain) else means.index[0]
        best = means.drop(baseline).idxmax()
        fig = plot_paired_comparison(rows, baseline, best, method_col="label")
        body += _figure_html(fig, out / "paired_comparison.png")
    table = _mean_std(study, ["label"], ["aji_plus"])
    return Section(title, body + _table_html(table))


def _miou(results: pd.DataFrame, plan: dict, **_) -> Section:
    title = "Semantic segmentation: mIoU"
    columns = [c for c in results.columns if "miou" in c.lower() and pd.api.types.is_numeric_dtype(results[c])]
    if not columns:
        return Section(title, _note("No run reports an mIoU metric (a metrics.json key containing 'miou')."),
                       False)
    body = ""
    done = results[results["state"] == "done"]
    for stage in dict.fromkeys(done["stage"]):
        rows = done[done["stage"] == stage]
        cols = [c for c in columns if rows[c].notna().any()]
        if not cols:
            continue
        params = _parameter_names(plan, stage)
        by = [c for c in rows.columns if c in params and c != "seed" and rows[c].astype(str).nunique() > 1]
        table = _mean_std(rows, by, cols) if by else rows[cols].agg(["mean", "std"]).T.reset_index()
        body += f"<h3>{html.escape(stage)}</h3>" + _table_html(table)
    return Section(title, body)


SECTIONS: tuple[Callable[..., Section], ...] = (_overview, _backbone, _err, _pretraining_size, _per_image, _miou,
                                                _stage_tables)

STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table.table{border-collapse:collapse;font-size:12px;margin:.5em 0 1.5em}
table.table td,table.table th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}
img{max-width:100%;margin:.5em 0}.note{color:#777;font-style:italic}h2{border-bottom:2px solid #444}"""


def render_report(batch: str | Path, runs_root: str | Path = "papermill_runs",
                  figures_root: str | Path = "figures") -> Path:
    """Collect a batch and write its figures and ``report.html`` into ``<figures_root>/<batch name>/``.

    Args:
        batch: batch name, batch folder or spec file.
        runs_root: parent of the batch folders.
        figures_root: parent of the report folder.

    Returns:
        Path of ``report.html``.
    """
    batch_dir = batch_dir_for(batch, runs_root)
    plan = read_plan(batch_dir)
    results = collect(batch_dir)
    per_image_path = batch_dir / "per_image.parquet"
    per_image = pd.read_parquet(per_image_path) if per_image_path.is_file() else pd.DataFrame()
    study = study_table(results)
    out = Path(figures_root).resolve() / plan["name"]
    out.mkdir(parents=True, exist_ok=True)
    sections = []
    for make in SECTIONS:
        try:
            sections.append(make(results=results, plan=plan, study=study, per_image=per_image, out=out))
        except Exception as exc:  # one section's problem should not cost the whole report; say what it was
            name = make.__name__.strip("_").replace("_", " ")
            sections.append(Section(name, _note(f"could not render: {type(exc).__name__}: {exc}"), False))
    body = "".join(f"<section><h2>{html.escape(s.title)}</h2>{s.body}</section>" for s in sections)
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>semkit batch {html.escape(plan['name'])}"
            f"</title><style>{STYLE}</style></head><body><h1>Batch {html.escape(plan['name'])}</h1>{body}"
            "</body></html>")
    path = out / REPORT_FILE
    path.write_text(page, encoding="utf-8")
    return path
