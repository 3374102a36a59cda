"""Plasticity metrics against values computed by hand, and the per-layer probe."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from rl_plasticity.metrics import (
    PlasticityProbe,
    approx_rank,
    dormant_fraction,
    effective_rank,
    feature_norm,
    inactive_fraction,
    weight_magnitude,
)


def test_dormant_fraction_by_hand() -> None:
    features = torch.tensor([[1.0, 0.0, 2.0, 0.01], [-3.0, 0.0, 2.0, -0.01]])
    # mean|h| = [2, 0, 2, 0.01]; normalised by their mean 1.0025 -> [1.995, 0, 1.995, 0.00998]
    assert dormant_fraction(features, tau=0.025) == 0.5
    assert dormant_fraction(features, tau=0.0) == 0.25
    assert dormant_fraction(features, tau=0.005) == 0.25


def test_inactive_fraction_by_hand() -> None:
    features = torch.zeros(100, 3)
    features[0, 0] = 1.0  # active on 1% of inputs: still counts as inactive
    features[:2, 1] = 1.0  # active on 2%: alive
    features[:, 2] = -1.0  # never positive
    assert inactive_fraction(features) == pytest.approx(2 / 3)
    assert inactive_fraction(features, threshold=0.0) == pytest.approx(1 / 3)


def test_approx_rank_by_hand() -> None:
    features = torch.diag(torch.tensor([10.0, 5.0, 1.0, 0.1]))
    # cumulative share of the singular values: 0.621, 0.932, 0.9938, 1.0
    assert approx_rank(features) == 3
    assert approx_rank(features, threshold=0.9) == 2
    assert approx_rank(features, threshold=0.999) == 4
    assert approx_rank(torch.zeros(5, 3)) == 0
    rotation = torch.linalg.qr(torch.randn(4, 4)).Q
    assert approx_rank(rotation @ features) == 3  # singular values, not entries, decide


def test_effective_rank_by_hand() -> None:
    assert effective_rank(torch.eye(4)) == pytest.approx(4.0)
    p = torch.tensor([0.75, 0.25])
    expected = math.exp(-float((p * p.log()).sum()))  # 1.7548
    assert effective_rank(torch.diag(torch.tensor([3.0, 1.0]))) == pytest.approx(expected)
    assert effective_rank(torch.diag(torch.tensor([3.0, 0.0]))) == pytest.approx(1.0)


def test_weight_magnitude_and_feature_norm_by_hand() -> None:
    layer = nn.Linear(2, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -2.0], [0.5, -0.5]]))
        layer.bias.fill_(100.0)  # biases do not count
    assert weight_magnitude(layer) == pytest.approx(1.0)
    assert feature_norm(torch.tensor([[3.0, 4.0], [0.0, 0.0]])) == pytest.approx(2.5)


def _net_with_dead_unit() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        net[0].weight[5] = 0.0
        net[0].bias[5] = -1.0
    return net


def test_probe_reports_every_metric_per_hidden_layer() -> None:
    net = _net_with_dead_unit()
    layers = [net[0], net[2], net[4]]
    x = torch.randn(256, 3)
    results = PlasticityProbe(layers).measure(x)
    names = ["dormant_fraction", "inactive_fraction", "approx_rank", "effective_rank", "feature_norm",
             "weight_magnitude"]
    expected_keys = {f"layer{k}/{n}" for k in (0, 1) for n in names} | {"layer2/weight_magnitude"}
    assert set(results) == expected_keys

    h0 = torch.relu(net[0](x)).detach()
    assert results["layer0/inactive_fraction"] >= 1 / 8
    assert results["layer0/dormant_fraction"] == dormant_fraction(h0)
    assert results["layer0/approx_rank"] == approx_rank(h0) / 8
    assert 0 < results["layer0/approx_rank"] <= 7 / 8  # the dead unit cannot add rank
    assert results["layer2/weight_magnitude"] == weight_magnitude(net[4])


def test_probe_with_model_matches_probe_chaining_layers() -> None:
    net = _net_with_dead_unit()
    layers = [net[0], net[2], net[4]]
    x = torch.randn(64, 3)
    assert PlasticityProbe(layers, model=net).measure(x) == PlasticityProbe(layers).measure(x)


def test_probe_with_model_respects_the_models_own_activations() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 2))
    x = torch.randn(32, 3)
    probe = PlasticityProbe([net[0], net[2]], model=net)
    (features,) = probe.hidden_features(x)
    torch.testing.assert_close(features, torch.tanh(net[0](x)).detach())
    assert len(net[2]._forward_pre_hooks) == 0  # temporary hooks are removed
