"""Interpretability figures show exactly the selected maps on shared scales, the CAM overlays and the explorer."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from semkit.interpret import (  # noqa: E402
    capture_all,
    compute_cams,
    example_records,
    feature_stats_table,
    load_encoders,
    select_channels,
    summarise_stats,
)
from semkit.models import build_unet  # noqa: E402
from semkit.plotting import interpret as plots  # noqa: E402


@pytest.fixture(scope="module")
def setup():
    records = example_records(size=64, seed=0)
    encoders = load_encoders(["random"])
    encoders += load_encoders(["random"], seed=1)
    encoders[1].label = "random seed 1"
    return records, encoders, capture_all(encoders, records, progress=False)


def test_feature_grid_shows_the_selected_channels_on_one_scale_per_stage(setup):
    records, encoders, captures = setup
    rec = records[1]
    fig = plots.plot_feature_maps(captures, rec, n_channels=16, seed=2)
    assert len(fig.axes) == 1 + 2 * 4 * 16  # input + 2 checkpoints x 4 stages x 16 maps (8 rows x 2 columns)
    assert np.array_equal(fig.axes[0].images[0].get_array(), rec.image)
    for c, enc in enumerate(encoders):
        for si, s in enumerate((1, 2, 3, 4)):
            feats = captures[enc.label][rec.name][s]
            chosen = select_channels(feats.shape[0], 16, seed=2, stage=s)  # the same for both checkpoints
            scale = plots.layer_scale(feats)
            for k in range(16):
                ax = fig.axes[1 + (c * 4 + si) * 16 + k]
                assert np.array_equal(ax.images[0].get_array(), feats[chosen[k]])
                assert ax.images[0].get_clim() == pytest.approx(scale)
    assert {t.get_text() for t in fig.texts} >= {"random", "random seed 1"}  # checkpoint titles over the blocks
    plt.close(fig)


def test_layer_scale_of_a_flat_layer_is_usable():
    vmin, vmax = plots.layer_scale(np.full((3, 4, 4), 2.0))
    assert vmin == 2.0 and vmax > vmin


def test_stats_plot_has_one_line_per_checkpoint(setup):
    _, encoders, captures = setup
    table = feature_stats_table(captures)
    fig = plots.plot_feature_stats(table)
    summary = summarise_stats(table)
    assert len(fig.axes) == 3
    for ax, col in zip(fig.axes, ("dead_fraction", "saturated_fraction", "mean_cosine"), strict=True):
        assert [line.get_label() for line in ax.lines] == [e.label for e in encoders]
        for line, enc in zip(ax.lines, encoders, strict=True):
            assert np.allclose(line.get_ydata(), summary.loc[summary["checkpoint"] == enc.label, col])
    plt.close(fig)


def test_contours_and_cam_colours():
    image = np.full((8, 8), 0.5, dtype=np.float32)
    labels = np.zeros((8, 8), np.int32)
    labels[1:4, 1:4] = 1
    labels[5:8, 5:8] = 2
    rgb = plots.contour_image(image, labels, certain_ids=[1])
    assert tuple(rgb[1, 1]) == (0, 255, 0) and tuple(rgb[5, 5]) == (255, 0, 0)  # outlines: certain, uncertain
    assert tuple(rgb[2, 2]) == (128, 128, 128)  # inside: no fill
    assert np.array_equal(plots.contour_image(image, None), np.full((8, 8, 3), 128, np.uint8))
    cam = np.zeros((8, 8), np.float32)
    cam[:4] = 1.0
    over = plots.cam_image(image, cam).astype(int)
    assert over[0, 0, 0] > over[0, 0, 2] and over[7, 7, 2] > over[7, 7, 0]  # important red, unimportant blue


def test_cam_figure_and_explorer(setup):
    records, encoders, _ = setup
    torch.manual_seed(0)
    unet = build_unet("tu-convnextv2_atto", decoder_channels=(32, 16, 16, 8, 8)).eval()
    models = {"unet": (unet, None)}
    cams = compute_cams(models, records, method="gradcam", progress=False)
    fig = plots.plot_cams(records, cams)
    image_axes = [ax for ax in fig.axes if ax.images]
    assert len(image_axes) == 2 * 3  # two images x (ground truth, prediction, CAM)
    rec = records[0]
    res = cams[rec.name]["unet"]
    pred = plots.contour_image(rec.image, res.labels, res.certain_ids)
    assert np.array_equal(image_axes[1].images[0].get_array(), pred)
    assert np.array_equal(image_axes[2].images[0].get_array(), plots.cam_image(rec.image, res.cam))
    plt.close(fig)

    box = plots.interpret_explorer(encoders, records, models, cam_method="gradcam")
    controls = box.children[0].children[0].children
    ckpt, image, stage, channel = controls
    feature_png, cam_png = box.children[1].children
    first, first_cam = bytes(feature_png.value), bytes(cam_png.value)
    assert first.startswith(b"\x89PNG") and first_cam.startswith(b"\x89PNG")
    channel.value = 5
    assert bytes(feature_png.value) != first
    stage.value = 4
    assert channel.max == 1279  # atto: 4 x 320 GRN channels at stage 4
    image.value = records[1].name
    assert bytes(cam_png.value) != first_cam
    assert "dead" in box.children[2].value and "CAM" in box.children[2].value
