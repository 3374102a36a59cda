"""L2-Init, regenerative regularisation (Kumar, Marklund and Van Roy, "Maintaining Plasticity in
Continual Learning via Regenerative Regularization", 2023).

Adds ``strength * ||theta - theta_0||^2`` to the loss, ``theta_0`` the parameters when the method was
attached (the paper's squared form). Without touching the loss: before every optimizer step the term's
gradient ``2 * strength * (theta - theta_0)`` is added to each parameter's gradient, which is the same
update. (In a loop that clips gradients, it is added after the clipping, as coupled weight decay is.)
``strength`` 0.01 is the paper's value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from rl_plasticity.method import PlasticityMethod


@dataclass
class L2InitOptions:
    """Attributes:
        strength: the penalty's coefficient lambda, >= 0.
    """

    strength: float = 0.01

    def __post_init__(self) -> None:
        if not (math.isfinite(self.strength) and self.strength >= 0):
            raise ValueError(f"strength must be >= 0, got {self.strength!r}")


class L2Init(PlasticityMethod):
    name = "l2_init"
    Options = L2InitOptions

    def setup(self) -> None:
        self._parameters = self.parameters()
        self._initial = [p.detach().clone() for p in self._parameters]

    @torch.no_grad()
    def before_update(self) -> None:
        for param in self._parameters:
            if param.grad is None:
                param.grad = torch.zeros_like(param)
        distances = torch._foreach_sub(self._parameters, self._initial)
        torch._foreach_add_([p.grad for p in self._parameters], distances, alpha=2.0 * self.options.strength)

    @torch.no_grad()
    def statistics(self) -> dict[str, float]:
        """``penalty``: ``strength * ||theta - theta_0||^2`` at the parameters now, computed when asked."""
        distance = sum(float((p - p0).square().sum()) for p, p0 in zip(self._parameters, self._initial,
                                                                          strict=True))
        return {"penalty": self.options.strength * distance}

    def _state(self) -> dict[str, Any]:
        return {"initial": [t.clone() for t in self._initial]}

    def _load_state(self, state: dict[str, Any]) -> None:
        self._initial = [t.clone() for t in state["initial"]]


__all__ = ["L2Init", "L2InitOptions"]
