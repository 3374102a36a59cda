"""NetworkThreads: the value network's share of a minibatch step on a worker thread, chosen by timing."""

from __future__ import annotations

import threading
import time

import pytest

from agents.network_threads import NetworkThreads


def slow_on_a_worker() -> None:
    # A worker whose core another process has taken: handing it work costs more than doing it here. (Work
    # that merely holds the GIL makes the two ways almost equal, so on a loaded machine either may win.)
    time.sleep(0.0005 if threading.current_thread() is threading.main_thread() else 0.004)


def run_minibatches(threads: NetworkThreads, work: object, count: int) -> list[tuple[str, str]]:
    names = []
    for _ in range(count):
        with threads.minibatch():
            names.append(threads.run(lambda: work() or threading.current_thread().name,
                                     lambda: work() or threading.current_thread().name))
    return names


@pytest.mark.parametrize(("work", "expected"), [
    (lambda: time.sleep(0.002), True),   # releases the GIL, as torch's kernels do: threads pay
    (slow_on_a_worker, False),           # the worker is slow: threads cannot pay
])
def test_auto_mode_keeps_threads_only_when_they_are_faster(work: object, expected: bool,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(NetworkThreads, "REPROBE_EVERY", 3)
    monkeypatch.setattr(NetworkThreads, "BLOCK", 3)
    threads = NetworkThreads(None)
    here = threading.current_thread().name
    probes = 2 * NetworkThreads.BLOCKS * 3
    names = run_minibatches(threads, work, probes - 1)
    assert threads.parallel is None  # still measuring: blocks of 3 minibatches each way in turn
    assert [value for value, _ in names[:7]] == ["ppo-value_0"] * 3 + [here] * 3 + ["ppo-value_0"]
    run_minibatches(threads, work, 1)
    assert threads.parallel is expected
    names = run_minibatches(threads, work, 3)
    value_thread = "ppo-value_0" if expected else here
    assert names == [(value_thread, here)] * 3
    # REPROBE_EVERY minibatches later the load may have changed: it measures again, both ways in turn.
    names = run_minibatches(threads, work, 4)
    assert [value for value, _ in names] == ["ppo-value_0"] * 3 + [here]
    threads.close()
    assert run_minibatches(threads, work, 1) == [(here, here)]


def test_fixed_modes_never_switch_and_errors_reach_the_caller() -> None:
    here = threading.current_thread().name
    for parallel, value_thread in ((True, "ppo-value_0"), (False, here)):
        threads = NetworkThreads(parallel)
        assert run_minibatches(threads, lambda: None, 30) == [(value_thread, here)] * 30
        assert threads.parallel is parallel

        def fail() -> None:
            raise RuntimeError("value loss is nan")

        with pytest.raises(RuntimeError, match="value loss is nan"), threads.minibatch():
            threads.run(fail, lambda: None)
        threads.close()


@pytest.mark.parametrize("parallel", [True, False])
def test_each_network_runs_on_one_torch_thread_only_while_both_run_at_once(parallel: bool) -> None:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        threads = NetworkThreads(parallel)
        seen = []
        for _ in range(3):
            with threads.minibatch():
                seen.append(threads.run(torch.get_num_threads, torch.get_num_threads))
        assert seen == [(1, 1)] * 3 if parallel else [(2, 2)] * 3
        threads.restore_threads()
        assert torch.get_num_threads() == 2  # the update's threads are back for whatever follows
        threads.close()
    finally:
        torch.set_num_threads(before)
