"""Updating the policy and the value network on two threads at once, when that is faster.

The two networks share no parameter, so the value network's forward and backward pass can run on a
worker thread while the policy's runs on the calling one: torch releases the GIL inside its kernels, so
two cores work at once, one torch thread each. The other way runs the networks in turn, each with every
torch thread the update has (``run.update_threads``), splitting each matrix product instead. (The
optimizer and CBP steps stay on the calling thread: they are many short ops, and two threads taking
turns at the GIL for them measured slower.) Which pays depends on the machine, the load and the
networks' size: on this project's 2-core machine, the paper's 2x256 networks updated 0.70 s per rollout
on two threads against 0.65 s in turn on two torch threads (0.80 s in turn on one). The results are the
same bit for bit either way, so :class:`NetworkThreads` can also decide by timing.

Apart from that, `NetworkThreads.defer` runs the value network's whole update (its minibatch steps,
optimizer and CBP included) on a worker thread while the next rollout steps the env: the rollout needs
only the policy, so the value network's update leaves the critical path (`agents.ppo.PPO.update`,
``run.overlap_value_update``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import torch

from rl_plasticity.faster import FasterChoice


class NetworkThreads:
    """Runs the value network's share of each minibatch step on a worker thread, or everything here;
    and, apart from that, a whole update of the value network beside the next rollout (`defer`).

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
        self._restore_threads: int | None = None
        self._deferred_worker: ThreadPoolExecutor | None = None
        self._deferred: Future | None = None

    @property
    def parallel(self) -> bool | None:
        """The choice in force (``None`` until the first measurement ends)."""
        return self._choice.chosen if self._choice is not None else self._fixed

    @contextmanager
    def minibatch(self) -> Iterator[None]:
        """Wrap one whole minibatch step, so that ``parallel=None`` times what the choice changes. With
        the networks on two threads each runs its ops on one torch thread (more would oversubscribe the
        cores); in turn, each uses the torch threads the caller set."""
        self._threaded_now = self._fixed if self._choice is None else self._choice.next_way()
        # Changing torch's thread count costs ~0.1 ms, so it changes only where the way does.
        if self._threaded_now and self._worker is not None:
            if torch.get_num_threads() > 1:
                self._restore_threads = torch.get_num_threads()
                torch.set_num_threads(1)
        else:
            self.restore_threads()
        start = time.perf_counter()
        yield
        if self._choice is not None:
            self._choice.record(time.perf_counter() - start)

    def restore_threads(self) -> None:
        """Give torch back the thread count the networks-on-two-threads way set aside (call at the end
        of an update)."""
        if self._restore_threads is not None:
            torch.set_num_threads(self._restore_threads)
            self._restore_threads = None

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

    def defer(self, work: Callable[[], Any]) -> None:
        """Start ``work`` (a whole network's update) on a worker thread of its own while the caller goes
        on (with the next rollout); `wait` and `finish` join it. Both go on with ONE torch thread: the
        work runs beside the rollout on the other core, and torch's thread count is process-wide (a
        worker setting it sets the caller's too), so it is set here, before either starts; the caller
        sets its own count again for its next update (as the trainer does)."""
        self.finish()
        if self._deferred_worker is None:
            self._deferred_worker = ThreadPoolExecutor(1, thread_name_prefix="ppo-value-update")
        torch.set_num_threads(1)
        self._deferred = self._deferred_worker.submit(_on_one_torch_thread, work)

    def wait(self) -> None:
        """Wait for the deferred work (re-raising its error); its result stays for `finish`."""
        if self._deferred is not None:
            self._deferred.result()

    def finish(self) -> Any:
        """Wait for the deferred work (re-raising its error) and hand over its result; ``None`` if there
        is none."""
        deferred, self._deferred = self._deferred, None
        return deferred.result() if deferred is not None else None

    def close(self) -> None:
        """Stop the worker threads; from then on everything runs on the calling thread."""
        self.restore_threads()
        for worker in (self._worker, self._deferred_worker):
            if worker is not None:
                worker.shutdown(wait=True)
        self._worker = self._deferred_worker = self._deferred = None
        self.auto, self._choice, self._fixed, self._threaded_now = False, None, False, False


def _on_one_torch_thread(work: Callable[[], Any]) -> Any:
    # Again on this thread: where OpenMP keeps a count per thread, the worker's own must be one too.
    torch.set_num_threads(1)
    return work()
