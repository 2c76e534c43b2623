"""MinkowskiEngine backend: weight conversion and dense/sparse equivalence of the FCMAE encoder and loss."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch

from semkit.errors import InputError
from semkit.ssl.sparse import minkowski_status

OK, WHY = minkowski_status()
pytestmark = pytest.mark.skipif(not OK, reason=f"MinkowskiEngine not importable: {WHY}")


@pytest.fixture(scope="module")
def atto_pair():
    return _pair("convnextv2_atto")


def _pair(backbone: str):
    from semkit.bench.ssl import _sparse_state
    from semkit.ssl.fcmae import FCMAE

    torch.manual_seed(0)
    dense = FCMAE(backbone, decoder_dim=64).eval()
    with torch.no_grad():  # non-trivial GRN (timm initialises it to the identity)
        for name, p in dense.encoder.named_parameters():
            if ".grn." in name:
                p.normal_(0, 0.5)
    sparse = FCMAE(backbone, decoder_dim=64, backend="minkowski").eval()
    sparse.load_state_dict(_sparse_state(dense, sparse))
    return dense, sparse


def test_channelwise_kernel_is_the_depthwise_weight_transposed_in_space():
    from semkit.ssl.sparse import import_minkowski, timm_to_sparse

    ME = import_minkowski()  # noqa: N806
    torch.manual_seed(0)
    c, k, h, w = 3, 7, 9, 11
    conv = torch.nn.Conv2d(c, c, k, padding=k // 2, groups=c)
    mink = ME.MinkowskiChannelwiseConvolution(c, kernel_size=k, bias=True, dimension=2)
    x = torch.randn(1, c, h, w)
    coords = torch.stack(torch.meshgrid(torch.zeros(1, dtype=torch.long), torch.arange(h), torch.arange(w), indexing="ij"), -1)
    coords = coords.reshape(-1, 3).int()  # (batch, row, column)
    feats = x[0].permute(1, 2, 0).reshape(-1, c)

    def run(kernel):
        with torch.no_grad():
            mink.kernel.copy_(kernel)
            mink.bias.copy_(conv.bias[None])
            out = mink(ME.SparseTensor(feats, coordinates=coords))
        return out.dense(shape=torch.Size([1, c, h, w]), min_coordinate=torch.IntTensor([0, 0]))[0]

    converted = timm_to_sparse({"w.weight": conv.weight}, {"w.kernel": mink.kernel})["w.kernel"]
    assert torch.equal(converted, conv.weight[:, 0].transpose(1, 2).reshape(c, k * k).T)
    expected = conv(x).detach()
    assert (run(converted) - expected).abs().max() < 1e-5
    untransposed = conv.weight[:, 0].reshape(c, k * k).T
    assert (run(untransposed) - expected).abs().max() > 1e-2  # the transposition matters


# atto..nano run their blocks channels-first with 1x1-convolution MLPs, tiny and larger channels-last with
# linear layers: both layouts are checked.
@pytest.mark.parametrize(
    "backbone,size,ratios",
    [("convnextv2_atto", (96, 64), (0.5, 0.75)), ("convnextv2_tiny", (64, 64), (0.5,))],
)
def test_dense_and_sparse_backends_agree(backbone, size, ratios, atto_pair):
    dense, sparse = atto_pair if backbone == "convnextv2_atto" else _pair(backbone)
    x = torch.randn(2, 1, *size)
    grid = (size[0] // 32, size[1] // 32)
    for seed, ratio in enumerate(ratios):
        mask = dense.random_mask(2, grid, ratio, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            a = dense.forward_encoder(x, mask)
            b = sparse.forward_encoder(x, mask)
            loss_a, pred_a, _ = dense(x, mask=mask)
            loss_b, pred_b, _ = sparse(x, mask=mask)
        assert a.shape == b.shape
        assert (a - b).abs().max() < 1e-4
        assert a.abs().max() > 0.1  # a real signal, not two zero maps
        assert loss_a.item() == pytest.approx(loss_b.item(), abs=1e-5)
        assert (pred_a - pred_b).abs().max() < 1e-4


def test_all_stages_agree_and_masked_positions_are_zero(atto_pair):
    dense, sparse = atto_pair
    x = torch.randn(1, 1, 96, 128)
    mask = dense.random_mask(1, (3, 4), 0.5, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = dense.encoder(x)  # unmasked, only for the expected shapes
        dense_stages = []
        handles = [s.register_forward_hook(lambda _m, _i, o: dense_stages.append(o)) for s in dense.encoder.model.stages]
        dense.forward_encoder(x, mask)
        for h in handles:
            h.remove()
        sparse_stages = sparse.encoder(x, 1 - mask, all_stages=True)
    from semkit.ssl.fcmae import upsample_mask

    for r, a, b in zip(ref, dense_stages, sparse_stages, strict=True):
        assert a.shape == b.shape == r.shape
        assert (a - b).abs().max() < 1e-4
        hidden = upsample_mask(mask, *b.shape[-2:])[:, None].expand_as(b) == 1
        assert b[hidden].abs().max() == 0 and b[~hidden].abs().max() > 0


def test_sparse_model_survives_deepcopy_and_pickle(atto_pair):
    # MinkowskiEngine keeps layer settings in __slots__, which nn.Module's copy/pickle state drops.
    _, sparse = atto_pair
    x = torch.randn(1, 1, 64, 64)
    mask = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
    with torch.no_grad():
        expected = sparse(x, mask=mask)[0]
        for clone in (copy.deepcopy(sparse), pickle.loads(pickle.dumps(sparse))):
            assert clone(x, mask=mask)[0].item() == pytest.approx(expected.item(), abs=1e-6)


def test_pretrain_with_the_minkowski_backend_exports_a_timm_encoder(tmp_path):
    from semkit.models.backbones import create_backbone
    from semkit.ssl import PretrainConfig, pretrain

    config = PretrainConfig(crop_size=64, synthetic_count=5, batch_size=4, epochs=1, decoder_dim=32,
                            backend="minkowski", accelerator="cpu", output_dir=str(tmp_path))
    results = pretrain(config)
    assert results["steps"] == 1 and len(results["val_loss"]) == 1
    backbone = create_backbone("convnextv2_atto", init=results["encoder_path"])  # strict
    kernel = torch.load(tmp_path / "checkpoints" / "best.ckpt", weights_only=False)["state_dict"][
        "model.encoder.stages.2.blocks.0.conv_dw.kernel"]
    w = backbone.model.stages[2].blocks[0].conv_dw.weight.detach()
    assert torch.equal(kernel, w[:, 0].transpose(1, 2).reshape(w.shape[0], -1).T)
    with pytest.raises(InputError, match="float32 only"):
        pretrain(PretrainConfig(backend="minkowski", precision="bf16-mixed", crop_size=64, output_dir=str(tmp_path)))


def test_weight_conversion_round_trips_and_training_updates_export(atto_pair):
    from semkit.models.backbones import create_backbone

    dense, sparse = atto_pair[0], copy.deepcopy(atto_pair[1])
    exported = sparse.export_encoder()
    reference = dense.export_encoder()
    assert exported.keys() == reference.keys()
    assert all(torch.equal(exported[k], reference[k]) for k in reference)
    # one sparse training step changes the exported timm weights consistently
    opt = torch.optim.SGD(sparse.parameters(), lr=0.1)
    x = torch.randn(2, 1, 64, 64)
    loss, _, _ = sparse.train()(x, generator=torch.Generator().manual_seed(0))
    loss.backward()
    opt.step()
    after = sparse.export_encoder()
    assert not torch.equal(after["stages.1.blocks.0.conv_dw.weight"], reference["stages.1.blocks.0.conv_dw.weight"])
    backbone = create_backbone("convnextv2_atto")
    backbone.model.load_state_dict(after, strict=True)
    kernel = sparse.encoder.stages[1].blocks[0].conv_dw.kernel.detach()
    w = backbone.model.stages[1].blocks[0].conv_dw.weight.detach()
    assert torch.equal(kernel, w[:, 0].transpose(1, 2).reshape(w.shape[0], -1).T)


def test_benchmark_reports_both_backends_side_by_side():
    from semkit.bench.ssl import bench_ssl, format_table

    result = bench_ssl(crop_size=64, batch_size=2, ratios=(0.5, 0.75), repeats=1, decoder_dim=32, echo=None)
    rows = result["rows"]
    assert [(r["backend"], r["mask_ratio"]) for r in rows] == [
        ("dense", 0.5), ("minkowski", 0.5), ("dense", 0.75), ("minkowski", 0.75)]
    assert all(r["encoder_images_per_s"] > 0 and r["train_images_per_s"] > 0 for r in rows)
    assert rows[0]["encoder_ms"] == pytest.approx(1e3 * 2 / rows[0]["encoder_images_per_s"])
    assert all(d < 1e-4 for d in result["max_abs_diff"].values())  # same weights, same batch, same masks
    assert "minkowski" in format_table(result)
