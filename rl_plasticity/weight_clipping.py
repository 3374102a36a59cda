"""Weight clipping (Elsayed, Lan, Lyle and Mahmood, "Weight Clipping for Deep Continual and
Reinforcement Learning", RLC 2024).

After every optimizer step each weight is clamped to ``+-kappa * bound``, where ``bound = 1/sqrt(fan_in)``
is the Kaiming-uniform bound of its layer; a bias uses its layer's fan-in too. ``kappa`` 1.0 is the
paper's setting; ``skip_last`` leaves the output layer free, an option the paper discusses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from rl_plasticity.method import PlasticityMethod


@dataclass
class WeightClippingOptions:
    """Attributes:
        kappa: the clipping range in units of ``1/sqrt(fan_in)``, > 0.
        skip_last: leave the last layer (the output head) unclipped.
    """

    kappa: float = 1.0
    skip_last: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.kappa) and self.kappa > 0):
            raise ValueError(f"kappa must be > 0, got {self.kappa!r}")


class WeightClipping(PlasticityMethod):
    name = "weight_clipping"
    Options = WeightClippingOptions

    def setup(self) -> None:
        #: entries clamped by the last step
        self.last_clipped = 0

    def clipped_layers(self) -> list[torch.nn.Linear]:
        return self.layers[:-1] if self.options.skip_last else self.layers

    @torch.no_grad()
    def after_update(self) -> None:
        clipped = 0
        for layer in self.clipped_layers():
            bound = self.options.kappa / math.sqrt(layer.in_features)
            for param in (layer.weight, layer.bias):
                if param is not None:
                    clipped += int((param.abs() > bound).sum())
                    param.clamp_(-bound, bound)
        self.last_clipped = clipped

    def statistics(self) -> dict[str, float]:
        return {"clipped": float(self.last_clipped)}

    def _state(self) -> dict[str, Any]:
        return {"last_clipped": self.last_clipped}

    def _load_state(self, state: dict[str, Any]) -> None:
        self.last_clipped = int(state["last_clipped"])


__all__ = ["WeightClipping", "WeightClippingOptions"]
