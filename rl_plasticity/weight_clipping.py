"""Weight clipping (Elsayed, Lan, Lyle and Mahmood, "Weight Clipping for Deep Continual and
Reinforcement Learning", RLC 2024).

After every optimizer step each weight is clamped to ``+-kappa * bound``, where ``bound = 1/sqrt(fan_in)``
is the Kaiming-uniform bound of its layer; a bias uses its layer's fan-in too. ``kappa`` 1.0 is the
paper's setting; ``skip_last`` leaves the output layer free, an option the paper discusses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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
        self._bounds = [(param, self.options.kappa / math.sqrt(layer.in_features))
                        for layer in self.clipped_layers()
                        for param in (layer.weight, layer.bias) if param is not None]

    def clipped_layers(self) -> list[torch.nn.Linear]:
        return self.layers[:-1] if self.options.skip_last else self.layers

    @torch.no_grad()
    def after_update(self) -> None:
        for param, bound in self._bounds:
            param.clamp_(-bound, bound)

    @torch.no_grad()
    def statistics(self) -> dict[str, float]:
        """``clipped``: the entries at their bound, which the last step clipped or left there. Counted
        when asked (once per logging), not at every step."""
        return {"clipped": float(sum(int((param.abs() >= bound).sum()) for param, bound in self._bounds))}


__all__ = ["WeightClipping", "WeightClippingOptions"]
