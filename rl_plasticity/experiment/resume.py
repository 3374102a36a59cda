"""What a resumed run may change, and starting over without losing the old run."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import yaml

from agents.settings import PRESETS
from rl_plasticity.experiment.config import (
    Config,
    ConfigError,
    build_config,
    config_to_dict,
)
from rl_plasticity.experiment.run_directory import RunDirectory
from rl_plasticity.experiment.yaml_text import DuplicateKeyError, describe_yaml_error, read_yaml

#: Keys a resume may change: how long to run, how often to checkpoint, threads, logging and the env
#: backend (both write the same state and give the same transitions). Everything else shapes the
#: training itself, so a checkpoint only continues under the config that wrote it.
#: (A longer ``run.total_steps`` extends a run; with ``optimizer.anneal_lr`` the learning rate then
#: decays over the new length from where it is.)
RESUMABLE_KEYS = ("run.total_steps", "run.checkpoint_every", "run.keep_checkpoints", "run.torch_threads",
                  "run.update_threads", "run.parallel_networks", "run.overlap_value_update", "log.",
                  "env.backend")


def flatten_config(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A config as ``{"section.key": value}`` (``env.kwargs`` stays one value)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and key != "kwargs":
            flat.update(flatten_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


#: What a divergence message recommends; a resume after a divergence may change these (and records it).
AFTER_DIVERGENCE_KEYS = ("optimizer.lr", "ppo.max_grad_norm")


def changed_keys(saved: dict[str, Any], config: Config, also_allowed: tuple[str, ...] = ()) -> list[str]:
    """``"key: saved -> now"`` for every key that differs between a checkpoint's config and ``config``,
    ignoring `RESUMABLE_KEYS` and ``also_allowed``. A key the saved config lacks (added by a later
    version) counts as its default under the saved preset: the run was trained with that behaviour."""
    before, after = flatten_config(saved), flatten_config(config_to_dict(config))
    preset = saved.get("preset") if saved.get("preset") in PRESETS else "dohare"
    defaults = flatten_config(config_to_dict(build_config([("defaults", {"preset": preset})])))
    before = {**{k: v for k, v in defaults.items() if k not in before}, **before}
    differences = []
    for key in sorted(before.keys() | after.keys()):
        if key.startswith(RESUMABLE_KEYS + also_allowed) or before.get(key) == after.get(key):
            continue
        differences.append(f"{key}: {before.get(key, '(absent)')!r} -> {after.get(key, '(absent)')!r}")
    return differences


def saved_run_config(run_dir: str | Path) -> dict[str, Any] | None:
    """The resolved config a run directory was started with (its ``config.yaml``), or None if it has
    none; a file that cannot be read as a config is an error, not a fresh start."""
    path = RunDirectory(run_dir).config_file
    if not path.exists():
        return None
    try:
        saved = read_yaml(path.read_text(), str(path))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, DuplicateKeyError) as error:
        reason = describe_yaml_error(error) if isinstance(error, yaml.YAMLError) else str(error)
        raise ConfigError(f"{path} cannot be read ({reason}); the run's settings are unknown: pass "
                          f"--fresh to start over (the old run is moved aside) or choose another "
                          f"--run-name") from None
    if not isinstance(saved, dict):
        raise ConfigError(f"{path} does not hold a config; pass --fresh to start over (the old run is moved "
                          f"aside) or choose another --run-name")
    return saved


def run_dir_differences(run_dir: str | Path, config: Config, also_allowed: tuple[str, ...] = ()) -> list[str]:
    """`changed_keys` between the run directory's ``config.yaml`` and ``config`` (none if it has none)."""
    saved = saved_run_config(run_dir)
    return [] if saved is None else changed_keys(saved, config, also_allowed)


def check_run_dir_config(run_dir: str | Path, config: Config, also_allowed: tuple[str, ...] = ()) -> None:
    """Refuse to continue a run directory under settings other than those it was started with, whether
    or not it holds a checkpoint yet (`RESUMABLE_KEYS` and ``also_allowed`` may change)."""
    differences = run_dir_differences(run_dir, config, also_allowed)
    if differences:
        raise ConfigError(
            f"{run_dir} holds a run of a different config ({'; '.join(differences)}); continue it with the "
            f"same config, or pass --fresh to start over (the old run is moved aside), or choose another "
            f"--run-name / --logdir")


def record_config_changes(run_dir: str | Path, step: int, saved: dict[str, Any], config: Config,
                          keys: tuple[str, ...], reason: str) -> list[str]:
    """Append ``{"step", "reason", "changes"}`` to ``RUN_DIR/config_changes.jsonl`` for the ``keys``
    whose values differ between ``saved`` and ``config``; returns the ``"key: old -> new"`` lines."""
    before, after = flatten_config(saved), flatten_config(config_to_dict(config))
    changes = [f"{key}: {before.get(key)!r} -> {after.get(key)!r}" for key in sorted(after)
               if key.startswith(keys) and before.get(key) != after.get(key)]
    if changes:
        with RunDirectory(run_dir).config_changes_file.open("a") as handle:
            handle.write(json.dumps({"step": step, "reason": reason, "changes": changes}) + "\n")
    return changes


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
