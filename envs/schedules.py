"""Deterministic schedules deciding when a drifting parameter changes and to which value.

A :class:`DriftSchedule` is pure bookkeeping (no MuJoCo): the environment tells it about steps and
resets, it answers whether the parameter changes now, and it can export and restore its whole
position as plain picklable data so a resumed run continues the exact same sequence.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

CHANGE_AT_MODES = ("episode", "immediate")
DISTRIBUTIONS = ("log-uniform", "uniform")

_STATE_KEYS = ("schedule", "seed", "steps_since_change", "total_steps", "change_count", "value", "rng_state")


def _choose(name: str, value: Any, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; allowed values: {', '.join(map(repr, allowed))}")
    return value


def _positive_int(name: str, value: Any, meaning: str) -> int:
    # Whole floats are accepted because callers often compute counts as `total / num_envs`.
    is_float = isinstance(value, (float, np.floating))
    whole = isinstance(value, (int, np.integer)) or (is_float and float(value).is_integer())
    if isinstance(value, bool) or not whole or value < 1:
        raise ValueError(f"{name} must be an integer >= 1 ({meaning}), got {value!r}")
    return int(value)


def validate_range(value_range: Any, name: str = "value_range") -> tuple[float, float]:
    """Return ``(low, high)`` as floats, or raise ValueError if it is not a finite, ordered pair."""
    try:
        low, high = (float(bound) for bound in value_range)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be a (low, high) pair of numbers with low <= high, got {value_range!r}"
        ) from None
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"{name} must be finite, got {value_range!r}")
    if low > high:
        raise ValueError(f"{name} is inverted (low > high): {value_range!r}; pass (low, high), low <= high")
    return low, high


class DriftSchedule:
    """When and how a scalar parameter changes, reproducible from ``seed``.

    Timing (``change_at``):

    * ``"episode"`` (the paper's protocol): a change is applied at the first reset after MORE than
      ``change_every`` steps since the last change, i.e. at the first episode end past that point.
    * ``"immediate"``: a change is applied just before the step that follows the ``change_every``-th
      step since the last change (or at a reset, if one comes first), so every block of
      ``change_every`` steps runs under one value.

    Values (``kind``), with ``distribution`` choosing log or linear space:

    * ``"piecewise"``: i.i.d. draws on ``[low, high]``, log-uniform or uniform.
    * ``"cyclic"``: repeats ``cycle_values`` (default ``(low, high)``) in order.
    * ``"linear"``: a triangle wave, from ``low`` to ``high`` in ``drift_period`` changes and back.
      Use ``change_every=1, change_at="immediate"`` for a per-step drift.
    * ``"random_walk"``: Gaussian steps of ``walk_step`` times the range width, reflected into range.

    The run starts at value number 0 of the sequence (the first draw, for random schedules). Draw k of
    the piecewise schedule is the k-th ``exp(rng.uniform(log(low), log(high)))`` (or
    ``rng.uniform(low, high)``) of ``rng = np.random.default_rng(seed)``.
    """

    def __init__(
        self,
        value_range: tuple[float, float],
        change_every: int,
        *,
        kind: str = "piecewise",
        change_at: str = "episode",
        distribution: str = "log-uniform",
        seed: int | None = None,
        cycle_values: Sequence[float] | None = None,
        drift_period: int = 10,
        walk_step: float = 0.1,
    ) -> None:
        self.kind = _choose("schedule", kind, SCHEDULE_KINDS)
        self.change_at = _choose("change_at", change_at, CHANGE_AT_MODES)
        self.distribution = _choose("distribution", distribution, DISTRIBUTIONS)
        self.low, self.high = validate_range(value_range)
        self.change_every = _positive_int("change_every", change_every, "steps of one env copy")
        if self.distribution == "log-uniform" and self.low <= 0:
            raise ValueError(f"a log-uniform distribution needs low > 0, got range ({self.low}, {self.high})")
        self.drift_period = _positive_int("drift_period", drift_period, "changes per sweep")
        if not (math.isfinite(walk_step) and walk_step > 0):
            raise ValueError(f"walk_step must be a positive fraction of the range width, got {walk_step!r}")
        self.walk_step = float(walk_step)
        if cycle_values is None:
            cycle_values = (self.low, self.high)
        self.cycle_values = tuple(float(v) for v in cycle_values)
        if not self.cycle_values:
            raise ValueError("cycle_values is empty; pass at least one value")

        # Recording the entropy lets an unseeded run be replayed later.
        self.seed = int(np.random.SeedSequence(seed).entropy)
        self._rng = np.random.default_rng(self.seed)
        self.steps_since_change = 0
        self.total_steps = 0
        self.change_count = 0
        self.value = self._value_for_change(0)

    # -- timing -------------------------------------------------------------------------------------

    def count_step(self) -> None:
        self.steps_since_change += 1
        self.total_steps += 1

    def change_due_before_step(self) -> bool:
        return self.change_at == "immediate" and self.steps_since_change >= self.change_every

    def change_due_at_reset(self) -> bool:
        if self.change_at == "immediate":
            return self.steps_since_change >= self.change_every
        return self.steps_since_change > self.change_every

    def advance(self) -> float:
        """Move to the next value of the sequence and restart the step counter; returns the value."""
        self.change_count += 1
        self.steps_since_change = 0
        self.value = self._value_for_change(self.change_count)
        return self.value

    # -- values -------------------------------------------------------------------------------------

    def _to_space(self, value: float) -> float:
        return math.log(value) if self.distribution == "log-uniform" else value

    def _from_space(self, coordinate: float) -> float:
        value = math.exp(coordinate) if self.distribution == "log-uniform" else coordinate
        # exp(log(x)) can miss x by one ulp; clipping keeps a degenerate range exact.
        return min(max(value, self.low), self.high)

    def _draw(self) -> float:
        low, high = self._to_space(self.low), self._to_space(self.high)
        return self._from_space(float(self._rng.uniform(low, high)))

    def _value_for_change(self, index: int) -> float:
        return _VALUE_RULES[self.kind](self, index)

    def _piecewise(self, index: int) -> float:
        return self._draw()

    def _cyclic(self, index: int) -> float:
        return self.cycle_values[index % len(self.cycle_values)]

    def _linear(self, index: int) -> float:
        low, high = self._to_space(self.low), self._to_space(self.high)
        phase = (index % (2 * self.drift_period)) / self.drift_period
        fraction = phase if phase <= 1 else 2 - phase
        return self._from_space(low + fraction * (high - low))

    def _random_walk(self, index: int) -> float:
        if index == 0:
            return self._draw()
        low, high = self._to_space(self.low), self._to_space(self.high)
        width = high - low
        coordinate = self._to_space(self.value) + float(self._rng.normal(0.0, self.walk_step * width))
        if width > 0:
            # Reflect at the bounds so the walk neither sticks to nor leaves the range.
            offset = (coordinate - low) % (2 * width)
            coordinate = low + (offset if offset <= width else 2 * width - offset)
        return self._from_space(coordinate)

    # -- checkpointing ------------------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        """The schedule's position as plain data (ints, floats, str, dicts): safe to pickle or JSON."""
        return {
            "schedule": self.kind,
            "seed": self.seed,
            "steps_since_change": self.steps_since_change,
            "total_steps": self.total_steps,
            "change_count": self.change_count,
            "value": self.value,
            "rng_state": copy.deepcopy(self._rng.bit_generator.state),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or any(key not in state for key in _STATE_KEYS):
            raise ValueError(
                f"schedule state must be a dict from get_schedule_state() with keys {list(_STATE_KEYS)}, "
                f"got {state!r}"
            )
        if state["schedule"] != self.kind:
            raise ValueError(
                f"schedule state is for schedule {state['schedule']!r}, this env uses {self.kind!r}"
            )
        try:
            self._rng.bit_generator.state = copy.deepcopy(state["rng_state"])
        except (TypeError, ValueError, KeyError) as error:
            raise ValueError(f"schedule state has an invalid rng_state: {error}") from None
        self.seed = int(state["seed"])
        self.steps_since_change = int(state["steps_since_change"])
        self.total_steps = int(state["total_steps"])
        self.change_count = int(state["change_count"])
        self.value = float(state["value"])


#: The value of change number ``index``, per schedule kind (the kinds `DriftSchedule` documents).
_VALUE_RULES: dict[str, Callable[[DriftSchedule, int], float]] = {
    "piecewise": DriftSchedule._piecewise,
    "cyclic": DriftSchedule._cyclic,
    "linear": DriftSchedule._linear,
    "random_walk": DriftSchedule._random_walk,
}
SCHEDULE_KINDS = tuple(_VALUE_RULES)
