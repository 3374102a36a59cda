"""One run's directory, the single definition of what it holds and where.

    RUN_DIR/
        config.yaml                 the resolved config the run was started with
        progress.json               live status: running, finished, stopped or failed
        checkpoints/step_<N>.pt     verified checkpoints (`experiment.checkpoint`)
        config_changes.jsonl        keys a resume after a divergence changed
        train.log                   stdout and stderr of a run started by `compare`
        .lock                       held by the process training the run (`experiment.run_lock`)
        events.out.tfevents.*       TensorBoard events (`rl_plasticity.tags`)

`compare` lays runs out as ``LOGDIR/<config name>/seed<N>``; `train` does the same by default.
Train, compare, report, resume and the Ray backend all reach these paths through `RunDirectory`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EVENT_FILE_PATTERN = "events.out.tfevents.*"
_SEED_FOLDER = re.compile(r"^seed(\d+)$")


def run_name(config_name: str, seed: int) -> str:
    """The run's path under a logdir: ``<config name>/seed<N>``."""
    return f"{config_name}/{seed_folder(seed)}"


def seed_folder(seed: int) -> str:
    return f"seed{seed}"


def seed_of(folder_name: str) -> int | None:
    """The seed a ``seed<N>`` folder holds; None for a folder named otherwise."""
    match = _SEED_FOLDER.match(folder_name)
    return int(match.group(1)) if match else None


class _Entry:
    """A file or folder of the run directory, read as an attribute of a `RunDirectory`."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, run: RunDirectory | None, owner: type | None = None) -> Any:
        return self if run is None else run.path / self.name


@dataclass(frozen=True)
class RunDirectory:
    path: Path

    def __init__(self, path: str | Path) -> None:
        object.__setattr__(self, "path", Path(path))

    @classmethod
    def under(cls, logdir: str | Path, config_name: str, seed: int) -> RunDirectory:
        return cls(Path(logdir) / run_name(config_name, seed))

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    # The layout, one entry per file or folder (each reads as a Path inside the run directory).
    config_file = _Entry("config.yaml")
    progress_file = _Entry("progress.json")
    checkpoints = _Entry("checkpoints")
    config_changes_file = _Entry("config_changes.jsonl")
    train_log = _Entry("train.log")
    lock_file = _Entry(".lock")

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / f"step_{step}.pt"

    def event_files(self) -> list[Path]:
        """The TensorBoard event files (a folder named like one is not one)."""
        return sorted(p for p in self.path.glob(EVENT_FILE_PATTERN) if p.is_file())

    def progress(self) -> dict[str, Any] | None:
        """The last progress record, or None if there is none (not started, or not readable)."""
        try:
            return json.loads(self.progress_file.read_text())
        except (OSError, ValueError):
            return None

    def status(self) -> str | None:
        return (self.progress() or {}).get("status")

    def holds_a_run(self) -> bool:
        """Whether anything a run writes is here: an empty or foreign directory is not a run."""
        written = (self.config_file, self.checkpoints, self.progress_file, self.train_log, self.lock_file)
        return any(path.exists() for path in written) or bool(self.event_files())


__all__ = ["EVENT_FILE_PATTERN", "RunDirectory", "run_name", "seed_folder", "seed_of"]
