"""One Adam per network that reads, saves and loads as the single Adam over both that the paper uses.

Adam is elementwise: each parameter's moments and step count are its own, so an Adam over the policy's
parameters and another over the value network's take bit for bit the steps one Adam over both would (the
fused kernel computes each tensor alone). Apart, each network can step on its own thread: the value
network's update can run while the next rollout steps the env (`agents.ppo.PPO.update`). Each
network's plasticity methods hook its own optimizer.

`state_dict` is the single Adam's layout (parameters numbered policy first, one parameter group), so
checkpoints from before the split load, and checkpoints from after it load into a single Adam.

With ``flat=True`` each network's parameters, gradients and Adam state are views of flat buffers
(`agents.flat_storage`), and a step is one kernel call over them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.optim.optimizer as optimizer_module
from torch import nn

from agents.flat_storage import FlatStorage


class NetworkOptimizers:
    """An Adam (`EagerAdam`, torch's with a faster start) per network, behaving as one Adam over all of them.

    Args:
        networks: each network's parameters, in the order the single Adam would number them.
        flat: keep each network's parameters, gradients and moments in flat buffers (`FlatStorage`).
        options: `torch.optim.Adam`'s keywords, the same for every network.
    """

    def __init__(self, networks: dict[str, Iterable[nn.Parameter]], flat: bool = False,
                 **options: Any) -> None:
        #: the optimizer of each network, in order
        self.by_network: dict[str, torch.optim.Adam] = {
            name: EagerAdam(list(params), **options) for name, params in networks.items()}
        #: each network's flat buffers (none without ``flat``)
        self.flat: dict[str, FlatStorage] = {name: FlatStorage(optimizer)
                                             for name, optimizer in self.by_network.items()} if flat else {}
        # The kernel call in `step_network` is CPU Adam on real tensors; the parameters stay where they are.
        self._cpu_real = {name: all(p.device.type == "cpu" and not p.is_complex()
                                    for p in optimizer.param_groups[0]["params"])
                          for name, optimizer in self.by_network.items()}

    def gradient_buffers(self) -> dict[nn.Parameter, torch.Tensor]:
        """Each parameter's gradient tensor in the flat buffers (``{}`` without ``flat``): where gradients
        computed by hand are written, so that the one-call step applies."""
        return {param: grad for flat in self.flat.values()
                for param, grad in zip(flat.params, flat.grad_views, strict=True)}

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [group for optimizer in self.by_network.values() for group in optimizer.param_groups]

    @property
    def state(self) -> dict[nn.Parameter, dict[str, Any]]:
        """Every parameter's optimizer state (read-only: a merged copy of the per-network dicts)."""
        return {param: state for optimizer in self.by_network.values()
                for param, state in optimizer.state.items()}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.by_network.values():
            optimizer.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        """Step every network (each optimizer's hooks run around its own step)."""
        for name in self.by_network:
            self.step_network(name)

    def step_network(self, name: str) -> None:
        """``self.by_network[name].step()``: its hooks, then torch's fused Adam kernel on its parameters.

        Once every parameter has its state and a gradient, the kernel is called here with the arguments
        `torch.optim.Adam.step` would pass it (the same arithmetic): that method's bookkeeping (a
        profiler scope, regrouping the tensors by device, reading each option) costs ~40 us a call at
        this size, as much as the kernel. With the network's flat buffers intact it is one call over
        them. Anything else (a parameter without a gradient or state, an option the kernel call below
        does not pass) goes through ``optimizer.step()`` itself.
        """
        optimizer = self.by_network[name]
        params = optimizer.param_groups[0]["params"]
        flat = self.flat.get(name)
        if not (self._cpu_real[name] and _plain_fused(optimizer)) or \
                any(p.grad is None or not optimizer.state.get(p) for p in params):
            optimizer.step()
            if flat is not None:
                flat.note_per_tensor_step()
            return
        for hook in (*optimizer_module._global_optimizer_pre_hooks.values(),
                     *optimizer._optimizer_step_pre_hooks.values()):
            if hook(optimizer, (), {}) is not None:
                raise RuntimeError("an optimizer pre-hook returned new step() arguments; step() takes none")
        group = optimizer.param_groups[0]
        beta1, beta2 = group["betas"]
        options = {"lr": group["lr"], "beta1": beta1, "beta2": beta2, "weight_decay": group["weight_decay"],
                   "eps": group["eps"]}
        if flat is not None and flat.intact(optimizer):
            flat.adam_step(**options)
        else:
            # As Adam.step: the parameters without a gradient (a pre-hook may have dropped one) keep still.
            stepped = [p for p in params if p.grad is not None]
            states = [optimizer.state[p] for p in stepped]
            steps = [state["step"] for state in states]
            with torch.no_grad():  # as Adam.step's own decorator
                torch._foreach_add_(steps, 1)
                torch._fused_adam_(stepped, [p.grad for p in stepped], [state["exp_avg"] for state in states],
                                   [state["exp_avg_sq"] for state in states], [], steps, amsgrad=False,
                                   maximize=False, **options)
            if flat is not None:
                flat.note_per_tensor_step()
        for hook in (*optimizer._optimizer_step_post_hooks.values(),
                     *optimizer_module._global_optimizer_post_hooks.values()):
            hook(optimizer, (), {})

    def state_dict(self) -> dict[str, Any]:
        """The state of one Adam over every network's parameters: one group, numbered in order."""
        state: dict[int, Any] = {}
        group: dict[str, Any] | None = None
        offset = 0
        for optimizer in self.by_network.values():
            saved = optimizer.state_dict()
            (own,) = saved["param_groups"]
            state.update({offset + index: entry for index, entry in saved["state"].items()})
            if group is None:
                group = {**own, "params": []}
            group["params"] += [offset + index for index in own["params"]]
            offset += len(own["params"])
        return {"state": state, "param_groups": [group]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load the state of one Adam over every network's parameters (as `state_dict` writes it)."""
        groups = state_dict["param_groups"]
        numbers = [index for group in groups for index in group["params"]]
        sizes = [len(optimizer.param_groups[0]["params"]) for optimizer in self.by_network.values()]
        if len(numbers) != sum(sizes):
            raise ValueError(f"the optimizer state holds {len(numbers)} parameters, these networks have "
                             f"{sum(sizes)}; load it into an agent built with the same settings")
        settings = [{key: value for key, value in group.items() if key != "params"} for group in groups]
        if any(other != settings[0] for other in settings[1:]):
            raise ValueError("the optimizer state has parameter groups with different settings; this "
                             "agent keeps one setting for every network")
        offset = 0
        for optimizer, size in zip(self.by_network.values(), sizes, strict=True):
            own = numbers[offset:offset + size]
            optimizer.load_state_dict({
                "state": {position: state_dict["state"][index] for position, index in enumerate(own)
                          if index in state_dict["state"]},
                "param_groups": [{**settings[0], "params": list(range(size))}],
            })
            offset += size
        for name, flat in self.flat.items():
            flat.adopt_state(self.by_network[name])


def _without_dynamo_guard(method: Any) -> Any:
    """``method`` unwrapped if it is torch's ``_disable_dynamo`` wrapper (and only then)."""
    disable = getattr(torch, "_disable_dynamo", None)
    inner = getattr(method, "__wrapped__", None)
    if disable is None or inner is None:
        return method
    return inner if method.__code__ is disable(lambda: None).__code__ else method


class EagerAdam(torch.optim.Adam):
    """``torch.optim.Adam``, one second faster to start a process with.

    Torch wraps the optimizer's bookkeeping methods (``add_param_group``, ``state_dict``,
    ``load_state_dict``, ``zero_grad``) so that ``torch.compile`` never traces them, and that wrapper
    imports ``torch._dynamo`` the first time one runs: ~1 s on this project's machine, paid when the
    first optimizer is built, out of a ~3.4 s start (``python -X importtime``, 2026-12-05). Nothing
    here calls them inside a compiled function (``ppo.backprop: compiled`` compiles the losses'
    arithmetic, not the optimizer), so they run as the plain methods the wrapper calls. ``step`` is
    torch's own (`NetworkOptimizers.step_network` calls the kernel itself once every state exists).
    """

    add_param_group = _without_dynamo_guard(torch.optim.Optimizer.add_param_group)
    state_dict = _without_dynamo_guard(torch.optim.Optimizer.state_dict)
    load_state_dict = _without_dynamo_guard(torch.optim.Optimizer.load_state_dict)
    zero_grad = _without_dynamo_guard(torch.optim.Optimizer.zero_grad)


#: the options `NetworkOptimizers.step_network` passes to the kernel itself, at the values it passes
_KERNEL_OPTIONS = {"amsgrad": False, "maximize": False, "capturable": False, "differentiable": False,
                   "fused": True, "decoupled_weight_decay": False}


def _plain_fused(optimizer: torch.optim.Optimizer) -> bool:
    """Whether the options (which a user may change between steps) are those the kernel call passes."""
    if len(optimizer.param_groups) != 1:
        return False
    (group,) = optimizer.param_groups
    return all(group.get(key) == value for key, value in _KERNEL_OPTIONS.items()) and \
        isinstance(group["lr"], float)


__all__ = ["EagerAdam", "NetworkOptimizers"]
