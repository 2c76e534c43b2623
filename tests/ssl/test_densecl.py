"""DenseCL: dense InfoNCE against hand-computed and reference values, training steps, encoder export."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from lightly.loss import NTXentLoss

from semkit.models.backbones import create_backbone, load_encoder_state_dict
from semkit.ssl.densecl import DenseCL, build_module, dense_info_nce, info_nce
from semkit.ssl.mocov2 import lr_lambda
from semkit.ssl.pretrain import PretrainConfig, pretrain


@pytest.fixture(autouse=True)
def one_thread():
    # The CPU is shared with other jobs; several OpenMP threads then spin against each other and run slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def freeze_queues(net):
    """Keep the queues' content fixed so repeated steps on one batch see the same negatives."""
    for module in net.modules():
        if type(module).__name__ == "MemoryBankModule":
            module._dequeue_and_enqueue = lambda batch: None


def test_info_nce_hand_computed():
    q = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    k = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    n = torch.tensor([[0.0, 1.0]])
    tau = 0.5
    # query 0: pos cos 1, neg cos 0; query 1: pos cos 1/sqrt(2), neg cos 1
    l0 = -math.log(math.exp(2) / (math.exp(2) + math.exp(0)))
    p1 = 1 / math.sqrt(2) / tau
    l1 = -math.log(math.exp(p1) / (math.exp(p1) + math.exp(2)))
    assert info_nce(q, k, n, tau).item() == pytest.approx((l0 + l1) / 2, rel=1e-6)
    assert info_nce(q, k, None, tau).item() == pytest.approx(0.0, abs=1e-7)  # only the positive: log 1


def test_info_nce_equals_lightly_ntxent_with_memory_bank():
    torch.manual_seed(0)
    q, k, bank = torch.randn(5, 8), torch.randn(5, 8), F.normalize(torch.randn(16, 8), dim=1)
    loss_fn = NTXentLoss(temperature=0.2, memory_bank_size=(16, 8))
    loss_fn.memory_bank.bank.copy_(bank)
    expected = loss_fn(q, k)  # no gradient tracked: the bank is not updated, negatives = bank
    torch.testing.assert_close(info_nce(q, k, bank, 0.2), expected)


def test_dense_loss_hand_computed_case():
    # One image, two positions. Backbone features cross-match: query position 0 is most similar to key
    # position 1 and vice versa, so the positives are key_dense[1] for q0 and key_dense[0] for q1.
    qf = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    kf = torch.tensor([[[0.0, 1.0], [0.9, 0.1]]])
    qd = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    kd = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
    negatives = torch.tensor([[1.0, 0.0]])
    tau = 0.5
    # q0: pos cos(q0, kd[1]) = 1, neg cos = 1; q1: pos cos(q1, kd[0]) = 1, neg cos = 0
    l0 = math.log(2.0)
    l1 = -math.log(math.exp(2) / (math.exp(2) + 1.0))
    assert dense_info_nce(qd, kd, qf, kf, negatives, tau).item() == pytest.approx((l0 + l1) / 2, rel=1e-6)


def reference_dense_loss(qd, kd, qf, kf, negatives, tau):
    """Slow reference: explicit loops over images and positions (the official DenseCL formulation)."""
    losses = []
    for b in range(qd.shape[0]):
        for s in range(qd.shape[1]):
            sims = [F.cosine_similarity(qf[b, s], kf[b, t], dim=0) for t in range(kf.shape[1])]
            t = int(torch.stack(sims).argmax())
            q = F.normalize(qd[b, s], dim=0)
            pos = torch.dot(q, F.normalize(kd[b, t], dim=0)) / tau
            negs = torch.stack([torch.dot(q, F.normalize(n, dim=0)) for n in negatives]) / tau
            logits = torch.cat([pos[None], negs])
            losses.append(-torch.log_softmax(logits, dim=0)[0])
    return torch.stack(losses).mean()


def test_dense_loss_matches_loop_reference():
    torch.manual_seed(1)
    qd, kd = torch.randn(3, 4, 6), torch.randn(3, 4, 6)
    qf, kf = torch.randn(3, 4, 5), torch.randn(3, 4, 5)
    negatives = torch.randn(7, 6)
    torch.testing.assert_close(dense_info_nce(qd, kd, qf, kf, negatives, 0.2),
                               reference_dense_loss(qd, kd, qf, kf, negatives, 0.2))


def test_forward_combines_losses_with_lambda_and_fills_queues():
    torch.manual_seed(0)
    net = DenseCL("convnextv2_atto", hidden_dim=32, out_dim=8, queue_size=8)
    x0, x1 = torch.rand(4, 1, 64, 64), torch.rand(4, 1, 64, 64)
    out = net(x0, x1)
    expected = 0.5 * out["loss_global"] + 0.5 * out["loss_dense"]
    torch.testing.assert_close(out["loss"], expected)
    # the keys just computed went into the queues: global keys and the per-image mean of dense keys
    _, k_global, k_dense = net.encode_momentum(x1)
    torch.testing.assert_close(net.global_queue.bank[:4], F.normalize(k_global, dim=-1))
    torch.testing.assert_close(net.dense_queue.bank[:4], F.normalize(k_dense.mean(1), dim=-1))
    assert int(net.global_queue.bank_ptr) == 4
    with torch.no_grad():  # evaluation leaves the queues alone
        net(x0, x1)
    assert int(net.global_queue.bank_ptr) == 4


def test_momentum_update_covers_backbone_and_both_heads():
    net = DenseCL("convnextv2_atto", hidden_dim=16, out_dim=8, queue_size=8)
    online, key = net.encoders.online, net.encoders.momentum
    assert not any(p.requires_grad for p in key.parameters())
    with torch.no_grad():
        for p in online.parameters():
            p.add_(1.0)
    before = [p.clone() for p in key.parameters()]
    net.update_momentum(0.9)
    for b, k, q in zip(before, key.parameters(), online.parameters(), strict=True):
        torch.testing.assert_close(k, 0.9 * b + 0.1 * q)


def test_a_few_steps_on_one_batch_lower_the_loss():
    torch.manual_seed(0)
    net = DenseCL("convnextv2_atto", hidden_dim=64, out_dim=16, queue_size=32)
    freeze_queues(net)
    x0 = torch.rand(4, 1, 64, 64)
    x1 = x0.flip(-1)
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.01)
    losses = []
    for _ in range(5):
        net.update_momentum(0.99)
        out = net(x0, x1)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]


def test_step_schedule_with_warmup():
    module = build_module(PretrainConfig(method="densecl", backbone="convnextv2_atto", batch_size=64,
                                         warmup_epochs=1))
    assert module.optim.lr == pytest.approx(0.3 * 64 / 256)  # linear scaling rule
    assert module.optim.weight_decay == pytest.approx(1e-4) and module.optim.schedule == "step"
    f = lr_lambda(100, 10, module.optim)
    assert [f(0), f(4), f(9)] == pytest.approx([0.1, 0.5, 1.0])
    assert [f(10), f(59), f(60), f(79), f(80), f(99)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


@pytest.mark.parametrize("backbone", ["convnextv2_atto", "resnet50"])
def test_train_step_then_export_loads_strict_with_identical_features(backbone):
    torch.manual_seed(0)
    module = build_module(PretrainConfig(method="densecl", backbone=backbone, batch_size=4))
    net = module.network
    before = next(net.backbone.parameters()).clone()  # the first convolution
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.01)
    out = net(torch.rand(4, 1, 64, 64), torch.rand(4, 1, 64, 64))
    out["loss"].backward()
    opt.step()
    assert all(math.isfinite(v.item()) for v in out.values())
    assert not torch.equal(before, next(net.backbone.parameters()))  # the step changed the encoder that is exported
    target = load_encoder_state_dict(create_backbone(backbone), module.export_encoder()).eval()
    module.network.backbone.eval()
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(target(x)[-1], module.network.backbone(x)[-1], rtol=0, atol=0)


def test_pretrain_runs_densecl_and_exports_the_final_encoder(tmp_path):
    cfg = PretrainConfig(method="densecl", backbone="convnextv2_atto", synthetic_count=6, crop_size=64,
                         batch_size=4, epochs=2, accelerator="cpu", output_dir=str(tmp_path), val_fraction=0.2)
    result = pretrain(cfg)
    assert len(result["train_loss"]) == 2 and all(math.isfinite(v) for v in result["train_loss"])
    assert all(math.isfinite(v) for v in result["val_loss"])
    backbone = create_backbone("convnextv2_atto", init=result["encoder_path"])  # strict load
    # queue-based: the final weights are exported, not the lowest-loss epoch (the queue makes losses incomparable)
    assert result["exported_checkpoint"] == "last" and result["checkpoint_path"].endswith("last.ckpt")
    ckpt = torch.load(result["checkpoint_path"], map_location="cpu", weights_only=False)
    assert ckpt["epoch"] == 1  # the second (final) epoch
    key = "network.encoders.online.backbone.model.stem.0.weight"
    torch.testing.assert_close(backbone.model.stem[0].weight, ckpt["state_dict"][key])
