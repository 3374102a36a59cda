"""Parseval regularisation (Chung, Cherif, Meger and Precup, "Parseval Regularization for Continual
Reinforcement Learning", NeurIPS 2024).

Adds ``strength * sum_l ||W_l W_l^T - scale * I||_F^2`` to the loss, over the weight matrices of every
layer but the output head (``include_last`` adds it), which keeps each layer's rows close to orthogonal.
As for L2-Init the loss is untouched: before every optimizer step the term's gradient
``4 * strength * (W W^T - scale * I) W`` is added to each weight's gradient. Defaults: ``strength``
1e-3, ``scale`` 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from rl_plasticity.method import PlasticityMethod


@dataclass
class ParsevalOptions:
    """Attributes:
        strength: the penalty's coefficient, >= 0.
        scale: the target ``W W^T = scale * I``, > 0.
        include_last: regularise the output layer too.
    """

    strength: float = 1e-3
    scale: float = 1.0
    include_last: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.strength) and self.strength >= 0):
            raise ValueError(f"strength must be >= 0, got {self.strength!r}")
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"scale must be > 0, got {self.scale!r}")


class Parseval(PlasticityMethod):
    name = "parseval"
    Options = ParsevalOptions

    def regularised_layers(self) -> list[nn.Linear]:
        return list(self.layers) if self.options.include_last else self.layers[:-1]

    def _gap(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        """``left @ right - scale * I``: ``W W^T - sI``, or ``W^T W - sI`` for the smaller Gram matrix."""
        gap = left @ right
        gap.diagonal().sub_(self.options.scale)
        return gap

    @torch.no_grad()
    def before_update(self) -> None:
        alpha = 4.0 * self.options.strength
        for layer in self.regularised_layers():
            weight = layer.weight
            if weight.grad is None:
                weight.grad = torch.zeros_like(weight)
            rows, columns = weight.shape
            if rows > columns:
                # (W W^T - sI) W = W (W^T W - sI): the same gradient through the smaller Gram matrix
                weight.grad.addmm_(weight, self._gap(weight.T, weight), alpha=alpha)
            else:
                weight.grad.addmm_(self._gap(weight, weight.T), weight, alpha=alpha)

    @torch.no_grad()
    def statistics(self) -> dict[str, float]:
        """``penalty``: the term at the weights now, computed when asked (once per logging)."""
        penalty = sum(float(self._gap(layer.weight, layer.weight.T).square().sum())
                      for layer in self.regularised_layers())
        return {"penalty": self.options.strength * penalty}


__all__ = ["Parseval", "ParsevalOptions"]
