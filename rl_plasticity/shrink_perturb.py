"""Shrink and perturb (Ash and Adams, "On Warm-Starting Neural Network Training", NeurIPS 2020).

Every ``every`` optimizer steps each parameter becomes ``theta <- shrink * theta + perturb * noise``:

* ``toward="fresh"`` (the paper): ``noise`` is a fresh draw from the init distribution (weights uniform
  within the named ``init``'s bound, biases 0, as this toolkit's networks are initialised);
* ``toward="initial"`` (Plasticine's soft variant): ``noise`` is the parameter's value when the method
  was attached, so with ``shrink + perturb = 1`` every step moves the network a little back towards its
  initialisation. Plasticine uses ``shrink=0.999999, perturb=1e-6, every=1``.

Defaults: ``shrink`` 0.999, ``perturb`` 0.005 every 1000 steps (a port's per-1000-step setting; the
paper's warm start shrinks once, 0.5 / 0.5, at each change of data).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from rl_plasticity.cbp_options import check_init, init_bound
from rl_plasticity.method import PlasticityMethod

TOWARDS = ("fresh", "initial")


@dataclass
class ShrinkPerturbOptions:
    """Attributes:
        shrink: the factor every parameter is multiplied by, in (0, 1].
        perturb: the weight of the noise added, >= 0.
        every: optimizer steps between two applications.
        toward: ``"fresh"`` (a new init draw) or ``"initial"`` (the parameters at attach time).
        init: the distribution of a fresh draw, a name in `cbp_options.INITS`.
        nonlinearity: the hidden activation, for the gain of ``kaiming`` and ``xavier`` draws.
    """

    shrink: float = 0.999
    perturb: float = 0.005
    every: int = 1000
    toward: str = "fresh"
    init: str = "pytorch_default"
    nonlinearity: str = "relu"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.shrink) and 0.0 < self.shrink <= 1.0):
            raise ValueError(f"shrink must be in (0, 1], got {self.shrink!r}")
        if not (math.isfinite(self.perturb) and self.perturb >= 0.0):
            raise ValueError(f"perturb must be >= 0, got {self.perturb!r}")
        if isinstance(self.every, bool) or int(self.every) != self.every or self.every < 1:
            raise ValueError(f"every must be a whole number of optimizer steps >= 1, got {self.every!r}")
        if self.toward not in TOWARDS:
            raise ValueError(f"toward must be one of {', '.join(TOWARDS)}; got {self.toward!r}")
        check_init(self.init, self.nonlinearity)
        self.every = int(self.every)


class ShrinkPerturb(PlasticityMethod):
    name = "shrink_perturb"
    Options = ShrinkPerturbOptions

    def setup(self) -> None:
        self._initial = [p.detach().clone() for p in self.parameters()] \
            if self.options.toward == "initial" else None
        self.applied = 0

    @torch.no_grad()
    def after_update(self) -> None:
        if self.updates % self.options.every:
            return
        options = self.options
        targets = self._initial if self._initial is not None else self._fresh_draw()
        params = self.parameters()
        torch._foreach_mul_(params, options.shrink)
        torch._foreach_add_(params, targets, alpha=options.perturb)
        self.applied += 1

    def _fresh_draw(self) -> list[Tensor]:
        draws = []
        for layer in self.layers:
            bound = init_bound(self.options.init, layer.in_features, layer.out_features,
                               self.options.nonlinearity)
            draws.append(torch.empty(layer.weight.shape).uniform_(-bound, bound, generator=self.generator)
                         .to(layer.weight))
            if layer.bias is not None:
                draws.append(torch.zeros_like(layer.bias))
        return draws

    def statistics(self) -> dict[str, float]:
        return {"applied": float(self.applied)}

    def _state(self) -> dict[str, Any]:
        return {"applied": self.applied, "initial": None if self._initial is None else
                [t.clone() for t in self._initial]}

    def _load_state(self, state: dict[str, Any]) -> None:
        self.applied = int(state["applied"])
        if (state["initial"] is None) != (self._initial is None):
            raise ValueError("the state was saved with another `toward`; build the method with the same "
                             "options")
        if state["initial"] is not None:
            self._initial = [t.clone() for t in state["initial"]]


__all__ = ["TOWARDS", "ShrinkPerturb", "ShrinkPerturbOptions"]
