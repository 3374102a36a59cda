"""What a resumed run may change, and starting over without losing the old run."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rl_plasticity.experiment.config import Config, config_to_dict

#: Keys a resume may change: how long to run, how often to checkpoint, threads, logging and the env
#: backend (both write the same state and give the same transitions). Everything else shapes the
#: training itself, so a checkpoint only continues under the config that wrote it.
#: (A longer ``run.total_steps`` extends a run; with ``optimizer.anneal_lr`` the learning rate then
#: decays over the new length from where it is.)
RESUMABLE_KEYS = ("run.total_steps", "run.checkpoint_every", "run.keep_checkpoints", "run.torch_threads",
                  "run.update_threads", "run.parallel_networks", "log.", "env.backend")


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and key != "kwargs":
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def changed_keys(saved: dict[str, Any], config: Config) -> list[str]:
    """``"key: saved -> now"`` for every key that differs between a checkpoint's config and ``config``,
    ignoring `RESUMABLE_KEYS`."""
    before, after = _flatten(saved), _flatten(config_to_dict(config))
    differences = []
    for key in sorted(before.keys() | after.keys()):
        if key.startswith(RESUMABLE_KEYS) or before.get(key) == after.get(key):
            continue
        differences.append(f"{key}: {before.get(key, '(absent)')!r} -> {after.get(key, '(absent)')!r}")
    return differences


def move_aside(run_dir: str | Path) -> Path:
    """Rename ``run_dir`` to ``<run_dir>.old-<timestamp>`` (never deleting it); returns the new path."""
    run_dir = Path(run_dir)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = run_dir.with_name(f"{run_dir.name}.old-{stamp}")
    suffix = 1
    while target.exists():
        suffix += 1
        target = run_dir.with_name(f"{run_dir.name}.old-{stamp}-{suffix}")
    run_dir.rename(target)
    return target
