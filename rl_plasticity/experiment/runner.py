"""The trainer: composes the config's vector env and PPO agent, logs to TensorBoard, writes checkpoints.

What it writes into a run directory is laid out in `experiment.run_directory`; a checkpoint holds a
`Trainer.state_dict`.

A `Trainer` built on a run directory that holds a checkpoint resumes it exactly: networks, optimizer,
both CBP states, normalisers, every RNG, each env copy's physics, time limit and schedule position, and
the episodes in progress, so the resumed run ends bit-identical to an uninterrupted one; TensorBoard
curves continue at the checkpoint's step (later points of the interrupted attempt are purged).
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
import warnings
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents import PPO
from envs import get_vector_state, set_vector_state
from envs.thread_pool import available_cpus
from rl_plasticity import tags
from rl_plasticity.experiment.checkpoint import (
    CheckpointError,
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    remove_partial_files,
    save_checkpoint,
)
from rl_plasticity.experiment.config import Config, ConfigError, config_to_dict, config_to_yaml
from rl_plasticity.experiment.controls import ProgressDisplay, StopOnSignals, torch_threads
from rl_plasticity.experiment.environment import env_kwargs, make_vector_env, physics_values
from rl_plasticity.experiment.files import write_text_atomically
from rl_plasticity.experiment.logger import TrainingLogger
from rl_plasticity.experiment.progress import read_progress, write_progress
from rl_plasticity.experiment.resume import (
    AFTER_DIVERGENCE_KEYS,
    changed_keys,
    check_run_dir_config,
    record_config_changes,
    saved_run_config,
)
from rl_plasticity.experiment.run_directory import RunDirectory
from rl_plasticity.experiment.run_lock import RunLock

RECENT_EPISODES = 20
LOSSES_CHECKED = ("policy_loss", "value_loss", "entropy", "approx_kl")

#: torch's own thread count before any run sets one: the cores, or ``OMP_NUM_THREADS`` where that is set
#: (as `compare` sets it to 1 for each of its runs, so that runs side by side do not oversubscribe)
TORCH_DEFAULT_THREADS = torch.get_num_threads()


class TrainingDiverged(RuntimeError):
    """A loss or parameter became NaN or infinite; the run stopped without checkpointing that state."""

    def __init__(self, message: str, step: int) -> None:
        super().__init__(message)
        #: the step of the update that diverged (a value update finished beside the next rollout is
        #: checked one rollout later)
        self.step = step


@dataclass
class TrainingSummary:
    """How a `Trainer.train` call ended."""

    global_step: int
    episodes: int
    recent_return: float  # mean return of the last (up to) 20 episodes; nan if none finished
    seconds: float
    checkpoints: list[Path] = field(default_factory=list)
    stopped_by: str | None = None  # "SIGINT"/"SIGTERM" if a signal stopped the run before total_steps


class Trainer:
    """Trains ``config`` and, if ``run_dir`` is given, logs and checkpoints into it.

    ``train()`` runs to ``run.total_steps``; ``iterate()`` runs one rollout and update. With ``resume``
    (the default) a ``run_dir`` holding checkpoints continues from the newest readable one (`resumed_from`)
    after checking that its config matches (see `resume.changed_keys`). ``state_dict()`` holds everything
    an exact resume needs.
    """

    def __init__(self, config: Config, run_dir: str | Path | None = None, *, resume: bool = True) -> None:
        self.config = config
        self.run_dir = Path(run_dir) if run_dir is not None else None
        env_kwargs(config.env, config.run.seed)  # settings first: a refused config leaves no directory
        self._lock: RunLock | None = None
        created: list[Path] = []
        if self.run_dir is not None:
            created = _make_directories(self.run_dir)
            try:
                # Before anything is read or written: a second process on this directory stops here.
                self._lock = RunLock(self.run_dir).acquire()
            except BaseException:
                _remove_if_empty(created, self.run_dir)
                raise
        try:
            self._build(config, resume)
        except BaseException:
            if self._lock is not None:
                self._lock.release()
            if self.run_dir is not None:
                _remove_if_empty(created, self.run_dir)  # a failed env build leaves no empty run behind
            raise

    def _build(self, config: Config, resume: bool) -> None:
        run = config.run
        if self.run_dir is not None:
            _check_writable(self.run_dir)
            remove_partial_files(self.run_dir)  # a crash mid-write leaves one; it is never a checkpoint
        found = latest_checkpoint(self.run_dir, accept=_finite_state) \
            if self.run_dir is not None and resume else None
        previous = read_progress(self.run_dir) if self.run_dir is not None else None
        if found is None and resume and previous is not None:
            _check_checkpoints_not_lost(self.run_dir, previous)
        # A run that diverged may go on with the remedies its message named.
        diverged_at = (previous or {}).get("diverged_at")
        allowed = AFTER_DIVERGENCE_KEYS if diverged_at is not None else ()
        self.config_changes: list[str] = []
        #: the run length of the checkpoint resumed from (None for a new run)
        self.trained_length: int | None = None
        if found is not None:
            self.trained_length = int(found[1]["config"].get("run", {}).get("total_steps", 0)) or None
            differences = changed_keys(found[1]["config"], config, allowed)
            if differences:
                raise ConfigError(
                    f"{self.run_dir} holds a checkpoint of a different config ({'; '.join(differences)}); "
                    f"resume with the same config, or pass --fresh to start over (the old run is moved "
                    f"aside), or choose another --run-name")
        saved_config = saved_run_config(self.run_dir) if self.run_dir is not None and resume else None
        if self.run_dir is not None and resume:
            # A run killed before its first checkpoint still has its settings on disk.
            check_run_dir_config(self.run_dir, config, allowed)
        if allowed and (found is not None or saved_config is not None):
            step = int(found[1]["global_step"]) if found is not None else 0
            reason = f"resumed after diverging at step {diverged_at:,}" if found is not None else \
                f"started again from step 0 after diverging at step {diverged_at:,} before any checkpoint"
            self.config_changes = record_config_changes(
                self.run_dir, step, found[1]["config"] if found is not None else saved_config, config,
                allowed, reason)
        torch.set_num_threads(run.torch_threads)
        torch.manual_seed(run.seed)
        np.random.seed(run.seed)
        random.seed(run.seed)
        self.envs = make_vector_env(config.env, run.seed)
        try:
            parallel = False if available_cpus() < 2 else run.parallel_networks
            self.agent = PPO(self.envs, config.ppo, config.optimizer, config.cbp,
                             total_steps=run.total_steps, seed=run.seed, parallel_networks=parallel,
                             methods=config.methods)
        except Exception:
            self.envs.close()
            raise
        self._update_threads = run.update_threads or TORCH_DEFAULT_THREADS
        self.overlap_value_update = run.overlap_value_update if run.overlap_value_update is not None \
            else available_cpus() >= 2 and self._update_threads >= 2
        # The step of an update whose value half still runs beside the next rollout (see `iterate`).
        self._deferred_step: int | None = None
        self.recent_returns: deque[float] = deque(maxlen=RECENT_EPISODES)
        self.episodes_seen = 0
        self.physics: dict[str, float] = {}
        self.checkpoints: list[Path] = []
        # Checkpoints already known to be resumable (written here, or resumed from), by path.
        self._resumable: set[Path] = set()
        # Kept until the first checkpoint after a resume, so that a resume cut short may change the
        # remedies again.
        self._diverged_at: int | None = diverged_at if found is not None else None
        self.resumed_from: Path | None = None
        if found is not None:
            self.resumed_from = found[0]
            try:
                self.load_state_dict(found[1])
            except Exception:
                self.envs.close()
                raise
            self.checkpoints.append(found[0])
            self._resumable.add(found[0])
        self.logger: TrainingLogger | None = None
        if self.run_dir is not None and not self.finished:
            # A finished run's record of what it trained is never rewritten (a shorter run.total_steps
            # asked of it is refused by the CLI, an equal or longer one trains on and records it).
            write_text_atomically(RunDirectory(self.run_dir).config_file, config_to_yaml(config))
            # On resume (or a restart after an attempt that died before its first checkpoint),
            # TensorBoard drops the earlier attempt's points after the checkpoint's step (those at that
            # step were flushed before the checkpoint was written, and stay).
            earlier = found is not None or bool(RunDirectory(self.run_dir).event_files())
            purge_step = self.agent.global_step + 1 if earlier else None
            self.logger = TrainingLogger(self.run_dir, self.agent, purge_step=purge_step)
            if found is None:
                self.logger.hyperparameters(config)
        self._clock_start = (time.perf_counter(), self.agent.global_step)
        if self.run_dir is not None and _vector_state(self.envs) is None:
            warnings.warn(f"{config.env.id} with env.vectorization={config.env.vectorization} cannot be "
                          f"checkpointed exactly: a resume restarts its episodes. Use a MuJoCo task with "
                          f"the sync or batched vector env for exact resumes", stacklevel=3)

    @property
    def finished(self) -> bool:
        """Whether the agent already stands at (or past) ``run.total_steps``: nothing is left to train."""
        return self.agent.global_step >= self.config.run.total_steps

    # ------------------------------------------------------------------ the loop
    def train(self, progress: bool = True) -> TrainingSummary:
        """Train until ``run.total_steps``.

        SIGTERM and a first Ctrl-C stop at the end of the current update with a checkpoint (the summary's
        ``stopped_by`` names the signal); a second Ctrl-C interrupts at once, keeping the last checkpoint.
        A NaN or inf raises `TrainingDiverged`, keeping the last good checkpoint.
        """
        total = self.config.run.total_steps
        started = time.perf_counter()
        self._clock_start = (started, self.agent.global_step)
        display = ProgressDisplay(total, self.agent.global_step, progress, self.config.log.progress_bar)
        status, completed = "failed", False
        try:
            with StopOnSignals() as stop:
                while self.agent.global_step < total and stop.requested is None:
                    self.iterate()
                    display.update(self.agent.global_step, self.status())
                self.finish_deferred_update()
            if self.checkpoints[-1:] != [self._checkpoint_path()]:
                self.save_checkpoint()
            status = "finished" if stop.requested is None else "stopped"
            completed = True
        except KeyboardInterrupt:
            status = "stopped"
            raise
        except TrainingDiverged as error:
            self._diverged_at = error.step
            raise
        finally:
            display.close()
            self._record_end(status, raise_errors=completed)
        return TrainingSummary(self.agent.global_step, self.episodes_seen, self.recent_return,
                               time.perf_counter() - started, list(self.checkpoints), stop.requested)

    def _record_end(self, status: str, raise_errors: bool) -> None:
        """The run's final status and events. While another error stops the run, a failure to write
        them (the same full disk, most often) must not hide that error."""
        try:
            self._write_progress(status)
            if self.logger is not None:
                self.logger.flush()
        except OSError:
            if raise_errors:
                raise

    def iterate(self) -> dict[str, float]:
        """One rollout and one update, then whatever logging and checkpointing are due.

        With ``run.overlap_value_update`` the value network's half of the update may still run when this
        returns (the next rollout needs only the policy); its statistics are then checked and logged,
        at the update's step, once the next rollout has waited for it. Iterations that checkpoint,
        probe, log histograms, reset at a physics change or end the run update both halves at once.
        """
        previous = self.agent.global_step
        rollout = self.agent.collect_rollout()
        self.finish_deferred_update()
        step = self.agent.global_step
        log = self.config.log
        physics = physics_values(rollout.last_info) or self.physics
        reset_now = bool(self.physics) and physics != self.physics and self.config.methods.reset.at_change
        probe_due = self._due(log.probe_every, previous, step, first=True)
        histograms_due = self._due(log.histogram_every, previous, step, first=True)
        checkpoint_due = self._due(self.config.run.checkpoint_every, previous, step, first=False)
        defer = self.overlap_value_update and self.agent.can_defer_value and not (
            reset_now or checkpoint_due or step >= self.config.run.total_steps
            or (self.logger is not None and (probe_due or histograms_due)))
        with torch_threads(self._update_threads):
            stats = self.agent.update(defer_value=defer)
        networks = ("policy",) if defer else ("policy", "value")
        self._check_finite(stats, step, networks)
        self.recent_returns.extend(e.episodic_return for e in rollout.episodes)
        self.episodes_seen += len(rollout.episodes)
        if reset_now:
            for method in self.agent.methods.get("reset", {}).values():
                method.reset_now()
        self.physics = physics

        if self.logger is not None:
            self.logger.rollout(rollout, step)
            self.logger.update(stats, step, networks, self.steps_per_second)
            if probe_due:
                self.logger.probe(step, log.probe_batch)
            if histograms_due:
                self.logger.utility_histograms(step)
        if defer:
            self._deferred_step = step
        if checkpoint_due:
            self.save_checkpoint()
        self._write_progress("running")
        return stats

    def finish_deferred_update(self) -> dict[str, float]:
        """Wait for the value half of the last update if it was left running, then check and log its
        statistics (at that update's step) and return them (``{}`` if none was pending)."""
        stats = self.agent.finish_update()
        step, self._deferred_step = self._deferred_step, None
        if step is not None:
            self._check_finite(stats, step, ("value",))
            if self.logger is not None:
                self.logger.update(stats, step, ("value",))
        return stats

    def _due(self, every: int, previous: int, step: int, first: bool) -> bool:
        """Whether an event every ``every`` steps falls in ``(previous, step]`` (or this is the first
        iteration, or the last)."""
        if every <= 0:
            return False
        return step // every > previous // every or (first and previous == 0) or \
            step >= self.config.run.total_steps

    def _check_finite(self, stats: dict[str, float], step: int, networks: tuple[str, ...]) -> None:
        bad = [f"{tags.loss(name)} = {stats[name]}" for name in LOSSES_CHECKED
               if name in stats and not math.isfinite(stats[name])]
        modules = {"policy": self.agent.policy, "value": self.agent.value}
        for network in networks:
            bad += [f"{network} parameter {name}" for name, parameter in modules[network].named_parameters()
                    if not torch.isfinite(parameter).all()]
        # Adam's moments can overflow while the parameters stay finite; a checkpoint of them would
        # diverge again on resume.
        optimizers = self.agent.optimizer.by_network
        if not bad and not all(_finite_tensors(optimizers[network].state_dict()) for network in networks):
            bad.append("optimizer state (Adam moments)")
        if bad:
            kept = f"the last good checkpoint is {self.checkpoints[-1]}" if self.checkpoints else \
                "no checkpoint had been written yet"
            raise TrainingDiverged(
                f"training diverged at step {step:,}: non-finite {', '.join(bad[:4])}"
                f"{' ...' if len(bad) > 4 else ''}; the run stopped and {kept}. Run the same command with "
                f"a lower optimizer.lr or a ppo.max_grad_norm (e.g. --set ppo.max_grad_norm=0.5) to resume "
                f"from it (the change is recorded in config_changes.jsonl), or check the env's "
                f"observations and rewards", step)

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

    def _write_progress(self, status: str) -> None:
        if self.run_dir is None:
            return
        recent = self.recent_return
        write_progress(self.run_dir, status=status, step=self.agent.global_step,
                       total_steps=self.config.run.total_steps, sps=self.steps_per_second,
                       episodic_return=None if math.isnan(recent) else recent,
                       physics=self.physics, diverged_at=self._diverged_at,
                       last_checkpoint=_step_of(self.checkpoints[-1]) if self.checkpoints else None)

    # ------------------------------------------------------------------ persistence
    def _checkpoint_path(self) -> Path | None:
        return checkpoint_path(self.run_dir, self.agent.global_step) if self.run_dir is not None else None

    def save_checkpoint(self) -> Path | None:
        """Write ``checkpoints/step_<global step>.pt`` atomically, then drop the oldest beyond
        ``run.keep_checkpoints``; a no-op without a run directory."""
        path = self._checkpoint_path()
        if path is None:
            return None
        if self.logger is not None:
            self.logger.flush()  # the checkpoint's step is then complete in TensorBoard too
        save_checkpoint(path, self.state_dict())  # its state was checked finite after the update
        self._resumable.add(path)
        self._diverged_at = None
        if self.checkpoints[-1:] != [path]:
            self.checkpoints.append(path)
        removed = set(prune_checkpoints(self.run_dir, self.config.run.keep_checkpoints,
                                        resumable=self._is_resumable))
        self.checkpoints = [p for p in self.checkpoints if p not in removed]
        return path

    def _is_resumable(self, path: Path) -> bool:
        """Whether a verified checkpoint on disk can be resumed from (its state is finite)."""
        if path not in self._resumable:
            try:
                if _finite_state(load_checkpoint(path)) is not None:
                    return False
            except (CheckpointError, OSError):
                return False
            self._resumable.add(path)
        return True

    def state_dict(self) -> dict[str, Any]:
        return {
            "config": config_to_dict(self.config),
            "global_step": self.agent.global_step,
            "agent": self.agent.state_dict(),
            "envs": _vector_state(self.envs),
            "python_rng": random.getstate(),
            "numpy_rng": np.random.get_state(),
            "torch_rng": torch.get_rng_state(),
            "episodes_seen": self.episodes_seen,
            "recent_returns": list(self.recent_returns),
            "physics": dict(self.physics),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a `state_dict` into this trainer's freshly built agent and envs."""
        self.agent.load_state_dict(state["agent"])
        if state["envs"] is not None:
            set_vector_state(self.envs, state["envs"])
        else:  # an async vector env cannot be captured: its episodes restart
            self.agent.restart_episodes()
        random.setstate(state["python_rng"])
        np.random.set_state(state["numpy_rng"])
        torch.set_rng_state(state["torch_rng"])
        self.episodes_seen = int(state["episodes_seen"])
        self.recent_returns = deque(state["recent_returns"], maxlen=RECENT_EPISODES)
        self.physics = dict(state["physics"])

    def close(self) -> None:
        # Nothing may still write to the networks once the run is closed; an error of that update was
        # reported already, or the run is stopping for another.
        with contextlib.suppress(Exception):
            self.agent.finish_update()
        try:
            if self.logger is not None:
                self.logger.close()
            self.envs.close()
            self.agent.network_threads.close()
        finally:
            if self._lock is not None:
                self._lock.release()

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        try:
            self.close()
        except OSError:
            if exc_type is None:  # else the error that stopped the run is the one to report
                raise


def _make_directories(run_dir: Path) -> list[Path]:
    """``mkdir -p run_dir``; returns the directories it created, deepest first."""
    missing = []
    for folder in (run_dir, *run_dir.parents):
        if folder.exists():
            break
        missing.append(folder)
    run_dir.mkdir(parents=True, exist_ok=True)
    return missing


def _remove_if_empty(created: list[Path], run_dir: Path) -> None:
    """Undo `_make_directories` for a run that never started: its lock file and the folders it made,
    as long as nothing else was written into them."""
    if not created:
        return
    with contextlib.suppress(OSError):
        RunDirectory(run_dir).lock_file.unlink(missing_ok=True)
    for folder in created:
        try:
            folder.rmdir()  # only if empty
        except OSError:
            return


def _check_checkpoints_not_lost(run_dir: Path, progress: dict[str, Any]) -> None:
    """A run whose progress record names a checkpoint, or says it finished, had one: if none is on disk
    the checkpoints were deleted or moved, and starting again from step 0 would replace the run."""
    step = progress.get("last_checkpoint")
    if step is None and progress.get("status") == "finished":
        step = progress.get("step")
    if step is None:
        return
    folder = RunDirectory(run_dir).checkpoints
    raise CheckpointError(
        f"{run_dir} had a checkpoint at step {int(step):,} (progress.json) but {folder} holds none: it was "
        f"deleted or moved. Put the checkpoints back to resume, or pass --fresh to start over (the old run "
        f"is moved aside)")


def _check_writable(run_dir: Path) -> None:
    """Raise the OSError of a run directory that cannot take new files, before anything is written
    (TensorBoard's writer would otherwise fail on its own thread, after config.yaml)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    probe = run_dir / f".write-probe-{os.getpid()}"
    try:
        probe.write_bytes(b"")
    except OSError as error:
        error.filename = str(run_dir)
        raise
    probe.unlink()


def _step_of(checkpoint: Path) -> int | None:
    name = checkpoint.name
    return int(name[len("step_"):-len(".pt")]) if name.startswith("step_") and name.endswith(".pt") else None


def _finite_tensors(value: Any) -> bool:
    """Whether every floating-point tensor or array inside ``value`` (nested dicts, lists) is finite."""
    if isinstance(value, torch.Tensor):
        return not value.is_floating_point() or bool(torch.isfinite(value).all())
    if isinstance(value, np.ndarray):
        return value.dtype.kind != "f" or bool(np.isfinite(value).all())
    if isinstance(value, dict):
        return all(_finite_tensors(v) for v in value.values())
    if isinstance(value, list | tuple):
        return all(_finite_tensors(v) for v in value)
    return True


def _finite_state(state: dict[str, Any]) -> str | None:
    """Why a checkpoint's networks or optimizer state cannot be resumed from (non-finite), or None."""
    agent = state.get("agent", {})
    for part in ("policy", "value", "optimizer"):
        if not _finite_tensors(agent.get(part)):
            return f"its {part} state holds NaN or inf"
    return None


def _vector_state(vector_env: Any) -> dict[str, Any] | None:
    """The envs' full state; None (a resume then restarts their episodes) where it cannot be captured:
    async vector envs and non-MuJoCo tasks."""
    try:
        return get_vector_state(vector_env)
    except TypeError:
        return None
