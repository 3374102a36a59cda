"""A run's live status, ``RUN_DIR/progress.json``: written by the trainer after every rollout, read by
`rl-plasticity compare` for its progress table and to skip runs that already finished."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

PROGRESS_FILE = "progress.json"
STATUSES = ("running", "finished", "stopped", "failed")


def write_progress(run_dir: str | Path, *, status: str, step: int, total_steps: int, sps: float | None = None,
                   episodic_return: float | None = None, friction: float | None = None,
                   diverged_at: int | None = None) -> None:
    """Replaces the progress file atomically (a reader never sees half a file)."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}; got {status!r}")
    run_dir = Path(run_dir)
    payload: dict[str, Any] = {"status": status, "step": int(step), "total_steps": int(total_steps),
                               "sps": sps, "episodic_return": episodic_return, "friction": friction,
                               "diverged_at": diverged_at}
    temporary = run_dir / f".{PROGRESS_FILE}.tmp"
    temporary.write_text(json.dumps(payload))
    os.replace(temporary, run_dir / PROGRESS_FILE)


def read_progress(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's last progress record, or None if it has none (not started, or not readable)."""
    path = Path(run_dir) / PROGRESS_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
