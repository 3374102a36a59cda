"""CBP where the reference code (Dohare et al.'s gnt.py) and torch.nn.init define the answer."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from rl_plasticity.cbp import ContinualBackprop
from rl_plasticity.cbp_options import init_bound as _init_bound


def mlp(width: int = 8) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, width), nn.ReLU(), nn.Linear(width, 2))


def test_adaptable_contribution_centres_the_activation_as_the_reference() -> None:
    net = mlp()
    decay = 0.9
    cbp = ContinualBackprop.from_sequential(net, utility="adaptable_contribution", decay_rate=decay,
                                            maturity_threshold=10**6)
    inputs = torch.randn(32, 3)
    net(inputs)
    with torch.no_grad():
        h = torch.relu(net[0](inputs))
        mean_h = h.mean(0)  # after one step the bias-corrected running mean is the batch mean
        instant = (h - mean_h).abs().mean(0) * net[2].weight.abs().mean(0) / net[0].weight.abs().mean(1)
    cbp.step()
    assert torch.allclose(cbp.utilities()[0], instant, rtol=1e-5)
    uncentred = h.abs().mean(0) * net[2].weight.abs().mean(0) / net[0].weight.abs().mean(1)
    assert not torch.allclose(cbp.utilities()[0], uncentred, rtol=1e-3)


@pytest.mark.parametrize("floor, allowed", [(True, {2}), (False, {2, 3})])
def test_rounding_above_one_replacement(floor: bool, allowed: set[int]) -> None:
    net = nn.Sequential(nn.Linear(3, 100), nn.ReLU(), nn.Linear(100, 2))
    # maturity 0: every unit older than 0 steps is eligible; 100 eligible units x 0.025 = 2.5 expected
    cbp = ContinualBackprop.from_sequential(net, replacement_rate=0.025, maturity_threshold=0,
                                            floor_when_above_one=floor,
                                            generator=torch.Generator().manual_seed(1))
    counts = []
    for _ in range(60):
        net(torch.randn(16, 3))
        before = cbp.replaced_total[0]
        cbp.step()
        counts.append(cbp.replaced_total[0] - before)
    # units replaced at this step are young and no longer eligible, so the count can dip; the first
    # steps see all 100 eligible
    assert set(counts[:1]) <= allowed
    if floor:
        assert max(counts) <= 2
    else:
        assert 3 in counts and abs(sum(counts) / len(counts) - 2.5) < 0.4


@pytest.mark.parametrize("init, nonlinearity", [("kaiming", "tanh"), ("kaiming", "relu"),
                                                ("xavier", "tanh"), ("xavier", "relu")])
def test_redraw_bounds_match_torch_init_with_the_activations_gain(init: str, nonlinearity: str) -> None:
    weight = torch.empty(64, 256)
    if init == "kaiming":
        nn.init.kaiming_uniform_(weight, nonlinearity=nonlinearity)
    else:
        nn.init.xavier_uniform_(weight, gain=nn.init.calculate_gain(nonlinearity))
    bound = _init_bound(init, fan_in=256, fan_out=64, nonlinearity=nonlinearity)
    assert weight.abs().max() <= bound and weight.abs().max() > 0.99 * bound
    assert _init_bound("lecun", 256, 64, nonlinearity) == pytest.approx(math.sqrt(3 / 256))


def test_an_unknown_nonlinearity_is_refused() -> None:
    with pytest.raises(ValueError):
        ContinualBackprop.from_sequential(mlp(), nonlinearity="swish-ish")


@pytest.mark.parametrize("fused", [False, True])
def test_the_first_update_after_a_moment_reset_is_a_fresh_adams_first_step(fused: bool) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 2))
    lr = 1e-3
    optimizer = torch.optim.Adam(net.parameters(), lr=lr, betas=(0.9, 0.999), fused=fused)
    cbp = ContinualBackprop.from_sequential(net, optimizer, replacement_rate=0.0, maturity_threshold=0,
                                            reset_optimizer_state=True, bias_correction=False)
    inputs, targets = torch.randn(64, 3), torch.randn(64, 2)

    def train_step() -> None:
        optimizer.zero_grad()
        ((net(inputs) - targets) ** 2).mean().backward()
        optimizer.step()

    for _ in range(300):  # Adam's step count is large: 1 - beta**step is ~1 for the old entries
        train_step()
    cbp.replacement_rate = 1 / 16  # one unit at the next step
    train_step()
    cbp.replacement_rate = 0.0
    (unit,) = cbp.last_replaced[0].tolist()
    # The new unit's incoming row gets no gradient (its outgoing weights are 0); its outgoing column does.
    column = net[2].weight[:, unit]
    before = column.detach().clone()
    optimizer.zero_grad()
    ((net(inputs) - targets) ** 2).mean().backward()
    gradient = net[2].weight.grad[:, unit].clone()
    assert gradient.abs().min() > 0
    optimizer.step()
    change = net[2].weight[:, unit].detach() - before
    # a fresh Adam's first step: m_hat = g, v_hat = g^2, so -lr * g / (|g| + eps)
    torch.testing.assert_close(change, -lr * gradient / (gradient.abs() + 1e-8), rtol=1e-4, atol=1e-9)
    assert change.abs().max() <= lr * 1.0001  # not (1 - 0.9) / sqrt(1 - 0.999) = 3.2x the lr


def test_moment_reset_ages_survive_a_state_dict_round_trip() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    cbp = ContinualBackprop.from_sequential(net, optimizer, replacement_rate=1 / 8, maturity_threshold=0,
                                            reset_optimizer_state=True, bias_correction=False)
    for _ in range(5):
        optimizer.zero_grad()
        net(torch.randn(8, 3)).sum().backward()
        optimizer.step()
    state = cbp.state_dict()
    assert any(r is not None for r in state["moments_reset_at"])
    other = ContinualBackprop.from_sequential(net, None, reset_optimizer_state=False, bias_correction=False)
    other.load_state_dict(state)
    saved = [r for r in state["moments_reset_at"] if r is not None]
    restored = other._moments_reset_at.entries.values()
    assert all(torch.equal(a, b) for a, b in zip(saved, restored, strict=True))


# ---------------------------------------------------------------- one definition of the options
def test_the_config_section_and_the_cbp_options_do_not_drift_apart() -> None:
    """`CBPOptions` is the one definition; the PPO's config section `CBPSettings` must name the same
    options, with the same defaults and allowed values (``nonlinearity`` comes from ``ppo.activation``)."""
    import dataclasses

    from agents.settings import CBPSettings
    from rl_plasticity.cbp_options import INITS, OPTION_NAMES, UTILITIES, CBPOptions

    options = {f.name: f for f in dataclasses.fields(CBPOptions)}
    settings = {f.name: f for f in dataclasses.fields(CBPSettings)}
    assert set(settings) - {"enabled"} == set(options) - {"nonlinearity"}
    for name in set(settings) - {"enabled"}:
        assert settings[name].default == options[name].default, name
    assert settings["utility"].metadata["choices"] == UTILITIES
    assert settings["init"].metadata["choices"] == INITS
    assert set(CBPSettings().options()) | {"nonlinearity"} == set(OPTION_NAMES)


def test_options_are_validated_kept_in_one_place_and_unknown_ones_refused() -> None:
    from rl_plasticity.cbp_options import CBPOptions

    cbp = ContinualBackprop.from_sequential(mlp(), replacement_rate=0.5, utility="random")
    assert cbp.options == CBPOptions(replacement_rate=0.5, utility="random")
    cbp.maturity_threshold = 7
    assert cbp.options.maturity_threshold == 7 == cbp.maturity_threshold
    with pytest.raises(ValueError, match="replacement_rate must be in"):
        cbp.replacement_rate = 2.0
    assert cbp.replacement_rate == 0.5  # a refused value leaves the options as they were
    with pytest.raises(TypeError, match="unknown option.*replacment_rate"):
        ContinualBackprop.from_sequential(mlp(), replacment_rate=0.1)
