"""One Adam per network (`agents.network_optimizers`) against the single Adam over both it stands for."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from agents.network_optimizers import EagerAdam, NetworkOptimizers

OPTIONS = {"lr": 1e-2, "betas": (0.99, 0.99), "eps": 1e-8, "weight_decay": 1e-3, "fused": True}


def networks() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {"policy": nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 3)),
            "value": nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 1))}


def train(nets: dict[str, nn.Module], optimizer, steps: int, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(32, 5, generator=generator)
        # zeroed in place, so that gradients stay the flat buffers' views (set to None they would not)
        optimizer.zero_grad(set_to_none=False)
        sum(net(x).square().mean() for net in nets.values()).backward()
        optimizer.step()


def assert_one_call_steps(optimizer: NetworkOptimizers) -> None:
    """Every step so far went through the flat buffers, one kernel call per network."""
    for name, flat in optimizer.flat.items():
        assert flat.intact(optimizer.by_network[name]) and not flat._steps_may_differ, name


@pytest.mark.parametrize("flat", [False, True])
def test_per_network_adams_step_bit_for_bit_as_one_adam_over_both(flat: bool) -> None:
    single_nets, split_nets, initial = networks(), networks(), networks()
    single = torch.optim.Adam([p for net in single_nets.values() for p in net.parameters()], **OPTIONS)
    split = NetworkOptimizers({name: net.parameters() for name, net in split_nets.items()}, flat=flat,
                              **OPTIONS)
    assert len(split.flat) == (2 if flat else 0)
    train(single_nets, single, 25)
    train(split_nets, split, 25)
    assert_one_call_steps(split)
    for name in single_nets:
        for a, b, start in zip(single_nets[name].parameters(), split_nets[name].parameters(),
                               initial[name].parameters(), strict=True):
            assert torch.equal(a, b)
            assert not torch.equal(a, start)
    saved, expected = split.state_dict(), single.state_dict()
    assert saved["param_groups"] == expected["param_groups"]
    assert saved["state"].keys() == expected["state"].keys()
    for index, state in expected["state"].items():
        for key, value in state.items():
            assert torch.equal(saved["state"][index][key], value), (index, key)


@pytest.mark.parametrize("flat", [False, True])
def test_a_single_adams_state_loads_and_continues_identically_and_back(flat: bool) -> None:
    # Checkpoints from before the split hold one Adam's state; a run resumed from one continues exactly.
    nets = networks()
    single = torch.optim.Adam([p for net in nets.values() for p in net.parameters()], **OPTIONS)
    train(nets, single, 10)
    reference_nets, resumed_nets = copy.deepcopy(nets), copy.deepcopy(nets)
    reference = torch.optim.Adam([p for net in reference_nets.values() for p in net.parameters()], **OPTIONS)
    # copies, as a checkpoint holds them (load_state_dict keeps the very tensors it is given)
    reference.load_state_dict(copy.deepcopy(single.state_dict()))
    resumed = NetworkOptimizers({name: net.parameters() for name, net in resumed_nets.items()}, flat=flat,
                                **OPTIONS)
    resumed.load_state_dict(copy.deepcopy(single.state_dict()))
    # the loaded moments and counts are in the flat buffers, not merely held beside them
    for name, flat_storage in resumed.flat.items():
        params = resumed.by_network[name].param_groups[0]["params"]
        loaded = [single.state[p]["exp_avg"] for p in nets[name].parameters()]
        assert torch.equal(flat_storage.moments[0], torch.cat([m.reshape(-1) for m in loaded]))
        assert all(resumed.by_network[name].state[p]["step"] == 10 for p in params)
    train(reference_nets, reference, 10, seed=2)
    train(resumed_nets, resumed, 10, seed=2)
    assert_one_call_steps(resumed)
    for name in nets:
        for a, b in zip(reference_nets[name].parameters(), resumed_nets[name].parameters(), strict=True):
            assert torch.equal(a, b)
    back = torch.optim.Adam([p for net in resumed_nets.values() for p in net.parameters()], **OPTIONS)
    back.load_state_dict(copy.deepcopy(resumed.state_dict()))
    assert back.state_dict()["param_groups"] == reference.state_dict()["param_groups"]


def test_a_state_of_other_networks_is_refused_with_the_fix() -> None:
    nets = networks()
    optimizer = NetworkOptimizers({name: net.parameters() for name, net in nets.items()}, **OPTIONS)
    smaller = torch.optim.Adam(nets["policy"].parameters(), **OPTIONS)
    with pytest.raises(ValueError, match="holds 4 parameters, these networks have 8; load it into an agent "
                                         "built with the same settings"):
        optimizer.load_state_dict(smaller.state_dict())


def test_the_direct_kernel_step_is_adams_step_with_its_hooks(monkeypatch: pytest.MonkeyPatch) -> None:
    # After the first step (which builds the state through Adam.step) each step calls the fused kernel
    # itself: same parameters and moments bit for bit, hooks in torch's order, a learning-rate change seen.
    reference_nets, direct_nets = networks(), networks()
    reference = {name: torch.optim.Adam(net.parameters(), **OPTIONS) for name, net in reference_nets.items()}
    direct = NetworkOptimizers({name: net.parameters() for name, net in direct_nets.items()}, **OPTIONS)
    calls: dict[str, list[str]] = {"reference": [], "direct": []}
    for label, optimizers in (("reference", reference), ("direct", direct.by_network)):
        for name, optimizer in optimizers.items():
            params = list(optimizer.param_groups[0]["params"])

            def pull_to_zero(_optimizer, _args, _kwargs, params=params, log=calls[label], name=name) -> None:
                log.append(f"pre {name}")
                for p in params:  # as L2-Init's hook: adds to the final gradient in place
                    p.grad.add_(p.detach(), alpha=0.1)

            optimizer.register_step_pre_hook(pull_to_zero)
            optimizer.register_step_post_hook(
                lambda *_, log=calls[label], name=name: log.append(f"post {name}"))
    adam_steps = []
    # torch's Optimizer wraps ``step`` on the first class instantiated of a kind: EagerAdam holds its
    # own wrapper when it was built before any plain Adam in this process, so both are counted.
    for cls in {torch.optim.Adam, *(type(o) for o in direct.by_network.values())}:
        own_step = vars(cls).get("step")
        if own_step is None:
            continue

        def counted_step(self: torch.optim.Adam, *args: object, original=own_step,
                         **kwargs: object) -> object:
            adam_steps.append(1)
            return original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "step", counted_step)
    generator = torch.Generator().manual_seed(5)
    for step in range(12):
        x = torch.randn(16, 5, generator=generator)
        if step == 6:
            for group in (*direct.param_groups, *(g for o in reference.values() for g in o.param_groups)):
                group["lr"] = 3e-3
        for nets, optimizer in ((reference_nets, None), (direct_nets, direct)):
            for name, net in nets.items():
                net.zero_grad()
                net(x).square().mean().backward()
                if optimizer is None:
                    reference[name].step()
            if optimizer is not None:
                optimizer.step()
    assert len(adam_steps) == 12 * 2 + 2  # the reference's, and the direct optimizer's first steps only
    assert calls["direct"] == calls["reference"] and len(calls["direct"]) == 12 * 4
    for name in reference_nets:
        for a, b in zip(reference_nets[name].parameters(), direct_nets[name].parameters(), strict=True):
            assert torch.equal(a, b)
            for key in ("exp_avg", "exp_avg_sq", "step"):
                assert torch.equal(reference[name].state[a][key], direct.by_network[name].state[b][key])


def test_a_parameter_without_a_gradient_keeps_still_and_its_network_then_steps_per_tensor() -> None:
    # A step where one parameter has no gradient goes per tensor (Adam leaves that one alone, its count
    # too); the one-call step counts every parameter alike, so it is not taken while the counts differ.
    reference_nets, flat_nets = networks(), networks()
    reference = NetworkOptimizers({n: net.parameters() for n, net in reference_nets.items()}, **OPTIONS)
    flat = NetworkOptimizers({n: net.parameters() for n, net in flat_nets.items()}, flat=True, **OPTIONS)
    generator = torch.Generator().manual_seed(3)
    for step in range(6):
        x = torch.randn(8, 5, generator=generator)
        for nets, optimizer in ((reference_nets, reference), (flat_nets, flat)):
            optimizer.zero_grad(set_to_none=False)
            sum(net(x).square().mean() for net in nets.values()).backward()
            if step == 2:
                nets["policy"][0].bias.grad = None
            optimizer.step()
    assert not flat.flat["policy"].intact(flat.by_network["policy"])  # its counts differ from now on
    assert flat.flat["value"].intact(flat.by_network["value"])
    for name in reference_nets:
        for a, b in zip(reference_nets[name].parameters(), flat_nets[name].parameters(), strict=True):
            assert torch.equal(a, b)
            reference_step = reference.by_network[name].state[a]["step"]
            assert torch.equal(reference_step, flat.by_network[name].state[b]["step"])


def test_a_parameter_given_other_memory_is_stepped_where_it_now_lives() -> None:
    # `param.data = ...` takes a parameter out of the flat buffer: its steps must land on it, not on the
    # buffer it left (the network then steps per tensor).
    reference_nets, flat_nets = networks(), networks()
    reference = NetworkOptimizers({n: net.parameters() for n, net in reference_nets.items()}, **OPTIONS)
    flat = NetworkOptimizers({n: net.parameters() for n, net in flat_nets.items()}, flat=True, **OPTIONS)
    train(reference_nets, reference, 3)
    train(flat_nets, flat, 3)
    for nets in (reference_nets, flat_nets):
        nets["value"][2].weight.data = nets["value"][2].weight.detach().clone()
    train(reference_nets, reference, 3, seed=2)
    train(flat_nets, flat, 3, seed=2)
    assert not flat.flat["value"].intact(flat.by_network["value"])
    for name in reference_nets:
        for a, b in zip(reference_nets[name].parameters(), flat_nets[name].parameters(), strict=True):
            assert torch.equal(a, b)


def test_a_whole_training_run_never_imports_torch_dynamo(tmp_path) -> None:
    """Building the agent's optimizers, stepping, checkpointing and resuming stay clear of the ~1 s
    import of torch._dynamo that torch's own Adam makes when it is built (a fresh process: this one may
    have imported it already)."""
    script = f"""
import sys, torch
from rl_plasticity.experiment.cli import main
for steps in (4096, 8192):  # the second run resumes from the first one's checkpoint
    sys.argv = ["rl-plasticity", "train", "configs/slippery_ant/ppo_cbp.yaml", "--total-steps", str(steps),
                "--logdir", {str(tmp_path)!r}, "--quiet", "--set", "ppo.rollout_steps=1024",
                "--set", "run.checkpoint_every=2048"]
    assert main() == 0
adam = torch.optim.Optimizer
print("torch._dynamo" in sys.modules, torch.optim.Adam.add_param_group is adam.add_param_group)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            cwd=Path(__file__).parents[1])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resuming from" in result.stderr, result.stderr[-2000:]
    # torch's Adam itself is untouched (only the agent's own subclass skips the wrapper)
    assert result.stdout.split()[-2:] == ["False", "True"], result.stdout


def test_eager_adam_is_torchs_adam_but_for_the_dynamo_wrapper() -> None:
    for name in ("add_param_group", "state_dict", "load_state_dict", "zero_grad"):
        wrapped = getattr(torch.optim.Optimizer, name)
        assert getattr(EagerAdam, name) is wrapped.__wrapped__, name
    torch.manual_seed(0)
    plain, eager = nn.Linear(4, 3), nn.Linear(4, 3)
    eager.load_state_dict(plain.state_dict())
    optimizers = [torch.optim.Adam(plain.parameters(), lr=0.1), EagerAdam(eager.parameters(), lr=0.1)]
    for _ in range(3):
        for net, optimizer in zip((plain, eager), optimizers, strict=True):
            optimizer.zero_grad()
            net(torch.ones(2, 4)).square().sum().backward()
            optimizer.step()
    assert torch.equal(plain.weight, eager.weight)
    assert str(optimizers[0].state_dict()) == str(optimizers[1].state_dict())
