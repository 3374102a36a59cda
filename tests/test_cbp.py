"""ContinualBackprop: replacement mechanics, selection, counting and optimizer state."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import linears, mlp, train_step
from torch import nn

from rl_plasticity import ContinualBackprop


def test_replaced_unit_is_reinitialised_exactly() -> None:
    net = mlp(5, 16, 12, 3)
    layers = linears(net)
    cbp = ContinualBackprop(layers, replacement_rate=1 / 16, maturity_threshold=0, accumulate=True,
                            bias_correction=False, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        layers[0].bias.fill_(0.5)
    before_in = layers[0].weight.detach().clone()
    net(torch.randn(32, 5))
    cbp.step()

    (unit,) = cbp.last_replaced[0].tolist()
    bound = math.sqrt(3 / 5)  # LeCun uniform on fan_in 5
    row = layers[0].weight[unit]
    assert torch.all(row.abs() <= bound)
    assert not torch.equal(row, before_in[unit])
    assert layers[0].bias[unit] == 0
    assert torch.all(layers[1].weight[:, unit] == 0)
    assert cbp.ages()[0][unit] == 0
    assert cbp.utilities()[0][unit] == 0
    others = [i for i in range(16) if i != unit]
    assert torch.equal(layers[0].weight[others], before_in[others])
    assert torch.all(layers[0].bias[others] == 0.5)
    assert cbp.replaced_total == [1, 0]  # 12 * 1/16 < 1 for the second layer: nothing yet


# ReLU nets: kaiming's gain sqrt(2) gives sqrt(6 / fan_in); xavier carries the same gain (torch.nn.init
# with calculate_gain("relu")).
@pytest.mark.parametrize("init, bound", [("kaiming", math.sqrt(6 / 40)), ("xavier", math.sqrt(2 * 6 / 60)),
                                         ("pytorch_default", 1 / math.sqrt(40))])
def test_named_inits_respect_their_bounds(init: str, bound: float) -> None:
    net = mlp(40, 20, 2)
    cbp = ContinualBackprop(linears(net), replacement_rate=1.0, maturity_threshold=0, init=init,
                            bias_correction=False)
    net(torch.randn(8, 40))
    cbp.step()
    weights = net[0].weight
    assert cbp.replaced_total == [20]
    assert weights.abs().max() <= bound
    assert weights.abs().max() > 0.8 * bound  # drawn over the whole range, not a narrower one


def test_callable_init_fills_the_rows() -> None:
    net = mlp(4, 8, 2)
    calls = []

    def constant(rows: torch.Tensor, fan_in: int) -> None:
        calls.append((tuple(rows.shape), fan_in))
        rows.fill_(0.25)

    cbp = ContinualBackprop(linears(net), replacement_rate=2 / 8, maturity_threshold=0, init=constant,
                            accumulate=True)
    net(torch.randn(8, 4))
    cbp.step()
    assert calls == [((2, 4), 4)]
    assert torch.all(net[0].weight[cbp.last_replaced[0]] == 0.25)


def _mean_head_input_contribution(net: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net(x).mean(0)


@pytest.mark.parametrize("bias_correction", [True, False])
def test_bias_correction_keeps_next_layer_batch_mean(bias_correction: bool) -> None:
    net = mlp(6, 10, 4)
    x = torch.randn(64, 6)
    cbp = ContinualBackprop(linears(net), replacement_rate=0.1, maturity_threshold=0, decay_rate=0.0,
                            accumulate=True, bias_correction=bias_correction)
    before = _mean_head_input_contribution(net, x)
    with torch.no_grad():
        hidden_mean = torch.relu(net[0](x)).mean(0)
    w_out = net[2].weight.detach().clone()
    net(x)  # the training forward whose features the utilities are computed on
    cbp.step()
    (unit,) = cbp.last_replaced[0].tolist()
    after = _mean_head_input_contribution(net, x)
    if bias_correction:
        torch.testing.assert_close(after, before, atol=1e-6, rtol=0)
    else:
        torch.testing.assert_close(before - after, w_out[:, unit] * hidden_mean[unit], atol=1e-6, rtol=0)
        assert (before - after).abs().max() > 1e-3  # the removed contribution was not negligible


def test_bias_correction_keeps_deeper_layer_mean_pre_activation() -> None:
    net = mlp(6, 32, 8, 2)
    x = torch.randn(64, 6)
    cbp = ContinualBackprop(linears(net), replacement_rate=0.1, maturity_threshold=0, decay_rate=0.0,
                            accumulate=True)

    def second_layer_pre_activation() -> torch.Tensor:
        with torch.no_grad():
            return net[2](torch.relu(net[0](x))).mean(0)

    before = second_layer_pre_activation()
    net(x)
    cbp.step()
    assert cbp.replaced_total == [3, 0]
    torch.testing.assert_close(second_layer_pre_activation(), before, atol=1e-5, rtol=0)


def test_bias_correction_through_an_optimizer_step_stays_close() -> None:
    net = mlp(6, 32, 2)
    x, y = torch.randn(128, 6), torch.randn(128, 2)
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-4)
    cbp = ContinualBackprop(linears(net), optimizer, replacement_rate=0.1, maturity_threshold=0,
                            decay_rate=0.0, accumulate=True)
    before = _mean_head_input_contribution(net, x)
    train_step(net, optimizer, x, y)
    assert cbp.replaced_total == [3]
    torch.testing.assert_close(_mean_head_input_contribution(net, x), before, atol=1e-3, rtol=0)


def test_nothing_replaced_before_maturity_then_exact_accumulated_count() -> None:
    net = mlp(3, 50, 2)
    rate, maturity = 0.013, 20
    cbp = ContinualBackprop(linears(net), replacement_rate=rate, maturity_threshold=maturity,
                            accumulate=True)
    x = torch.randn(16, 3)
    carry, expected_total = 0.0, 0
    for step in range(1, 400):
        eligible = int((cbp.ages()[0] + 1 > maturity).sum())
        carry += rate * eligible
        expected = math.floor(carry + 1e-12)
        carry -= expected
        expected_total += expected
        net(x)
        cbp.step()
        assert cbp.last_replaced[0].numel() == expected, f"step {step}"
        if step <= maturity:
            assert cbp.replaced_total == [0]
    assert cbp.replaced_total == [expected_total]
    assert expected_total > 200 * rate * 50 * 0.5  # replacements really happened in numbers


def test_bernoulli_count_matches_rate_statistically() -> None:
    net = mlp(3, 256, 2)
    rate, steps = 1e-3, 4000
    cbp = ContinualBackprop(linears(net), replacement_rate=rate, maturity_threshold=0,
                            generator=torch.Generator().manual_seed(3))
    x = torch.randn(4, 3)
    for _ in range(steps):
        net(x)
        cbp.step()
    # maturity 0: every unit is eligible at every step (age >= 1 when counted)
    mean = steps * rate * 256
    std = math.sqrt(steps * rate * 256 * (1 - rate * 256))
    assert abs(cbp.replaced_total[0] - mean) < 5 * std


def test_lowest_utility_unit_goes_first_and_random_ignores_utility() -> None:
    def net_with_dead_unit() -> nn.Sequential:
        net = mlp(4, 12, 3)
        with torch.no_grad():
            net[0].weight[7] = 0
            net[0].bias[7] = -1.0  # ReLU(-1) = 0 on every input: zero contribution
            net[0].bias[:7] = 0.1
        return net

    x = torch.randn(32, 4)
    net = net_with_dead_unit()
    cbp = ContinualBackprop(linears(net), replacement_rate=1 / 12, maturity_threshold=3, accumulate=True)
    for _ in range(4):
        net(x)
        cbp.step()
    assert cbp.last_replaced[0].tolist() == [7]

    picked = set()
    for seed in range(30):
        net = net_with_dead_unit()
        cbp = ContinualBackprop(linears(net), replacement_rate=1 / 12, maturity_threshold=0, accumulate=True,
                                utility="random", generator=torch.Generator().manual_seed(seed))
        net(x)
        cbp.step()
        picked.update(cbp.last_replaced[0].tolist())
    assert len(picked) > 5


def test_young_units_are_never_replaced() -> None:
    net = mlp(4, 10, 2)
    cbp = ContinualBackprop(linears(net), replacement_rate=0.5, maturity_threshold=5, accumulate=True)
    x = torch.randn(8, 4)
    for _ in range(60):
        ages_before = cbp.ages()[0] + 1
        net(x)
        cbp.step()
        assert torch.all(ages_before[cbp.last_replaced[0]] > 5)


def test_adaptable_contribution_divides_by_incoming_magnitude() -> None:
    net = mlp(4, 6, 2)
    x = torch.randn(20, 4)
    adaptable = ContinualBackprop(linears(net), replacement_rate=0, decay_rate=0.0,
                                  utility="adaptable_contribution")
    net(x)
    adaptable.step()
    with torch.no_grad():
        h = torch.relu(net[0](x))  # decay 0: the running mean is this batch's mean
        incoming = net[0].weight.abs().mean(1)
        outgoing = linears(net)[1].weight.abs().mean(0)
    expected = (h - h.mean(0)).abs().mean(0) * outgoing / incoming  # centred, as the reference's gnt.py
    torch.testing.assert_close(adaptable.utilities()[0], expected)


def test_contribution_utility_by_hand() -> None:
    net = mlp(3, 4, 2)
    x = torch.randn(10, 3)
    cbp = ContinualBackprop(linears(net), replacement_rate=0, decay_rate=0.5)
    with torch.no_grad():
        h = torch.relu(net[0](x))
    instant = h.abs().mean(0) * net[2].weight.detach().abs().mean(0)
    for _ in range(2):
        net(x)
        cbp.step()
    # u1 = 0.5*inst, u2 = 0.75*inst; bias-corrected by 1 - 0.5**2 = 0.75
    torch.testing.assert_close(cbp.utilities()[0], instant)


def test_reset_optimizer_state_zeroes_exactly_the_replaced_entries() -> None:
    net = mlp(5, 16, 8, 2)
    layers = linears(net)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    x, y = torch.randn(32, 5), torch.randn(32, 2)
    for _ in range(3):
        train_step(net, optimizer, x, y)
    snapshots: list[dict[nn.Parameter, dict[str, torch.Tensor]]] = []

    def snapshot(opt: torch.optim.Optimizer, *_: object) -> None:
        snapshots.append({p: {k: v.clone() for k, v in s.items()} for p, s in opt.state.items()})

    optimizer.register_step_post_hook(snapshot)  # runs before CBP's hook: the state CBP starts from
    cbp = ContinualBackprop(layers, optimizer, replacement_rate=2 / 16, maturity_threshold=0,
                            accumulate=True, reset_optimizer_state=True)
    train_step(net, optimizer, x, y)
    first, second = cbp.last_replaced[0], cbp.last_replaced[1]
    assert first.numel() == 2 and second.numel() == 1
    expected = snapshots[-1]
    zeroed = 0
    for param, state in optimizer.state.items():
        for key in ("exp_avg", "exp_avg_sq"):
            want = expected[param][key].clone()
            if param is layers[0].weight or param is layers[0].bias:
                want[first] = 0
            elif param is layers[1].weight:
                want[:, first] = 0
                want[second] = 0
            elif param is layers[1].bias:
                want[second] = 0
            elif param is layers[2].weight:
                want[:, second] = 0
            assert torch.equal(state[key], want), (key, tuple(param.shape))
            zeroed += int((expected[param][key] != want).sum())
        assert torch.equal(state["step"], expected[param]["step"])
    assert zeroed > 20  # the reset really removed non-zero moments


def test_optimizer_state_untouched_by_default() -> None:
    net = mlp(5, 16, 2)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    x, y = torch.randn(32, 5), torch.randn(32, 2)
    train_step(net, optimizer, x, y)
    snapshots = []
    optimizer.register_step_post_hook(
        lambda opt, *_: snapshots.append({p: s["exp_avg"].clone() for p, s in opt.state.items()}))
    cbp = ContinualBackprop(linears(net), optimizer, replacement_rate=0.25, maturity_threshold=0,
                            accumulate=True)
    train_step(net, optimizer, x, y)
    assert cbp.replaced_total == [4]
    for param, state in optimizer.state.items():
        assert torch.equal(state["exp_avg"], snapshots[-1][param])
