"""Training data: exact image/mask/box correspondence under augmentation, crops, padding, bad input, BAM split."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from semkit.data import SEMRecord, load_image
from semkit.errors import InputError
from semkit.train.data import (
    DataConfig,
    InstanceDataset,
    SEMDataModule,
    bam_split,
    instance_targets,
    label_map_from_masks,
    select_bucket,
)

NO_AUG = dict(hflip=0.0, vflip=0.0, rotate90=False, brightness=0.0, contrast=0.0, blur_p=0.0)
GEOMETRIC = dict(hflip=0.5, vflip=0.5, rotate90=True, brightness=0.0, contrast=0.0, blur_p=0.0)


def coded_record(h=40, w=56, source="coded.tif") -> SEMRecord:
    """Rectangles and an L-shaped particle; the image value encodes the label (label / 10), so every pixel of a
    transformed image says which particle it belongs to."""
    labels = np.zeros((h, w), dtype=np.int32)
    labels[2:9, 3:15] = 1
    labels[12:30, 20:26] = 2
    labels[30:38, 40:55] = 3
    labels[5:20, 35:38] = 4
    labels[17:20, 38:45] = 4  # L shape: its box is not its mask
    certain = np.array([True, False, True, False])
    return SEMRecord(image=(labels / 10.0).astype(np.float32), instances=labels, certain=certain, source=source)


def test_instance_targets_hand_computed():
    labels = np.array([[0, 0, 0, 0, 0],
                       [0, 3, 3, 0, 0],
                       [0, 3, 0, 0, 7],
                       [0, 0, 0, 0, 7]], dtype=np.int32)
    certain = np.zeros(7, dtype=bool)
    certain[6] = True  # label 7
    t = instance_targets(labels, certain)
    assert t["ids"].tolist() == [3, 7]
    # pixel-edge boxes: x0, y0, last column + 1, last row + 1
    assert t["boxes"].tolist() == [[1.0, 1.0, 3.0, 3.0], [4.0, 2.0, 5.0, 4.0]]
    assert t["labels"].tolist() == [1, 1] and t["certain"].tolist() == [False, True]
    assert t["masks"].sum(dim=(1, 2)).tolist() == [3, 2]
    assert torch.equal(label_map_from_masks(t["masks"]), torch.from_numpy(np.where(labels == 3, 1, np.where(labels == 7, 2, 0))))
    # remnants smaller than min_visible_px are dropped
    assert instance_targets(labels, certain, min_visible_px=3)["ids"].tolist() == [3]


def _assert_consistent(image: torch.Tensor, target: dict, record: SEMRecord) -> None:
    """Each mask is exactly the set of pixels carrying its particle's code; boxes are the masks' boxes."""
    img = image[0].numpy()
    ids = target["ids"].numpy()
    assert target["masks"].shape[0] == len(ids) == target["boxes"].shape[0]
    for i, pid in enumerate(ids):
        mask = target["masks"][i].numpy().astype(bool)
        np.testing.assert_array_equal(mask, np.isclose(img, pid / 10.0))
        rows, cols = np.nonzero(mask)
        assert target["boxes"][i].tolist() == [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
        assert bool(target["certain"][i]) == bool(record.certain[pid - 1])
    np.testing.assert_array_equal(target["instances"].numpy() > 0, img > 0)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_geometric_augmentation_keeps_exact_correspondence(seed):
    rec = coded_record()
    ds = InstanceDataset([rec], DataConfig(crop_size=None, **GEOMETRIC), train=True)
    torch.manual_seed(seed)
    image, target = ds[0]
    _assert_consistent(image, target, rec)
    # the result is one of the 8 flips/rotations of the original (dihedral group), applied to everything
    variants = []
    for k in range(4):
        for flip in (False, True):
            v = np.rot90(rec.instances, k)
            variants.append(np.fliplr(v) if flip else v)
    code = np.round(image[0].numpy() * 10).astype(np.int32)
    assert any(v.shape == code.shape and np.array_equal(v, code) for v in variants)


def test_flip_matches_numpy():
    rec = coded_record()
    ds = InstanceDataset([rec], DataConfig(crop_size=None, **{**NO_AUG, "hflip": 1.0}), train=True)
    image, target = ds[0]
    np.testing.assert_array_equal(image[0].numpy(), np.fliplr(rec.image))
    w = rec.image.shape[1]
    expected = instance_targets(rec.instances, rec.certain)["boxes"]
    flipped = torch.stack([w - expected[:, 2], expected[:, 1], w - expected[:, 0], expected[:, 3]], dim=1)
    assert torch.equal(target["boxes"], flipped)


def test_photometric_augmentation_leaves_masks_and_boxes():
    rec = coded_record()
    plain = InstanceDataset([rec], DataConfig(crop_size=None, **NO_AUG), train=True)[0]
    cfg = DataConfig(crop_size=None, **{**NO_AUG, "brightness": 0.5, "contrast": 0.5, "blur_p": 1.0})
    torch.manual_seed(1)
    image, target = InstanceDataset([rec], cfg, train=True)[0]
    assert not torch.allclose(image, plain[0])  # the image did change ...
    assert image.min() >= 0 and image.max() <= 1
    for key in ("masks", "boxes", "certain", "instances"):  # ... its annotations did not
        assert torch.equal(target[key], plain[1][key])


def test_random_crop_is_a_window_of_the_record():
    rec = coded_record()
    ds = InstanceDataset([rec], DataConfig(crop_size=24, crops_per_image=5, min_visible_px=1, **NO_AUG), train=True)
    assert len(ds) == 5
    torch.manual_seed(0)
    origins = set()
    for i in range(5):
        image, target = ds[i]
        y0, x0 = target["origin"]
        origins.add((y0, x0))
        assert image.shape == (1, 24, 24)
        np.testing.assert_array_equal(image[0].numpy(), rec.image[y0:y0 + 24, x0:x0 + 24])
        window = rec.instances[y0:y0 + 24, x0:x0 + 24]
        assert target["ids"].tolist() == sorted(set(np.unique(window)) - {0})
        _assert_consistent(image, target, rec)
    assert len(origins) > 1  # crops move


def test_small_remnants_at_the_crop_border_are_dropped():
    labels = np.zeros((32, 32), dtype=np.int32)
    labels[10:20, 10:20] = 1
    rec = SEMRecord(image=(labels * 0.5).astype(np.float32), instances=labels, certain=np.array([True]))
    ds = InstanceDataset([rec], DataConfig(crop_size=16, min_visible_px=5, **NO_AUG), train=True)
    torch.manual_seed(0)
    for i in range(40):
        _, target = ds[i % len(ds)]
        visible = (label_map_from_masks(target["masks"]) > 0).sum().item()
        y0, x0 = target["origin"]
        n = int((rec.instances[y0:y0 + 16, x0:x0 + 16] > 0).sum())
        assert visible == (n if n >= 5 else 0)


def test_image_smaller_than_crop_is_padded_or_rejected():
    rec = coded_record(h=40, w=56)
    ds = InstanceDataset([rec], DataConfig(crop_size=64, **NO_AUG), train=True)
    image, target = ds[0]
    assert image.shape == (1, 64, 64) and target["origin"] == (0, 0)
    np.testing.assert_array_equal(image[0, :40, :56].numpy(), rec.image)
    assert image[0, 40:].abs().max() == 0 and image[0, :, 56:].abs().max() == 0
    assert target["instances"][40:].max() == 0
    _assert_consistent(image, target, rec)
    with pytest.raises(InputError, match=r"coded\.tif.*smaller than the 64 × 64 crop"):
        InstanceDataset([rec], DataConfig(crop_size=64, pad_small=False), train=True)


def test_image_without_particles_gives_empty_targets():
    rec = SEMRecord(image=np.full((48, 48), 0.2, np.float32), instances=np.zeros((48, 48), np.int32),
                    certain=np.zeros(0, bool), source="empty.tif")
    image, target = InstanceDataset([rec], DataConfig(crop_size=32), train=True)[0]
    assert image.shape == (1, 32, 32)
    assert target["boxes"].shape == (0, 4) and target["masks"].shape == (0, 32, 32)
    assert target["certain"].shape == (0,) and target["instances"].max() == 0
    _, target = InstanceDataset([rec], DataConfig(crop_size=32), train=False, target_kind="unet")[0]
    assert target["unet"].shape == (2, 48, 48) and target["unet"].abs().max() == 0


def test_16_bit_tiff_is_scaled_and_raw_16_bit_is_rejected(tmp_path):
    labels = coded_record().instances
    raw = (labels * 10000 + 3000).astype(np.uint16)
    path = tmp_path / "sixteen.tif"
    tifffile.imwrite(path, raw)
    image, meta = load_image(path)
    assert meta.original_dtype == "uint16"
    rec = SEMRecord(image=image, instances=labels, source=str(path))
    sample, _ = InstanceDataset([rec], DataConfig(crop_size=None), train=False)[0]
    np.testing.assert_allclose(sample[0].numpy(), raw / 65535.0, rtol=1e-6)
    # a record holding the raw 16-bit values (bypassing load_image) is named, not trained on
    rec.image = raw.astype(np.float32)
    with pytest.raises(InputError, match=r"sixteen\.tif.*\[0, 1\]"):
        InstanceDataset([rec], DataConfig(crop_size=None), train=True)
    rec.image = raw
    with pytest.raises(InputError, match=r"sixteen\.tif.*float32"):
        InstanceDataset([rec], DataConfig(crop_size=None), train=True)


def test_inconsistent_labels_are_named():
    rec = coded_record(source="bad_labels.tif")
    rec.instances = rec.instances[:-1]
    with pytest.raises(InputError, match=r"bad_labels\.tif.*does not match image shape"):
        InstanceDataset([rec], DataConfig(crop_size=None), train=True)
    rec = coded_record(source="bad_flags.tif")
    rec.certain = rec.certain[:2]
    with pytest.raises(InputError, match=r"bad_flags\.tif.*2 certainty flags for 4 instances"):
        InstanceDataset([rec], DataConfig(crop_size=None), train=True)
    unlabeled = SEMRecord(image=np.zeros((20, 20), np.float32), source="unlabeled.tif")
    with pytest.raises(InputError, match=r"unlabeled\.tif.*needs instance labels"):
        InstanceDataset([unlabeled], DataConfig(crop_size=None), train=True)


def test_magnification_bucket_filter():
    low = coded_record(source="low.tif")
    low.magnification_bucket = "low"
    high = coded_record(source="high.tif")
    high.magnification_bucket = "high"
    assert [r.source for r in select_bucket([low, high], "high")] == ["high.tif"]
    assert len(select_bucket([low, high], None)) == 2
    with pytest.raises(InputError, match="buckets present: high, low"):
        select_bucket([low, high], "medium")
    cfg = DataConfig(crop_size=32, magnification_bucket="low")
    dm = SEMDataModule([low, high], [high, low], config=cfg)
    assert [r.source for r in dm.train_records] == ["low.tif"] and [r.source for r in dm.val_records] == ["low.tif"]
    with pytest.raises(InputError, match="no image in magnification bucket 'low'"):
        SEMDataModule([low, high], [high], config=cfg)  # validation would be empty


def test_datamodule_batches():
    rec = coded_record()
    dm = SEMDataModule([rec, rec], [rec], config=DataConfig(crop_size=32, crops_per_image=3, batch_size=4))
    images, targets = next(iter(dm.train_dataloader()))
    assert len(images) == 4 and all(im.shape == (1, 32, 32) for im in images)
    assert len(dm.train_dataloader()) == 2  # 6 windows in batches of 4
    images, targets = next(iter(dm.val_dataloader()))
    assert len(images) == 1 and images[0].shape == (1, 40, 56) and torch.equal(
        targets[0]["instances"] > 0, torch.from_numpy(rec.instances > 0))


def test_bam_split_is_fixed_20_5_5(bam_dir):
    splits = bam_split(bam_dir, min_area_px=10)
    assert {k: len(v) for k, v in splits.items()} == {"train": 20, "val": 5, "test": 5}
    assert [r.name for r in splits["val"]] == ["1908258", "1908268", "1908290", "1908304", "1908312"]
    assert [r.name for r in splits["test"]] == ["1908264", "1908272", "1908296", "1908316", "1908322"]
    for name, records in splits.items():
        for r in records:
            assert r.split == name and r.image.shape == (704, 1024)  # databar cut
            assert r.certain is not None and 0 < r.certain.mean() < 1  # flags from the measurable masks
