"""ContinualBackprop: replacement mechanics, selection, counting, optimizer state, hooks, persistence."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from rl_plasticity import ContinualBackprop
from rl_plasticity.cbp import MAX_PENDING_BATCHES


def mlp(*sizes: int, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    modules: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:], strict=False)):
        modules.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            modules.append(nn.ReLU())
    return nn.Sequential(*modules)


def linears(net: nn.Module) -> list[nn.Linear]:
    return [m for m in net.modules() if isinstance(m, nn.Linear)]


def train_step(net: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    loss = (net(x) - y).pow(2).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


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


def test_no_grad_forwards_leave_utilities_unchanged() -> None:
    x = torch.randn(16, 4)
    results = []
    for noisy in (False, True):
        net = mlp(4, 8, 8, 2)
        cbp = ContinualBackprop(linears(net), replacement_rate=0)
        for _ in range(5):
            net(x)
            if noisy:
                with torch.no_grad():
                    net(torch.randn(64, 4) * 10)
                with torch.inference_mode():
                    net(torch.randn(64, 4) * 10)
            cbp.step()
        results.append(cbp.utilities())
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b)


def test_optimizer_hook_steps_cbp_and_remove_detaches_everything() -> None:
    net = mlp(4, 8, 2)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    cbp = ContinualBackprop.from_sequential(net, optimizer)
    x, y = torch.randn(8, 4), torch.randn(8, 2)
    for _ in range(3):
        train_step(net, optimizer, x, y)
    assert cbp.steps == 3 and cbp.ages()[0].tolist() == [3] * 8
    cbp.remove()
    train_step(net, optimizer, x, y)
    assert cbp.steps == 3
    assert not cbp._features[0]  # forward hooks are gone too


def test_step_without_a_training_forward_warns_and_does_nothing() -> None:
    net = mlp(4, 8, 2)
    cbp = ContinualBackprop(linears(net))
    with pytest.warns(UserWarning, match="no grad-enabled forward"):
        cbp.step()
    assert cbp.steps == 0


def test_state_dict_round_trip_continues_identically() -> None:
    x_all, y_all = torch.randn(200, 16, 5), torch.randn(200, 16, 2)
    net_a = mlp(5, 24, 24, 2)
    opt_a = torch.optim.Adam(net_a.parameters(), lr=1e-2)
    kwargs = dict(replacement_rate=0.02, maturity_threshold=10, reset_optimizer_state=True)
    cbp_a = ContinualBackprop(linears(net_a), opt_a, generator=torch.Generator().manual_seed(5), **kwargs)
    for i in range(50):
        train_step(net_a, opt_a, x_all[i], y_all[i])

    net_b = copy.deepcopy(net_a)
    opt_b = torch.optim.Adam(net_b.parameters(), lr=1e-2)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))  # load shares tensors otherwise
    cbp_b = ContinualBackprop(linears(net_b), opt_b, generator=torch.Generator().manual_seed(99), **kwargs)
    cbp_b.load_state_dict(copy.deepcopy(cbp_a.state_dict()))

    for i in range(50, 200):
        train_step(net_a, opt_a, x_all[i], y_all[i])
        train_step(net_b, opt_b, x_all[i], y_all[i])
        for a, b in zip(cbp_a.last_replaced, cbp_b.last_replaced, strict=True):
            assert torch.equal(a, b)
    assert cbp_a.replaced_total == cbp_b.replaced_total and sum(cbp_a.replaced_total) > 10
    for pa, pb in zip(net_a.parameters(), net_b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_a_deepcopied_network_does_not_feed_the_original() -> None:
    net = mlp(4, 8, 2)
    cbp = ContinualBackprop(linears(net), replacement_rate=0)
    target = copy.deepcopy(net)  # e.g. a target network: the hooks are copied along with the modules
    target(torch.randn(5, 4))
    assert not cbp._features[0]
    net(torch.randn(5, 4))
    assert len(cbp._features[0]) == 1


def test_discarded_features_do_not_count_in_the_next_step() -> None:
    """An update skipped after its forward (early stop on the KL target) must not score the units."""
    x, y = torch.randn(16, 4), torch.randn(16, 2)
    utilities = []
    for skipped_forward in (False, True):
        net = mlp(4, 8, 2)
        optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
        cbp = ContinualBackprop(linears(net), optimizer, replacement_rate=0, decay_rate=0.5)
        if skipped_forward:
            net(100.0 * torch.randn(16, 4))  # a forward whose optimizer step never happens
            cbp.discard_features()
        train_step(net, optimizer, x, y)
        utilities.append(cbp.utilities()[0])
    assert torch.equal(utilities[0], utilities[1])


def test_forwards_without_a_step_do_not_pile_up() -> None:
    net = mlp(4, 8, 2)
    cbp = ContinualBackprop(linears(net), replacement_rate=0)
    for _ in range(1000):
        net(torch.randn(3, 4))
    assert len(cbp._features[0]) == MAX_PENDING_BATCHES


def test_load_state_dict_rejects_other_network() -> None:
    cbp = ContinualBackprop(linears(mlp(4, 8, 2)))
    other = ContinualBackprop(linears(mlp(4, 9, 2)))
    with pytest.raises(ValueError, match="hidden sizes"):
        other.load_state_dict(cbp.state_dict())


def test_from_sequential_finds_linears_in_order_including_a_separate_head() -> None:
    body = nn.Sequential(nn.Linear(3, 7), nn.Tanh(), nn.Linear(7, 5), nn.Tanh())
    head = nn.Linear(5, 2)
    cbp = ContinualBackprop([body[0], body[2], head])
    assert [int(a.numel()) for a in cbp.ages()] == [7, 5]
    wrapped = ContinualBackprop.from_sequential(nn.Sequential(body, head))
    assert wrapped.layers == [body[0], body[2], head]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(replacement_rate=1.5), "replacement_rate"),
        (dict(replacement_rate=-0.1), "replacement_rate"),
        (dict(maturity_threshold=-1), "maturity_threshold"),
        (dict(maturity_threshold=2.5), "maturity_threshold"),
        (dict(decay_rate=1.0), "decay_rate"),
        (dict(utility="gradient"), "utility must be one of contribution"),
        (dict(init="orthogonal"), "init must be one of lecun"),
        (dict(reset_optimizer_state=True), "optimizer"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ContinualBackprop(linears(mlp(4, 8, 2)), **kwargs)


def test_layers_that_do_not_chain_are_refused() -> None:
    with pytest.raises(ValueError, match="do not chain"):
        ContinualBackprop([nn.Linear(4, 8), nn.Linear(9, 2)])
    with pytest.raises(ValueError, match="at least 2"):
        ContinualBackprop([nn.Linear(4, 8)])
    with pytest.raises(ValueError, match="nn.Linear"):
        ContinualBackprop([nn.Linear(4, 8), nn.ReLU()])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="bias_correction"):
        ContinualBackprop([nn.Linear(4, 8), nn.Linear(8, 2, bias=False)])
