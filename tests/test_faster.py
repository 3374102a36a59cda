"""FasterChoice: the one rule that keeps the faster of two interchangeable ways."""

from __future__ import annotations

import pytest

from rl_plasticity.faster import FasterChoice


def drive(choice: FasterChoice, seconds: dict[bool, float], calls: int) -> list[bool]:
    ways = []
    for _ in range(calls):
        way = choice.next_way()
        ways.append(way)
        choice.record(seconds[way], units=2)
    return ways


def test_it_measures_in_alternating_blocks_then_keeps_the_faster_way() -> None:
    choice = FasterChoice(preferred=False, block=2, blocks=3, gap=4)
    ways = drive(choice, {True: 1.0, False: 2.0}, 11)
    assert ways == [True, True, False, False] * 2 + [True, True, False]
    assert choice.chosen is None  # the measurement is not over yet
    drive(choice, {True: 1.0, False: 2.0}, 1)
    assert choice.chosen is True
    assert drive(choice, {True: 1.0, False: 2.0}, 4) == [True] * 4  # the gap
    assert choice.measuring


def test_the_first_block_of_each_way_is_warm_up() -> None:
    choice = FasterChoice(preferred=True, block=1, blocks=3, gap=1)
    # Way False's first (warm-up) call is slow, its later ones fast.
    times = iter([1.0, 9.0, 1.0, 0.5, 1.0, 0.5])
    for _ in range(6):
        choice.next_way()
        choice.record(next(times))
    assert choice.chosen is False


@pytest.mark.parametrize(("margin", "chosen"), [(0.05, True), (0.01, False)])
def test_the_other_way_must_be_faster_by_the_margin(margin: float, chosen: bool) -> None:
    choice = FasterChoice(preferred=True, block=1, blocks=2, gap=1, margin=margin)
    drive(choice, {True: 1.0, False: 0.97}, 4)
    assert choice.chosen is chosen


def test_the_gap_doubles_while_the_choice_holds_and_resets_when_it_changes() -> None:
    choice = FasterChoice(preferred=True, block=1, blocks=2, gap=2, max_gap=5)
    gaps = []
    for seconds in [{True: 1.0, False: 2.0}] * 4 + [{True: 2.0, False: 1.0}]:
        drive(choice, seconds, 4)  # one measurement
        gaps.append(choice._calls_to_measurement)
        drive(choice, seconds, choice._calls_to_measurement)
    assert gaps == [2, 4, 5, 5, 2] and choice.chosen is False


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="one is warm-up"):
        FasterChoice(preferred=True, block=4, blocks=1, gap=10)
