"""What surrounds a training loop in its process: stopping cleanly on a signal, the torch thread count
of one phase, and the progress display on a terminal or in a log file."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from tqdm import tqdm


class StopOnSignals:
    """Within the block, SIGTERM and a first SIGINT set ``requested`` (the loop stops at the next rollout
    boundary, where a checkpoint is consistent); a second SIGINT raises KeyboardInterrupt at once.
    Signals can only be handled in the main thread; elsewhere (e.g. a Ray worker) this does nothing."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: object) -> None:
        if signum == signal.SIGINT and self.requested is not None:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        print(f"\n{self.requested}: stopping after this update and writing a checkpoint (Ctrl-C again to "
              f"stop at once, keeping the previous checkpoint)", file=sys.stderr, flush=True)

    def __enter__(self) -> StopOnSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    before = torch.get_num_threads()
    if threads is None or threads == before:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class ProgressDisplay:
    """A tqdm bar on a terminal; elsewhere (log files, CI) a plain status line every 5% of the run."""

    LINES = 20

    def __init__(self, total: int, initial: int, enabled: bool, bar: bool) -> None:
        self.total, self.enabled = total, enabled
        self.bar = tqdm(total=total, initial=initial, unit="step", unit_scale=True, dynamic_ncols=True,
                        smoothing=0.05) if enabled and bar and sys.stderr.isatty() else None
        self._next_line = initial + total / self.LINES

    def update(self, step: int, status: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(status, refresh=False)
            self.bar.update(min(step, self.total) - self.bar.n)
        elif self.enabled and (step >= self._next_line or step >= self.total):
            done = min(step, self.total)
            line = f"[{done:,}/{self.total:,} steps {100 * done / self.total:3.0f}%] {status}"
            print(line, file=sys.stderr, flush=True)
            while self._next_line <= step:
                self._next_line += self.total / self.LINES

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


__all__ = ["ProgressDisplay", "StopOnSignals", "torch_threads"]
