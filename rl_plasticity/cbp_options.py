"""`CBPOptions`: the one definition of continual backprop's options, their defaults and their valid values.

`ContinualBackprop` takes them as keywords and keeps them in ``cbp.options``; the PPO's config section
(`agents.settings.CBPSettings`, checked against this class by a test) and the SB3 attach and sidecar
are derived from `OPTION_NAMES`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields

from torch import Tensor, nn

from rl_plasticity.cbp_utilities import UTILITY_RULES

InitFn = Callable[[Tensor, int], Tensor | None]

UTILITIES = tuple(UTILITY_RULES)

#: The uniform bound of each named ``init``, from ``(fan_in, fan_out, gain of the activation)``: kaiming
#: and xavier as ``torch.nn.init.kaiming_uniform_`` / ``xavier_uniform_`` with ``calculate_gain``.
INIT_BOUNDS: dict[str, Callable[[int, int, float], float]] = {
    "lecun": lambda fan_in, fan_out, gain: math.sqrt(3.0 / fan_in),  # variance 1/fan_in, the paper's PPO
    "kaiming": lambda fan_in, fan_out, gain: gain * math.sqrt(3.0 / fan_in),
    "xavier": lambda fan_in, fan_out, gain: gain * math.sqrt(6.0 / (fan_in + fan_out)),
    # nn.Linear's own default (kaiming_uniform with a=sqrt(5))
    "pytorch_default": lambda fan_in, fan_out, gain: 1.0 / math.sqrt(fan_in),
}
INITS = tuple(INIT_BOUNDS)


def init_bound(name: str, fan_in: int, fan_out: int, nonlinearity: str = "relu") -> float:
    """The uniform bound of the named ``init`` for a layer of ``fan_in`` inputs and ``fan_out`` units."""
    return INIT_BOUNDS[name](fan_in, fan_out, nn.init.calculate_gain(nonlinearity))


def check_init(init: object, nonlinearity: str, *, allow_callable: bool = False) -> None:
    """ValueError unless ``init`` names a distribution of `INITS` (or, with ``allow_callable``, is a
    callable ``init(rows, fan_in)``) and ``nonlinearity`` is a name ``torch.nn.init.calculate_gain``
    knows: the check every method's options share."""
    if not (allow_callable and callable(init)) and init not in INITS:
        alternatives = " or a callable(rows, fan_in)" if allow_callable else ""
        raise ValueError(f"init must be one of {', '.join(INITS)}{alternatives}; got {init!r}")
    nn.init.calculate_gain(nonlinearity)  # raises ValueError on an unknown name


@dataclass
class CBPOptions:
    """Continual backprop's options (see `ContinualBackprop` for what each does).

    Attributes:
        replacement_rate: expected fraction of eligible units replaced per step, in [0, 1].
        maturity_threshold: a unit is eligible once its age (in steps) exceeds this.
        decay_rate: decay of the running utility and mean activation, in [0, 1).
        utility: how units are ranked, a name in `UTILITIES` (`rl_plasticity.cbp_utilities`).
        init: distribution of the redrawn incoming weights, a name in `INITS` or a callable
            ``init(rows, fan_in)``.
        bias_correction: fold a replaced unit's mean output into the next layer's bias.
        reset_optimizer_state: zero the optimizer's moments of the replaced rows and columns.
        accumulate: carry fractional replacements over instead of a Bernoulli draw.
        floor_when_above_one: round as the reference RL code (Bernoulli below 1, floor from 1 on).
        nonlinearity: the hidden activation, for the gain of the ``kaiming`` and ``xavier`` redraws.
    """

    replacement_rate: float = 1e-4
    maturity_threshold: int = 10_000
    decay_rate: float = 0.99
    utility: str = "contribution"
    init: str | InitFn = "lecun"
    bias_correction: bool = True
    reset_optimizer_state: bool = False
    accumulate: bool = False
    floor_when_above_one: bool = False
    nonlinearity: str = "relu"

    def __post_init__(self) -> None:
        if not 0.0 <= self.replacement_rate <= 1.0:
            raise ValueError(f"replacement_rate must be in [0, 1], got {self.replacement_rate}")
        threshold = self.maturity_threshold
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) or threshold < 0 or \
                not math.isfinite(threshold) or int(threshold) != threshold:
            raise ValueError(f"maturity_threshold must be a non-negative integer, got {threshold!r}")
        if not 0.0 <= self.decay_rate < 1.0:
            raise ValueError(f"decay_rate must be in [0, 1), got {self.decay_rate}")
        if self.utility not in UTILITIES:
            raise ValueError(f"utility must be one of {', '.join(UTILITIES)}; got {self.utility!r}")
        check_init(self.init, self.nonlinearity, allow_callable=True)
        self.replacement_rate = float(self.replacement_rate)
        self.maturity_threshold = int(threshold)
        self.decay_rate = float(self.decay_rate)


OPTION_NAMES = tuple(f.name for f in fields(CBPOptions))
