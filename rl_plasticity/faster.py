"""Keeping the faster of two interchangeable ways to do the same work, by timing both now and then.

Used wherever threads may or may not pay off, depending on the machine and on what else runs on it: the
PPO update's two networks (`agents.network_threads`) and the batched MuJoCo stepping (`envs`' stepping
pool, which the experiment layer hands a `FasterChoice`). The results must never depend on the way.
"""

from __future__ import annotations

import statistics


class FasterChoice:
    """Chooses between way ``True`` and way ``False`` from timings the caller records.

    A measurement runs ``blocks`` blocks of ``block`` calls each way, alternately, way ``True`` first.
    Blocks, because switching at every call costs the way switched to its warm caches and so misjudges
    it; the first block of each way is warm-up and is ignored. The other way wins only if its median
    block is more than ``margin`` faster than that of the way in use (before the first decision, of
    ``preferred``). Then the chosen way runs for ``gap`` calls and a new measurement starts; while the
    choice holds, the gap doubles up to ``max_gap``, so measuring costs little but a change of load on a
    shared machine is still followed.

    Per call: ``way = choice.next_way()``, do the work that way, ``choice.record(seconds, units)``
    (``units``: how much work the call did, so that calls of different sizes compare).
    """

    def __init__(self, *, preferred: bool, block: int, blocks: int, gap: int, max_gap: int | None = None,
                 margin: float = 0.05) -> None:
        if block < 1 or blocks < 2 or gap < 0:
            raise ValueError(f"need block >= 1, blocks >= 2 (one is warm-up) and gap >= 0; got "
                             f"block={block}, blocks={blocks}, gap={gap}")
        self.preferred, self.block, self.blocks, self.margin = preferred, block, blocks, margin
        self.min_gap, self.max_gap = gap, max(gap, max_gap if max_gap is not None else gap)
        #: the way in force; None until the first measurement ends
        self.chosen: bool | None = None
        self._gap = gap
        self._calls_to_measurement = 0
        self._measured = 0  # calls into the current measurement
        self._block_seconds: dict[bool, list[float]] = {True: [], False: []}

    @property
    def measuring(self) -> bool:
        return self._calls_to_measurement == 0

    def next_way(self) -> bool:
        if not self.measuring:
            return self.chosen if self.chosen is not None else self.preferred
        return (self._measured // self.block) % 2 == 0

    def record(self, seconds: float, units: int = 1) -> None:
        """The time the call just made (the way `next_way` gave) took for ``units`` of work."""
        if not self.measuring:
            self._calls_to_measurement -= 1
            return
        way = self.next_way()
        blocks = self._block_seconds[way]
        if self._measured % self.block == 0:
            blocks.append(0.0)
        blocks[-1] += seconds / max(units, 1)
        self._measured += 1
        if self._measured == 2 * self.blocks * self.block:
            self._decide()

    def _decide(self) -> None:
        median = {way: statistics.median(times[1:]) for way, times in self._block_seconds.items()}
        in_use = self.chosen if self.chosen is not None else self.preferred
        winner = not in_use if median[not in_use] < (1 - self.margin) * median[in_use] else in_use
        holds = self.chosen is not None and winner == self.chosen
        self._gap = min(2 * self._gap, self.max_gap) if holds else self.min_gap
        self.chosen = winner
        self._block_seconds = {True: [], False: []}
        self._measured, self._calls_to_measurement = 0, self._gap


__all__ = ["FasterChoice"]
