"""One process per run directory: an OS lock on ``RUN_DIR/.lock`` that `train` holds for the whole run.

The lock is ``flock``'s, so the kernel releases it when its holder dies in any way (kill -9 included): a
lock file left behind by a dead process never blocks. The file holds the holder's PID for the message a
second process gets.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from rl_plasticity.experiment.run_directory import RunDirectory


class RunDirectoryBusy(RuntimeError):
    """Another live process holds the run directory."""


class RunLock:
    """The exclusive hold on a run directory; `release` (or the holder's death) gives it up."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run = RunDirectory(run_dir)
        self._descriptor: int | None = None

    def acquire(self) -> RunLock:
        """Takes the lock, creating the file (not the directory); raises `RunDirectoryBusy` naming the
        holder's PID if another process has it."""
        descriptor = os.open(self.run.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(descriptor)
            os.close(descriptor)
            raise RunDirectoryBusy(busy_message(self.run.path, holder)) from None
        except BaseException:
            os.close(descriptor)
            raise
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()}\n".encode())
        self._descriptor = descriptor
        return self

    def release(self) -> None:
        if self._descriptor is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._descriptor, 0)
            os.close(self._descriptor)  # closing drops the flock
            self._descriptor = None

    @property
    def held(self) -> bool:
        return self._descriptor is not None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def holder(run_dir: str | Path) -> int | None:
    """The PID of the live process holding ``run_dir`` (0 if unknown), or None if nobody holds it."""
    path = RunDirectory(run_dir).lock_file
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(descriptor)
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        return None
    finally:
        os.close(descriptor)


def busy_message(run_dir: str | Path, pid: int | None) -> str:
    who = f"process {pid}" if pid else "another process"
    stop = f"`kill {pid}` stops it with a checkpoint" if pid else "stop that process"
    return (f"{run_dir} is in use by {who}, which is training it; wait for it to finish ({stop}), or "
            f"choose another --run-name / --logdir")


def _read_pid(descriptor: int) -> int:
    try:
        text = os.pread(descriptor, 32, 0).decode(errors="replace").strip()
        return int(text) if text.isdigit() else 0
    except OSError:
        return 0


__all__ = ["RunDirectoryBusy", "RunLock", "busy_message", "holder"]
