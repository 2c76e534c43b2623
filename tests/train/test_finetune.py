"""Fine-tuning end to end on tiny synthetic data: loss goes down, checkpoints reload exactly, metrics are right."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from semkit.data import SEMRecord
from semkit.errors import InputError
from semkit.metrics import aji_plus
from semkit.models.io import load_model
from semkit.models.postprocess import combine_detections
from semkit.train import FinetuneConfig, MaskRCNNModule, UNetModule, finetune, load_splits, read_history
from semkit.train.finetune import QUICK_MASKRCNN, evaluate_predictions, read_predictions
from semkit.train.maskrcnn_module import check_certainty
from semkit.train.thresholds import predict_detections

TINY = dict(synthetic_images=5, synthetic_size=64, crop_size=64, crops_per_image=2, batch_size=2,
            threshold_grid="quick", enable_progress_bar=False, accelerator="cpu", num_threads=1)


@pytest.fixture(autouse=True)
def one_thread():
    # one thread is several times faster than two oversubscribed ones on a shared CPU
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def maskrcnn_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("maskrcnn")
    cfg = FinetuneConfig(**TINY, model="maskrcnn", backbone="convnextv2_atto", epochs=2, maskrcnn=QUICK_MASKRCNN,
                         output_dir=str(out), seed=3)
    return cfg, finetune(cfg)


def test_two_epoch_smoke_run_loss_decreases(maskrcnn_run):
    cfg, results = maskrcnn_run
    rep = results["repeats"][0]
    history = read_history(rep["run_dir"])
    assert history.index.tolist() == [0, 1]
    loss = history["train/loss_epoch"]
    assert loss.iloc[1] < loss.iloc[0]
    assert "train/loss_uncertainty" in history and "val/aji_plus" in history
    # the monitored value is the best image-averaged AJI+ over the validation objectness thresholds
    per_threshold = history[[f"val/aji_plus@{t}" for t in ("0.1", "0.3", "0.5")]]
    np.testing.assert_allclose(history["val/aji_plus"], per_threshold.max(axis=1))
    assert rep["epochs_trained"] == 2 and rep["seed"] == 3
    # results.json is what finetune returned; the config next to it round-trips
    out = cfg.output_dir
    assert json.loads((Path(out) / "results.json").read_text()) == results
    assert FinetuneConfig.load(Path(out) / "finetune_config.json") == cfg
    assert results["splits"] == {"train": ["index=0", "index=1", "index=2"], "val": ["index=3"],
                                 "test": ["index=4"]}


def test_checkpoint_and_model_folder_reload_with_identical_outputs(maskrcnn_run):
    cfg, results = maskrcnn_run
    rep = results["repeats"][0]
    test = load_splits(cfg)["test"]
    model, thresholds, extra = load_model(rep["model_dir"])
    assert thresholds.to_dict() == rep["thresholds"] and extra["seed"] == 3
    module = MaskRCNNModule.load_from_checkpoint(rep["checkpoint"], map_location="cpu")
    a = predict_detections(model, [test[0].image])[0]
    b = predict_detections(module.model, [test[0].image])[0]
    assert set(a) == set(b) and "uncertainty_probs" in a
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # the written test prediction is exactly what the reloaded model + stored thresholds give
    labels, table = combine_detections(a, test[0].image.shape, thresholds)
    (written, written_table), = read_predictions(Path(rep["run_dir"]) / "predictions", [test[0].name])
    np.testing.assert_array_equal(written, labels)
    assert written_table["confidence"].to_numpy() == pytest.approx(table["confidence"].to_numpy())


def test_reported_test_metrics_match_the_metrics_module(maskrcnn_run):
    cfg, results = maskrcnn_run
    rep = results["repeats"][0]
    test = load_splits(cfg)["test"]
    preds = read_predictions(Path(rep["run_dir"]) / "predictions", [r.name for r in test])
    expected = np.mean([aji_plus(r.instances, lab) for r, (lab, _) in zip(test, preds, strict=True)])
    assert rep["test"]["aji_plus"] == pytest.approx(expected)
    assert rep["test"]["n_pred"] == sum(int(lab.max()) for lab, _ in preds)
    assert rep["test"]["n_gt"] == sum(r.n_instances for r in test)
    assert results["test"]["aji_plus"] == pytest.approx(rep["test"]["aji_plus"])  # one repeat: mean = value
    assert rep["test"]["correct"] + rep["test"]["missed"] == rep["test"]["n_gt"]


def test_unet_and_classical_runs(tmp_path):
    cfg = FinetuneConfig(**TINY, model="unet", backbone="convnextv2_atto", epochs=1, output_dir=str(tmp_path / "u"),
                         save_predictions=False)
    results = finetune(cfg)
    rep = results["repeats"][0]
    assert results["method"] == "unet_convnextv2_atto" and set(rep["thresholds"]) == {
        "foreground_threshold", "seed_threshold", "min_area"}
    assert 0.0 <= rep["test"]["aji_plus"] <= 1.0 and rep["test"]["confidence_auroc_certain"] is None
    module = UNetModule.load_from_checkpoint(rep["checkpoint"], map_location="cpu")
    again = UNetModule.load_from_checkpoint(rep["checkpoint"], map_location="cpu")
    x = torch.rand(1, 1, 50, 70)
    assert torch.equal(module.predict_logits(x)[0], again.predict_logits(x)[0])
    assert module.predict_logits(x)[0].shape == (2, 50, 70)  # padded to 32 internally, cropped back
    # the saved model folder reproduces the test predictions of the run
    from semkit.models import instances_from_prediction, predict_unet

    unet, post, extra = load_model(rep["model_dir"])
    assert post.to_dict() == rep["thresholds"] and extra["seed"] == cfg.seed
    test = load_splits(cfg)["test"]
    logits = module.predict_logits([torch.from_numpy(r.image)[None] for r in test])
    expected = [instances_from_prediction(lg, **rep["thresholds"]) for lg in logits]
    for got, want in zip(predict_unet(unet, [r.image for r in test], post), expected, strict=True):
        np.testing.assert_array_equal(got, want)

    cfg = FinetuneConfig(**TINY, model="classical", repeats=3, output_dir=str(tmp_path / "c"))
    results = finetune(cfg)
    assert len(results["repeats"]) == 1  # deterministic: one run whatever repeats says
    from semkit.models import segment_classical

    test = load_splits(cfg)["test"]
    params = results["repeats"][0]["thresholds"]
    expected = np.mean([aji_plus(r.instances, segment_classical(r.image, **params)) for r in test])
    assert results["test"]["aji_plus"] == pytest.approx(expected)


def test_confidence_figures_on_a_constructed_case():
    gt = np.zeros((30, 40), dtype=np.int32)
    gt[2:10, 2:10] = 1   # certain
    gt[12:20, 2:10] = 2  # uncertain
    gt[2:10, 20:30] = 3  # certain
    rec = SEMRecord(image=np.zeros((30, 40), np.float32), instances=gt, certain=np.array([True, False, True]),
                    source="case.tif")
    pred = np.zeros_like(gt)
    pred[2:10, 2:10] = 1           # IoU 1
    pred[12:20, 2:6] = 2           # IoU 0.5
    pred[2:10, 20:28] = 3          # IoU 0.8
    pred[25:28, 30:35] = 4         # false positive, IoU 0
    table = pd.DataFrame({"id": [1, 2, 3, 4], "objectness": [0.99, 0.7, 0.9, 0.6],
                          "confidence": [0.9, 0.2, 0.8, 0.1], "certain": [True, False, True, False]})
    metrics, per_image, particles = evaluate_predictions([rec], [(pred, table)], "m")
    assert metrics["aji_plus"] == pytest.approx((64 + 32 + 64) / (64 + 64 + 80 + 15))
    assert (metrics["correct"], metrics["missed"], metrics["false_positive"]) == (3, 0, 1)
    assert metrics["confidence_auroc_certain"] == 1.0 and metrics["confidence_auroc_correct"] == 1.0
    assert metrics["confidence_best_iou_spearman"] == pytest.approx(1.0)
    assert metrics["confidence_iou_spearman"] == pytest.approx(1.0)
    assert metrics["objectness_auroc_correct"] == 1.0
    assert metrics["mean_confidence_certain"] == pytest.approx(0.85)
    assert metrics["mean_confidence_uncertain"] == pytest.approx(0.2)
    assert particles.set_index("id")["best_iou"].to_dict() == pytest.approx({1: 1.0, 2: 0.5, 3: 0.8, 4: 0.0})


def test_bad_configurations_are_clear(tmp_path):
    with pytest.raises(KeyError, match="maskrcnn, unet, classical"):
        FinetuneConfig(model="yolo")
    with pytest.raises(InputError, match="dataset folder not found"):
        load_splits(FinetuneConfig(dataset=str(tmp_path / "nowhere")))
    (tmp_path / "odd").mkdir()
    with pytest.raises(InputError, match="unknown dataset layout"):
        load_splits(FinetuneConfig(dataset=str(tmp_path / "odd")))
    unflagged = SEMRecord(image=np.zeros((8, 8), np.float32), instances=np.zeros((8, 8), np.int32),
                          source="noflags.tif")
    with pytest.raises(InputError, match=r"noflags\.tif.*uncertainty head needs them"):
        check_certainty([unflagged])
    with pytest.raises(InputError, match="no image in magnification bucket 'low'"):
        load_splits(FinetuneConfig(synthetic_images=5, synthetic_size=64, magnification_bucket="low"))
