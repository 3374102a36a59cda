"""The Ray backend of `rl-plasticity compare`: one Ray Tune trial per config x seed.

Each trial runs the same `rl-plasticity train` command the local backend runs, so a trial that dies
is retried by Tune (``max_failures``) and the retry resumes the run from its last checkpoint in the run
directory. On a multi-node cluster ``LOGDIR`` must be storage every node sees (NFS, a shared volume):
that is where the TensorBoard files and checkpoints live; Tune's own trial records go to
``storage_path``.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rl_plasticity.experiment.compare import CompareError, RunSpec


def _spec_to_dict(spec: RunSpec) -> dict[str, Any]:
    data = dataclasses.asdict(spec)
    data["config_path"] = str(Path(spec.config_path).resolve())
    data["logdir"] = str(Path(spec.logdir).resolve())
    data["overrides"] = list(spec.overrides)
    return data


def _spec_from_dict(data: dict[str, Any]) -> RunSpec:
    return RunSpec(Path(data["config_path"]), data["config_name"], int(data["seed"]), Path(data["logdir"]),
                   data["total_steps"], tuple(data["overrides"]))


def train_trial(config: dict[str, Any]) -> None:
    """Tune's function trainable: trains one run to the end (resuming if it has a checkpoint)."""
    from ray import tune

    spec = _spec_from_dict(config["run"])
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with spec.run.train_log.open("a") as log:
        code = subprocess.run(spec.command(), stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    if code != 0:
        # Raising makes Tune count a failure and retry the trial up to max_failures times.
        raise RuntimeError(f"training {spec.run_dir} exited with code {code}; see {spec.run.train_log}")
    progress = spec.run.progress() or {}
    tune.report({"step": progress.get("step", 0), "episodic_return": progress.get("episodic_return"),
                 "run_dir": str(spec.run_dir)})


def connect(address: str | None, num_cpus: int | None = None) -> None:
    """Connects to the Ray cluster at ``address``, or starts a local Ray instance when it is None."""
    try:
        import ray
    except ImportError:
        raise CompareError(
            "the Ray backend needs Ray: pip install '.[ray]' (or use the default --backend local)"
        ) from None
    if ray.is_initialized():
        return
    if address is not None:
        check_reachable(address)
    try:
        if address is None:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise CompareError(
            f"cannot reach a Ray cluster at {address!r} ({error}); start one with `ray start --head` and "
            f"pass the address it prints, or omit --ray-address to start a local Ray instance"
        ) from None


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast on a ``host:port`` nobody listens on (ray.init would retry for minutes)."""
    if address == "auto" or address.startswith("ray://") and ":" not in address[6:]:
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout).close()
    except (OSError, ValueError) as error:
        raise CompareError(
            f"cannot reach a Ray cluster at {address!r} ({error}); start one with `ray start --head` and "
            f"pass the address it prints (e.g. 127.0.0.1:6379), or omit --ray-address to start a local "
            f"Ray instance"
        ) from None


def run_ray(
    specs: Sequence[RunSpec],
    address: str | None = None,
    storage_path: str | Path | None = None,
    max_concurrent: int | None = None,
    max_failures: int = 2,
    cpus_per_run: float = 1.0,
) -> dict[str, list[str]]:
    """Runs every unfinished spec as a Ray Tune trial; returns run dirs by outcome."""
    pending = [s for s in specs if not s.is_finished()]
    outcome: dict[str, list[str]] = {"finished": [], "failed": [],
                                     "skipped": [str(s.run_dir) for s in specs if s not in pending]}
    if not pending:
        return outcome
    connect(address, num_cpus=max_concurrent if address is None else None)
    from ray import tune

    storage = Path(storage_path or Path(pending[0].logdir) / "ray_results").resolve()
    tuner = tune.Tuner(
        tune.with_resources(train_trial, {"cpu": cpus_per_run}),
        param_space={"run": tune.grid_search([_spec_to_dict(s) for s in pending])},
        tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent),
        run_config=tune.RunConfig(
            name="rl-plasticity-compare",
            storage_path=str(storage),
            failure_config=tune.FailureConfig(max_failures=max_failures),
            verbose=1,
        ),
    )
    results = tuner.fit()
    for result in results:
        run_dir = str(_spec_from_dict(result.config["run"]).run_dir)
        outcome["failed" if result.error else "finished"].append(run_dir)
    return outcome
