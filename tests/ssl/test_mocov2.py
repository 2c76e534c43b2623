"""MoCo v2: momentum update arithmetic, queue behaviour, schedule, training steps and encoder export."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from semkit.models.backbones import create_backbone, load_encoder_state_dict
from semkit.ssl.mocov2 import (
    MoCoV2,
    MomentumEncoder,
    OptimSettings,
    build_module,
    lr_lambda,
    method_lr,
    split_views,
)
from semkit.ssl.pretrain import PretrainConfig, pretrain


@pytest.fixture(autouse=True)
def one_thread():
    # The CPU is shared with other jobs; several OpenMP threads then spin against each other and run slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_momentum_update_hand_checked():
    online = nn.Linear(2, 1)
    pair = MomentumEncoder(online)
    with torch.no_grad():
        pair.momentum.weight.copy_(torch.tensor([[1.0, 2.0]]))
        pair.momentum.bias.fill_(4.0)
        online.weight.copy_(torch.tensor([[3.0, -2.0]]))
        online.bias.fill_(0.0)
    pair.update(0.75)
    # key = 0.75 * key + 0.25 * query
    torch.testing.assert_close(pair.momentum.weight, torch.tensor([[1.5, 1.0]]))
    torch.testing.assert_close(pair.momentum.bias, torch.tensor([3.0]))
    torch.testing.assert_close(online.weight, torch.tensor([[3.0, -2.0]]))  # the query is untouched
    assert not pair.momentum.weight.requires_grad and online.weight.requires_grad
    pair.update(0.0)  # m = 0 copies the query
    torch.testing.assert_close(pair.momentum.weight, online.weight)
    with pytest.raises(ValueError, match="momentum"):
        pair.update(1.5)


def test_momentum_encoder_starts_as_a_copy_and_gets_no_gradient():
    net = MoCoV2("convnextv2_atto", hidden_dim=16, out_dim=8, queue_size=8)
    for q, k in zip(net.encoders.online.parameters(), net.encoders.momentum.parameters(), strict=True):
        assert torch.equal(q, k) and q.data_ptr() != k.data_ptr()
    out = net(torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32))
    out["loss"].backward()
    assert all(p.grad is None for p in net.encoders.momentum.parameters())
    assert next(net.backbone.parameters()).grad is not None


def test_loss_is_infonce_against_the_queue_and_the_queue_advances():
    torch.manual_seed(0)
    net = MoCoV2("convnextv2_atto", hidden_dim=16, out_dim=8, queue_size=6, temperature=0.2)
    x0, x1 = torch.rand(4, 1, 32, 32), torch.rand(4, 1, 32, 32)
    bank = net.criterion.memory_bank.bank.clone()
    with torch.no_grad():
        q, k = F.normalize(net.embed(x0), dim=1), F.normalize(net.embed_momentum(x1), dim=1)
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ bank.T], dim=1) / 0.2
    expected = F.cross_entropy(logits, torch.zeros(4, dtype=torch.long))
    loss = net(x0, x1)["loss"]  # training: the keys are enqueued after the loss used the old queue
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(net.criterion.memory_bank.bank[:4], k)
    torch.testing.assert_close(net.criterion.memory_bank.bank[4:], bank[4:])


def test_a_few_steps_on_one_batch_lower_the_loss():
    torch.manual_seed(0)
    net = MoCoV2("convnextv2_atto", hidden_dim=64, out_dim=16, queue_size=32)
    net.criterion.memory_bank._dequeue_and_enqueue = lambda batch: None  # fixed negatives for a fixed batch
    x0 = torch.rand(4, 1, 64, 64)
    x1 = x0.flip(-1)
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.01)
    losses = []
    for _ in range(6):
        net.update_momentum(0.99)
        loss = net(x0, x1)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]


def test_cosine_schedule_and_linear_scaling():
    cfg = PretrainConfig(method="mocov2", backbone="convnextv2_atto", batch_size=32, devices=2, num_nodes=2)
    assert method_lr(cfg, 0.03) == pytest.approx(0.03 * 32 * 4 / 256)
    cfg.lr = 0.5
    assert method_lr(cfg, 0.03) == 0.5  # an explicit lr is used as given
    settings = OptimSettings(lr=1.0, weight_decay=0, schedule="cosine", final_lr=0.1)
    f = lr_lambda(11, 1, settings)
    assert f(0) == pytest.approx(1.0)  # warmup of one step
    assert f(1) == pytest.approx(1.0)
    assert f(6) == pytest.approx(0.1 + 0.9 * 0.5)  # half way through the cosine phase
    assert f(11) == pytest.approx(0.1)
    assert lr_lambda(10, 0, OptimSettings(lr=1.0, weight_decay=0, schedule="constant"))(7) == 1.0
    with pytest.raises(ValueError, match="schedule"):
        OptimSettings(lr=1.0, weight_decay=0, schedule="poly")


def test_split_views_accepts_the_collated_forms_and_rejects_others():
    a, b = torch.zeros(2, 1, 4, 4), torch.ones(2, 1, 4, 4)
    assert split_views([a, b])[1] is b
    assert split_views(([a, b], torch.zeros(2)))[0] is a
    x0, x1 = split_views(torch.stack([a, b], dim=1))
    assert torch.equal(x1, b)
    with pytest.raises(ValueError, match="two views"):
        split_views(a)


def test_export_loads_strict_into_create_backbone_with_identical_features():
    module = build_module(PretrainConfig(method="mocov2", backbone="convnextv2_atto"))
    with torch.no_grad():
        for p in module.network.backbone.parameters():
            p.add_(0.01 * torch.randn_like(p))
    target = load_encoder_state_dict(create_backbone("convnextv2_atto"), module.export_encoder()).eval()
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(target(x)[-1], module.network.backbone.eval()(x)[-1], rtol=0, atol=0)


def test_pretrain_runs_mocov2_with_the_shared_trainer(tmp_path):
    cfg = PretrainConfig(method="mocov2", backbone="convnextv2_atto", synthetic_count=6, crop_size=64,
                         batch_size=4, epochs=2, accelerator="cpu", output_dir=str(tmp_path))
    result = pretrain(cfg)
    assert result["steps"] == 2 and all(math.isfinite(v) for v in result["train_loss"] + result["val_loss"])
    assert result["best_val_loss"] == pytest.approx(min(result["val_loss"]))
    create_backbone("convnextv2_atto", init=result["encoder_path"])  # strict load of the export
