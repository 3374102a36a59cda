"""A friction schedule the SB3 callback drives: a function of the step, or ``(step, friction)`` points."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence

FrictionSchedule = Callable[[int], float | None] | Sequence[tuple[int, float]]


def piecewise_schedule(points: Sequence[tuple[int, float]]) -> Callable[[int], float | None]:
    """``[(step, friction), ...]`` -> a function giving the friction of the last point at or before a
    step (None before the first point: the env keeps its own value)."""
    points = [(int(step), float(value)) for step, value in points]
    if not points:
        raise ValueError("friction schedule: give at least one (step, friction) pair")
    steps = [step for step, _ in points]
    if steps != sorted(steps) or len(set(steps)) != len(steps):
        raise ValueError(f"friction schedule: steps must be strictly increasing, got {steps}")
    if any(value <= 0 for _, value in points):
        raise ValueError(f"friction schedule: frictions must be positive, got {[v for _, v in points]}")

    def friction_at(step: int) -> float | None:
        index = bisect.bisect_right(steps, step) - 1
        return points[index][1] if index >= 0 else None

    return friction_at
