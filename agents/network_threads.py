"""Updating the policy and the value network on two threads at once, when that is faster.

The two networks share no parameter, so the value network's forward and backward pass can run on a
worker thread while the policy's runs on the calling one: torch releases the GIL inside its kernels, so
two cores work at once. (The optimizer and CBP steps stay on the calling thread: they are many short ops,
and two threads taking turns at the GIL for them measured slower.) Whether it pays depends on the machine
and on the networks' size: on two cores the paper's 2x256 networks update 1.1-1.3x faster, while
CleanRL's 64x64 networks update no faster (each op is too short to hide the hand-off). The results are
the same bit for bit either way, so :class:`NetworkThreads` can also decide by timing.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any


class NetworkThreads:
    """Runs the value network's share of each minibatch step on a worker thread, or everything here.

    Args:
        parallel: ``True`` always uses the worker thread, ``False`` never; ``None`` runs ``BLOCKS``
            blocks of ``BLOCK`` minibatches each way, alternately, threads first (blocks, because
            switching at every minibatch costs the worker its warm caches and so misjudges it), ignores
            the first block of each way as warm-up, keeps threads only if their median block is at least
            5% faster, and measures again every ``REPROBE_EVERY`` minibatches, as the load of a shared
            machine changes.
    """

    BLOCK, BLOCKS, REPROBE_EVERY = 8, 4, 4000

    def __init__(self, parallel: bool | None) -> None:
        self.auto = parallel is None
        #: the choice in force (``None`` until the first measurement ends)
        self.parallel = parallel
        self._worker = None if parallel is False else ThreadPoolExecutor(1, thread_name_prefix="ppo-value")
        self._threaded_now = bool(parallel)
        self._until_probe = 0
        self._probed = 0  # minibatches into the current measurement
        self._block_seconds: dict[bool, list[float]] = {False: [], True: []}

    @contextmanager
    def minibatch(self) -> Iterator[None]:
        """Wrap one whole minibatch step, so that ``parallel=None`` times what the choice changes."""
        if not self.auto or self._until_probe > 0:
            if self.auto:
                self._until_probe -= 1
            self._threaded_now = bool(self.parallel)
            yield
            return
        self._threaded_now = (self._probed // self.BLOCK) % 2 == 0
        start = time.perf_counter()
        yield
        seconds = time.perf_counter() - start
        blocks = self._block_seconds[self._threaded_now]
        if self._probed % self.BLOCK == 0:
            blocks.append(0.0)
        blocks[-1] += seconds
        self._probed += 1
        if self._probed == 2 * self.BLOCKS * self.BLOCK:
            self._decide()

    def run(self, value_work: Callable[[], Any], policy_work: Callable[[], Any]) -> tuple[Any, Any]:
        """``(value_work(), policy_work())``, the first on the worker thread when threads are in use."""
        if not self._threaded_now or self._worker is None:
            return value_work(), policy_work()
        pending = self._worker.submit(value_work)
        try:
            policy_result = policy_work()
        finally:
            value_result = pending.result()
        return value_result, policy_result

    def _decide(self) -> None:
        sequential, threaded = (statistics.median(self._block_seconds[mode][1:]) for mode in (False, True))
        self.parallel = threaded < 0.95 * sequential
        self._block_seconds = {False: [], True: []}
        self._probed, self._until_probe = 0, self.REPROBE_EVERY

    def close(self) -> None:
        """Stop the worker thread; from then on everything runs on the calling thread."""
        if self._worker is not None:
            self._worker.shutdown(wait=True)
            self._worker = None
        self.auto, self.parallel = False, False
