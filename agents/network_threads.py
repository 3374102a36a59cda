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

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from rl_plasticity.faster import FasterChoice


class NetworkThreads:
    """Runs the value network's share of each minibatch step on a worker thread, or everything here.

    Args:
        parallel: ``True`` always uses the worker thread, ``False`` never; ``None`` lets a
            `rl_plasticity.faster.FasterChoice` decide from the timings of whole minibatch steps:
            ``BLOCKS`` blocks of ``BLOCK`` minibatches each way, threads first, threads kept only if at
            least 5% faster, measured again every ``REPROBE_EVERY`` minibatches, as the load of a shared
            machine changes.
    """

    BLOCK, BLOCKS, REPROBE_EVERY = 8, 4, 4000

    def __init__(self, parallel: bool | None) -> None:
        self.auto = parallel is None
        self._fixed = bool(parallel)
        self._choice = FasterChoice(preferred=False, block=self.BLOCK, blocks=self.BLOCKS,
                                    gap=self.REPROBE_EVERY, margin=0.05) if self.auto else None
        self._worker = None if parallel is False else ThreadPoolExecutor(1, thread_name_prefix="ppo-value")
        self._threaded_now = self._fixed

    @property
    def parallel(self) -> bool | None:
        """The choice in force (``None`` until the first measurement ends)."""
        return self._choice.chosen if self._choice is not None else self._fixed

    @contextmanager
    def minibatch(self) -> Iterator[None]:
        """Wrap one whole minibatch step, so that ``parallel=None`` times what the choice changes."""
        if self._choice is None:
            self._threaded_now = self._fixed
            yield
            return
        self._threaded_now = self._choice.next_way()
        start = time.perf_counter()
        yield
        self._choice.record(time.perf_counter() - start)

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

    def close(self) -> None:
        """Stop the worker thread; from then on everything runs on the calling thread."""
        if self._worker is not None:
            self._worker.shutdown(wait=True)
            self._worker = None
        self.auto, self._choice, self._fixed, self._threaded_now = False, None, False, False
