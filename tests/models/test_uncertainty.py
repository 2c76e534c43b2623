"""Uncertainty head: parameter count, bin mapping, label noise, hand-computed loss, confidence."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from semkit.models.uncertainty import (
    UncertaintyConfig,
    UncertaintyHead,
    bin_centres,
    bin_index,
    certain_by_max_bin,
    certainty_targets,
    confidence,
    near_miss_weights,
    uncertainty_loss,
)


def test_head_has_the_studys_6150_parameters():
    head = UncertaintyHead(1024, 6)
    assert sum(p.numel() for p in head.parameters()) == 6150
    assert head(torch.randn(7, 1024)).shape == (7, 6)


def test_bin_mapping_table():
    y = torch.tensor([0.0, 0.1, 0.16, 0.17, 0.5, 0.83, 0.84, 0.99, 1.0])
    assert bin_index(y, 6).tolist() == [0, 0, 0, 1, 3, 4, 5, 5, 5]
    assert bin_index(torch.tensor([0.0, 0.49, 0.5, 1.0]), 2).tolist() == [0, 0, 1, 1]
    assert bin_index(y, 6).dtype == torch.int64


@given(st.floats(0, 1), st.integers(2, 12))
def test_bin_contains_its_value(y, k):
    b = int(bin_index(torch.tensor([y], dtype=torch.float64), k))
    assert 0 <= b < k
    assert b / k <= y <= (b + 1) / k


def test_targets_without_noise_are_exact():
    certain = torch.tensor([True, False, True])
    assert certainty_targets(certain, 0.0).tolist() == [1.0, 0.0, 1.0]
    assert bin_index(certainty_targets(certain, 0.0), 6).tolist() == [5, 0, 5]


def test_label_noise_spreads_targets_as_a_clipped_gaussian():
    g = torch.Generator().manual_seed(0)
    n = 40_000
    y = certainty_targets(torch.ones(n, dtype=torch.bool), 0.1, generator=g)
    assert y.min() >= 0 and y.max() <= 1
    # half the draws are clipped to exactly 1; P(bin 5) = P(eps > -1/6) = Phi(1.667) = 0.9522
    assert abs((y == 1).float().mean().item() - 0.5) < 0.01
    assert abs((bin_index(y, 6) == 5).float().mean().item() - 0.9522) < 0.006
    y0 = certainty_targets(torch.zeros(n, dtype=torch.bool), 0.1, generator=g)
    assert abs((bin_index(y0, 6) == 0).float().mean().item() - 0.9522) < 0.006


def test_loss_hand_computed_uniform_logits():
    # k = 3, uniform prediction: -log p_c = log 3 for every bin; target bin 2, xi = 1, w = 1:
    # L = log 3 * (e^-2 + e^-1 + e^0)
    loss = uncertainty_loss(torch.zeros(1, 3), torch.tensor([2]), distance_scale=1.0)
    assert loss.item() == pytest.approx(math.log(3) * (math.exp(-2) + math.exp(-1) + 1), rel=1e-6)


def test_loss_hand_computed_weighted_two_rois():
    z = [[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]]
    targets = [0, 1]
    w = [1.0, 2.0, 0.5]
    xi = 0.5
    expected = 0.0
    for zn, bn in zip(z, targets, strict=True):
        log_norm = math.log(sum(math.exp(v) for v in zn))
        expected += -sum(w[c] * math.exp(-abs(bn - c) / xi) * (zn[c] - log_norm) for c in range(3))
    expected /= 2
    loss = uncertainty_loss(torch.tensor(z), torch.tensor(targets), distance_scale=xi, bin_weights=w)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_xi_zero_is_weighted_cross_entropy():
    torch.manual_seed(0)
    logits, bins = torch.randn(9, 6), torch.randint(0, 6, (9,))
    w = torch.tensor([3.0, 1.0, 1.0, 1.0, 1.0, 0.5])
    ours = uncertainty_loss(logits, bins, distance_scale=0.0, bin_weights=w.tolist())
    ref = F.cross_entropy(logits, bins, weight=w, reduction="sum") / 9
    assert ours.item() == pytest.approx(ref.item(), rel=1e-6)


def test_near_miss_costs_less_than_far_miss():
    near = torch.tensor([[0.0, 0.0, 0.0, 0.0, 8.0, 0.0]])  # confident in bin 4, target 5
    far = torch.tensor([[8.0, 0.0, 0.0, 0.0, 0.0, 0.0]])  # confident in bin 0, target 5
    target = torch.tensor([5])
    assert uncertainty_loss(near, target) < uncertainty_loss(far, target)
    # plain cross-entropy cannot tell them apart
    assert uncertainty_loss(near, target, 0.0).item() == pytest.approx(uncertainty_loss(far, target, 0.0).item())


def test_near_miss_weights_table():
    w = near_miss_weights(torch.tensor([0, 2]), 4, distance_scale=1.0)
    e = math.exp
    expected = [[1, e(-1), e(-2), e(-3)], [e(-2), e(-1), 1, e(-1)]]
    assert torch.allclose(w, torch.tensor(expected, dtype=torch.float32))


def test_empty_batch_gives_zero_loss_with_graph():
    logits = torch.zeros(0, 6, requires_grad=True)
    loss = uncertainty_loss(logits, torch.zeros(0, dtype=torch.int64))
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad.shape == (0, 6)


def test_confidence_is_expected_bin_centre():
    assert bin_centres(6).tolist() == pytest.approx([1 / 12, 3 / 12, 5 / 12, 7 / 12, 9 / 12, 11 / 12])
    onehot = torch.eye(6)
    assert confidence(onehot).tolist() == pytest.approx(bin_centres(6).tolist())
    assert confidence(torch.full((1, 6), 1 / 6)).item() == pytest.approx(0.5)
    bimodal = torch.tensor([[0.4, 0, 0, 0, 0.3, 0.3]])
    assert confidence(bimodal).item() == pytest.approx((0.4 * 1 + 0.3 * 9 + 0.3 * 11) / 12)


def test_certain_by_max_bin():
    probs = torch.eye(6)
    assert certain_by_max_bin(probs).tolist() == [False, False, False, True, True, True]
    assert certain_by_max_bin(torch.eye(5)).tolist() == [False, False, False, True, True]


def test_config_validation():
    with pytest.raises(ValueError, match="bin_weights has 2 entries"):
        UncertaintyConfig(num_bins=6, bin_weights=(1.0, 2.0))
    with pytest.raises(ValueError, match="at least 2"):
        UncertaintyConfig(num_bins=1)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-5, 5), min_size=6, max_size=6), st.integers(0, 5), st.floats(0.1, 3))
def test_loss_is_minimised_by_the_weight_distribution(z, b, xi):
    # -sum_c a_c log p_c is minimal at p = a / sum(a); any other p costs at least as much
    a = near_miss_weights(torch.tensor([b]), 6, xi)[0]
    best = uncertainty_loss(torch.log(a / a.sum())[None], torch.tensor([b]), xi)
    other = uncertainty_loss(torch.tensor([z]), torch.tensor([b]), xi)
    assert best.item() <= other.item() + 1e-5


@pytest.mark.parametrize(("sigma", "expected"), [(0.0, 0.0), (0.1, 0.0478), (0.2, 0.2023), (0.3, 0.2893)])
def test_label_noise_spread_formula_and_sampling(sigma, expected):
    from semkit.models.uncertainty import label_noise_spread

    assert label_noise_spread(sigma, 6) == pytest.approx(expected, abs=5e-4)
    gen = torch.Generator().manual_seed(0)
    certain = torch.arange(200_000) % 2 == 0
    bins = bin_index(certainty_targets(certain, sigma, generator=gen), 6)
    end = torch.where(certain, 5, 0)
    assert float((bins != end).float().mean()) == pytest.approx(expected, abs=0.004)
