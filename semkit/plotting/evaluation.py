"""Figures of an evaluation (notebook 04), modelled on the figures of the seed studies.

Every function takes one of the tables of :mod:`semkit.metrics` (``Evaluation.per_image``,
``Evaluation.per_particle``, a study table from :func:`semkit.metrics.simulate_study` or of real runs with the
same columns, an ERR or agreement matrix), draws with seaborn, and returns the matplotlib ``Figure``; nothing
is shown or saved here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

COUNT_COLORS = {"correct": "#4c9a5f", "missed": "#d98c3a", "false_positive": "#c4473a"}


def _need(table: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise KeyError(f"{what} needs columns {missing}; the table has {', '.join(map(str, table.columns))}")


def _palette(table: pd.DataFrame, hue: str) -> dict:
    """One colour per value of ``hue`` in order of appearance, so every figure of a table colours alike."""
    import seaborn as sns

    names = list(dict.fromkeys(table[hue]))
    return dict(zip(names, sns.color_palette(n_colors=len(names)), strict=True))


def _empty_figure(message: str):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 1.5))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center")
    return fig


def plot_metric_per_image(per_image: pd.DataFrame, metric: str = "aji_plus", method_col: str = "method"):
    """Bars of ``metric`` for every test image, methods side by side (hue)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    _need(per_image, ["image", metric, method_col], "plot_metric_per_image")
    n_images = per_image["image"].nunique()
    fig, ax = plt.subplots(figsize=(max(5.0, 0.55 * n_images * max(1, per_image[method_col].nunique()) ** 0.5 + 2), 3.4))
    sns.barplot(per_image, x="image", y=metric, hue=method_col, ax=ax, errorbar=None)
    ax.set_ylim(0, 1.0 if per_image[metric].max() <= 1 else None)
    ax.set_xlabel("test image")
    ax.set_ylabel(_pretty(metric))
    ax.tick_params(axis="x", rotation=45 if n_images > 6 else 0)
    ax.legend(title=method_col, fontsize="small", loc="lower right")
    fig.tight_layout()
    return fig


def plot_paired_comparison(per_image: pd.DataFrame, method_a: str | None = None, method_b: str | None = None,
                           metric: str = "aji_plus", method_col: str = "method"):
    """Per-image ``metric`` of two methods with a line joining the two values of each image, plus the means.

    ``method_a``/``method_b`` default to the first two methods of the table.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    _need(per_image, ["image", metric, method_col], "plot_paired_comparison")
    methods = list(dict.fromkeys(per_image[method_col]))
    method_a = method_a or methods[0]
    method_b = method_b or (methods[1] if len(methods) > 1 else methods[0])
    wide = per_image.pivot_table(index="image", columns=method_col, values=metric)
    for m in (method_a, method_b):
        if m not in wide.columns:
            raise KeyError(f"unknown method {m!r}; methods: {', '.join(map(str, wide.columns))}")
    a, b = wide[method_a].to_numpy(), wide[method_b].to_numpy()
    fig, ax = plt.subplots(figsize=(3.6, 3.6))
    better = b >= a
    colors = np.where(better, "#4c72b0", "#c44e52")
    for x0, y0, y1, c in zip(np.zeros_like(a), a, b, colors, strict=True):  # one segment per image
        ax.plot([x0, 1.0], [y0, y1], color=c, alpha=0.6, lw=1.2)
    sns.scatterplot(x=np.r_[np.zeros_like(a), np.ones_like(b)], y=np.r_[a, b], color="0.3", s=18, ax=ax,
                    legend=False)
    ax.scatter([0, 1], [np.nanmean(a), np.nanmean(b)], marker="D", s=60, color="black", zorder=3, label="mean")
    ax.set_xticks([0, 1], [method_a, method_b])
    ax.set_xlim(-0.35, 1.35)
    ax.set_ylabel(_pretty(metric))
    ax.set_title(f"{int(better.sum())}/{len(a)} images better with {method_b}", fontsize="small")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def plot_metric_vs_backbone_size(study: pd.DataFrame, metric: str = "aji_plus", x: str = "backbone_params_m",
                                 hue: str = "pretraining", pretrain_images: int | str | None = "max"):
    """Mean ``metric`` (± standard error) against backbone size, one line per pretraining method.

    Args:
        study: long table with ``x``, ``hue``, ``metric`` (and ``pretrain_images``).
        pretrain_images: keep only runs pretrained on this many images (``"max"`` = the largest set; rows
            with 0 images — no pretraining — are always kept); ``None`` = all rows.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    _need(study, [x, hue, metric], "plot_metric_vs_backbone_size")
    data = study
    if pretrain_images is not None and "pretrain_images" in study.columns:
        size = study["pretrain_images"].max() if pretrain_images == "max" else pretrain_images
        data = study[(study["pretrain_images"] == size) | (study["pretrain_images"] == 0)]
    fig, ax = plt.subplots(figsize=(5, 3.4))
    sns.lineplot(data, x=x, y=metric, hue=hue, marker="o", errorbar="se", err_style="bars", ax=ax,
                 palette={k: v for k, v in _palette(study, hue).items() if k in set(data[hue])})
    ax.set_xscale("log")
    ticks = sorted(data[x].unique())
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("backbone parameters (M)")
    ax.set_ylabel(_pretty(metric))
    if pretrain_images is not None and "pretrain_images" in study.columns:
        ax.set_title(f"pretraining set: {int(size):,} images", fontsize="small")
    fig.tight_layout()
    return fig


def plot_seeds(seeds: pd.DataFrame, metric: str = "aji_plus", name_col: str = "name", reference: str | None = None):
    """One dot per seed and a mean ± std bar per configuration (e.g. :attr:`RunComparison.seeds`).

    With ``reference``, a dashed line marks that configuration's mean, so gains read off directly.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    _need(seeds, [name_col, metric], "plot_seeds")
    names = list(dict.fromkeys(seeds[name_col]))
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(names) + 1.5), 3.4))
    sns.pointplot(seeds, x=name_col, y=metric, order=names, errorbar="sd", linestyle="none", color="0.25",
                  marker="_", markersize=24, markeredgewidth=2, capsize=0.1, err_kws={"linewidth": 1.0}, ax=ax)
    sns.stripplot(seeds, x=name_col, y=metric, order=names, hue=name_col, palette=_palette(seeds, name_col),
                  size=6, jitter=0.12, legend=False, ax=ax)
    if reference is not None and reference in names:
        ax.axhline(seeds.loc[seeds[name_col] == reference, metric].mean(), color="gray", ls="--", lw=1)
    ax.set_xlabel("")
    ax.set_ylabel(_pretty(metric) + " (test, per seed)")
    ax.tick_params(axis="x", rotation=30 if len(names) > 4 else 0)
    fig.tight_layout()
    return fig


def plot_miou_by_split(table: pd.DataFrame, metric: str = "test_miou_dataset_level", name_col: str = "name",
                       published: dict[str, dict[str, float]] | None = None):
    """Grouped bars of a semantic score per split (x) and configuration (hue), one dot per seed.

    ``table`` has one row per configuration, split and seed (:func:`semkit.train.compare.load_semantic_runs`).
    ``published`` (label -> split -> value) draws reference figures from the literature as black ticks over
    their split, labelled in the legend, so the gap to the studies' own numbers reads off the same axis.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    _need(table, [name_col, "split", metric], "plot_miou_by_split")
    splits = list(dict.fromkeys(table["split"]))
    names = list(dict.fromkeys(table[name_col]))
    palette = _palette(table, name_col)
    fig, ax = plt.subplots(figsize=(max(4.5, 1.2 * len(splits) * max(1, len(names)) ** 0.5 + 2), 3.6))
    sns.barplot(table, x="split", y=metric, hue=name_col, order=splits, hue_order=names, palette=palette,
                errorbar=None, alpha=0.75, ax=ax)
    sns.stripplot(table, x="split", y=metric, hue=name_col, order=splits, hue_order=names, palette=palette,
                  dodge=True, jitter=False, size=4, edgecolor="0.2", linewidth=0.6, legend=False, ax=ax)
    markers = iter([("_", 600), ("x", 60), ("+", 90), ("1", 90)])
    for label, values in (published or {}).items():
        marker, size = next(markers, ("_", 600))
        xs = [splits.index(s) for s in values if s in splits]
        ys = [values[s] for s in values if s in splits]
        ax.scatter(xs, ys, marker=marker, s=size, color="black", linewidths=1.5, zorder=5, label=label)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("")
    ax.set_ylabel(_pretty(metric))
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    fig.tight_layout()
    return fig


def plot_match_counts(per_image: pd.DataFrame, method_col: str = "method"):
    """Stacked bars of correct, missed and false-positive particles per method (summed over images)."""
    import matplotlib.pyplot as plt

    _need(per_image, [method_col, "correct", "missed", "false_positive"], "plot_match_counts")
    totals = per_image.groupby(method_col, sort=False)[["correct", "missed", "false_positive"]].sum()
    fig, ax = plt.subplots(figsize=(max(3.5, 1.1 * len(totals) + 1.5), 3.4))
    bottom = np.zeros(len(totals))
    for col, color in COUNT_COLORS.items():
        ax.bar(totals.index.astype(str), totals[col], bottom=bottom, color=color, label=col.replace("_", " "))
        bottom += totals[col].to_numpy()
    ax.set_ylabel("particles")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


def plot_metric_vs_pretraining_size(study: pd.DataFrame, metric: str = "aji_plus", x: str = "pretrain_images",
                                    hue: str = "pretraining", backbone: str | None = "largest"):
    """Mean ``metric`` against pretraining-set size with standard-error bands, one line per method.

    Methods that have only ``x == 0`` rows (no pretraining) are drawn as a dashed horizontal reference line
    with their own standard-error band. ``backbone`` restricts the table to one backbone (``"largest"`` = the
    one with most ``backbone_params_m``; ``None`` = all rows, pooling backbones).
    """
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.ticker import NullLocator

    _need(study, [x, hue, metric], "plot_metric_vs_pretraining_size")
    if backbone == "largest" and {"backbone", "backbone_params_m"} <= set(study.columns):
        backbone = study.loc[study["backbone_params_m"].idxmax(), "backbone"]
    elif backbone == "largest":
        backbone = None
    data = study if backbone is None else study[study["backbone"] == backbone]
    if data.empty:
        return _empty_figure(f"no runs for backbone {backbone!r}")
    pretrained = data[data[x] > 0]
    reference = data[~data[hue].isin(pretrained[hue].unique())]
    palette = _palette(study, hue)
    fig, ax = plt.subplots(figsize=(5, 3.4))
    if not pretrained.empty:
        sns.lineplot(pretrained, x=x, y=metric, hue=hue, marker="o", errorbar="se", err_style="band", ax=ax,
                     palette={k: v for k, v in palette.items() if k in set(pretrained[hue])})
        ax.set_xscale("log")
        # tick the measured set sizes in plain numbers (1, 2, 4, ... 53), not the log scale's powers of ten
        sizes = np.sort(pretrained[x].unique())
        ax.set_xticks(sizes, [f"{v:g}" for v in sizes])
        ax.xaxis.set_minor_locator(NullLocator())
    for name, part in reference.groupby(hue, sort=False):
        values = part[metric].to_numpy()
        mean = values.mean()
        se = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else 0.0
        ax.axhline(mean, color=palette[name], ls="--", lw=1.2, label=f"{name} (no pretraining)")
        ax.axhspan(mean - se, mean + se, color=palette[name], alpha=0.15, lw=0)
    ax.set_xlabel("pretraining images")
    ax.set_ylabel(_pretty(metric))
    ax.legend(fontsize="small")
    if backbone is not None:
        ax.set_title(f"backbone: {backbone}", fontsize="small")
    fig.tight_layout()
    return fig


def plot_confidence_histograms(particles: pd.DataFrame, method_col: str = "method", bins: int = 20):
    """Confidence histograms of predicted particles matched to certain vs uncertain ground truth, per method.

    Args:
        particles: rows with ``score`` and a boolean ``certain`` (e.g. ``ConfidenceAnalysis.particles``, or the
            predicted rows of ``Evaluation.per_particle`` with a flag).
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    _need(particles, ["score", "certain"], "plot_confidence_histograms")
    data = particles[particles["certain"].notna() & particles["score"].notna()].copy()
    if data.empty:
        return _empty_figure("no matched particles with a certainty flag")
    data["ground truth"] = np.where(data["certain"].astype(bool), "certain", "uncertain")
    methods = list(dict.fromkeys(data[method_col])) if method_col in data else [None]
    fig, axes = plt.subplots(1, len(methods), figsize=(3.3 * len(methods), 3.0), sharey=True, squeeze=False)
    for ax, method in zip(axes[0], methods, strict=True):
        part = data if method is None else data[data[method_col] == method]
        sns.histplot(part, x="score", hue="ground truth", hue_order=["certain", "uncertain"], bins=bins,
                     binrange=(0, 1), stat="density", common_norm=False, element="step", ax=ax,
                     palette={"certain": "#4c72b0", "uncertain": "#dd8452"})
        ax.set_xlabel("confidence")
        if method is not None:
            ax.set_title(str(method), fontsize="small")
    fig.tight_layout()
    return fig


def plot_size_distributions(per_particle: pd.DataFrame, column: str = "ecd_px", method_col: str = "method",
                            reference: str = "gt"):
    """Size distributions of the ground truth and of each method's predictions, with mean markers.

    The ground-truth particles (``side == reference``) are taken once; every method contributes its predicted
    particles. Each distribution is a density histogram (steps) with a dashed vertical line and a triangle at
    its mean.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    _need(per_particle, ["side", column], "plot_size_distributions")
    data = per_particle.dropna(subset=[column])
    if data.empty:
        return _empty_figure(f"no particles with {column}")
    gt = data[data["side"] == reference]
    if method_col in gt.columns and not gt.empty:
        gt = gt[gt[method_col] == gt[method_col].iloc[0]]
    pred = data[data["side"] != reference]
    groups = pd.concat([gt.assign(source="ground truth"),
                        pred.assign(source=pred[method_col] if method_col in pred else "prediction")],
                       ignore_index=True)
    order = list(dict.fromkeys(groups["source"]))
    palette = dict(zip(order, sns.color_palette("colorblind", len(order)), strict=True))
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    sns.histplot(groups, x=column, hue="source", hue_order=order, palette=palette, stat="density",
                 common_norm=False, element="step", fill=False, bins=30, ax=ax)
    top = ax.get_ylim()[1]
    for name in order:
        mean = groups.loc[groups["source"] == name, column].mean()
        ax.axvline(mean, color=palette[name], ls="--", lw=1)
        ax.plot([mean], [top * 0.97], marker="v", color=palette[name], ms=8)
    ax.set_xlabel(_pretty(column))
    fig.tight_layout()
    return fig


def plot_err_matrix(err: pd.DataFrame, digits: int = 1):
    """Heatmap of an ERR matrix (rows: baseline, columns: method; % of the baseline's error removed)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    n = len(err)
    fig, ax = plt.subplots(figsize=(1.1 * n + 2.2, 0.9 * n + 1.4))
    limit = float(np.nanmax(np.abs(err.to_numpy()))) if np.isfinite(err.to_numpy()).any() else 1.0
    sns.heatmap(err, annot=True, fmt=f".{digits}f", cmap="RdBu", center=0, vmin=-limit, vmax=limit, ax=ax,
                cbar_kws={"label": "ERR (%)"})
    ax.set_xlabel("method")
    ax.set_ylabel("baseline")
    fig.tight_layout()
    return fig


def plot_agreement_matrix(agreement, digits: int = 2):
    """Heatmap of the mean pairwise agreement, cells annotated ``mean ± std`` (an :class:`AgreementMatrix`)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    n = len(agreement.mean)
    fig, ax = plt.subplots(figsize=(1.4 * n + 2.0, 1.0 * n + 1.2))
    sns.heatmap(agreement.mean, annot=agreement.formatted(digits).to_numpy(), fmt="", cmap="viridis", vmin=0,
                vmax=1, ax=ax, cbar_kws={"label": _pretty(agreement.metric)}, annot_kws={"fontsize": "small"})
    fig.tight_layout()
    return fig


def plot_reliability(reliability: pd.DataFrame, method_col: str = "method"):
    """Reliability diagram: observed rate against mean confidence per bin, one line per method."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    _need(reliability, ["mean_confidence", "observed_rate"], "plot_reliability")
    fig, ax = plt.subplots(figsize=(3.6, 3.6))
    ax.plot([0, 1], [0, 1], color="0.6", ls=":", label="calibrated")
    sns.lineplot(reliability.dropna(subset=["observed_rate"]), x="mean_confidence", y="observed_rate",
                 hue=method_col if method_col in reliability else None, marker="o", ax=ax)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean confidence")
    ax.set_ylabel("observed frequency")
    fig.tight_layout()
    return fig


def _pretty(name: str) -> str:
    return {"aji_plus": "AJI+", "f1": "F1", "pq": "PQ", "ecd_px": "ECD (px)", "ecd_nm": "ECD (nm)",
            "ecd_um": "ECD (µm)", "area_px": "area (px²)", "area_nm2": "area (nm²)",
            "area_um2": "area (µm²)",
            "test_miou_dataset_level": "test mIoU", "test_miou_image_averaged": "test mIoU (per image)"}.get(name, name.replace("_", " "))
