"""Fine-tuning figures: training curves and overlays, including empty inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd

from semkit.train.plots import plot_overlays, plot_training_curves


def test_curves_show_every_logged_metric_per_epoch():
    history = pd.DataFrame({"train/loss_epoch": [2.0, 1.0, 0.5], "val/aji_plus": [0.1, np.nan, 0.3]},
                           index=pd.Index([0, 1, 2], name="epoch"))
    fig = plot_training_curves(history)
    assert [ax.get_title() for ax in fig.axes] == ["train/loss_epoch", "val/aji_plus"]
    assert fig.axes[0].lines[0].get_ydata().tolist() == [2.0, 1.0, 0.5]
    assert fig.axes[1].lines[0].get_xdata().tolist() == [0, 2]  # the missing epoch is skipped


def test_overlay_panels_count_certain_and_uncertain():
    labels = np.zeros((8, 8), np.int32)
    labels[1:3, 1:3], labels[5:7, 5:7] = 1, 2
    table = pd.DataFrame({"id": [1, 2], "certain": [True, False]})
    fig = plot_overlays([np.zeros((8, 8), np.float32)], [(labels, table)], names=["a"])
    assert fig.axes[0].get_title() == "a: 1 certain, 1 uncertain"
    rgb = fig.axes[0].images[0].get_array()
    assert tuple(rgb[1, 1]) == (0, 255, 0) and tuple(rgb[5, 5]) == (255, 0, 0)  # outlines: green / red


def test_figures_handle_empty_inputs():
    fig = plot_training_curves(pd.DataFrame())
    assert fig.axes[0].texts[0].get_text() == "no logged values"
    empty = pd.DataFrame({"id": [], "certain": []})
    fig = plot_overlays([np.zeros((8, 8), np.float32)], [(np.zeros((8, 8), np.int32), empty)], names=["a"])
    assert fig.axes[0].get_title() == "a: 0 certain, 0 uncertain"
