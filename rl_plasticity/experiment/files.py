"""Writing files so that a crash never leaves half of one over a good one, and naming what is wrong
with a path a user gave."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def replaced_atomically(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yields a temporary path beside ``path`` to write; once the block ends without an error it is
    fsynced and renamed over ``path`` (a reader, or a crash, sees the old file or the new one, never
    part of one). On an error the temporary file is removed and ``path`` is untouched."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        yield temporary
        with open(temporary, "rb+") as file:
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    fsync_directory(path.parent)


def write_text_atomically(path: str | os.PathLike[str], text: str) -> Path:
    """``path.write_text(text)`` through `replaced_atomically`."""
    with replaced_atomically(path) as temporary:
        temporary.write_text(text)
    return Path(path)


def fsync_directory(folder: str | os.PathLike[str]) -> None:
    """Makes a rename inside ``folder`` durable; a no-op where directories cannot be opened."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def path_problem(path: str | os.PathLike[str], expected: str) -> str | None:
    """What keeps ``path`` from being the ``expected`` kind (``"file"`` or ``"directory"``) that can be
    read, in words (``"is a directory"``, ``"is a symlink loop"``, ``"does not exist"``, ...); None if it
    is one."""
    path = Path(path)
    try:
        info = path.stat()
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "is a symbolic link loop"
        if error.errno == errno.ENAMETOOLONG:
            return "is a name too long for the file system"
        if error.errno == errno.EACCES:
            return "cannot be reached (permission denied on a folder above it)"
        if error.errno == errno.ENOTDIR:
            return "does not exist (a part of the path above it is a file)"
        if path.is_symlink():
            return "is a broken symbolic link"
        return "does not exist"
    import stat

    is_dir = stat.S_ISDIR(info.st_mode)
    if expected == "file" and is_dir:
        return "is a directory, not a file"
    if expected == "directory" and not is_dir:
        return "is a file, not a directory"
    if not os.access(path, os.R_OK | (os.X_OK if is_dir else 0)):
        return "is not readable (permission denied)"
    return None


__all__ = ["fsync_directory", "path_problem", "replaced_atomically", "write_text_atomically"]
