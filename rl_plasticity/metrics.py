"""Plasticity metrics on hidden features, and a probe that measures every one of them per hidden layer.

Every function takes ``features`` of shape ``(batch, width)``: the hidden layer's output as fed to the
next layer, on a batch of recent inputs (the batch is the "window" of the paper's inactive fraction).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from rl_plasticity.hooks import capture_inputs


def dormant_fraction(features: Tensor, tau: float = 0.025) -> float:
    """ReDo's tau-dormant fraction: unit i is dormant if ``mean|h_i| / mean_j mean|h_j| <= tau``."""
    activity = features.abs().mean(0)
    score = activity / (activity.mean() + 1e-9)
    return float((score <= tau).float().mean())


def inactive_fraction(features: Tensor, threshold: float = 0.01) -> float:
    """The paper's inactive (dead) fraction: a unit is active (> 0) on at most ``threshold`` of the inputs."""
    active_share = (features > 0).float().mean(0)
    return float((active_share <= threshold).float().mean())


def _singular_values(features: Tensor) -> Tensor:
    return torch.linalg.svdvals(features.detach().double())


def approx_rank(features: Tensor, threshold: float = 0.99) -> int:
    """The paper's approximate ("stable") rank: the fewest top singular values whose sum reaches
    ``threshold`` of the sum of all singular values (unsquared)."""
    sigma = _singular_values(features)
    total = sigma.sum()
    if total <= 0:
        return 0
    cumulative = torch.cumsum(sigma, 0) / total
    # Small tolerance so that exactly reaching the threshold counts despite rounding.
    return int((cumulative < threshold - 1e-12).sum()) + 1


def effective_rank(features: Tensor) -> float:
    """Roy & Vetterli's effective rank ``exp(-sum p_i log p_i)`` with ``p_i = sigma_i / sum sigma``."""
    sigma = _singular_values(features)
    total = sigma.sum()
    if total <= 0:
        return 0.0
    p = sigma / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def weight_magnitude(layer: nn.Linear) -> float:
    """Mean absolute weight of a layer (biases excluded)."""
    return float(layer.weight.detach().abs().mean())


def feature_norm(features: Tensor) -> float:
    """Mean over the batch of the L2 norm of the feature vector."""
    return float(features.norm(dim=1).mean())


class PlasticityProbe:
    """Measures every plasticity metric of one MLP per hidden layer, on a batch of inputs.

    Takes the same ``layers`` list as `ContinualBackprop`, so a policy and a value network are measured
    the same way. If ``model`` is given, ``measure`` runs ``model(inputs)`` and captures each hidden
    feature as it enters the next layer (so any activations, norms or heads in between are respected);
    otherwise it chains ``layers`` with ``activation`` in between.

    ``measure`` returns a flat dict with keys ``layer{k}/{metric}`` for hidden layer k (0-based):
    ``dormant_fraction``, ``inactive_fraction``, ``approx_rank`` (a fraction of the layer's width),
    ``effective_rank`` (in units), ``feature_norm`` and ``weight_magnitude`` (of the layer's incoming
    weights); the head's weight magnitude is ``layer{L}/weight_magnitude`` with L = number of hidden layers.
    """

    def __init__(
        self,
        layers: Sequence[nn.Linear],
        model: nn.Module | Callable[[Tensor], Tensor] | None = None,
        activation: Callable[[Tensor], Tensor] = torch.relu,
        dormant_tau: float = 0.025,
        inactive_threshold: float = 0.01,
        rank_threshold: float = 0.99,
    ) -> None:
        self.layers = list(layers)
        if len(self.layers) < 2:
            raise ValueError(f"layers: need at least 2 nn.Linear layers, got {len(self.layers)}")
        self.model = model
        self.activation = activation
        self.dormant_tau = dormant_tau
        self.inactive_threshold = inactive_threshold
        self.rank_threshold = rank_threshold

    @torch.no_grad()
    def hidden_features(self, inputs: Tensor) -> list[Tensor]:
        """The hidden features of ``inputs``, one ``(batch, width)`` tensor per hidden layer."""
        if self.model is None:
            features, h = [], inputs
            for layer in self.layers[:-1]:
                h = self.activation(layer(h))
                features.append(h)
            return features
        captured: list[Tensor] = []
        handles = capture_inputs(self.layers[1:], lambda _k, features: captured.append(features))
        try:
            self.model(inputs)
        finally:
            for handle in handles:
                handle.remove()
        return [f.reshape(-1, f.shape[-1]) for f in captured]

    def measure(self, inputs: Tensor) -> dict[str, float]:
        features = self.hidden_features(inputs)
        results: dict[str, float] = {}
        for k, h in enumerate(features):
            results[f"layer{k}/dormant_fraction"] = dormant_fraction(h, self.dormant_tau)
            results[f"layer{k}/inactive_fraction"] = inactive_fraction(h, self.inactive_threshold)
            results[f"layer{k}/approx_rank"] = approx_rank(h, self.rank_threshold) / h.shape[1]
            results[f"layer{k}/effective_rank"] = effective_rank(h)
            results[f"layer{k}/feature_norm"] = feature_norm(h)
            results[f"layer{k}/weight_magnitude"] = weight_magnitude(self.layers[k])
        results[f"layer{len(features)}/weight_magnitude"] = weight_magnitude(self.layers[-1])
        return results
