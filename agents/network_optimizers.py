"""One Adam per network that reads, saves and loads as the single Adam over both that the paper uses.

Adam is elementwise: each parameter's moments and step count are its own, so an Adam over the policy's
parameters and another over the value network's take bit for bit the steps one Adam over both would (the
fused kernel computes each tensor alone). Apart, each network can step on its own thread: the value
network's update can run while the next rollout steps the env (`agents.ppo.PPO.update`). Each
network's plasticity methods hook its own optimizer.

`state_dict` is the single Adam's layout (parameters numbered policy first, one parameter group), so
checkpoints from before the split load, and checkpoints from after it load into a single Adam.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn


class NetworkOptimizers:
    """``torch.optim.Adam(params, **options)`` per network, behaving as one Adam over all of them.

    Args:
        networks: each network's parameters, in the order the single Adam would number them.
        options: `torch.optim.Adam`'s keywords, the same for every network.
    """

    def __init__(self, networks: dict[str, Iterable[nn.Parameter]], **options: Any) -> None:
        #: the optimizer of each network, in order
        self.by_network: dict[str, torch.optim.Adam] = {
            name: torch.optim.Adam(list(params), **options) for name, params in networks.items()}

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
        for optimizer in self.by_network.values():
            optimizer.step()

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


__all__ = ["NetworkOptimizers"]
