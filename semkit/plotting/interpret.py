"""Interpretability figures: GRN feature-map grids, collapse statistics, CAM overlays and an ipywidgets explorer.

* :func:`plot_feature_maps` -- for one image, 16 (``n``) channels per stage in two columns per stage (η1…η4),
  the same channels for every checkpoint (:func:`semkit.interpret.select_channels`), checkpoints side by side.
  Each (checkpoint, stage) block shares one colour scale (its 1st-99th percentile over *all* channels), so dead
  maps look dark and saturated ones bright, as in ConvNeXt V2's Fig. 3, instead of per-map stretching that
  would turn a flat map into amplified noise.
* :func:`plot_feature_stats` -- dead / saturated fractions and mean pairwise cosine similarity per stage, one
  line per checkpoint (:mod:`semkit.interpret.stats`).
* :func:`plot_cams` -- per image: the image with ground-truth contours, then per model its predicted contours
  (certain green, uncertain red, as :func:`semkit.inference.overlay_image` draws everywhere in semkit) and the
  class activation map over the image with the 'jet' colours of the study (red/yellow = important, blue = not;
  grad-cam's ``show_cam_on_image``).
* :func:`interpret_explorer` -- checkpoint, image, stage, channel and CAM method chosen with widgets.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

#: Display names of the stages (the study's η1…η4).
STAGE_NAMES = {1: "η1", 2: "η2", 3: "η3", 4: "η4"}


def layer_scale(features: np.ndarray, low: float = 1.0, high: float = 99.0) -> tuple[float, float]:
    """Shared display range of a layer: its ``low``-``high`` percentiles over all channels and pixels."""
    vmin, vmax = np.percentile(np.asarray(features, dtype=np.float64), [low, high])
    if vmax <= vmin:
        vmax = vmin + 1e-6  # a constant layer: any range shows it as one flat colour
    return float(vmin), float(vmax)


def plot_feature_maps(captures: Mapping[str, Mapping[str, Mapping[int, np.ndarray]]], record,
                      n_channels: int = 16, seed: int = 0, panel: float = 0.45, cmap: str = "viridis"):
    """Grid of GRN channel maps of one image: ``n_channels`` per stage in two columns, checkpoints side by side.

    The channels of stage ``s`` are :func:`semkit.interpret.select_channels` ``(C_s, n_channels, seed, s)``, so
    checkpoints of one architecture show the same channels.

    Args:
        captures: ``{checkpoint: {image name: {stage: (C, h, w) array}}}`` from
            :func:`semkit.interpret.capture_all`.
        record: the image (``.name`` selects the maps, ``.image`` is shown first and titles the figure).
        n_channels: channels per stage (an even count fills two columns).
        seed: seed of the channel selection.
        panel: side of one channel map in inches.
        cmap: colormap of the maps.

    Returns:
        The matplotlib Figure.

    Raises:
        ValueError: no checkpoint to show.
    """
    import matplotlib.pyplot as plt

    from semkit.interpret.features import channel_selection

    captures = {ckpt: by_image[record.name] for ckpt, by_image in captures.items() if record.name in by_image}
    if not captures:
        raise ValueError(f"no feature maps of {record.name!r} to plot (every checkpoint unavailable?)")
    stages = sorted(next(iter(captures.values())))
    rows = int(np.ceil(n_channels / 2))
    # one grid: the input (spanning all rows), then per checkpoint two columns per stage; spacer columns between
    # stages and wider ones between checkpoints (fixed geometry: nested constrained layouts clip the image)
    stage_gap, ckpt_gap = 0.25, 0.8
    widths, columns = [float(rows), ckpt_gap], {}
    for ckpt in captures:
        for k, s in enumerate(stages):
            columns[ckpt, s] = len(widths)
            widths += [1.0, 1.0] + ([stage_gap] if k < len(stages) - 1 else [])
        widths.append(ckpt_gap)
    width_in, height_in = panel * sum(widths) * 1.04 + 0.3, panel * rows * 1.04 + 1.1
    fig = plt.figure(figsize=(width_in, height_in))
    grid = fig.add_gridspec(rows, len(widths), width_ratios=widths, wspace=0.04, hspace=0.04, left=0.15 / width_in,
                            right=1 - 0.15 / width_in, bottom=0.1 / height_in, top=1 - 0.95 / height_in)
    ax = fig.add_subplot(grid[:, 0])
    ax.imshow(record.image, cmap="gray", vmin=0, vmax=1)
    ax.set_title("input", fontsize="small")
    ax.set_axis_off()
    for ckpt, by_stage in captures.items():
        chosen_by_stage = channel_selection({s: by_stage[s] for s in stages}, n_channels, seed)
        for s in stages:
            feats = np.asarray(by_stage[s])
            chosen = chosen_by_stage[s]
            vmin, vmax = layer_scale(feats)
            col = columns[ckpt, s]
            for k in range(2 * rows):  # fill column by column: the channel order reads downwards
                ax = fig.add_subplot(grid[k % rows, col + k // rows])
                ax.set_axis_off()
                if k < len(chosen):
                    ax.imshow(feats[chosen[k]], cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
                if k == 0:
                    # centred over the stage's two columns: x = 1 + half the gap, in axes fractions
                    ax.set_title(STAGE_NAMES.get(s, str(s)), fontsize="small", x=1.02)
        first = grid[0, columns[ckpt, stages[0]]].get_position(fig)
        last = grid[0, columns[ckpt, stages[-1]] + 1].get_position(fig)
        fig.text((first.x0 + last.x1) / 2, first.y1 + 0.3 / height_in, ckpt, ha="center", va="bottom",
                 fontsize="small", fontweight="bold")
    fig.suptitle(f"{record.name}: GRN output of each stage's last block, {n_channels} channels per stage",
                 y=1 - 0.05 / height_in, va="top", fontsize="medium")
    return fig


def plot_feature_stats(table: pd.DataFrame):
    """Dead fraction, saturated fraction and mean pairwise cosine similarity per stage, a line per checkpoint.

    Args:
        table: :func:`semkit.interpret.feature_stats_table` (values are averaged over images).
    """
    import matplotlib.pyplot as plt

    from semkit.interpret.stats import summarise_stats

    summary = summarise_stats(table)
    panels = [("dead_fraction", "dead channels (fraction)"), ("saturated_fraction", "saturated channels (fraction)"),
              ("mean_cosine", "mean pairwise cosine similarity")]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), layout="constrained")
    stages = sorted(summary["stage"].unique())
    for ckpt, rows in summary.groupby("checkpoint", sort=False):
        for ax, (col, _) in zip(axes, panels, strict=True):
            ax.plot(rows["stage"], rows[col], marker="o", label=ckpt)
    for ax, (col, label) in zip(axes, panels, strict=True):
        ax.set_xticks(stages, [STAGE_NAMES.get(int(s), str(s)) for s in stages])
        ax.set_xlabel("stage (GRN of the last block)")
        ax.set_title(label, fontsize="medium")
        ax.set_ylim(-0.05 if col != "mean_cosine" else min(-0.05, float(summary[col].min()) - 0.05), 1.05)
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize="small", loc="best")
    return fig


def contour_image(image: np.ndarray, labels: np.ndarray | None, certain_ids=None) -> np.ndarray:
    """RGB image with particle outlines (certain green, uncertain red; all green without ``certain_ids``)."""
    from semkit.inference.outputs import overlay_image

    if labels is None:
        gray = np.clip(np.asarray(image, dtype=np.float64), 0, 1)
        return np.rint(np.repeat(gray[..., None] * 255, 3, axis=2)).astype(np.uint8)
    ids = np.unique(labels[labels > 0]) if certain_ids is None else certain_ids
    return overlay_image(image, labels, ids, alpha=0.0)


def cam_image(image: np.ndarray, cam: np.ndarray, image_weight: float = 0.5) -> np.ndarray:
    """The CAM over the grayscale image with the 'jet' colours (grad-cam's ``show_cam_on_image``), uint8 RGB."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    gray = np.clip(np.asarray(image, dtype=np.float32), 0, 1)
    return show_cam_on_image(np.repeat(gray[..., None], 3, axis=2), np.asarray(cam, dtype=np.float32),
                             use_rgb=True, image_weight=image_weight)


def plot_cams(records: Sequence, cams: Mapping[str, Mapping], panel: float = 2.6):
    """Image with ground-truth contours, then per model its predicted contours and its CAM; one row per image.

    Args:
        records: images (``.image``, ``.name``, ``.instances`` or ``None``, ``.certain`` or ``None``).
        cams: ``{image name: {model label: CAMResult}}`` from :func:`semkit.interpret.compute_cams`.
        panel: side of one panel in inches.
    """
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    records = [r for r in records if r.name in cams]
    if not records:
        raise ValueError("no CAMs to plot")
    models = list(cams[records[0].name])
    ncols = 1 + 2 * len(models)
    fig, axes = plt.subplots(len(records), ncols, figsize=(panel * ncols + 0.6, panel * len(records) + 0.3),
                             squeeze=False, layout="constrained")
    for row, rec in zip(axes, records, strict=True):
        gt_ids = None if rec.certain is None else np.flatnonzero(np.asarray(rec.certain)) + 1
        row[0].imshow(contour_image(rec.image, rec.instances, gt_ids))
        row[0].set_title(f"{rec.name}\nground truth" if rec.instances is not None else f"{rec.name}\n(no labels)",
                         fontsize="small")
        for m, label in enumerate(models):
            res = cams[rec.name][label]
            ax_pred, ax_cam = row[1 + 2 * m], row[2 + 2 * m]
            ax_pred.imshow(contour_image(rec.image, res.labels, res.certain_ids))
            # long checkpoint labels wrap inside their panel instead of running into the neighbour's title
            name = textwrap.fill(label, width=max(12, int(panel * 9)))
            ax_pred.set_title(f"{name}\n{int(res.labels.max(initial=0))} predicted", fontsize="small")
            ax_cam.imshow(cam_image(rec.image, res.cam))
            ax_cam.set_title(f"{name}\n{res.method}", fontsize="small")
        for ax in row:
            ax.set_axis_off()
    fig.colorbar(ScalarMappable(Normalize(0, 1), cmap="jet"), ax=axes[:, -1], shrink=0.8,
                 label="importance (low → high)")
    return fig


def figure_png(fig, dpi: int = 100) -> bytes:
    """PNG bytes of a figure, which is then closed (for widgets)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def interpret_explorer(encoders: Sequence, records: Sequence, models: Mapping[str, tuple] | None = None,
                       stages: Sequence[int] = (1, 2, 3, 4), cam_stage: int = 4, cam_method: str = "ablationcam"):
    """An ipywidgets explorer: a GRN channel map and a CAM, chosen by checkpoint, image, stage, channel, model
    and CAM method. Results are computed on demand and cached.

    Args:
        encoders: :class:`semkit.interpret.Encoder` objects (unavailable ones are left out).
        records: images (``.image``, ``.name``, ``.instances``).
        models: ``{label: (model, postprocess)}`` for CAMs; ``None`` or empty = feature maps only.
        stages: stages offered.
        cam_stage: encoder stage the CAMs explain.
        cam_method: CAM method selected at first.

    Returns:
        An ``ipywidgets.VBox`` to display in a notebook.
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    from semkit.interpret.cam import CAM_METHODS, cam_summary, compute_cam
    from semkit.interpret.features import capture_features
    from semkit.interpret.stats import channel_stats

    available = {e.label: e for e in encoders if e.module is not None}
    if not available:
        raise ValueError("no available encoder to explore")
    by_name = {r.name: r for r in records}
    models = dict(models or {})
    feature_cache: dict = {}
    cam_cache: dict = {}

    ckpt = widgets.Dropdown(options=list(available), description="checkpoint")
    image = widgets.Dropdown(options=list(by_name), description="image")
    stage = widgets.Dropdown(options=[(STAGE_NAMES.get(s, str(s)), s) for s in stages], description="stage")
    channel = widgets.BoundedIntText(value=0, min=0, max=0, description="channel")
    model = widgets.Dropdown(options=list(models), description="model", disabled=not models)
    method = widgets.Dropdown(options=list(CAM_METHODS), value=cam_method, description="CAM", disabled=not models)
    feature_png, cam_png = widgets.Image(format="png"), widgets.Image(format="png")
    info = widgets.HTML()

    def features():
        key = (ckpt.value, image.value)
        if key not in feature_cache:
            enc = available[ckpt.value]
            feature_cache[key] = capture_features(enc.module, by_name[image.value].image, stages,
                                                  normalise_input=enc.normalise_input)
        return feature_cache[key][stage.value][0]

    def render(_=None) -> None:
        feats = features()
        channel.max = feats.shape[0] - 1
        c = min(channel.value, channel.max)
        vmin, vmax = layer_scale(feats)
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.imshow(feats[c], cmap="viridis", vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_title(f"{ckpt.value} · {STAGE_NAMES.get(stage.value)} · channel {c}/{feats.shape[0]}",
                     fontsize="small")
        ax.set_axis_off()
        feature_png.value = figure_png(fig)
        stats = channel_stats(feats)
        text = (f"layer: {stats['n_channels']} channels, dead {stats['dead_fraction']:.1%}, saturated "
                f"{stats['saturated_fraction']:.1%}, mean cosine {stats['mean_cosine']:.3f}")
        if models:
            key = (model.value, image.value, method.value)
            if key not in cam_cache:
                net, post = models[model.value]
                cam_cache[key] = compute_cam(net, by_name[image.value].image, method.value, cam_stage, post)
            res = cam_cache[key]
            fig, axes = plt.subplots(1, 2, figsize=(8, 4))
            axes[0].imshow(contour_image(by_name[image.value].image, res.labels, res.certain_ids))
            axes[1].imshow(cam_image(by_name[image.value].image, res.cam))
            for ax, t in zip(axes, ("predicted", f"{method.value}: {res.target}"), strict=True):
                ax.set_title(t, fontsize="small")
                ax.set_axis_off()
            cam_png.value = figure_png(fig)
            summary = cam_summary(res, by_name[image.value].instances)
            text += f"<br>CAM: share inside predicted particles {summary['energy_in_prediction']:.2f} " \
                    f"(their area {summary['prediction_area']:.2f})"
        info.value = text

    for w in (ckpt, image, stage, channel, model, method):
        w.observe(render, names="value")
    render()
    controls = widgets.HBox([widgets.VBox([ckpt, image, stage, channel]), widgets.VBox([model, method])])
    return widgets.VBox([controls, widgets.HBox([feature_png, cam_png]), info])
