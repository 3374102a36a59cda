"""Checkpoint files: ``RUN_DIR/checkpoints/step_<N>.pt``, written atomically and verified on load.

A file is a magic header, the SHA-256 of the payload, then the payload (``torch.save`` of a trainer's
``state_dict()``). It is written to a temporary file, fsynced, renamed over the final name and the
directory fsynced, so a crash leaves either the old set of checkpoints or the new one, never half a file.
Only once a new checkpoint is complete are the oldest ones beyond ``keep`` removed. On resume,
`latest_checkpoint` verifies checksums newest first and falls back, with a warning, past corrupt files.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from rl_plasticity.experiment.files import fsync_directory, path_problem
from rl_plasticity.experiment.run_directory import RunDirectory

FORMAT_VERSION = 2
_MAGIC = b"RLPLASTICITY-CKPT\x02"
_DIGEST_BYTES = hashlib.sha256().digest_size
_NAME = re.compile(r"^step_(\d+)\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written (full disk, no permission) or read (corrupt, foreign)."""


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return RunDirectory(run_dir).checkpoint(step)


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically; on failure nothing at ``path`` or beside it changes."""
    path = Path(path)
    buffer = io.BytesIO()
    torch.save({"format_version": FORMAT_VERSION, **state}, buffer)
    payload = buffer.getbuffer()
    partial = path.with_name(f".{path.name}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(partial, "wb") as file:
            file.write(_MAGIC)
            file.write(hashlib.sha256(payload).digest())
            file.write(payload)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)
        fsync_directory(path.parent)
        if not verify_checkpoint(path):
            path.unlink(missing_ok=True)
            raise CheckpointError(f"checkpoint {path} does not read back as written (a failing disk?); "
                                  f"the previous checkpoints are kept")
    except OSError as error:
        partial.unlink(missing_ok=True)
        if error.errno == errno.ENOSPC:
            raise CheckpointError(f"no space left on the device writing checkpoint {path}; free some space "
                                  f"or point --logdir at another disk (the previous checkpoints are "
                                  f"intact)") from None
        raise CheckpointError(f"cannot write checkpoint {path}: {error.strerror or error}") from None
    return path


def verify_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` holds a whole checkpoint: the magic header and a payload matching its SHA-256
    (what a crash, a truncation or a stray file named like a checkpoint fail)."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return False
    header = len(_MAGIC) + _DIGEST_BYTES
    return len(data) >= header and data.startswith(_MAGIC) and \
        hashlib.sha256(memoryview(data)[header:]).digest() == data[len(_MAGIC):header]


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and verify a checkpoint written by `save_checkpoint`. It holds numpy arrays and RNG states,
    so it is unpickled in full: load only checkpoints you trust."""
    path = Path(path)
    problem = path_problem(path, "file")
    if problem is not None:
        raise CheckpointError(f"checkpoint {str(path)!r} {problem}")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CheckpointError(f"checkpoint {str(path)!r} cannot be read ({error.strerror})") from None
    header = len(_MAGIC) + _DIGEST_BYTES
    if len(data) < header or not data.startswith(_MAGIC):
        raise CheckpointError(f"{path} is not an rl-plasticity checkpoint (or was truncated)")
    payload = memoryview(data)[header:]
    if hashlib.sha256(payload).digest() != data[len(_MAGIC):header]:
        raise CheckpointError(f"{path} is corrupt: its checksum does not match (truncated or overwritten)")
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=False)
    except Exception as error:  # a matching checksum over a foreign payload
        raise CheckpointError(f"{path} cannot be read: {error}") from None
    if state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format {state.get('format_version')}, expected "
                              f"{FORMAT_VERSION}")
    return state


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every checkpoint of a run, by step."""
    folder = RunDirectory(run_dir).checkpoints
    found = []
    for path in folder.glob("step_*.pt") if folder.is_dir() else []:
        match = _NAME.match(path.name)
        if match and not path.is_dir():  # a folder named like a checkpoint is not one
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(run_dir: str | Path, accept: Callable[[dict[str, Any]], str | None] | None = None,
                      ) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint that verifies (and whose state ``accept`` finds no fault with: it returns
    the fault, or None), with its state; newer ones are skipped with a warning. None if the run has no
    checkpoint; `CheckpointError` if it has some but none is usable."""
    candidates = list_checkpoints(run_dir)
    problems = []
    for _, path in reversed(candidates):
        try:
            state = load_checkpoint(path)
        except CheckpointError as error:
            problems.append(str(error))
            warnings.warn(f"{error}; falling back to the previous checkpoint", stacklevel=2)
            continue
        fault = accept(state) if accept is not None else None
        if fault is None:
            return path, state
        problems.append(f"{path}: {fault}")
        warnings.warn(f"{path} cannot be resumed from: {fault}; falling back to the previous checkpoint",
                      stacklevel=2)
    if problems:
        raise CheckpointError(f"no readable checkpoint in {RunDirectory(run_dir).checkpoints}: "
                              f"{'; '.join(problems)}; start over with --fresh (the run is moved aside)")
    return None


def prune_checkpoints(run_dir: str | Path, keep: int,
                      resumable: Callable[[Path], bool] | None = None) -> list[Path]:
    """Remove resumable checkpoints older than the newest ``keep`` resumable ones (``keep <= 0`` keeps
    all); returns the removed. A checkpoint is resumable when it verifies and ``resumable(path)`` (if
    given: whether its state can be trained on, e.g. holds no NaN) says so. Any other file never counts
    towards ``keep`` and is left where it is, so a stray, damaged or non-finite file named like a newer
    checkpoint cannot push out the good ones."""
    if keep <= 0:
        return []
    verified = [path for _, path in list_checkpoints(run_dir) if verify_checkpoint(path)
                and (resumable is None or resumable(path))]
    removed = verified[:-keep]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def remove_partial_files(run_dir: str | Path) -> list[Path]:
    """Delete the ``.step_<N>.pt.partial`` files a crash during `save_checkpoint` leaves behind (never a
    whole checkpoint: those are only ever renamed into place complete)."""
    folder = RunDirectory(run_dir).checkpoints
    removed = sorted(folder.glob(".step_*.pt.partial")) if folder.is_dir() else []
    for path in removed:
        path.unlink(missing_ok=True)
    return removed
