"""Two-view augmentations for grayscale SEM crops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from semkit.errors import InputError
from semkit.models.maskrcnn import GRAY_MEAN, GRAY_STD
from semkit.ssl import densecl, matssl, mocov2
from semkit.ssl.pretrain import PretrainConfig
from semkit.ssl.transforms import PRESETS, TwoViews, ViewConfig, two_view_transform


def test_two_views_differ_and_have_the_right_shape_and_dtype():
    torch.manual_seed(0)
    crop = torch.rand(1, 48, 48)
    views = two_view_transform(32, "mocov2")(crop)
    assert isinstance(views, list) and len(views) == 2
    for v in views:
        assert v.shape == (1, 32, 32) and v.dtype == torch.float32
        assert torch.isfinite(v).all()
    assert not torch.allclose(views[0], views[1])


def test_identity_settings_only_normalise():
    # With every random step switched off the view is the crop normalised with the grayscale ImageNet stats.
    cfg = ViewConfig(size=16, min_scale=1.0, hflip_prob=0, vflip_prob=0, rot90_prob=0, jitter_prob=0, blur_prob=0)
    crop = torch.rand(1, 16, 16)
    v0, v1 = TwoViews(cfg)(crop)
    expected = (crop - GRAY_MEAN[0]) / GRAY_STD[0]
    torch.testing.assert_close(v0, expected)
    torch.testing.assert_close(v1, expected)


def test_flip_only_view_is_a_flip_of_the_crop():
    cfg = ViewConfig(size=8, min_scale=1.0, hflip_prob=1.0, vflip_prob=0, rot90_prob=0, jitter_prob=0,
                     blur_prob=0, normalize=False)
    crop = torch.arange(64, dtype=torch.float32).reshape(1, 8, 8) / 64
    v0, _ = TwoViews(cfg)(crop)
    torch.testing.assert_close(v0, crop.flip(-1))


@settings(max_examples=15, deadline=None)
@given(h=st.integers(8, 40), w=st.integers(8, 40), size=st.integers(4, 24))
def test_any_crop_size_gives_square_views(h, w, size):
    views = two_view_transform(size, "simclr")(torch.rand(1, h, w))
    assert [tuple(v.shape) for v in views] == [(1, size, size)] * 2


def test_2d_input_is_accepted_and_bad_input_is_named():
    t = two_view_transform(8, "densecl")
    assert t(torch.rand(8, 8))[0].shape == (1, 8, 8)
    with pytest.raises(InputError, match=r"\(1, H, W\)"):
        t(torch.rand(3, 8, 8))
    bad = torch.rand(1, 8, 8)
    bad[0, 0, 0] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        t(bad)


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(KeyError, match="simclr"):
        two_view_transform(8, "byol")
    assert set(PRESETS) == {"simclr", "mocov2", "densecl"}


def test_default_collate_batches_pairs_into_two_view_batches():
    t = two_view_transform(16, "simclr")
    batch = torch.utils.data.default_collate([t(torch.rand(1, 20, 20)) for _ in range(3)])
    x0, x1 = mocov2.split_views(batch)
    assert x0.shape == x1.shape == (3, 1, 16, 16)


@pytest.mark.parametrize("module", [densecl, mocov2, matssl])
def test_method_view_transforms_follow_the_crop_size(module):
    cfg = PretrainConfig(method=module.__name__.rsplit(".", 1)[1], crop_size=32)
    views = module.view_transform(cfg)(torch.rand(1, 32, 32))
    assert [tuple(v.shape) for v in views] == [(1, 32, 32)] * 2
    assert np.isfinite(torch.stack(views).numpy()).all()
