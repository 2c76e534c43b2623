"""Overlays: certain particles green, uncertain red, background untouched."""

from __future__ import annotations

import numpy as np
import pandas as pd

from semkit.train.plots import CERTAIN_RGB, UNCERTAIN_RGB, overlay_rgb, plot_overlays, plot_training_curves


def test_overlay_colours():
    image = np.full((12, 12), 0.5, np.float32)
    labels = np.zeros((12, 12), np.int32)
    labels[1:6, 1:6] = 1
    labels[6:11, 6:11] = 2
    rgb = overlay_rgb(image, labels, uncertain_ids=[2], alpha=0.5)
    assert rgb.dtype == np.uint8 and rgb.shape == (12, 12, 3)
    assert rgb[0, 11].tolist() == [127, 127, 127]  # background: the gray value
    assert rgb[1, 1].tolist() == list(CERTAIN_RGB) and rgb[6, 6].tolist() == list(UNCERTAIN_RGB)  # outlines
    inner = 0.5 * 127.5 + 0.5 * np.array([CERTAIN_RGB, UNCERTAIN_RGB], dtype=float)
    assert rgb[3, 3].tolist() == np.floor(inner[0]).astype(int).tolist()  # tinted interior
    assert rgb[8, 8].tolist() == np.floor(inner[1]).astype(int).tolist()


def test_figures_handle_empty_inputs():
    fig = plot_training_curves(pd.DataFrame())
    assert fig.axes[0].texts[0].get_text() == "no logged values"
    labels = np.zeros((8, 8), np.int32)
    empty = pd.DataFrame({"id": [], "certain": []})
    fig = plot_overlays([np.zeros((8, 8), np.float32)], [(labels, empty)], names=["a"])
    assert fig.axes[0].get_title() == "a: 0 certain, 0 uncertain"
