"""How continual backprop ranks a hidden layer's units: one `UtilityRule` subclass per ``utility`` option.

`ContinualBackprop` keeps the statistics (running utility, running mean activation, ages) and asks the
rule for two things: each unit's feature magnitude on the batch just trained on, which it multiplies by
the outgoing weights' magnitude into the running utility, and the score units are ranked by (lowest
replaced first). A new rule is a subclass here and an entry in `UTILITY_RULES`.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn


def debias(decay_rate: float, age: Tensor) -> Tensor:
    """``1 - decay**age``, the weight a running average of that age has accumulated (age 0 counts as 1)."""
    return 1.0 - (decay_rate ** age.clamp(min=1).double()).float()


class UtilityRule:
    """Contribution utility (Dohare et al. 2024): ``mean_batch |h_i| * mean_k |W_next[k, i]|``."""

    #: whether the running utility is tracked at all (the random ablation ranks without it)
    scores_units: ClassVar[bool] = True
    #: whether `feature_magnitude` reads the running mean activation (else only bias correction does)
    reads_mean_activation: ClassVar[bool] = False
    #: whether, for features that are never negative, `feature_magnitude` is their plain batch sum
    magnitude_is_sum_if_nonnegative: ClassVar[bool] = True

    def feature_magnitude(self, features: Tensor, incoming: nn.Linear, mean_activation: Tensor | None,
                          scratch: Tensor, out: Tensor) -> None:
        """Write ``sum_batch |h_i|`` into ``out`` (``scratch``: a buffer of ``features``' shape).
        ``mean_activation`` is the bias-corrected running mean, given when `reads_mean_activation`."""
        torch.sum(torch.abs(features, out=scratch), 0, out=out)

    def score(self, running_utility: Tensor, age: Tensor, decay_rate: float,
              generator: torch.Generator) -> Tensor:
        # Bias correction of the running average: young units are not penalised for a short history.
        return running_utility / debias(decay_rate, age)


class AdaptableContributionRule(UtilityRule):
    """The reference code's (``gnt.py``) ``mean_batch |h_i - mean_h_i| * mean_k |W_next[k, i]| /
    mean_j |W[i, j]|``: the activation's distance from its bias-corrected running mean, per unit of
    incoming weight."""

    reads_mean_activation = True
    magnitude_is_sum_if_nonnegative = False

    def feature_magnitude(self, features: Tensor, incoming: nn.Linear, mean_activation: Tensor | None,
                          scratch: Tensor, out: Tensor) -> None:
        assert mean_activation is not None
        torch.sub(features, mean_activation, out=scratch)
        torch.sum(scratch.abs_(), 0, out=out)
        out /= incoming.weight.abs().mean(1) + 1e-12


class RandomRule(UtilityRule):
    """The ablation: eligible units are replaced at random."""

    scores_units = False

    def score(self, running_utility: Tensor, age: Tensor, decay_rate: float,
              generator: torch.Generator) -> Tensor:
        return torch.rand(age.shape, generator=generator).to(age.device)


UTILITY_RULES: dict[str, UtilityRule] = {
    "contribution": UtilityRule(),
    "adaptable_contribution": AdaptableContributionRule(),
    "random": RandomRule(),
}
