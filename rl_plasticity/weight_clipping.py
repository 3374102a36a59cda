"""Weight clipping (Elsayed, Lan, Lyle and Mahmood, "Weight Clipping for Deep Continual and
Reinforcement Learning", RLC 2024).

After every optimizer step each weight is clamped to ``+-kappa * bound``, where ``bound`` is the bound of
the uniform distribution the layer was initialised from; a bias takes its layer's weight bound. The paper
defines it so; its code assumes PyTorch's default init, whose bound is ``1/sqrt(fan_in)``, and that is
the default here (``init="pytorch_default"``). A network initialised otherwise names its init: with
LeCun's ``U(+-sqrt(3/fan_in))`` (the paper's PPO), ``init="lecun"``; the default would clip it at 0.58 of
its own init's range from the first update. ``kappa`` 1.0 is the paper's setting; ``skip_last`` leaves
the output layer free, an option the paper discusses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from rl_plasticity.cbp_options import check_init, init_bound
from rl_plasticity.method import PlasticityMethod


@dataclass
class WeightClippingOptions:
    """Attributes:
        kappa: the clipping range in units of the init's bound, > 0.
        skip_last: leave the last layer (the output head) unclipped.
        init: the uniform init whose bound is the unit, a name in `rl_plasticity.cbp_options.INITS`
            (``pytorch_default``: ``1/sqrt(fan_in)``, the reference code's).
        nonlinearity: the hidden activation, for the gain of the ``kaiming`` and ``xavier`` bounds.
    """

    kappa: float = 1.0
    skip_last: bool = False
    init: str = "pytorch_default"
    nonlinearity: str = "relu"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.kappa) and self.kappa > 0):
            raise ValueError(f"kappa must be > 0, got {self.kappa!r}")
        check_init(self.init, self.nonlinearity)


class WeightClipping(PlasticityMethod):
    name = "weight_clipping"
    Options = WeightClippingOptions

    def setup(self) -> None:
        options = self.options
        self._bounds = [(param, options.kappa * init_bound(options.init, layer.in_features,
                                                            layer.out_features, options.nonlinearity))
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
