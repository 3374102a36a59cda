"""The plasticity methods behind one interface: each checked against its definition on a tiny network,
and all of them for the contract (hooks, exact state round trip, remove, option checks)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from conftest import linears, mlp, train_step
from torch import nn

from rl_plasticity import (
    METHODS,
    ContinualBackprop,
    L2Init,
    Parseval,
    ReDo,
    Reset,
    ShrinkPerturb,
    WeightClipping,
    WeightProjection,
)
from rl_plasticity.redo import dormant_units


def frozen_optimizer(net: nn.Module) -> torch.optim.Optimizer:
    # lr 0: the optimizer's own update changes nothing, so every change to a weight is the method's.
    return torch.optim.SGD(net.parameters(), lr=0.0)


# ---------------------------------------------------------------------- ReDo
def test_redo_scores_units_as_the_paper_defines() -> None:
    features = torch.tensor([[0.0, 1.0, 2.0, 0.05], [0.0, -1.0, 2.0, 0.05]])
    # mean |h| = [0, 1, 2, 0.05], normalised by their mean 0.7625: [0, 1.31, 2.62, 0.066]
    assert dormant_units(features, 0.0).tolist() == [0]
    assert dormant_units(features, 0.07).tolist() == [0, 3]
    assert dormant_units(features, 0.065).tolist() == [0]


def test_redo_reinitialises_exactly_the_dormant_units_every_period() -> None:
    net = mlp(5, 8, 3)
    first, head = linears(net)
    with torch.no_grad():
        first.weight[[2, 6]] = 0.0
        first.bias[[2, 6]] = -1.0  # ReLU(-1) = 0 on every input: units 2 and 6 are dead
    optimizer = frozen_optimizer(net)
    redo = ReDo(linears(net), optimizer, tau=0.0, every=3, generator=torch.Generator().manual_seed(0))
    before = copy.deepcopy(net.state_dict())
    x, y = torch.randn(32, 5), torch.randn(32, 3)
    for _ in range(2):
        train_step(net, optimizer, x, y)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())  # not yet: every=3
    train_step(net, optimizer, x, y)
    assert redo.last_reset == [2] and redo.dormant_fraction == pytest.approx(2 / 8)
    others = [i for i in range(8) if i not in (2, 6)]
    bound = 1 / math.sqrt(5)  # pytorch_default
    assert not torch.equal(first.weight[[2, 6]], before["0.weight"][[2, 6]])
    assert first.weight[[2, 6]].abs().max() <= bound and torch.equal(first.bias[[2, 6]], torch.zeros(2))
    assert torch.equal(head.weight[:, [2, 6]], torch.zeros(3, 2))
    assert torch.equal(first.weight[others], before["0.weight"][others])
    assert torch.equal(head.weight[:, others], before["2.weight"][:, others])
    assert redo.statistics()["reset_total"] == 2.0


def test_redo_zeroes_the_adam_moments_of_what_it_resets() -> None:
    net = mlp(5, 8, 3)
    first, head = linears(net)
    with torch.no_grad():
        first.weight[4] = 0.0
        first.bias[4] = -1.0
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    ReDo(linears(net), optimizer, tau=0.0, every=2)
    x, y = torch.randn(16, 5), torch.randn(16, 3)
    for _ in range(2):
        train_step(net, optimizer, x, y)
    state = optimizer.state
    assert torch.equal(state[first.weight]["exp_avg"][4], torch.zeros(5))
    assert torch.equal(state[head.weight]["exp_avg_sq"][:, 4], torch.zeros(3))
    assert state[first.weight]["exp_avg"][0].abs().sum() > 0


@pytest.mark.parametrize("restart", [False, True])
def test_redo_bias_corrects_the_zeroed_entries_by_the_optimizers_age_or_their_own(restart: bool) -> None:
    """The first update after a reset, against Adam's formula: zeroed moments that see one gradient g are
    m = (1 - beta1) g and v = (1 - beta2) g^2. ReDo's code bias-corrects them for the optimizer's step
    count t (here 3); ``restart_bias_correction`` for their own age, 1, as a fresh Adam would. (The unit's
    outgoing column: its incoming row has no gradient while the column is still zero.)"""
    net = mlp(5, 8, 3)
    first, head = linears(net)
    with torch.no_grad():
        first.weight[4] = 0.0
        first.bias[4] = -1.0
    lr, (beta1, beta2), eps = 1e-2, (0.9, 0.999), 1e-8
    optimizer = torch.optim.Adam(net.parameters(), lr=lr, betas=(beta1, beta2), eps=eps)
    ReDo(linears(net), optimizer, tau=0.0, every=2, restart_bias_correction=restart,
         generator=torch.Generator().manual_seed(0))
    x, y = torch.randn(16, 5), torch.randn(16, 3)
    for _ in range(2):
        train_step(net, optimizer, x, y)
    before = head.weight[:, 4].detach().clone()
    train_step(net, optimizer, x, y)
    g = head.weight.grad[:, 4]
    assert g.abs().min() > 0
    m, v = (1 - beta1) * g, (1 - beta2) * g * g
    age = 1 if restart else 3
    step = lr * (m / (1 - beta1**age)) / ((v / (1 - beta2**age)).sqrt() + eps)
    torch.testing.assert_close(head.weight[:, 4].detach(), before - step, rtol=1e-5, atol=1e-7)
    assert optimizer.state[head.weight]["step"] == 3  # the optimizer's own count is never touched


# ---------------------------------------------------------------------- Shrink & Perturb
def test_shrink_perturb_mixes_in_a_fresh_init_draw() -> None:
    net = mlp(4, 6, 2)
    optimizer = frozen_optimizer(net)
    method = ShrinkPerturb(linears(net), optimizer, shrink=0.6, perturb=0.3, every=2, init="lecun",
                           generator=torch.Generator().manual_seed(7))
    before = [p.detach().clone() for p in net.parameters()]
    x, y = torch.randn(8, 4), torch.randn(8, 2)
    train_step(net, optimizer, x, y)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
    train_step(net, optimizer, x, y)
    replay = torch.Generator().manual_seed(7)
    for layer, (weight, bias) in zip(linears(net), zip(before[::2], before[1::2], strict=True), strict=True):
        bound = math.sqrt(3 / layer.in_features)
        draw = torch.empty(layer.weight.shape).uniform_(-bound, bound, generator=replay)
        torch.testing.assert_close(layer.weight, 0.6 * weight + 0.3 * draw, rtol=0, atol=1e-7)
        torch.testing.assert_close(layer.bias, 0.6 * bias, rtol=0, atol=0)  # a fresh bias is 0
    assert method.statistics() == {"applied": 1.0}


def test_the_soft_variant_pulls_towards_the_initial_parameters() -> None:
    net = mlp(4, 6, 2)
    initial = [p.detach().clone() for p in net.parameters()]
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05)
    ShrinkPerturb(linears(net), optimizer, shrink=0.9, perturb=0.1, every=1, toward="initial")
    x, y = torch.randn(8, 4), torch.randn(8, 2)
    expected = []
    with torch.no_grad():
        reference = copy.deepcopy(net)
    reference_optimizer = torch.optim.SGD(reference.parameters(), lr=0.05)
    for _ in range(3):
        train_step(reference, reference_optimizer, x, y)
        with torch.no_grad():
            for p, p0 in zip(reference.parameters(), initial, strict=True):
                p.mul_(0.9).add_(p0, alpha=0.1)
        train_step(net, optimizer, x, y)
    expected = list(reference.parameters())
    for a, b in zip(net.parameters(), expected, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)


# ---------------------------------------------------------------------- weight clipping
@pytest.mark.parametrize("skip_last", [False, True])
def test_weight_clipping_clamps_to_kappa_over_sqrt_fan_in(skip_last: bool) -> None:
    net = mlp(16, 4, 2)
    first, head = linears(net)
    with torch.no_grad():
        first.weight[0, 0], first.bias[1], head.weight[0, 0] = 5.0, -3.0, 4.0
    inside = first.weight[2].detach().clone()
    optimizer = frozen_optimizer(net)
    method = WeightClipping(linears(net), optimizer, kappa=2.0, skip_last=skip_last)
    train_step(net, optimizer, torch.randn(4, 16), torch.randn(4, 2))
    weight, bias, head_weight = first.weight.detach(), first.bias.detach(), head.weight.detach()
    assert float(weight[0, 0]) == 2.0 / 4 and float(bias[1]) == -2.0 / 4
    assert weight.abs().max() <= 0.5 and torch.equal(weight[2], inside.clamp(-0.5, 0.5))
    assert float(head_weight[0, 0]) == (4.0 if skip_last else 2.0 / 2)
    assert method.statistics()["clipped"] >= 2


@pytest.mark.parametrize(("init", "bound"), [("lecun", math.sqrt(3 / 16)), ("pytorch_default", 1 / 4),
                                             ("kaiming", math.sqrt(2) * math.sqrt(3 / 16))])
def test_weight_clipping_bound_is_the_named_inits(init: str, bound: float) -> None:
    """The paper clips at kappa times the init distribution's bound; a LeCun-initialised network
    (the paper's PPO) is clipped at kappa * sqrt(3 / fan_in), not at the reference code's 1/sqrt(fan_in)."""
    net = mlp(16, 4, 2)
    first = linears(net)[0]
    with torch.no_grad():
        first.weight.fill_(3.0)
        first.bias.fill_(-3.0)
    optimizer = frozen_optimizer(net)
    WeightClipping(linears(net), optimizer, kappa=0.5, init=init)
    train_step(net, optimizer, torch.randn(4, 16), torch.randn(4, 2))
    for param, sign in ((first.weight, 1.0), (first.bias, -1.0)):
        expected = torch.full_like(param, sign * 0.5 * bound)
        torch.testing.assert_close(param.detach(), expected, rtol=1e-6, atol=0)


def test_weight_clipping_refuses_an_init_without_a_bound() -> None:
    with pytest.raises(ValueError, match="init must be one of"):
        WeightClipping(linears(mlp(16, 4, 2)), None, init="orthogonal")


# ---------------------------------------------------------------------- L2-Init
def test_l2_init_is_the_gradient_of_the_squared_distance_to_the_initial_parameters() -> None:
    net = mlp(4, 6, 2)
    reference = copy.deepcopy(net)
    initial = [p.detach().clone() for p in net.parameters()]
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    method = L2Init(linears(net), optimizer, strength=0.05)
    reference_optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
    x, y = torch.randn(8, 4), torch.randn(8, 2)
    for _ in range(3):
        train_step(net, optimizer, x, y)
        loss = (reference(x) - y).pow(2).mean() + 0.05 * sum(
            (p - p0).square().sum() for p, p0 in zip(reference.parameters(), initial, strict=True))
        reference_optimizer.zero_grad()
        loss.backward()
        reference_optimizer.step()
    for a, b in zip(net.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    distance = sum(float((p.detach() - p0).square().sum())
                   for p, p0 in zip(net.parameters(), initial, strict=True))
    assert method.statistics()["penalty"] == pytest.approx(0.05 * distance, rel=1e-5) and distance > 0


# ---------------------------------------------------------------------- Parseval, weight projection
def test_parseval_is_the_gradient_of_the_orthogonality_penalty_on_the_hidden_layers() -> None:
    net = mlp(4, 6, 5, 2)
    reference = copy.deepcopy(net)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05)
    method = Parseval(linears(net), optimizer, strength=0.02, scale=0.5)
    reference_optimizer = torch.optim.SGD(reference.parameters(), lr=0.05)
    x, y = torch.randn(8, 4), torch.randn(8, 2)
    for _ in range(3):
        train_step(net, optimizer, x, y)
        hidden = linears(reference)[:-1]  # the head is left out by default
        penalty = sum((w.weight @ w.weight.T - 0.5 * torch.eye(w.out_features)).square().sum()
                      for w in hidden)
        loss = (reference(x) - y).pow(2).mean() + 0.02 * penalty
        reference_optimizer.zero_grad()
        loss.backward()
        reference_optimizer.step()
    for a, b in zip(net.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    penalty = sum(float((w.weight @ w.weight.T - 0.5 * torch.eye(w.out_features)).square().sum())
                  for w in linears(net)[:-1])
    assert method.statistics()["penalty"] == pytest.approx(0.02 * penalty, rel=1e-5) and penalty > 0


def test_weight_projection_keeps_each_weight_matrix_at_its_initial_norm() -> None:
    net = mlp(4, 6, 2)
    initial = [float(torch.linalg.matrix_norm(layer.weight.detach())) for layer in linears(net)]
    biases = [layer.bias.detach().clone() for layer in linears(net)]
    optimizer = frozen_optimizer(net)
    method = WeightProjection(linears(net), optimizer, every=2)
    with torch.no_grad():
        linears(net)[0].weight.mul_(3.0)
    train_step(net, optimizer, torch.randn(8, 4), torch.randn(8, 2))
    assert float(torch.linalg.matrix_norm(linears(net)[0].weight.detach())) == pytest.approx(3 * initial[0])
    train_step(net, optimizer, torch.randn(8, 4), torch.randn(8, 2))
    for layer, norm, bias in zip(linears(net), initial, biases, strict=True):
        assert float(torch.linalg.matrix_norm(layer.weight.detach())) == pytest.approx(norm, rel=1e-6)
        assert torch.equal(layer.bias.detach(), bias)
    assert method.statistics()["rescale"] == pytest.approx(1 / 3, rel=1e-6)


# ---------------------------------------------------------------------- resets
@pytest.mark.parametrize("layers", [1, 0])
def test_reset_reinitialises_the_last_layers_and_their_moments(layers: int) -> None:
    net = mlp(6, 8, 8, 3)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    method = Reset(linears(net), optimizer, last_layers=layers, every=4, init="lecun",
                   generator=torch.Generator().manual_seed(5))
    x, y = torch.randn(16, 6), torch.randn(16, 3)
    for _ in range(3):
        train_step(net, optimizer, x, y)
    before = [layer.weight.detach().clone() for layer in linears(net)]
    train_step(net, optimizer, x, y)  # the fourth step, then the reset
    assert method.statistics() == {"resets": 1.0}
    replay = torch.Generator().manual_seed(5)
    reset = linears(net)[-layers:] if layers else linears(net)
    for index, layer in enumerate(linears(net)):
        if layer in reset:
            bound = math.sqrt(3 / layer.in_features)
            fresh = torch.empty(layer.weight.shape).uniform_(-bound, bound, generator=replay)
            assert torch.equal(layer.weight.detach(), fresh) and not layer.bias.detach().any()
            assert not optimizer.state[layer.weight]["exp_avg"].any()
        else:
            assert not torch.equal(layer.weight.detach(), before[index])  # trained, not reset
            assert optimizer.state[layer.weight]["exp_avg"].any()


# ---------------------------------------------------------------------- the contract, for every method
ACTIVE = {  # options under which each method acts within a few steps of a tiny network
    "cbp": {"replacement_rate": 0.2, "maturity_threshold": 1},
    "redo": {"tau": 0.5, "every": 2},
    "shrink_perturb": {"every": 2, "shrink": 0.9, "perturb": 0.1},
    "weight_clipping": {"kappa": 0.3},
    "l2_init": {"strength": 0.1},
    "reset": {"last_layers": 1, "every": 3},
    "parseval": {"strength": 0.01},
    "weight_projection": {"every": 2},
}


def test_every_method_is_registered_and_follows_the_contract() -> None:
    assert set(METHODS) == set(ACTIVE)
    assert METHODS["cbp"] is ContinualBackprop


@pytest.mark.parametrize("name", sorted(ACTIVE))
def test_a_state_round_trip_continues_identically_and_remove_detaches(name: str) -> None:
    net = mlp(5, 12, 12, 2)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    method = METHODS[name](linears(net), optimizer, generator=torch.Generator().manual_seed(3),
                           **ACTIVE[name])
    x, y = torch.randn(16, 5), torch.randn(16, 2)
    for _ in range(5):
        train_step(net, optimizer, x, y)
    twin = copy.deepcopy(net)
    twin_optimizer = torch.optim.Adam(twin.parameters(), lr=1e-2)
    twin_optimizer.load_state_dict(copy.deepcopy(optimizer.state_dict()))  # else they share moments
    twin_method = METHODS[name](linears(twin), twin_optimizer, generator=torch.Generator().manual_seed(99),
                                **ACTIVE[name])
    twin_method.load_state_dict(copy.deepcopy(method.state_dict()))
    for _ in range(5):
        train_step(net, optimizer, x, y)
        train_step(twin, twin_optimizer, x, y)
    for a, b in zip(net.parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b)
    assert method.statistics() == twin_method.statistics()
    assert all(isinstance(v, float) for v in method.statistics().values()) and method.statistics()

    method.remove()
    plain = copy.deepcopy(net)
    plain_optimizer = torch.optim.Adam(plain.parameters(), lr=1e-2)
    plain_optimizer.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    for _ in range(3):
        train_step(net, optimizer, x, y)
        train_step(plain, plain_optimizer, x, y)
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), plain.parameters(), strict=True))


SWITCHES = {"cbp": "bias_correction", "redo": "restart_bias_correction", "weight_clipping": "skip_last",
            "parseval": "include_last"}


@pytest.mark.parametrize("name", sorted(SWITCHES))
def test_a_switch_given_as_a_string_is_refused_not_read_as_on(name: str) -> None:
    net = mlp(3, 4, 4, 1)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=f"{SWITCHES[name]} must be True or False, got 'false'"):
        METHODS[name](linears(net), optimizer, **{SWITCHES[name]: "false"})
    assert getattr(METHODS[name](linears(net), optimizer, **{SWITCHES[name]: False}).options,
                   SWITCHES[name]) is False


@pytest.mark.parametrize("name", sorted(ACTIVE))
def test_options_are_checked_by_name_and_value(name: str) -> None:
    net = mlp(3, 4, 1)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(TypeError, match="unknown option"):
        METHODS[name](linears(net), optimizer, not_an_option=1)
    first_option = next(iter(ACTIVE[name]))
    with pytest.raises(ValueError, match=first_option):
        METHODS[name](linears(net), optimizer, **{first_option: -5})
    other = next(n for n in sorted(ACTIVE) if n != name and n != "cbp")
    if name != "cbp":
        with pytest.raises(ValueError, match="load it into the method that saved it"):
            METHODS[name](linears(net), optimizer).load_state_dict(
                METHODS[other](linears(mlp(3, 4, 1)), torch.optim.SGD(mlp(3, 4, 1).parameters(), 0.1))
                .state_dict())


def test_weight_methods_take_layers_that_do_not_chain_and_unit_methods_refuse_them() -> None:
    net = nn.Sequential(nn.Linear(4, 8), nn.Linear(16, 8), nn.Linear(16, 2))  # the shapes of a CReLU MLP
    layers = linears(net)
    optimizer = torch.optim.Adam(net.parameters())
    for method in METHODS.values():
        if method.acts_on_units:
            with pytest.raises(ValueError, match="layers do not chain"):
                method(layers, optimizer)
        else:
            method(layers, optimizer).remove()
    assert {name for name, method in METHODS.items() if method.acts_on_units} == {"cbp", "redo"}
