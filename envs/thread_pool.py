"""A tiny persistent thread pool for stepping many MuJoCo simulations at once.

MuJoCo's Python bindings release the GIL inside ``mj_step``, so threads give real parallelism for the
physics while the short Python glue between calls stays serial. The calling thread works too, so a
pool of ``num_threads`` uses ``num_threads - 1`` background threads and there is no hand-off at all
for a single thread.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any


def available_cpus() -> int:
    """CPUs this process may run on (the affinity mask, which containers and taskset restrict)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


class SteppingPool:
    """Runs ``work(index)`` for every index, spread over the caller and ``num_threads - 1`` workers.

    Threads take the next index from one shared iterator instead of fixed chunks, so a thread slowed
    down by another process on a shared machine simply does fewer copies that step.

    Given a ``choice`` (an ``rl_plasticity.faster.FasterChoice``, or anything with its ``next_way()``
    and ``record(seconds, units)``), the pool also checks whether the threads pay off: on a machine
    whose other cores are busy, waiting for a descheduled worker costs more than stepping everything on
    the calling thread. Way ``True`` is all threads, way ``False`` the calling thread only, timed per
    index. Without one it always uses all threads. Results never depend on the way.
    """

    def __init__(self, num_threads: int, choice: Any | None = None) -> None:
        if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
            raise ValueError(f"num_threads must be an integer >= 1, got {num_threads!r}")
        self.num_threads = num_threads
        self.choice = choice
        self._inboxes: list[queue.SimpleQueue] = []
        self._finished: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        for number in range(num_threads - 1):
            inbox: queue.SimpleQueue = queue.SimpleQueue()
            # Daemon threads: a pool that was never closed must not keep the interpreter alive.
            name = f"mujoco-step-{number}"
            thread = threading.Thread(target=self._serve, args=(inbox,), name=name, daemon=True)
            thread.start()
            self._inboxes.append(inbox)
            self._threads.append(thread)

    @property
    def threaded(self) -> bool:
        """Whether the threads are the way in force."""
        chosen = getattr(self.choice, "chosen", True)
        return bool(self._threads) and (chosen is None or chosen)

    def run(self, work: Callable[[int], None], indices: Sequence[int]) -> None:
        """Call ``work`` on every index and return when all calls are done; re-raises the first error."""
        if not self._threads or not indices:
            for index in indices:
                work(index)
            return
        if self.choice is None:
            self._run_threaded(work, indices)
            return
        threaded = self.choice.next_way()
        start = time.perf_counter()
        if threaded:
            self._run_threaded(work, indices)
        else:
            for index in indices:
                work(index)
        self.choice.record(time.perf_counter() - start, len(indices))

    def _run_threaded(self, work: Callable[[int], None], indices: Sequence[int]) -> None:
        # Under the GIL one iterator's __next__ is atomic, so the threads never take the same index.
        shared = iter(indices)
        for inbox in self._inboxes:
            inbox.put((work, shared))
        error = self._drain(work, shared)
        for _ in self._inboxes:
            worker_error = self._finished.get()
            error = error or worker_error
        if error is not None:
            raise error

    def close(self) -> None:
        for inbox in self._inboxes:
            inbox.put(None)
        for thread in self._threads:
            thread.join(timeout=5.0)
        self._inboxes, self._threads = [], []

    @staticmethod
    def _drain(work: Callable[[int], None], shared: Iterator[int]) -> BaseException | None:
        try:
            for index in shared:
                work(index)
        except BaseException as error:  # handed to the caller of run(), like a future would
            # Exhaust the iterator so the other threads stop early too.
            for _ in shared:
                pass
            return error
        return None

    def _serve(self, inbox: queue.SimpleQueue) -> None:
        while True:
            job = inbox.get()
            if job is None:
                return
            self._finished.put(self._drain(*job))
            # Drop the job now: its bound method would otherwise keep the env alive while idle.
            job = None
