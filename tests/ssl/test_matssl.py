"""MatSSL: gated fusion by hand, training steps, ImageNet fallback, patches, export, and the U-Net++ downstream."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from semkit.errors import InputError
from semkit.metrics import semantic_metrics
from semkit.models.backbones import WeightsUnavailableError, create_backbone
from semkit.models.maskrcnn import GRAY_MEAN, GRAY_STD
from semkit.ssl import matssl
from semkit.ssl.data import PoolImage
from semkit.ssl.fusion import GatedFeatureFusion
from semkit.ssl.matssl import MatSSL, build_module, initial_backbone, overlapping_patches, patch_pool
from semkit.ssl.matssl_downstream import (
    SemanticCrops,
    build_semantic_model,
    finetune_semantic,
    predict_semantic,
)
from semkit.ssl.pretrain import PretrainConfig, pretrain


@pytest.fixture(autouse=True)
def one_thread():
    # The CPU is shared with other jobs; several OpenMP threads then spin against each other and run slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---- gated feature fusion


def test_gated_fusion_hand_computed():
    fusion = GatedFeatureFusion([2, 1])
    with torch.no_grad():
        fusion.gates.copy_(torch.tensor([2.0, 0.5]))
    f0 = torch.zeros(1, 2, 3, 3)  # GAP 0 -> sigmoid 0.5 -> gate 2 -> 1.0
    f0[0, 1] = torch.tensor([[0.0, 0.0, 0.0], [0.0, 9 * math.log(3), 0.0], [0.0, 0.0, 0.0]])  # GAP log 3 -> 0.75
    f1 = torch.full((1, 1, 2, 2), -math.log(3))  # sigmoid(-log 3) = 0.25 -> gate 0.5 -> 0.125
    out = fusion([f0, f1])
    torch.testing.assert_close(out, torch.tensor([[1.0, 1.5, 0.125]]))
    out.sum().backward()
    # d out / d P_i = sum of the sigmoid features of stage i
    torch.testing.assert_close(fusion.gates.grad, torch.tensor([0.5 + 0.75, 0.25]))


def test_gates_scale_their_stage_only():
    torch.manual_seed(0)
    fusion = GatedFeatureFusion([3, 4])
    feats = [torch.randn(2, 3, 5, 5), torch.randn(2, 4, 2, 2)]
    base = fusion(feats).detach()
    with torch.no_grad():
        fusion.gates[1] = 3.0
    scaled = fusion(feats).detach()
    torch.testing.assert_close(scaled[:, :3], base[:, :3])
    torch.testing.assert_close(scaled[:, 3:], 3.0 * base[:, 3:])
    with pytest.raises(ValueError, match="expected 2 feature maps"):
        fusion(feats[:1])
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        fusion([feats[1], feats[0]])


def test_resnet50_fusion_concatenates_all_four_stages():
    net = MatSSL("resnet50", hidden_dim=32, out_dim=16)
    assert net.fusion.channels == [256, 512, 1024, 2048] and net.fusion.out_dim == 3840
    net.eval()
    with torch.no_grad():
        fused = net.fused(torch.rand(2, 1, 64, 64))
        emb = net.embed(torch.rand(2, 1, 64, 64))
    assert fused.shape == (2, 3840) and emb.shape == (2, 16)
    assert ((fused > 0) & (fused < 1)).all()  # gates start at 1: plain sigmoid features


# ---- pretraining


def test_a_few_steps_on_one_batch_lower_the_ntxent_loss():
    torch.manual_seed(0)
    net = MatSSL("convnextv2_atto", hidden_dim=64, out_dim=16)
    x0 = torch.rand(4, 1, 64, 64)
    x1 = x0.flip(-1)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    losses = []
    for _ in range(6):
        loss = net(x0, x1)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]
    assert net.fusion.gates.grad is not None  # the gates are trained


def test_batch_of_one_is_refused_in_training():
    net = MatSSL("convnextv2_atto", hidden_dim=16, out_dim=8)
    with pytest.raises(ValueError, match="at least 2"):
        net(torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32))


def test_imagenet_unavailable_falls_back_to_random_with_a_warning(monkeypatch, caplog):
    real = matssl.create_backbone

    def offline(name, init="random", **kw):
        if init == "imagenet":
            raise WeightsUnavailableError("offline")
        return real(name, init=init, **kw)

    monkeypatch.setattr(matssl, "create_backbone", offline)
    with caplog.at_level(logging.WARNING, logger="semkit.ssl.matssl"):
        backbone = initial_backbone("convnextv2_atto", "imagenet")
    assert "random weights" in caplog.text
    assert backbone.feature_info.channels() == [40, 80, 160, 320]
    with pytest.raises(WeightsUnavailableError):
        initial_backbone("convnextv2_atto", "imagenet", fallback_to_random=False)


def test_study_optimiser_settings():
    cfg = PretrainConfig(method="matssl", backbone="convnextv2_atto", batch_size=64, devices=4)
    cfg.init = "random"  # optional field read with a default
    module = build_module(cfg)
    o = module.optim
    assert (o.lr, o.momentum, o.weight_decay, o.schedule, o.final_lr) == (0.1, 0.9, 1e-6, "cosine", 1e-4)
    assert module.network.criterion.temperature == 0.07


def test_overlapping_patches_count_and_content():
    image = np.arange(600 * 400, dtype=np.float32).reshape(600, 400)
    patches = overlapping_patches([image], patch=256, overlap=0.5)
    # rows start at 0, 128, 256, 344 (shifted to the border); columns at 0, 128, 144
    assert patches.shape == (4 * 3, 256, 256)
    np.testing.assert_array_equal(patches[1], image[0:256, 128:384])
    np.testing.assert_array_equal(patches[-1], image[344:600, 144:400])
    with pytest.raises(InputError, match="small.png"):
        overlapping_patches([np.zeros((100, 300))], patch=256, names=["small.png"])


def test_patch_pool_names_patches_after_their_image():
    item = PoolImage("a/img.png", "a/img.png", (300, 300), np.zeros((300, 300), np.float32))
    pool = patch_pool([item], patch=256, overlap=0.5)
    assert [p.name for p in pool] == ["a/img.png@0,0", "a/img.png@0,44", "a/img.png@44,0", "a/img.png@44,44"]
    assert all(p.image.shape == (256, 256) for p in pool)


def test_pretrain_matssl_exports_an_encoder_with_identical_features(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no download attempt: ImageNet weights or the random fallback
    cfg = PretrainConfig(method="matssl", backbone="convnextv2_atto", synthetic_count=6, crop_size=64,
                         batch_size=4, epochs=1, accelerator="cpu", output_dir=str(tmp_path))
    result = pretrain(cfg)
    assert all(math.isfinite(v) for v in result["train_loss"] + result["val_loss"])
    loaded = create_backbone("convnextv2_atto", init=result["encoder_path"]).eval()
    module = build_module(cfg)
    state = torch.load(result["checkpoint_path"], map_location="cpu", weights_only=False)["state_dict"]
    module.load_state_dict(state)
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        for a, b in zip(loaded(x), module.network.backbone.eval()(x), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


# ---- downstream U-Net++


def write_semantic_split(root, split="SYN", sizes=(("train", 3), ("val", 1), ("test", 2)), size=64, seed=0):
    """Synthetic 3-class layout: class 1 disks (bright), class 2 a horizontal band (mid grey), class 0 dark."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for part, n in sizes:
        (root / split / part).mkdir(parents=True)
        (root / split / f"{part}_annot").mkdir(parents=True)
        for i in range(n):
            labels = np.zeros((size, size), np.uint8)
            y0 = rng.integers(0, size - 12)
            labels[y0 : y0 + 10] = 2
            for _ in range(3):
                cy, cx = rng.integers(8, size - 8, 2)
                labels[(yy - cy) ** 2 + (xx - cx) ** 2 < 36] = 1
            image = np.choose(labels, [0.15, 0.85, 0.5]) + rng.normal(0, 0.05, labels.shape)
            Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).save(root / split / part / f"im{i}.png")
            Image.fromarray(labels).save(root / split / f"{part}_annot" / f"im{i}.png")
    return root


def test_semantic_model_encoder_loads_the_exported_state_strictly():
    torch.manual_seed(0)
    backbone = create_backbone("convnextv2_atto")
    with torch.no_grad():
        for p in backbone.parameters():
            p.add_(0.01 * torch.randn_like(p))
    state = {k: v.clone() for k, v in backbone.model.state_dict().items()}
    model = build_semantic_model("convnextv2_atto", state, num_classes=3).eval()
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.encoder(x)[-1], backbone.eval()(x)[-1], rtol=0, atol=0)
        assert model(x).shape == (1, 3, 64, 64)
    state.pop("stem.0.weight")
    with pytest.raises(InputError, match="stem.0.weight"):
        build_semantic_model("convnextv2_atto", state)
    with pytest.raises(KeyError, match="resnet50"):
        build_semantic_model("vit_base")


def test_sliding_window_equals_whole_image_for_a_pointwise_model():
    torch.manual_seed(0)
    model = nn.Conv2d(1, 3, 1)  # pointwise: tiling must not change anything
    image = np.random.default_rng(0).random((70, 100)).astype(np.float32)
    whole = predict_semantic(model, image, tile=None)
    tiled = predict_semantic(model, image, tile=32)
    assert whole.shape == (70, 100) and whole.dtype == np.int64
    np.testing.assert_array_equal(tiled, whole)
    x = (torch.from_numpy(image) - GRAY_MEAN[0]) / GRAY_STD[0]
    with torch.no_grad():
        np.testing.assert_array_equal(whole, model(x[None, None])[0].argmax(0).numpy())


def test_training_crops_transform_image_and_labels_together(tmp_path):
    from semkit.data import load_semantic_folders

    write_semantic_split(tmp_path)
    records = load_semantic_folders(tmp_path / "SYN", "train")
    for rec in records:  # make the image a function of the labels, so any mismatch shows
        rec.image = rec.semantic.astype(np.float32) / 4
    torch.manual_seed(0)
    ds = SemanticCrops(records, crop=32, crops_per_image=4, train=True)
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.shape == (1, 32, 32) and y.shape == (32, 32) and y.dtype == torch.int64
        torch.testing.assert_close(x[0] * GRAY_STD[0] + GRAY_MEAN[0], y.float() / 4)
    with pytest.raises(InputError, match="smaller than the 128"):
        SemanticCrops(records, crop=128)


def test_finetune_semantic_on_a_synthetic_split(tmp_path):
    root = write_semantic_split(tmp_path / "data")
    result = finetune_semantic(None, root, "SYN", epochs=2, crop=64, backbone="convnextv2_atto", batch_size=3,
                               crops_per_image=1, eval_tile=None, accelerator="cpu", output_dir=str(tmp_path / "run"))
    # the reported scores are semkit.metrics on the returned predictions
    from semkit.data import load_semantic_folders

    truth = {f"im{i}.png": r.semantic for i, r in enumerate(load_semantic_folders(root / "SYN", "test"))}
    again = semantic_metrics(truth, result.predictions, 3)
    assert result.test.summary == again.summary
    assert 0.0 <= result.test_miou <= 1.0 and result.test.summary["n_images"] == 2
    assert int(result.test.confusion.sum()) == 2 * 64 * 64
    assert result.best_val_miou == pytest.approx(result.history["val/miou"].max())
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["split"] == "SYN" and saved["test_miou_dataset_level"] == pytest.approx(result.test_miou)
    assert saved["config"]["arch"] == "unetplusplus" and saved["config"]["lr"] == 1e-4
    # semkit compare reads what finetune_semantic writes
    from semkit.train.compare import load_semantic_runs

    row = load_semantic_runs({"none": tmp_path / "run"}).iloc[0]
    assert (row["split"], row["encoder"], row["seed"]) == ("SYN", "random", 0)
    assert row["test_miou_dataset_level"] == pytest.approx(result.test_miou)


def test_finetune_semantic_cli_reruns_a_saved_config(tmp_path):
    """`semkit finetune-semantic --config <a run's finetune_config.json>` is the same computation as the run."""
    from click.testing import CliRunner

    from semkit.cli import main

    root = write_semantic_split(tmp_path / "data")
    first = finetune_semantic(None, root, "SYN", epochs=1, crop=64, backbone="convnextv2_atto", batch_size=3,
                              crops_per_image=1, eval_tile=None, accelerator="cpu", output_dir=str(tmp_path / "a"))
    runner = CliRunner()
    out = runner.invoke(main, ["finetune-semantic", "--config", str(tmp_path / "a" / "finetune_config.json"),
                               "--out", str(tmp_path / "b")])
    assert out.exit_code == 0, out.output
    saved = json.loads((tmp_path / "b" / "SYN" / "results.json").read_text())  # split and root from the config
    assert saved["test_miou_dataset_level"] == pytest.approx(first.test_miou, abs=1e-12)
    assert saved["encoder"] == "random" and saved["config"]["output_dir"] == str(tmp_path / "b" / "SYN")
    assert f"{first.test_miou:.4f}" in out.output
    bad = runner.invoke(main, ["finetune-semantic", "--set", "epoch=2", "--out", str(tmp_path / "c")])
    assert bad.exit_code != 0 and "unknown field 'epoch'" in bad.output
    missing = runner.invoke(main, ["finetune-semantic", "--root", str(root), "--split", "NOPE", "--set", "crop=64",
                                   "--out", str(tmp_path / "d")])
    assert missing.exit_code != 0 and "NOPE" in missing.output


@pytest.mark.shared_data
def test_finetune_semantic_on_nasa_ebc2_quick(nasa_ebc_dir, tmp_path):
    result = finetune_semantic(None, nasa_ebc_dir, "EBC2", epochs=1, crop=64, backbone="convnextv2_atto",
                               batch_size=4, crops_per_image=1, limit_train_batches=1, eval_crop=128,
                               eval_tile=None, accelerator="cpu", output_dir=str(tmp_path))
    summary = result.test.summary
    assert summary["n_images"] == 3  # the published EBC-2 test split
    assert int(result.test.confusion.sum()) == 3 * 128 * 128
    assert 0.0 <= summary["miou_dataset_level"] <= 1.0
    assert set(result.predictions) == {n for n in result.test.per_image["image"]}
