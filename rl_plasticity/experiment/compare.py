"""`rl-plasticity compare`: every config x seed, on this machine's cores or on a Ray cluster.

Each run is one `rl-plasticity train` process writing ``LOGDIR/<config name>/seed<k>/``, so that
``tensorboard --logdir LOGDIR`` overlays them all and ``rl-plasticity report LOGDIR`` compares them. A
run whose directory says it finished is skipped when the command is repeated; an unfinished one is
handed to `train` again, which resumes it from its last checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from rl_plasticity.experiment.files import path_problem, write_text_atomically
from rl_plasticity.experiment.run_directory import RunDirectory, run_name, seed_folder

if TYPE_CHECKING:
    from rl_plasticity.experiment.config import Config, Override

USER_ERROR_EXIT = 2  # `rl-plasticity train`'s exit code for a bad config: retrying cannot help


class CompareError(ValueError):
    """A comparison that cannot start as asked (clashing names, no configs, bad worker count)."""


@dataclass(frozen=True)
class RunSpec:
    """One cell of the comparison: a config file trained with one seed."""

    config_path: Path
    config_name: str
    seed: int
    logdir: Path
    total_steps: int | None = None
    overrides: tuple[str, ...] = ()

    @property
    def run(self) -> RunDirectory:
        return RunDirectory.under(self.logdir, self.config_name, self.seed)

    @property
    def run_dir(self) -> Path:
        return self.run.path

    def command(self) -> list[str]:
        command = [sys.executable, "-m", "rl_plasticity", "train", str(self.config_path),
                   "--seed", str(self.seed), "--logdir", str(self.logdir / self.config_name),
                   "--run-name", seed_folder(self.seed), "--quiet"]
        if self.total_steps is not None:
            command += ["--total-steps", str(self.total_steps)]
        for override in self.overrides:
            command += ["--set", override]
        return command

    def override_list(self) -> list[Override]:
        """What `train` applies on top of the file: ``--set`` overrides, the seed, the run length (each
        named by the flag the user typed)."""
        overrides: list[Override] = [*self.overrides,
                                     (f"--first-seed/--seeds (seed {self.seed})", f"run.seed={self.seed}")]
        if self.total_steps is not None:
            overrides.append((f"--total-steps {self.total_steps}", f"run.total_steps={self.total_steps}"))
        return overrides

    def resolved_config(self) -> Config:
        from rl_plasticity.experiment.config import load_config

        return load_config(self.config_path, self.override_list())

    def finished_length(self) -> int | None:
        """The ``run.total_steps`` a finished run was trained to; None if it has not finished."""
        from rl_plasticity.experiment.resume import saved_run_config

        progress = self.run.progress()
        if progress is None or progress.get("status") != "finished":
            return None
        saved = saved_run_config(self.run_dir) or {}
        return int(saved.get("run", {}).get("total_steps", progress.get("total_steps", 0)))

    def is_finished(self) -> bool:
        """Finished at the asked length; a shorter finished run is extended (`check_existing_runs`
        refuses the other cases)."""
        length = self.finished_length()
        return length is not None and length >= self.resolved_config().run.total_steps


def run_matrix(
    config_paths: Sequence[str | Path],
    seeds: int,
    logdir: str | Path,
    total_steps: int | None = None,
    overrides: Sequence[str] = (),
    first_seed: int = 0,
) -> list[RunSpec]:
    """The runs of a comparison, config-major, with the config names they are stored under."""
    if not config_paths:
        raise CompareError("no configs given; pass one or more YAML files, e.g. configs/quickstart/*.yaml")
    if seeds < 1:
        raise CompareError(f"--seeds must be at least 1, got {seeds}")
    paths = [Path(p) for p in config_paths]
    for path in paths:
        problem = path_problem(path, "file")
        if problem is not None:
            raise CompareError(f"config file {str(path)!r} {problem}; pass YAML config files, e.g. "
                               f"configs/quickstart/ppo.yaml")
    names: dict[str, Path] = {}
    for path in paths:
        name = path.stem
        if name in names:
            raise CompareError(
                f"configs {str(names[name])!r} and {str(path)!r} would both be stored as {name!r} under "
                f"the log directory; rename one of the files or compare them into different --logdir"
            )
        names[name] = path
    logdir = Path(logdir)
    return [
        RunSpec(path, path.stem, seed, logdir, total_steps, tuple(overrides))
        for path in paths for seed in range(first_seed, first_seed + seeds)
    ]


def validate_configs(specs: Sequence[RunSpec]) -> None:
    """Load every config with its overrides and check its env id, so that a mistake fails once, here,
    instead of in every run (raises `ConfigError`)."""
    from rl_plasticity.experiment.config import load_config
    from rl_plasticity.experiment.environment import env_kwargs

    for spec in {s.config_path: s for s in specs}.values():
        config = load_config(spec.config_path, spec.override_list())
        env_kwargs(config.env, spec.seed)


def check_existing_runs(specs: Sequence[RunSpec]) -> None:
    """Refuse, before anything starts, every run directory that holds a run of other settings, and every
    finished run longer than asked (its results would stand for settings nobody asked for). A finished
    run shorter than asked is extended by `train`; one of the same length is skipped."""
    from rl_plasticity.experiment.resume import run_dir_differences
    from rl_plasticity.experiment.run_lock import holder

    busy = [f"{spec.run_dir} (process {pid or '?'})" for spec in specs
            if (pid := holder(spec.run_dir)) is not None]
    if busy:
        raise CompareError(f"{len(busy)} of these runs are being trained by another process: "
                           f"{'; '.join(busy)}; wait for it to finish (its compare or train command), or "
                           f"compare into another --logdir")
    problems = []
    for spec in specs:
        config = spec.resolved_config()
        differences = run_dir_differences(spec.run_dir, config)
        if differences:
            problems.append(f"{spec.run_dir} ({'; '.join(differences)})")
            continue
        length = spec.finished_length()
        if length is not None and length > config.run.total_steps:
            problems.append(f"{spec.run_dir} (finished with run.total_steps {length:,}, more than the "
                            f"{config.run.total_steps:,} asked)")
    if problems:
        raise CompareError("the log directory already holds runs under other settings: "
                           + "; ".join(problems) + ". Pass --fresh to move those runs aside and train them "
                           "again, or compare into another --logdir")


def move_existing_runs_aside(specs: Sequence[RunSpec], stream: TextIO | None = None) -> None:
    """`compare --fresh`: every run directory of the matrix that exists is renamed, never deleted."""
    from rl_plasticity.experiment.resume import move_aside

    stream = stream or sys.stderr
    for spec in specs:
        if spec.run_dir.exists():
            stream.write(f"--fresh: moved {spec.run_dir} to {move_aside(spec.run_dir)}\n")


@dataclass
class _Active:
    spec: RunSpec
    process: subprocess.Popen
    log: object
    started: float = field(default_factory=time.monotonic)


def _format_status(specs: Sequence[RunSpec], active: dict[RunSpec, _Active], done: dict[RunSpec, str]) -> str:
    lines = []
    for spec in specs:
        label = run_name(spec.config_name, spec.seed)
        if spec in done:
            lines.append(f"  {label:32s} {done[spec]}")
            continue
        progress = spec.run.progress() if spec in active else None
        if progress is None:
            lines.append(f"  {label:32s} {'starting' if spec in active else 'waiting'}")
            continue
        step, total = progress.get("step", 0), progress.get("total_steps") or 0
        sps = progress.get("sps") or 0.0
        ret = progress.get("episodic_return")
        eta = (total - step) / sps if sps > 0 else float("nan")
        ret_text = f"{ret:9.1f}" if isinstance(ret, (int, float)) else "      n/a"
        eta_text = f"{eta / 60:6.1f} min" if eta == eta else "     n/a"
        lines.append(f"  {label:32s} {step:>10,d}/{total:<10,d} return {ret_text}  ETA {eta_text}")
    return "\n".join(lines)


def _threads_per_run(workers: int) -> str:
    """Each child's share of the cores: one thread when the children fill them (more would oversubscribe),
    more when fewer run at once, so that a lone run's update uses the idle core and overlaps its value
    network's update with the next rollout, as `rl-plasticity train` does (bit-identical either way)."""
    from envs.thread_pool import available_cpus  # here: the other commands need not import the envs

    return str(max(1, available_cpus() // workers))


def run_local(specs: Sequence[RunSpec], workers: int | None = None, refresh: float | None = None,
              stream: TextIO | None = None, retries: int = 1) -> dict[str, list[str]]:
    """Runs the specs as child processes, ``workers`` at a time (default: one per core, at most one per
    run), with a table of their progress redrawn every ``refresh`` seconds (default 2 on a terminal, 30
    in a log). A run that crashes is started again up to ``retries`` times and resumes from its last
    checkpoint (a user error, exit code 2, is not retried). Ctrl-C stops every child cleanly (each
    checkpoints at its next rollout boundary) and returns.
    """
    stream = stream or sys.stderr  # looked up now: a redirected stderr counts
    if workers is not None and workers < 1:
        raise CompareError(f"--workers must be at least 1, got {workers}")
    workers = workers or max(1, min(os.cpu_count() or 1, len(specs)))
    attempts: dict[RunSpec, int] = {}
    pending = [s for s in specs if not s.is_finished()]
    done: dict[RunSpec, str] = {s: "finished earlier: skipped" for s in specs if s not in pending}
    active: dict[RunSpec, _Active] = {}
    outcome: dict[str, list[str]] = {"finished": [], "failed": [], "skipped": [], "interrupted": []}
    outcome["skipped"] = [str(s.run_dir) for s in done]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS") or _threads_per_run(workers)}
    interactive = stream.isatty()
    if refresh is None:  # a live table on a terminal; in a log file, a snapshot every half minute
        refresh = 2.0 if interactive else 30.0
    last_drawn = 0.0
    previous_sigterm = None
    if threading.current_thread() is threading.main_thread():
        previous_sigterm = signal.signal(signal.SIGTERM, _interrupt)
    try:
        while pending or active:
            while pending and len(active) < workers:
                spec = pending.pop(0)
                spec.run_dir.mkdir(parents=True, exist_ok=True)
                log = spec.run.train_log.open("a")
                process = subprocess.Popen(spec.command(), stdout=log, stderr=subprocess.STDOUT, env=env,
                                           start_new_session=True)
                active[spec] = _Active(spec, process, log)
            for spec, entry in list(active.items()):
                code = entry.process.poll()
                if code is None:
                    continue
                entry.log.close()
                del active[spec]
                attempts[spec] = attempts.get(spec, 0) + 1
                if code == 0:
                    done[spec] = "finished"
                    outcome["finished"].append(str(spec.run_dir))
                elif code != USER_ERROR_EXIT and attempts[spec] <= retries:
                    pending.insert(0, spec)  # `train` resumes it from its last checkpoint
                else:
                    done[spec] = f"FAILED (exit {code}): see {spec.run.train_log}"
                    outcome["failed"].append(str(spec.run_dir))
            now = time.monotonic()
            if now - last_drawn >= refresh or not (pending or active):
                table = _format_status(specs, active, done)
                if interactive:
                    stream.write("\x1b[H\x1b[2J" + "rl-plasticity compare\n" + table + "\n")
                else:
                    stream.write(table + "\n\n")
                stream.flush()
                last_drawn = now
            time.sleep(0.2)
    except KeyboardInterrupt:
        stream.write("\nstopping: every running training saves a checkpoint and exits...\n")
        for entry in active.values():
            entry.process.send_signal(signal.SIGINT)
        for spec, entry in active.items():
            try:
                entry.process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                entry.process.kill()
            entry.log.close()
            outcome["interrupted"].append(str(spec.run_dir))
        stream.write("stopped; run the same command again to continue where the runs left off\n")
    finally:
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)
    return outcome


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # a scheduler's SIGTERM stops the runs as cleanly as Ctrl-C


def write_manifest(specs: Sequence[RunSpec], logdir: Path) -> None:
    """Records what the comparison holds, so a report can name the configs and seeds it expects."""
    manifest = [{"config": s.config_name, "config_path": str(s.config_path), "seed": s.seed,
                 "run_dir": str(s.run_dir)} for s in specs]
    logdir.mkdir(parents=True, exist_ok=True)
    write_text_atomically(logdir / "compare.json", json.dumps(manifest, indent=2))


__all__ = ["CompareError", "RunSpec", "check_existing_runs", "move_existing_runs_aside",
           "run_local", "run_matrix", "validate_configs", "write_manifest"]
