"""ContinualBackprop attached by hooks: what feeds it, what detaches it, persistence and argument checks."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import linears, mlp, train_step
from torch import nn

from rl_plasticity import ContinualBackprop
from rl_plasticity.cbp import MAX_PENDING_BATCHES


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
