"""The bad-input sweep (`bad_input_sweep.py`) end to end: every case clear, no data lost."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import bad_input_sweep
import pytest


@pytest.mark.slow
def test_every_bad_input_of_the_sweep_gets_a_clear_error_and_loses_nothing() -> None:
    # In a process of its own: the cases train, load SB3 models and change warning and signal state,
    # none of which may leak into the other tests.
    result = subprocess.run([sys.executable, str(Path(bad_input_sweep.__file__))], capture_output=True,
                            text=True, timeout=600)
    last = result.stdout.strip().splitlines()[-1]
    match = re.fullmatch(r"(\d+) cases in \d+ s: (\d+) clear, (\d+) unclear, (\d+) data lost", last)
    assert match, result.stdout + result.stderr
    total, clear, unclear, lost = map(int, match.groups())
    assert total >= 100 and clear == total and unclear == lost == 0, result.stdout
    assert result.returncode == 0


def test_the_sweep_judges_a_traceback_a_lost_file_and_a_missing_fragment_as_not_clear() -> None:
    case = bad_input_sweep.Case("x", ["train"], ("the key",))
    clear = bad_input_sweep.judge(case, 2, "rl-plasticity train: error: the key is wrong\n", {}, {})
    assert clear.verdict == "clear"
    crash = bad_input_sweep.judge(case, -1, "Traceback (most recent call last):\n  ...\nKeyError: the key\n",
                                  {}, {})
    assert crash.verdict == "unclear"
    vague = bad_input_sweep.judge(case, 2, "rl-plasticity train: error: something\n", {}, {})
    assert vague.verdict == "unclear"
    lost = bad_input_sweep.judge(case, 2, "rl-plasticity train: error: the key\n", {"a": "1"}, {"a": "2"})
    assert lost.verdict == "data lost"
    leftover = bad_input_sweep.judge(case, 2, "rl-plasticity train: error: the key\n", {}, {"runs": "dir"})
    assert leftover.verdict == "unclear"
