"""FCMAE: masking, the masked-dense invariant, patchify, the masked-only loss, export round trip, training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from semkit.errors import InputError
from semkit.models.backbones import create_backbone
from semkit.ssl.fcmae import FCMAE, FCMAEModule, build_module, upsample_mask
from semkit.ssl.pretrain import PretrainConfig


@pytest.fixture(scope="module")
def model() -> FCMAE:
    torch.manual_seed(0)
    m = FCMAE("convnextv2_atto", decoder_dim=64).eval()
    # timm initialises GRN at zero (identity); random values make the GRN statistics matter in the tests.
    with torch.no_grad():
        for name, p in m.encoder.named_parameters():
            if ".grn." in name:
                p.normal_(0, 0.5)
    return m


# ---- masking


@pytest.mark.parametrize("ratio,grid,expected", [(0.5, (4, 4), 8), (0.75, (4, 4), 12), (0.6, (3, 5), 9), (0.0, (2, 2), 0)])
def test_random_mask_masks_exactly_round_ratio_cells(model, ratio, grid, expected):
    mask = model.random_mask(5, grid, ratio, generator=torch.Generator().manual_seed(0))
    assert mask.shape == (5, *grid)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert mask.sum(dim=(1, 2)).tolist() == [expected] * 5


def test_forward_honours_mask_ratio_argument_and_stored_ratio(model):
    x = torch.randn(2, 1, 128, 128)
    with torch.no_grad():
        _, _, m_default = model(x, generator=torch.Generator().manual_seed(0))
        _, _, m_75 = model(x, mask_ratio=0.75, generator=torch.Generator().manual_seed(0))
    assert m_default.sum(dim=(1, 2)).tolist() == [8, 8]  # stored ratio 0.5 of 16 cells
    assert m_75.sum(dim=(1, 2)).tolist() == [12, 12]  # the official code would still mask 8 here


def test_random_mask_is_deterministic_per_seed(model):
    a = model.random_mask(3, (6, 6), 0.5, generator=torch.Generator().manual_seed(7))
    b = model.random_mask(3, (6, 6), 0.5, generator=torch.Generator().manual_seed(7))
    c = model.random_mask(3, (6, 6), 0.5, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])  # images of a batch get different masks


def test_mask_is_patch_aligned_in_pixels():
    mask = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    pixels = upsample_mask(mask, 64, 64)
    assert pixels.shape == (1, 64, 64)
    assert pixels[0, :32, :32].eq(1).all() and pixels[0, 32:, 32:].eq(1).all()
    assert pixels[0, :32, 32:].eq(0).all() and pixels[0, 32:, :32].eq(0).all()


# ---- the masked-dense encoder


def _hooked_outputs(model: FCMAE, x, mask):
    """Every tensor the masking hooks act on, recorded by extra hooks registered after them."""
    records = []
    convnext = model.encoder.model
    handles = []

    def record(layout):
        def hook(_m, _i, out):
            records.append((layout, out.detach()))

        return hook

    handles.append(convnext.stem.register_forward_hook(record("nchw")))
    for stage in convnext.stages:
        if not isinstance(stage.downsample, torch.nn.Identity):
            handles.append(stage.downsample.register_forward_hook(record("nchw")))
        for block in stage.blocks:
            handles.append(block.conv_dw.register_forward_hook(record("nchw")))
            handles.append(block.norm.register_forward_hook(record("nchw")))
            handles.append(block.mlp.grn.register_forward_pre_hook(lambda _m, inp: records.append(("nchw", inp[0].detach()))))
            handles.append(block.mlp.grn.register_forward_hook(record("nchw")))
            handles.append(block.register_forward_hook(record("nchw")))
    try:
        with torch.no_grad():
            out = model.forward_encoder(x, mask)
    finally:
        for h in handles:
            h.remove()
    return out, records


def test_masked_positions_stay_exactly_zero_through_the_whole_encoder(model):
    x = torch.randn(2, 1, 128, 96)
    mask = model.random_mask(2, (4, 3), 0.5, generator=torch.Generator().manual_seed(3))
    out, records = _hooked_outputs(model, x, mask)
    n_blocks = sum(len(s.blocks) for s in model.encoder.model.stages)
    assert len(records) == 1 + 3 + 5 * n_blocks  # stem, 3 downsamplings, 5 points per block
    for _, t in records + [("nchw", out)]:
        keep = upsample_mask(1 - mask, *t.shape[-2:])[:, None]
        assert t[keep.expand_as(t) == 0].abs().max() == 0  # exactly zero, not just small
        assert t[keep.expand_as(t) == 1].abs().max() > 0


def test_visible_features_ignore_masked_pixels(model):
    x = torch.randn(2, 1, 96, 96)
    mask = model.random_mask(2, (3, 3), 0.5, generator=torch.Generator().manual_seed(1))
    pixels = upsample_mask(mask, 96, 96)[:, None]
    y = x + 10 * torch.randn_like(x) * pixels  # change only masked pixels
    with torch.no_grad():
        assert torch.equal(model.forward_encoder(x, mask), model.forward_encoder(y, mask))


def test_masked_encoder_equals_plain_timm_on_the_visible_rectangle(model):
    # When the visible patches form the top-left rectangle, sparse semantics (convolutions see zeros outside,
    # GRN statistics over visible positions only) equal an ordinary dense forward of the cropped image.
    x = torch.randn(2, 1, 128, 128)
    mask = torch.ones(2, 4, 4)
    mask[:, :2, :3] = 0
    with torch.no_grad():
        masked = model.forward_encoder(x, mask)
        reference = model.encoder(x[:, :, :64, :96])[-1]
    assert (masked[:, :, :2, :3] - reference).abs().max() < 1e-5
    assert masked[:, :, 2:].abs().max() == 0 and masked[:, :, :, 3:].abs().max() == 0


def test_hooks_are_inactive_outside_masking(model):
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        plain = create_backbone("convnextv2_atto")
        plain.load_state_dict(model.encoder.state_dict())
        assert torch.equal(model.encoder(x)[-1], plain(x)[-1])


# ---- patchify and loss


@settings(max_examples=25, deadline=None)
@given(
    channels=st.integers(1, 3),
    gh=st.integers(1, 3),
    gw=st.integers(1, 3),
    seed=st.integers(0, 10_000),
)
def test_patchify_round_trip_any_channel_count(model, channels, gh, gw, seed):
    p = model.patch_size
    images = torch.randn(2, channels, gh * p, gw * p, generator=torch.Generator().manual_seed(seed))
    patches = model.patchify(images)
    assert patches.shape == (2, gh * gw, p * p * channels)
    # patch l = (row r, column c) holds exactly that pixel block, pixels ordered (row, column, channel)
    r, c = gh - 1, gw - 1
    block = images[1, :, r * p : (r + 1) * p, c * p : (c + 1) * p].permute(1, 2, 0).reshape(-1)
    assert torch.equal(patches[1, r * gw + c], block)
    assert torch.equal(model.unpatchify(patches, gh * p, gw * p), images)


def test_loss_is_hand_computable_and_counts_only_masked_patches():
    m = FCMAE("convnextv2_atto", decoder_dim=32, norm_pix_loss=False)
    images = torch.zeros(1, 1, 64, 64)
    images[..., :32, 32:] = 1.0  # patch 1 is white, the others black
    mask = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])  # patches 0 and 1 masked
    pred = torch.zeros(1, 4, 32 * 32)
    pred[0, 0] = 0.5  # error 0.25 per pixel on patch 0; patch 1 error 1.0 per pixel
    assert m.forward_loss(images, pred, mask).item() == pytest.approx((0.25 + 1.0) / 2)
    changed = pred.clone()
    changed[0, 2:] = 123.0  # unmasked patches: any prediction, same loss
    assert m.forward_loss(images, changed, mask).item() == pytest.approx((0.25 + 1.0) / 2)
    changed[0, 1] = 1.0  # a masked patch predicted exactly
    assert m.forward_loss(images, changed, mask).item() == pytest.approx(0.25 / 2)


def test_norm_pix_targets_are_standardised_per_patch(model):
    images = torch.rand(2, 1, 64, 64) * torch.tensor([0.1, 5.0]).view(2, 1, 1, 1) + 3.0
    t = model.targets(images)
    v = model.patchify(images).var(-1)
    assert torch.allclose(t.mean(-1), torch.zeros(2, 4), atol=1e-4)
    assert torch.allclose(t.var(-1), v / (v + 1e-6), atol=1e-4)  # unit variance up to the 1e-6 guard
    assert t.var(-1)[1].sub(1).abs().max() < 1e-5


def test_reconstruction_keeps_visible_pixels_and_fills_masked_ones(model):
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        loss, pred, mask = model(x, generator=torch.Generator().manual_seed(0))
        recon = model.reconstruct(x, pred, mask)
    pixels = upsample_mask(mask, 64, 64)[:, None].bool()
    assert torch.equal(recon[~pixels], x[~pixels])
    assert not torch.allclose(recon[pixels], x[pixels])
    assert torch.isfinite(loss)


# ---- export, training, errors


def test_export_loads_strict_into_create_backbone_with_identical_features(tmp_path, model):
    state = model.export_encoder()
    path = tmp_path / "encoder.pt"
    torch.save(state, path)
    loaded = create_backbone("convnextv2_atto", init=path)
    x = torch.randn(2, 1, 64, 96)
    with torch.no_grad():
        for a, b in zip(loaded(x), model.encoder(x), strict=True):
            assert torch.equal(a, b)
    assert set(state) == set(loaded.model.state_dict())


def test_a_few_training_steps_reduce_the_loss():
    torch.manual_seed(0)
    from semkit.data import make_sem_dataset
    from semkit.ssl.data import synthetic_config

    images = torch.from_numpy(np.stack([r.image for r in make_sem_dataset(4, 0, synthetic_config(64))]))[:, None]
    config = PretrainConfig(crop_size=64, decoder_dim=32, norm_pix_loss=False)
    module = FCMAEModule(config)
    opt = torch.optim.AdamW(module.parameters(), lr=5e-3)
    mask = module.model.random_mask(4, (2, 2), 0.5, generator=torch.Generator().manual_seed(0))
    losses = []
    for _ in range(6):
        loss, _, _ = module(images, mask=mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses
    assert all(b < a for a, b in zip(losses[:3], losses[1:4], strict=True)), losses  # monotone at first


def test_bad_sizes_and_backbones_are_clear_errors(model):
    with pytest.raises(InputError, match="not divisible by the FCMAE patch size 32"):
        model(torch.randn(1, 1, 64, 80))
    with pytest.raises(InputError, match=r"expects images \(B, 1, H, W\)"):
        model(torch.randn(1, 3, 64, 64))
    with pytest.raises(InputError, match="ConvNeXt V2"):
        FCMAE("resnet50")
    with pytest.raises(InputError, match="total stride"):
        FCMAE("convnextv2_atto", patch_size=16)
    with pytest.raises(InputError, match="crop_size 100 is not divisible"):
        build_module(PretrainConfig(crop_size=100))
    with pytest.raises(InputError, match=r"mask_ratio must be in \[0, 1\)"):
        model(torch.randn(1, 1, 64, 64), mask_ratio=1.0)
