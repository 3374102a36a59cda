"""`MomentResets`: after the moments of some entries are zeroed, those entries move as a freshly built Adam
would move them, whatever the parameter's own step count, until both bias corrections agree."""

from __future__ import annotations

from copy import deepcopy

import pytest
import torch
from torch import nn

from rl_plasticity.cbp_moments import MomentResets


def fresh_adam_copy(values: torch.Tensor, betas: tuple[float, float], lr: float,
                    fused: bool) -> tuple[nn.Parameter, torch.optim.Adam]:
    copy = nn.Parameter(values.detach().clone())
    return copy, torch.optim.Adam([copy], lr=lr, betas=betas, fused=fused)


def two_layers(betas: tuple[tuple[float, float], tuple[float, float]], fused: bool = False,
               ) -> tuple[list[nn.Linear], torch.optim.Adam]:
    torch.manual_seed(0)
    layers = [nn.Linear(5, 4), nn.Linear(4, 3)]
    groups = [{"params": list(layers[0].parameters()), "betas": betas[0], "lr": 1e-2},
              {"params": list(layers[1].parameters()), "betas": betas[1], "lr": 3e-3}]
    return layers, torch.optim.Adam(groups, fused=fused)


@pytest.mark.parametrize("fused", [False, True])
def test_reset_entries_follow_a_fresh_adam_in_every_group(fused: bool) -> None:
    layers, optimizer = two_layers(((0.9, 0.999), (0.99, 0.99)), fused)
    resets = MomentResets()
    shadows: list[tuple[torch.Tensor, tuple, nn.Parameter, torch.optim.Adam]] = []
    gradients = torch.Generator().manual_seed(1)

    def step() -> None:
        for layer in layers:
            for param in layer.parameters():
                param.grad = torch.randn(param.shape, generator=gradients)
        for weight, where, copy, fresh in shadows:
            copy.grad = weight.grad[where].clone()
            fresh.step()
        optimizer.step()
        resets.correct(optimizer)

    # row 0 is never reset: it follows an Adam that has seen all its updates
    shadows.append((layers[0].weight, (0, slice(None)),
                    *fresh_adam_copy(layers[0].weight[0], (0.9, 0.999), 1e-2, fused)))
    for _ in range(50):
        step()
    # unit 1 of the first layer (its row, its bias, the next layer's column) at step 50
    resets.zero_units(optimizer, layers[0], layers[1], torch.tensor([1]))
    shadows.append((layers[0].weight, (1, slice(None)),
                    *fresh_adam_copy(layers[0].weight[1], (0.9, 0.999), 1e-2, fused)))
    shadows.append((layers[1].weight, (slice(None), 1),
                    *fresh_adam_copy(layers[1].weight[:, 1], (0.99, 0.99), 3e-3, fused)))
    for _ in range(30):
        step()
        for weight, where, copy, _ in shadows:
            torch.testing.assert_close(weight[where], copy, rtol=1e-5, atol=1e-7)


def test_entries_are_forgotten_once_both_corrections_agree() -> None:
    layers, optimizer = two_layers(((0.9, 0.95), (0.5, 0.9)))
    resets = MomentResets()

    def steps(count: int) -> None:
        for _ in range(count):
            for layer in layers:
                for param in layer.parameters():
                    param.grad = torch.ones_like(param)
            optimizer.step()
            resets.correct(optimizer)

    steps(3)
    resets.zero_units(optimizer, layers[0], layers[1], torch.tensor([0, 2]))
    steps(10)
    resets.zero_units(optimizer, layers[0], layers[1], torch.tensor([3]))
    # -ln(2^-24) / (1 - beta): 166.4 steps for the second group (0.9), 332.7 for the first (0.95)

    def reset_entries() -> list[int]:
        return [int((resets.entries[p] >= 0).sum()) if p in resets.entries else 0
                for p in (layers[0].weight, layers[0].bias, layers[1].weight)]

    steps(150)  # step 163
    assert reset_entries() == [3 * 5, 3, 3 * 3]
    steps(10)  # step 173: units 0 and 2 (reset at step 3) are past the second group's horizon
    assert reset_entries() == [3 * 5, 3, 3]
    steps(10)  # step 183: so is unit 3 (reset at step 13)
    assert reset_entries() == [3 * 5, 3, 0] and layers[1].weight not in resets.entries
    steps(150)  # step 333
    assert reset_entries() == [3 * 5, 3, 0]
    steps(20)  # step 353
    assert not resets


@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.99, 0.99), (0.5, 0.9)])
def test_past_the_horizon_a_fresh_adams_corrections_are_one_in_float32(betas: tuple[float, float]) -> None:
    from rl_plasticity.cbp_moments import _horizon

    horizon = _horizon(betas, torch.float32)
    first, second = MomentResets()._corrections(betas, horizon, torch.zeros(1))
    assert first[-1].item() == second[-1].item() == 1.0
    assert first[int(horizon / 2)].item() > 1.0 or second[int(horizon / 2)].item() > 1.0


def test_the_correction_follows_an_optimizer_whose_state_was_reloaded() -> None:
    """`correct` caches views of Adam's moments between resets; ``optimizer.load_state_dict`` replaces
    those tensors, and the correction must read the new ones."""
    results = []
    for reload in (False, True):
        layers, optimizer = two_layers(((0.9, 0.999), (0.9, 0.999)))
        resets = MomentResets()
        generator = torch.Generator().manual_seed(4)
        for step in range(40):
            for layer in layers:
                for param in layer.parameters():
                    param.grad = torch.randn(param.shape, generator=generator)
            optimizer.step()
            resets.correct(optimizer)
            if step == 10:
                resets.zero_units(optimizer, layers[0], layers[1], torch.tensor([1, 3]))
            if reload and step == 20:
                optimizer.load_state_dict(deepcopy(optimizer.state_dict()))  # new tensors
        results.append([p.detach().clone() for layer in layers for p in layer.parameters()])
    for plain, reloaded in zip(*results, strict=True):
        assert torch.equal(plain, reloaded)


@pytest.mark.parametrize(("reset_at", "skip_at", "moved_at"),
                         [((10, 25), None, None), ((4, 8, 12, 16, 20, 24), None, None), ((10, 25), 30, None),
                          ((10, 25), None, 30)],
                         ids=["two resets", "six resets", "a parameter a step behind",
                              "a parameter given other memory"])
def test_over_flat_buffers_the_correction_is_the_per_parameter_one_bit_for_bit(
        reset_at: tuple[int, ...], skip_at: int | None, moved_at: int | None) -> None:
    # With the parameters and moments views of flat buffers (as our PPO keeps them), the reset entries
    # are gathered and updated in one call each, and entries reset at one step (up to four such groups)
    # are corrected with their two numbers: the same arithmetic as one call per parameter. Resets at many
    # steps (CBP's way) and parameters at different step counts take the per-entry way.
    from agents.network_optimizers import NetworkOptimizers

    results, plans = [], []
    for flat in (False, True):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
        layers = [net[0], net[2], net[4]]
        optimizers = NetworkOptimizers({"net": net.parameters()}, flat=flat, lr=1e-2, betas=(0.9, 0.99),
                                       fused=True)
        optimizer = optimizers.by_network["net"]
        resets = MomentResets()
        gradients = torch.Generator().manual_seed(1)
        for step in range(40):
            for param in net.parameters():
                param.grad = torch.randn(param.shape, generator=gradients)
            if step == skip_at:
                layers[2].bias.grad = None  # Adam leaves it, and its step count, alone
            if step == moved_at:  # the same values elsewhere: the correction must follow them there
                layers[1].weight.data = layers[1].weight.detach().clone()
            optimizers.step()
            resets.correct(optimizer)
            if step in reset_at:  # other units each time, later ones while earlier ones are young
                k = reset_at.index(step)
                resets.zero_units(optimizer, layers[0], layers[1], torch.tensor([k, k + 2]))
                resets.zero_units(optimizer, layers[1], layers[2], torch.tensor([7 - k]))
        plans.append(next(iter(resets._plans.values())))
        results.append([p.detach().clone() for p in net.parameters()])
    per_parameter, over_buffers = plans
    assert per_parameter._moments_flat is None and per_parameter._params_flat is None
    assert over_buffers._moments_flat is not None
    assert (over_buffers._params_flat is not None) == (moved_at is None)
    # groups need both in one buffer each: the moved parameter's update goes per parameter
    assert (over_buffers.cohorts is not None) == (len(reset_at) <= 4 and moved_at is None)
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)
