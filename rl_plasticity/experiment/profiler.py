"""Where a trainer's time goes, for benchmarks: attached from outside, so that production classes keep
no timing state and pay nothing when no one measures.

    profiler = Profiler(trainer)
    trainer.iterate()
    profiler.seconds      # {"env": ..., "inference": ..., "advantage": ..., "update": ..., ...}
    profiler.last_rollout # what the last rollout saw (its finished episodes)
    profiler.remove()
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

from agents import Rollout

#: env stepping; the rollout's own work (per-step policy inference and bookkeeping); values and GAE
#: after the rollout; the update (CBP included); TensorBoard logging; checkpoints
PHASES = ("env", "inference", "advantage", "update", "logging", "checkpoint")
_ABSENT = object()


class Profiler:
    """Cumulative seconds per phase of ``trainer``'s iterations, by wrapping the methods that do each
    phase on the instances (never their classes); `remove` puts the originals back."""

    def __init__(self, trainer: Any) -> None:
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self.last_rollout: Rollout | None = None
        self._wrapped: list[tuple[object, str, Any]] = []
        agent = trainer.agent
        self._wrap(agent.envs, "step", "env")
        self._wrap(agent, "_compute_advantages", "advantage")
        self._wrap(agent, "update", "update")
        self._wrap(trainer, "save_checkpoint", "checkpoint")
        if trainer.logger is not None:
            for method in ("rollout", "update", "probe", "utility_histograms"):
                self._wrap(trainer.logger, method, "logging")
        self._wrap(agent, "collect_rollout", None, self._collect_rollout)

    def _wrap(self, owner: object, name: str, phase: str | None,
              around: Callable[..., Any] | None = None) -> None:
        original = getattr(owner, name)
        own = vars(owner).get(name, _ABSENT)

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if around is not None:
                return around(original, *args, **kwargs)
            tick = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[phase] += time.perf_counter() - tick

        setattr(owner, name, timed)
        self._wrapped.append((owner, name, own))

    def _collect_rollout(self, original: Callable[[], Rollout]) -> Rollout:
        # The rollout's own share is what is left once the env steps and the advantages are taken out.
        inner_before = self.seconds["env"] + self.seconds["advantage"]
        tick = time.perf_counter()
        rollout = self.last_rollout = original()
        inner = self.seconds["env"] + self.seconds["advantage"] - inner_before
        self.seconds["inference"] += time.perf_counter() - tick - inner
        return rollout

    def remove(self) -> None:
        for owner, name, own in reversed(self._wrapped):
            if own is _ABSENT:
                delattr(owner, name)  # the class's method shows through again
            else:
                setattr(owner, name, own)
        self._wrapped = []


__all__ = ["PHASES", "Profiler"]
