"""Weight projection, the "project" half of normalize-and-project (NaP: Lyle, Zheng, Khetarpal, Martens,
van Hasselt, Pascanu and Dabney, "Normalization and effective learning rates in reinforcement learning",
NeurIPS 2024).

Every ``every`` optimizer steps each layer's weight matrix is rescaled to the Frobenius norm it had when
the method was attached, ``W <- W * ||W_0|| / ||W||``, so that weight growth cannot shrink the effective
learning rate. NaP pairs it with LayerNorm before each activation (``methods.layer_norm`` in the
trainer), which makes each layer's output invariant to that rescaling. Biases are left alone.
Plasticine projects every 10 PPO iterations; the default here is every step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from rl_plasticity.method import PlasticityMethod


@dataclass
class WeightProjectionOptions:
    """Attributes:
        every: optimizer steps between two projections.
    """

    every: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.every, bool) or int(self.every) != self.every or self.every < 1:
            raise ValueError(f"every must be a whole number of optimizer steps >= 1, got {self.every!r}")
        self.every = int(self.every)


class WeightProjection(PlasticityMethod):
    name = "weight_projection"
    Options = WeightProjectionOptions

    def setup(self) -> None:
        self._initial_norms = [float(torch.linalg.matrix_norm(layer.weight.detach()))
                               for layer in self.layers]
        self._initial = torch.tensor(self._initial_norms, dtype=self.layers[0].weight.dtype)
        #: the largest factor a weight matrix was rescaled by at the last projection
        self.last_rescale = 1.0

    @torch.no_grad()
    def after_update(self) -> None:
        if self.updates % self.options.every:
            return
        # All layers in four calls (it runs at every step by default); a zero matrix stays zero.
        weights = [layer.weight for layer in self.layers]
        norms = torch.stack(torch._foreach_norm(weights))
        factors = (self._initial / norms).tolist()
        torch._foreach_mul_(weights, [f if math.isfinite(f) else 1.0 for f in factors])
        moved = [f for f in factors if math.isfinite(f)]
        self.last_rescale = max(moved, key=lambda f: abs(f - 1.0)) if moved else 1.0

    def statistics(self) -> dict[str, float]:
        return {"rescale": self.last_rescale}

    def _state(self) -> dict[str, Any]:
        return {"initial_norms": list(self._initial_norms), "last_rescale": self.last_rescale}

    def _load_state(self, state: dict[str, Any]) -> None:
        self._initial_norms = [float(n) for n in state["initial_norms"]]
        self._initial = torch.tensor(self._initial_norms, dtype=self.layers[0].weight.dtype)
        self.last_rescale = float(state["last_rescale"])


__all__ = ["WeightProjection", "WeightProjectionOptions"]
