"""The pretraining entry point: pool, split, crops, errors, the end-to-end run and its export, DDP on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from semkit.errors import InputError
from semkit.models.backbones import create_backbone
from semkit.ssl import METHODS, PretrainConfig, UnlabeledDataModule, pretrain
from semkit.ssl.data import PoolImage, RandomCrops, build_pool, split_pool
from semkit.ssl.pretrain import loss_history
from semkit.train.trainer import read_history

REPO = Path(__file__).resolve().parents[2]


def _ramp_pool(n: int, shape=(40, 50)) -> list[PoolImage]:
    # value = row * 1000 + column (+ image offset): every crop's top-left value gives its position
    h, w = shape
    base = (np.arange(h)[:, None] * 1000 + np.arange(w)[None]).astype(np.float32)
    return [PoolImage(f"img-{i:03d}", f"mem://{i}", shape, base + i * 1e6) for i in range(n)]


def _write_pngs(folder: Path, sizes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 255, (h, w), dtype=np.uint8)).save(folder / f"im{i}.png")


# ---- configuration


def test_config_round_trips_through_json_and_rejects_unknown_names(tmp_path):
    config = PretrainConfig(crop_size=128, data_folders=[tmp_path], lr=1e-3, devices=[0, 1])
    path = config.save(tmp_path / "c.json")
    assert PretrainConfig.load(path) == config
    assert config.data_folders == [str(tmp_path)]
    assert config.world_size() == 2
    with pytest.raises(KeyError, match="fcmae, densecl, mocov2, matssl"):
        PretrainConfig(method="simclr")
    with pytest.raises(KeyError, match="dense, minkowski"):
        PretrainConfig(backend="spconv")
    with pytest.raises(TypeError, match="unknown PretrainConfig fields: colour"):
        PretrainConfig.from_dict({"colour": 1})
    with pytest.raises(InputError, match="mask_ratio"):
        PretrainConfig(mask_ratio=1.0)
    assert list(METHODS) == ["fcmae", "densecl", "mocov2", "matssl"]


# ---- pool, split, crops


def test_split_is_80_20_deterministic_and_subsets_are_nested():
    pool = _ramp_pool(50)
    train, val = split_pool(pool, 0.2, 1.0, seed=0)
    assert (len(train), len(val)) == (40, 10)
    assert {p.name for p in train}.isdisjoint({p.name for p in val})
    again = split_pool(list(reversed(pool)), 0.2, 1.0, seed=0)
    assert sorted(p.name for p in again[1]) == sorted(p.name for p in val)  # independent of order
    quarter, val_q = split_pool(pool, 0.2, 0.25, seed=0)
    half, _ = split_pool(pool, 0.2, 0.5, seed=0)
    assert (len(quarter), len(half)) == (10, 20)
    assert {p.name for p in quarter} < {p.name for p in half} < {p.name for p in train}
    assert [p.name for p in val_q] == [p.name for p in val]  # validation never subsampled


def test_training_crops_are_unscaled_sub_images_flipped_about_half_the_time():
    pool = _ramp_pool(1)
    crops = RandomCrops(pool, crop_size=16, crops_per_image=200, train=True)
    torch.manual_seed(0)
    flips, positions = 0, set()
    for i in range(len(crops)):
        c = crops[i][0].numpy()
        assert c.shape == (16, 16)
        flipped = c[0, 0] > c[0, -1]
        flips += flipped
        c = c[:, ::-1] if flipped else c
        y, x = divmod(int(c[0, 0]), 1000)
        np.testing.assert_array_equal(c, pool[0].image[y : y + 16, x : x + 16])
        positions.add((y, x))
    assert 70 <= flips <= 130  # p = 0.5 over 200 draws
    assert len(positions) > 50


def test_validation_crops_are_fixed_and_never_flipped():
    pool = _ramp_pool(3)
    a = RandomCrops(pool, 16, train=False, seed=4)
    b = RandomCrops(pool, 16, train=False, seed=4)
    for i in range(3):
        assert torch.equal(a[i], b[i])
        c = a[i][0].numpy()
        assert c[0, 0] < c[0, -1]


def test_transform_is_applied_per_sample():
    crops = RandomCrops(_ramp_pool(1), 8, train=False, transform=lambda t: (t, 2 * t))
    one, two = crops[0]
    assert torch.equal(two, 2 * one)


def test_folder_pool_names_are_relative_and_small_images_are_errors(tmp_path):
    _write_pngs(tmp_path / "pool" / "sub", [(70, 80), (64, 64)])
    config = PretrainConfig(crop_size=64, data_folders=[tmp_path / "pool"], crop_databar=False)
    pool = build_pool(config)
    assert [p.name for p in pool] == ["pool/sub/im0.png", "pool/sub/im1.png"]
    assert pool[0].shape == (70, 80)
    lazy = build_pool(PretrainConfig(crop_size=64, data_folders=[tmp_path / "pool"], crop_databar=False,
                                     in_memory=False))
    assert lazy[0].image is None and np.array_equal(lazy[0].load(), pool[0].image)
    # folders that reuse file names (NASA EBC1/train, EBC2/train) keep distinct names; repeats are listed once
    _write_pngs(tmp_path / "ebc1" / "train", [(64, 64)])
    _write_pngs(tmp_path / "ebc2" / "train", [(64, 64)])
    both = build_pool(PretrainConfig(crop_size=64, crop_databar=False, data_folders=[
        tmp_path / "ebc1" / "train", tmp_path / "ebc2" / "train", tmp_path / "ebc1" / "train" / "im0.png"]))
    assert [p.name for p in both] == ["ebc1/train/im0.png", "ebc2/train/im0.png"]
    _write_pngs(tmp_path / "small", [(70, 80), (70, 50)])
    with pytest.raises(InputError, match=r"im1\.png.*70x50 pixels.*smaller than the 64x64"):
        build_pool(PretrainConfig(crop_size=64, data_folders=[tmp_path / "small"], crop_databar=False))


def test_patch_overlap_cuts_each_split_into_grid_patches_after_splitting():
    pool = [PoolImage(f"im{i}", f"im{i}", (24, 16), np.arange(24 * 16, dtype=np.float32).reshape(24, 16) + 1000 * i)
            for i in range(5)]
    plain = UnlabeledDataModule(PretrainConfig(crop_size=8, batch_size=2), pool=pool)
    dm = UnlabeledDataModule(PretrainConfig(crop_size=8, batch_size=2, patch_overlap=0.5), pool=pool)
    # stride 4: rows at 0, 4, ..., 16 (5) x columns at 0, 4, 8 (3) = 15 patches per 24 x 16 image
    assert (dm.n_train_images, dm.n_val_images) == (4 * 15, 15)
    source_of = {p.name.split("@")[0] for p in dm.val_images}
    assert source_of == {p.name for p in plain.val_images}  # the held-out image's patches, and only those
    assert not source_of & {p.name.split("@")[0] for p in dm.train_images}
    patch = next(p for p in dm.train_images if p.name.endswith("@4,8"))
    image = next(p for p in pool if p.name == patch.name.split("@")[0]).image
    np.testing.assert_array_equal(patch.image, image[4:12, 8:16])
    with pytest.raises(InputError, match="patch_overlap"):
        PretrainConfig(patch_overlap=1.0)


def test_subsets_get_the_whole_pools_updates_per_epoch_unless_budgeted_by_epochs():
    pool = _ramp_pool(20)  # 16 train / 4 val images
    full = UnlabeledDataModule(PretrainConfig(crop_size=8, batch_size=2, crops_per_image=3), pool=pool)
    steps = UnlabeledDataModule(PretrainConfig(crop_size=8, batch_size=2, crops_per_image=3, subset_fraction=0.25),
                                pool=pool)
    epochs = UnlabeledDataModule(PretrainConfig(crop_size=8, batch_size=2, crops_per_image=3, subset_fraction=0.25,
                                                subset_budget="epochs"), pool=pool)
    assert (full.n_train_images, steps.n_train_images, epochs.n_train_images) == (16, 4, 4)
    assert (len(full.train_dataset), len(steps.train_dataset), len(epochs.train_dataset)) == (48, 48, 12)
    assert len(full.val_dataset) == len(steps.val_dataset) == len(epochs.val_dataset) == 12  # never repeated
    # the cycled crops all come from the subset's 4 images, each 12 times
    dataset = steps.train_dataset
    top_left = [int(dataset[i][0, 0, 0]) // 10**6 for i in range(len(dataset))]  # ramp value = image offset
    assert sorted(top_left) == sorted(int(p.name[-3:]) for p in steps.train_images for _ in range(12))
    # exact, also when the subset does not divide the pool: 5 of 16 images still give 48 crops, not 3 x 15
    five = UnlabeledDataModule(PretrainConfig(crop_size=8, batch_size=2, crops_per_image=3, subset_fraction=0.3),
                               pool=pool)
    assert (five.n_train_images, len(five.train_dataset)) == (5, 48)
    with pytest.raises(KeyError, match="subset_budget"):
        PretrainConfig(subset_budget="time")


def test_empty_pool_and_pool_smaller_than_a_batch_are_clear_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="unlabeled pool is empty"):
        UnlabeledDataModule(PretrainConfig(crop_size=64, data_folders=[tmp_path / "empty"]))
    with pytest.raises(InputError, match="unlabeled pool is empty"):
        UnlabeledDataModule(PretrainConfig(crop_size=64, synthetic_count=0))
    dm = UnlabeledDataModule(PretrainConfig(crop_size=8, batch_size=8), pool=_ramp_pool(5))
    assert (dm.n_train_images, dm.n_val_images) == (4, 1)
    with pytest.raises(InputError, match=r"gives 4 crops .* fewer than one batch of 8"):
        dm.check_batch(1)
    dm = UnlabeledDataModule(PretrainConfig(crop_size=8, batch_size=8, crops_per_image=4), pool=_ramp_pool(5))
    dm.check_batch(2)  # 16 crops: 8 per process
    with pytest.raises(InputError, match="for 3 process"):
        dm.check_batch(3)
    with pytest.raises(InputError, match="fewer than one batch"):
        pretrain(PretrainConfig(crop_size=64, synthetic_count=3, batch_size=4, output_dir=str(tmp_path / "r")))


@pytest.mark.shared_data
def test_real_phenom_pool(phenom_dir):
    pool = build_pool(PretrainConfig(crop_size=512, data_folders=[phenom_dir]))
    assert len(pool) == 9
    assert all(min(p.shape) >= 512 for p in pool)
    train, val = split_pool(pool, 0.2, 1.0, seed=0)
    assert (len(train), len(val)) == (7, 2)
    crop = RandomCrops(train, 512, train=False)[0]
    assert crop.shape == (1, 512, 512) and 0 <= crop.min() < crop.max() <= 1
    # 600 x 960 images cannot give a 640 crop: the error names the file
    with pytest.raises(InputError, match=r"Fail_Sample_2\.tiff.*600x960"):
        build_pool(PretrainConfig(crop_size=640, data_folders=[phenom_dir]))


# ---- end to end


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain")
    config = PretrainConfig(crop_size=64, synthetic_count=10, batch_size=4, epochs=2, decoder_dim=32,
                            lr=3e-3, accelerator="cpu", output_dir=str(out), seed=1)
    return config, pretrain(config)


def test_pretrain_writes_config_checkpoints_and_encoder(run):
    config, results = run
    out = Path(config.output_dir)
    for name in ("pretrain_config.json", "checkpoints/pretrain_config.json", "checkpoints/best.ckpt",
                 "trainer_config.json", "encoder.pt", "encoder.json"):
        assert (out / name).is_file(), name
    assert PretrainConfig.load(out / "checkpoints" / "pretrain_config.json") == config
    meta = json.loads((out / "encoder.json").read_text())
    assert (meta["method"], meta["backbone"], meta["in_chans"]) == ("fcmae", "convnextv2_atto", 1)
    assert meta["config"] == config.to_dict()
    assert (results["n_train_images"], results["n_val_images"]) == (8, 2)
    assert results["steps"] == 2 * 2  # 8 images / batch 4 per epoch
    assert len(results["train_loss"]) == len(results["val_loss"]) == 2
    history = read_history(out)
    assert history["val/loss"].tolist() == pytest.approx(results["val_loss"])


def test_exported_encoder_is_the_lowest_validation_loss_checkpoint(run):
    config, results = run
    out = Path(config.output_dir)
    assert results["best_val_loss"] == pytest.approx(min(results["val_loss"]))
    assert results["best_epoch"] == int(np.argmin(results["val_loss"]))
    ckpt = torch.load(out / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["epoch"] == results["best_epoch"]
    encoder = torch.load(out / "encoder.pt", weights_only=True)
    prefix = "model.encoder.model."
    from_ckpt = {k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    assert from_ckpt.keys() == encoder.keys()
    assert all(torch.equal(from_ckpt[k], encoder[k]) for k in encoder)
    backbone = create_backbone("convnextv2_atto", init=out / "encoder.pt")  # strict load
    assert torch.equal(backbone.model.stem[0].weight, encoder["stem.0.weight"])


def test_max_steps_is_a_fixed_update_budget_and_the_schedule_spans_it(tmp_path):
    # 8 training images x 2 crops / batch 4 = 4 steps per epoch; 50 epochs allowed, 6 steps granted: the run
    # stops after 6 updates, warmup is 1 epoch = 4 steps, and the cosine is half done at step 5 (of 4..6).
    config = PretrainConfig(crop_size=32, synthetic_count=10, synthetic_size=64, batch_size=4, crops_per_image=2,
                            epochs=50, max_steps=6, warmup_epochs=1, min_lr=0.0, lr=1e-3, decoder_dim=16,
                            accelerator="cpu", output_dir=str(tmp_path / "r"), log_every_n_steps=1)
    results = pretrain(config)
    assert results["steps"] == 6
    steps, _ = loss_history(tmp_path / "r")
    assert steps["step"].tolist() == list(range(6))
    assert steps["lr"].tolist() == pytest.approx([0.25e-3, 0.5e-3, 0.75e-3, 1e-3, 1e-3, 0.5e-3])
    with pytest.raises(InputError, match="max_steps"):
        PretrainConfig(max_steps=0)


def test_cli_prints_and_builds_the_configuration(tmp_path):
    from semkit.cli.ssl import pretrain_cmd

    saved = PretrainConfig(crop_size=128, epochs=5).save(tmp_path / "c.json")
    result = CliRunner().invoke(pretrain_cmd, ["--config", str(saved), "--epochs", "7", "--devices", "0,1",
                                               "--no-norm-pix-loss", "--limit-train-batches", "0.5",
                                               "--data", str(tmp_path), "--print-config"])
    assert result.exit_code == 0, result.output
    values = json.loads(result.output)
    assert (values["crop_size"], values["epochs"], values["devices"]) == (128, 7, [0, 1])
    assert values["norm_pix_loss"] is False and values["limit_train_batches"] == 0.5
    assert values["data_folders"] == [str(tmp_path)]
    bad = CliRunner().invoke(pretrain_cmd, ["--mask-ratio", "1.5", "--print-config"])
    assert bad.exit_code != 0 and "mask_ratio" in bad.output


# ---- scale-out


DDP_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from semkit.ssl import PretrainConfig, pretrain
    config = PretrainConfig(crop_size=64, synthetic_count=12, batch_size=2, epochs=1, decoder_dim=32,
                            accelerator="cpu", devices=2, strategy="ddp", output_dir=sys.argv[1],
                            limit_train_batches=2, limit_val_batches=1)
    results = pretrain(config)
    with open(os.path.join(sys.argv[1], f"rank{os.environ['RANK']}.json"), "w") as f:
        json.dump({"steps": results["steps"], "encoder": results["encoder_path"],
                   "world": int(os.environ["WORLD_SIZE"])}, f)
    """
)


@pytest.mark.slow
def test_ddp_on_cpu_with_two_gloo_processes(tmp_path):
    script = tmp_path / "ddp_pretrain.py"
    script.write_text(DDP_SCRIPT)
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(script), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert [r["steps"] for r in ranks] == [2, 2]  # both processes stepped together
    assert ranks[0]["encoder"] == str(out / "encoder.pt") and ranks[1]["encoder"] is None  # rank 0 exports
    create_backbone("convnextv2_atto", init=out / "encoder.pt")
