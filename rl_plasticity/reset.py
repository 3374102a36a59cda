"""Resets (Nikishin, Schwarzer, D'Oro, Bacon and Courville, "The Primacy Bias in Deep Reinforcement
Learning", ICML 2022): re-initialise the last ``last_layers`` layers of the network (0: all of them), every
``every`` optimizer steps and/or whenever `reset_now` is called (the trainer does at each change of the
physics with ``at_change``). Weights are redrawn from the init distribution, biases set to 0, and the
optimizer's moments of those parameters zeroed (with Adam's bias correction then counted from the
reset, `rl_plasticity.cbp_moments`), as a freshly built layer and optimizer would have them.

The paper resets the last layer (or more, for harder tasks) every 2x10^5 updates; the period is given
here in optimizer steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from rl_plasticity.cbp_moments import MomentResets
from rl_plasticity.cbp_options import check_init, init_bound
from rl_plasticity.method import PlasticityMethod


@dataclass
class ResetOptions:
    """Attributes:
        last_layers: how many layers, counted from the output, are reset (0: the whole network).
        every: optimizer steps between two resets (0: only when `reset_now` is called).
        init: distribution of the redrawn weights, a name in `cbp_options.INITS`.
        nonlinearity: the hidden activation, for the gain of ``kaiming`` and ``xavier`` draws.
    """

    last_layers: int = 1
    every: int = 200_000
    init: str = "pytorch_default"
    nonlinearity: str = "relu"

    def __post_init__(self) -> None:
        for name in ("last_layers", "every"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < 0:
                raise ValueError(f"{name} must be a whole number >= 0, got {value!r}")
            setattr(self, name, int(value))
        check_init(self.init, self.nonlinearity)


class Reset(PlasticityMethod):
    name = "reset"
    Options = ResetOptions

    def setup(self) -> None:
        self.resets = 0
        self._moments_reset_at = MomentResets()

    def reset_layers(self) -> list[nn.Linear]:
        return self.layers[-self.options.last_layers:] if self.options.last_layers else list(self.layers)

    def after_update(self) -> None:
        if self._moments_reset_at:
            self._moments_reset_at.correct(self.optimizer)
        if self.options.every and self.updates % self.options.every == 0:
            self.reset_now()

    @torch.no_grad()
    def reset_now(self) -> None:
        """Re-initialise the layers now (their weights, biases and optimizer moments)."""
        options = self.options
        for layer in self.reset_layers():
            bound = init_bound(options.init, layer.in_features, layer.out_features, options.nonlinearity)
            fresh = torch.empty(layer.weight.shape).uniform_(-bound, bound, generator=self.generator)
            layer.weight.copy_(fresh)
            if layer.bias is not None:
                layer.bias.zero_()
            for param in (layer.weight, layer.bias):
                if param is not None and self.optimizer is not None:
                    self._moments_reset_at.zero_parameter(self.optimizer, param)
        self.resets += 1

    def statistics(self) -> dict[str, float]:
        return {"resets": float(self.resets)}

    def _state(self) -> dict[str, Any]:
        return {"resets": self.resets, "moments_reset_at": self._moments_reset_at.saved(self.parameters())}

    def _load_state(self, state: dict[str, Any]) -> None:
        self.resets = int(state["resets"])
        self._moments_reset_at = MomentResets.restored(self.parameters(), state["moments_reset_at"])


__all__ = ["Reset", "ResetOptions"]
