"""The trainer: composes the config's vector env and PPO agent, logs to TensorBoard, writes checkpoints.

Run directory layout (``run_dir``): TensorBoard events, ``config.yaml`` (the resolved config, loadable
with ``rl-plasticity train``), ``checkpoints/step_<N>.pt`` (a `Trainer.state_dict`).
"""

from __future__ import annotations

import math
import sys
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from agents import PPO, Rollout
from rl_plasticity.experiment.checkpoint import checkpoint_path, save_checkpoint
from rl_plasticity.experiment.config import Config, config_to_dict, config_to_yaml
from rl_plasticity.experiment.environment import (
    make_vector_env,
    physics_values,
    restore_schedule_states,
    schedule_states,
)
from rl_plasticity.experiment.logger import TrainingLogger

RECENT_EPISODES = 20


@dataclass
class TrainingSummary:
    """How a `Trainer.train` call ended."""

    global_step: int
    episodes: int
    recent_return: float  # mean return of the last (up to) 20 episodes; nan if none finished
    seconds: float
    checkpoints: list[Path] = field(default_factory=list)


class Trainer:
    """Trains ``config`` and, if ``run_dir`` is given, logs and checkpoints into it.

    ``train()`` runs to ``run.total_steps``; ``iterate()`` runs one rollout and update. ``state_dict()``
    holds everything a resume needs: the agent (networks, Adam, both CBPs, normalisers, its RNG and
    counters), the envs' schedule positions, the global RNGs and the episode statistics.
    """

    def __init__(self, config: Config, run_dir: str | Path | None = None) -> None:
        self.config = config
        run = config.run
        torch.set_num_threads(run.torch_threads)
        torch.manual_seed(run.seed)
        np.random.seed(run.seed)
        self.envs = make_vector_env(config.env, run.seed)
        try:
            self.agent = PPO(self.envs, config.ppo, config.optimizer, config.cbp,
                             total_steps=run.total_steps, seed=run.seed)
        except Exception:
            self.envs.close()
            raise
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.logger: TrainingLogger | None = None
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.yaml").write_text(config_to_yaml(config))
            self.logger = TrainingLogger(self.run_dir, self.agent)
            self.logger.hyperparameters(config)
        self.recent_returns: deque[float] = deque(maxlen=RECENT_EPISODES)
        self.episodes_seen = 0
        self.physics: dict[str, float] = {}
        self.last_rollout: Rollout | None = None
        self.checkpoints: list[Path] = []
        self.timings = {"logging": 0.0, "checkpoint": 0.0}
        self._clock_start = (time.perf_counter(), self.agent.global_step)

    # ------------------------------------------------------------------ the loop
    def train(self, progress: bool = True) -> TrainingSummary:
        """Train until ``run.total_steps``; on Ctrl-C, write a checkpoint and re-raise."""
        total = self.config.run.total_steps
        started = time.perf_counter()
        self._clock_start = (started, self.agent.global_step)
        display = _Progress(total, self.agent.global_step, progress, self.config.log.progress_bar)
        try:
            while self.agent.global_step < total:
                self.iterate()
                display.update(self.agent.global_step, self.status())
        except KeyboardInterrupt:
            self.save_checkpoint()
            raise
        finally:
            display.close()
        if not self.checkpoints or self.checkpoints[-1] != self._checkpoint_path():
            self.save_checkpoint()
        if self.logger is not None:
            self.logger.flush()
        return TrainingSummary(self.agent.global_step, self.episodes_seen, self.recent_return,
                               time.perf_counter() - started, list(self.checkpoints))

    def iterate(self) -> dict[str, float]:
        """One rollout and one update, then whatever logging and checkpointing are due."""
        previous = self.agent.global_step
        rollout = self.last_rollout = self.agent.collect_rollout()
        with _torch_threads(self.config.run.update_threads):
            stats = self.agent.update()
        step = self.agent.global_step
        self.recent_returns.extend(e.episodic_return for e in rollout.episodes)
        self.episodes_seen += len(rollout.episodes)
        self.physics = physics_values(rollout.last_info) or self.physics

        tick = time.perf_counter()
        if self.logger is not None:
            log = self.config.log
            self.logger.rollout(rollout, step)
            self.logger.update(stats, step, self.steps_per_second)
            if self._due(log.probe_every, previous, step, first=True):
                self.logger.probe(step, log.probe_batch)
            if self._due(log.histogram_every, previous, step, first=True):
                self.logger.utility_histograms(step)
        self.timings["logging"] += time.perf_counter() - tick
        if self._due(self.config.run.checkpoint_every, previous, step, first=False):
            self.save_checkpoint()
        return stats

    def _due(self, every: int, previous: int, step: int, first: bool) -> bool:
        """Whether an event every ``every`` steps falls in ``(previous, step]`` (or this is the first
        iteration, or the last)."""
        if every <= 0:
            return False
        return step // every > previous // every or (first and previous == 0) or \
            step >= self.config.run.total_steps

    # ------------------------------------------------------------------ status
    @property
    def steps_per_second(self) -> float:
        started, start_step = self._clock_start
        return (self.agent.global_step - start_step) / max(time.perf_counter() - started, 1e-9)

    @property
    def recent_return(self) -> float:
        return float(np.mean(self.recent_returns)) if self.recent_returns else math.nan

    def status(self) -> str:
        parts = [f"SPS {self.steps_per_second:,.0f}", f"return {self.recent_return:.1f}"]
        parts += [f"{name} {value:.3g}" for name, value in self.physics.items()]
        return " | ".join(parts)

    # ------------------------------------------------------------------ persistence
    def _checkpoint_path(self) -> Path | None:
        return checkpoint_path(self.run_dir, self.agent.global_step) if self.run_dir is not None else None

    def save_checkpoint(self) -> Path | None:
        """Write ``checkpoints/step_<global step>.pt``; a no-op without a run directory."""
        path = self._checkpoint_path()
        if path is None:
            return None
        tick = time.perf_counter()
        save_checkpoint(path, self.state_dict())
        self.checkpoints.append(path)
        self.timings["checkpoint"] += time.perf_counter() - tick
        return path

    def state_dict(self) -> dict[str, Any]:
        return {
            "config": config_to_dict(self.config),
            "global_step": self.agent.global_step,
            "agent": self.agent.state_dict(),
            "env_schedules": schedule_states(self.envs),
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": np.random.get_state(),
            "episodes_seen": self.episodes_seen,
            "recent_returns": list(self.recent_returns),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a `state_dict`. Episodes in progress restart: a simulator's state is not saved."""
        self.agent.load_state_dict(state["agent"])
        self.agent.restart_episodes()
        restore_schedule_states(self.envs, state["env_schedules"])
        torch.set_rng_state(state["torch_rng"])
        np.random.set_state(state["numpy_rng"])
        self.episodes_seen = int(state["episodes_seen"])
        self.recent_returns = deque(state["recent_returns"], maxlen=RECENT_EPISODES)

    def close(self) -> None:
        if self.logger is not None:
            self.logger.close()
        self.envs.close()

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    before = torch.get_num_threads()
    if threads is None or threads == before:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _Progress:
    """A tqdm bar on a terminal; elsewhere (log files, CI) a plain status line every 5% of the run."""

    LINES = 20

    def __init__(self, total: int, initial: int, enabled: bool, bar: bool) -> None:
        self.total, self.enabled = total, enabled
        self.bar = tqdm(total=total, initial=initial, unit="step", unit_scale=True, dynamic_ncols=True,
                        smoothing=0.05) if enabled and bar and sys.stderr.isatty() else None
        self._next_line = initial + total / self.LINES

    def update(self, step: int, status: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(status, refresh=False)
            self.bar.update(min(step, self.total) - self.bar.n)
        elif self.enabled and (step >= self._next_line or step >= self.total):
            done = min(step, self.total)
            line = f"[{done:,}/{self.total:,} steps {100 * done / self.total:3.0f}%] {status}"
            print(line, file=sys.stderr, flush=True)
            while self._next_line <= step:
                self._next_line += self.total / self.LINES

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
