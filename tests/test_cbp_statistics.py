"""CBP's running statistics, recorded per step and folded every few steps (`rl_plasticity.cbp_statistics`)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from rl_plasticity.cbp import ContinualBackprop
from rl_plasticity.cbp_statistics import PENDING_STEPS

DECAY = 0.9


def network() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 12), nn.ReLU(), nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, 3))


def batches(count: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    # sizes vary, as a last minibatch or an accumulated batch would
    return [torch.randn(5 + step % 7, 4, generator=generator) for step in range(count)]


@pytest.mark.parametrize("utility", ["contribution", "adaptable_contribution"])
def test_folded_statistics_equal_the_step_by_step_recurrence(utility: str) -> None:
    net = network()
    cbp = ContinualBackprop.from_sequential(net, replacement_rate=0.0, decay_rate=DECAY, utility=utility)
    linears = [m for m in net if isinstance(m, nn.Linear)]
    steps = 2 * PENDING_STEPS + 7  # two full folds and a partial buffer
    utility_by_hand = [torch.zeros(12, dtype=torch.float64), torch.zeros(10, dtype=torch.float64)]
    mean_by_hand = [torch.zeros(12, dtype=torch.float64), torch.zeros(10, dtype=torch.float64)]
    for step, x in enumerate(batches(steps), start=1):
        with torch.no_grad():
            h0 = torch.relu(linears[0](x))
            features = [h0, torch.relu(linears[1](h0))]
        for k, h in enumerate(features):
            h = h.double()
            mean_by_hand[k] = DECAY * mean_by_hand[k] + (1 - DECAY) * h.mean(0)
            outgoing = linears[k + 1].weight.detach().double().abs().mean(0)
            if utility == "contribution":
                magnitude = h.abs().mean(0)
            else:  # centred on the bias-corrected running mean of this step, over |W_in|
                centre = mean_by_hand[k] / (1 - DECAY ** step)
                magnitude = (h - centre).abs().mean(0) / linears[k].weight.detach().double().abs().mean(1)
            utility_by_hand[k] = DECAY * utility_by_hand[k] + (1 - DECAY) * magnitude * outgoing
        net(x)
        cbp.step()
        with torch.no_grad():  # the weights move between steps, as training moves them
            for layer in linears:
                layer.weight.mul_(0.97).add_(0.01)
    corrections = 1 - DECAY ** steps
    for k in range(2):
        torch.testing.assert_close(cbp.utilities()[k].double(), utility_by_hand[k] / corrections,
                                   rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(cbp._statistics.current(k, "mean_activation").double(), mean_by_hand[k],
                                   rtol=1e-5, atol=1e-7)


def run(net: nn.Sequential, cbp: ContinualBackprop, xs: list[torch.Tensor], read_every_step: bool) -> None:
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05)
    for x in xs:
        optimizer.zero_grad()
        net(x).square().mean().backward()
        optimizer.step()
        cbp.step()
        if read_every_step:
            cbp.utilities()  # what logging does
            cbp.state_dict()


def test_reading_the_statistics_never_changes_a_run() -> None:
    results = []
    for read in (False, True):
        net = network()
        cbp = ContinualBackprop.from_sequential(net, replacement_rate=0.2, maturity_threshold=3,
                                                generator=torch.Generator().manual_seed(2))
        run(net, cbp, batches(3 * PENDING_STEPS), read)
        results.append((net.state_dict(), cbp.utilities(), cbp.replaced_total))
    (plain_net, plain_utility, plain_count), (read_net, read_utility, read_count) = results
    assert plain_count == read_count and sum(plain_count) > 10
    for key, value in plain_net.items():
        assert torch.equal(value, read_net[key]), key
    for plain, read in zip(plain_utility, read_utility, strict=True):
        assert torch.equal(plain, read)


def test_a_checkpoint_between_folds_resumes_bit_identically() -> None:
    xs = batches(2 * PENDING_STEPS + 9)
    split = PENDING_STEPS + 13  # 13 steps recorded but not folded
    net = network()
    cbp = ContinualBackprop.from_sequential(net, replacement_rate=0.0, maturity_threshold=3,
                                            generator=torch.Generator().manual_seed(2))
    run(net, cbp, xs, read_every_step=False)

    first = network()
    first_cbp = ContinualBackprop.from_sequential(first, replacement_rate=0.0, maturity_threshold=3,
                                                  generator=torch.Generator().manual_seed(2))
    run(first, first_cbp, xs[:split], read_every_step=False)
    saved_net, saved_cbp = copy.deepcopy(first.state_dict()), copy.deepcopy(first_cbp.state_dict())
    assert len(saved_cbp["pending_statistics"]["batches"]) == 13
    resumed = network()
    resumed.load_state_dict(saved_net)
    resumed_cbp = ContinualBackprop.from_sequential(resumed, replacement_rate=0.0, maturity_threshold=3)
    resumed_cbp.load_state_dict(saved_cbp)
    run(resumed, resumed_cbp, xs[split:], read_every_step=False)
    for a, b in zip(cbp._statistics.utility + cbp._statistics.mean_activation,
                    resumed_cbp._statistics.utility + resumed_cbp._statistics.mean_activation, strict=True):
        assert torch.equal(a, b)
    for a, b in zip(cbp.utilities(), resumed_cbp.utilities(), strict=True):
        assert torch.equal(a, b)


def test_a_checkpoint_from_before_the_deferral_loads_with_nothing_pending() -> None:
    net = network()
    cbp = ContinualBackprop.from_sequential(net, replacement_rate=0.0)
    run(net, cbp, batches(5), read_every_step=False)
    state = cbp.state_dict()
    del state["pending_statistics"]
    restored = ContinualBackprop.from_sequential(network(), replacement_rate=0.0)
    restored.load_state_dict(state)
    for a, b in zip(restored.utilities(), cbp._statistics.utility, strict=True):
        torch.testing.assert_close(a * (1 - 0.99 ** 5), b)  # the folded part only


def test_changing_the_decay_folds_the_steps_recorded_under_the_old_one() -> None:
    net = network()
    cbp = ContinualBackprop.from_sequential(net, replacement_rate=0.0, decay_rate=0.5)
    run(net, cbp, batches(3), read_every_step=False)
    before = cbp._statistics.current(0, "utility")
    cbp.decay_rate = 0.9
    assert cbp._statistics.decay_rate == 0.9
    assert torch.equal(cbp._statistics.utility[0], before)


def test_nonnegative_inputs_reads_the_structure() -> None:
    from rl_plasticity.hooks import nonnegative_inputs

    relu = network()
    assert nonnegative_inputs(relu)
    normed = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.ReLU(), nn.Linear(8, 3))
    assert nonnegative_inputs(normed)  # the norm comes before the activation
    assert not nonnegative_inputs(nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)))
    assert not nonnegative_inputs(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.LayerNorm(8), nn.Linear(8, 3)))
    assert not nonnegative_inputs(nn.Sequential(nn.Linear(4, 8), nn.ReLU()))  # no consumer
    hooked = network()
    hooked[1].register_forward_hook(lambda module, inputs, output: -output)
    assert not nonnegative_inputs(hooked)
    handle = nn.modules.module.register_module_forward_hook(lambda module, inputs, output: None)
    try:
        assert not nonnegative_inputs(relu)  # a global hook could change any activation's output
    finally:
        handle.remove()
    assert ContinualBackprop.from_sequential(relu).nonnegative_features
    assert not ContinualBackprop(list(relu.children())[::2]).nonnegative_features  # layers alone: unknown


@pytest.mark.parametrize("bias_correction", [True, False])
def test_the_nonnegative_shortcut_changes_nothing_on_a_relu_network(bias_correction: bool) -> None:
    runs = []
    for shortcut in (False, True):
        net = network()
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
        cbp = ContinualBackprop.from_sequential(
            net, optimizer, nonnegative_features=shortcut, replacement_rate=0.05, maturity_threshold=5,
            decay_rate=DECAY, bias_correction=bias_correction, generator=torch.Generator().manual_seed(3))
        replaced = []
        for x in batches(3 * PENDING_STEPS):
            optimizer.zero_grad()
            net(x).square().mean().backward()
            optimizer.step()
            replaced.append([units.tolist() for units in cbp.last_replaced])
        runs.append((replaced, cbp.utilities(), cbp.state_dict(), copy.deepcopy(net.state_dict())))
    (replaced_a, utility_a, state_a, net_a), (replaced_b, utility_b, state_b, net_b) = runs
    assert sum(len(units) for step in replaced_a for units in step) > 10
    assert replaced_a == replaced_b
    for a, b in zip(utility_a + state_a["mean_activation"], utility_b + state_b["mean_activation"],
                    strict=True):
        assert torch.equal(a, b)
    for name in net_a:
        assert torch.equal(net_a[name], net_b[name]), name


def test_a_tanh_network_keeps_the_magnitude_of_its_features() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 12), nn.Tanh(), nn.Linear(12, 3))
    cbp = ContinualBackprop.from_sequential(net, replacement_rate=0.0, decay_rate=DECAY, bias_correction=True)
    assert not cbp.nonnegative_features
    x = batches(1)[0]
    net(x)
    cbp.step()
    with torch.no_grad():
        h = torch.tanh(net[0](x))
        expected = (1 - DECAY) * h.abs().mean(0) * net[2].weight.abs().mean(0) / (1 - DECAY)
    torch.testing.assert_close(cbp.utilities()[0], expected)
    assert not torch.allclose(cbp.utilities()[0], expected * h.mean(0) / h.abs().mean(0))
