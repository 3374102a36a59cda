"""A run's live status, ``RUN_DIR/progress.json``: written by the trainer after every rollout, read by
`rl-plasticity compare` for its progress table and to skip runs that already finished."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

from rl_plasticity.experiment.run_directory import RunDirectory

STATUSES = ("running", "finished", "stopped", "failed")


def write_progress(run_dir: str | Path, *, status: str, step: int, total_steps: int, sps: float | None = None,
                   episodic_return: float | None = None, physics: dict[str, float] | None = None,
                   diverged_at: int | None = None, last_checkpoint: int | None = None) -> None:
    """Replaces the progress file atomically (a reader never sees half a file). On a full disk, where no
    new file can be written, it rewrites the old one in place instead: a run that stops for lack of
    space must not be left saying "running"."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}; got {status!r}")
    payload: dict[str, Any] = {"status": status, "step": int(step), "total_steps": int(total_steps),
                               "sps": sps, "episodic_return": episodic_return, "physics": physics or {},
                               "diverged_at": diverged_at, "last_checkpoint": last_checkpoint}
    text, path = json.dumps(payload), RunDirectory(run_dir).progress_file
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        temporary.write_text(text)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        if error.errno != errno.ENOSPC or not _rewrite_in_place(path, text):
            error.filename = error.filename or str(temporary)
            raise
        return
    os.replace(temporary, path)


def _rewrite_in_place(path: Path, text: str) -> bool:
    """Overwrite ``path`` within the blocks it already holds (then truncate), which a full disk allows."""
    try:
        with path.open("r+") as file:
            file.write(text)
            file.truncate()
        return True
    except OSError:
        return False


def read_progress(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's last progress record, or None if it has none (not started, or not readable)."""
    return RunDirectory(run_dir).progress()
