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


def available_cpus() -> int:
    """CPUs this process may run on (the affinity mask, which containers and taskset restrict)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


class SteppingPool:
    """Runs ``work(index)`` for every index, spread over the caller and ``num_threads - 1`` workers.

    Threads take the next index from one shared iterator instead of fixed chunks, so a thread slowed
    down by another process on a shared machine simply does fewer copies that step.

    With ``adaptive=True`` the pool also checks whether the threads pay off: on a machine whose other
    cores are busy, waiting for a descheduled worker costs more than stepping everything on the calling
    thread. Now and then it spends ``PROBE_RUNS`` runs on the option it is not using and keeps the faster
    one (time per index, against the runs just before). While the choice holds, the gap between probes
    doubles from ``MIN_GAP`` to ``MAX_GAP`` runs, so probing costs little but load changes are still
    followed within seconds. Results never depend on the choice.
    """

    PROBE_RUNS, MIN_GAP, MAX_GAP = 10, 100, 3200

    def __init__(self, num_threads: int, adaptive: bool = False) -> None:
        if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
            raise ValueError(f"num_threads must be an integer >= 1, got {num_threads!r}")
        self.num_threads = num_threads
        self.adaptive = adaptive
        # Option in use (True: all threads, False: calling thread only) and recent seconds per index.
        self.threaded = True
        self._seconds_per_index: dict[bool, list[float]] = {True: [], False: []}
        self._gap = self._runs_to_probe = self.MIN_GAP
        self._probe_runs_left = 0
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

    def run(self, work: Callable[[int], None], indices: Sequence[int]) -> None:
        """Call ``work`` on every index and return when all calls are done; re-raises the first error."""
        if not self._threads or not indices:
            for index in indices:
                work(index)
            return
        if not self.adaptive:
            self._run_threaded(work, indices)
            return
        if self._runs_to_probe == 0 and self._probe_runs_left == 0:
            self._probe_runs_left = self.PROBE_RUNS
        probing = self._probe_runs_left > 0
        threaded = self.threaded != probing
        start = time.perf_counter()
        if threaded:
            self._run_threaded(work, indices)
        else:
            for index in indices:
                work(index)
        times = self._seconds_per_index[threaded]
        times.append((time.perf_counter() - start) / len(indices))
        del times[: -self.PROBE_RUNS]
        if not probing:
            self._runs_to_probe -= 1
            return
        self._probe_runs_left -= 1
        if self._probe_runs_left == 0:
            # The probe against the runs just before it, with 3% hysteresis against noise.
            if sum(times) < 0.97 * sum(self._seconds_per_index[self.threaded]):
                self.threaded, self._gap = threaded, self.MIN_GAP
            else:
                self._gap = min(2 * self._gap, self.MAX_GAP)
            self._runs_to_probe = self._gap

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
