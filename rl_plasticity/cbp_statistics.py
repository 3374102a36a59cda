"""Continual backprop's running statistics of each hidden unit: its utility and its mean activation.

Both are running averages over optimizer steps, ``s <- decay * s + (1 - decay) * instant``. Per step and
hidden layer, CBP needs three batch reductions (the sums of each unit's activation and of its magnitude,
and its outgoing weights' magnitude); the averages themselves are linear in those, so the steps since
the last fold are folded in at once: after ``p`` steps
``s = decay^p * s + sum_t (1 - decay) * decay^(p-1-t) * instant_t``, one matrix-vector product per
statistic instead of two small ops per step. A fold happens when the buffer of recorded steps is full
and before units are replaced (their statistics are then zeroed); `current` folds into a copy, so that
reading the statistics (logging, histograms) never changes a run's arithmetic, and a checkpoint keeps
the recorded steps, so that a resumed run folds exactly where the uninterrupted one does.

The result agrees with the step-by-step recurrence to float rounding (the sums are grouped differently).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

#: steps recorded before they are folded into the running averages
PENDING_STEPS = 32

#: ``magnitude(k, features, scratch, out)``: layer ``k``'s feature magnitude per unit into ``out``
Magnitude = Callable[[int, Tensor, Tensor, Tensor], None]


class RunningStatistics:
    """Per hidden layer ``k`` (``widths[k]`` units, consumed by a layer of ``outgoing_rows[k]`` outputs):
    the folded running ``utility`` and ``mean_activation``, and the steps recorded since."""

    def __init__(self, widths: Sequence[int], outgoing_rows: Sequence[int], decay_rate: float,
                 device: torch.device, capacity: int = PENDING_STEPS) -> None:
        self.decay_rate, self.capacity = decay_rate, capacity
        self.outgoing_rows = list(outgoing_rows)
        self.utility = [torch.zeros(w, device=device) for w in widths]
        self.mean_activation = [torch.zeros(w, device=device) for w in widths]
        # One row per recorded step: sum_batch h_i, sum_batch |h_i| (or the rule's magnitude), sum_k
        # |W_next[k, i]|.
        self._sums = [torch.zeros(capacity, w, device=device) for w in widths]
        self._magnitudes = [torch.zeros(capacity, w, device=device) for w in widths]
        self._outgoing = [torch.zeros(capacity, w, device=device) for w in widths]
        # Each step writes one row of each buffer; the row views are made once (indexing a tensor costs
        # about as much as the reductions written into it).
        self._rows = [[(sums[t], magnitudes[t], outgoing[t]) for t in range(capacity)]
                      for sums, magnitudes, outgoing in zip(self._sums, self._magnitudes, self._outgoing,
                                                            strict=True)]
        self._batches: list[int] = []
        # Per layer, whether this window's magnitudes are its sums (nonnegative features, mean tracked),
        # kept in ``_sums`` alone rather than written twice.
        self._magnitudes_in_sums = [False for _ in widths]
        self._weight_cache: dict[tuple, Tensor] = {}
        self._feature_scratch: list[Tensor | None] = [None for _ in widths]
        self._weight_scratch: list[Tensor | None] = [None for _ in widths]

    # ------------------------------------------------------------------ recording one step
    def record(self, features: Sequence[Tensor], outgoing_weights: Sequence[Tensor], track_mean: bool,
               magnitude: Magnitude | None, magnitude_is_sum: bool = False) -> None:
        """Record one step: per hidden layer ``k`` the batch ``features[k]`` and the weights of the layer
        consuming it; ``magnitude(k, features, scratch, out)`` writes ``sum_batch |h_i|`` (or the
        rule's magnitude) into ``out``, ``None`` if no utility is tracked. With ``magnitude_is_sum``
        (nonnegative features under the contribution rule) the magnitude is the plain batch sum, taken
        once for both statistics. The tensors must not require grad."""
        row = len(self._batches)
        self._batches.append(features[0].shape[0])
        for k, h in enumerate(features):
            sums, magnitudes, outgoing = self._rows[k][row]
            if magnitude is None:
                if track_mean:
                    torch.sum(h, 0, out=sums)
                continue
            if magnitude_is_sum:
                if row == 0:
                    self._magnitudes_in_sums[k] = track_mean
                torch.sum(h, 0, out=sums if self._magnitudes_in_sums[k] else magnitudes)
                if track_mean and not self._magnitudes_in_sums[k]:
                    sums.copy_(magnitudes)
            else:
                self._separate_magnitudes(k, row)
                if track_mean:
                    torch.sum(h, 0, out=sums)
                scratch = self._feature_scratch[k]
                if scratch is None or scratch.shape != h.shape:
                    scratch = self._feature_scratch[k] = torch.empty_like(h)
                magnitude(k, h, scratch, magnitudes)
            weight = outgoing_weights[k]
            scratch = self._weight_scratch[k]
            if scratch is None or scratch.shape != weight.shape:
                scratch = self._weight_scratch[k] = torch.empty_like(weight, requires_grad=False)
            torch.sum(torch.abs(weight, out=scratch), 0, out=outgoing)
        if row + 1 == self.capacity:
            self.fold()

    def _separate_magnitudes(self, k: int, rows: int) -> None:
        """Give layer ``k``'s magnitudes rows of their own again (a window whose recording changed)."""
        if self._magnitudes_in_sums[k]:
            self._magnitudes[k][:rows].copy_(self._sums[k][:rows])
            self._magnitudes_in_sums[k] = False

    def _recorded_magnitudes(self, k: int) -> Tensor:
        return (self._sums if self._magnitudes_in_sums[k] else self._magnitudes)[k][:len(self._batches)]

    # ------------------------------------------------------------------ folding and reading
    def _weights(self, rows: int, scale: int) -> Tensor:
        """The weight of each recorded step in a fold of ``rows`` steps, ``keep * decay^age / (batch *
        scale)``; the same few vectors recur (full windows, equal batches), so they are kept."""
        batches = self._batches[:rows]
        key = (rows, batches[0], scale, self.decay_rate) if batches.count(batches[0]) == rows else None
        weights = self._weight_cache.get(key) if key is not None else None
        if weights is None:
            decay, keep = self.decay_rate, 1.0 - self.decay_rate
            weights = torch.tensor([keep * decay ** (rows - 1 - t) / (b * scale)
                                    for t, b in enumerate(batches)],
                                   dtype=self.utility[0].dtype, device=self.utility[0].device)
            if key is not None:
                if len(self._weight_cache) >= 4 * self.capacity:
                    self._weight_cache.clear()
                self._weight_cache[key] = weights
        return weights

    def _fold_into(self, k: int, statistic: str, out: Tensor | None) -> Tensor:
        """Statistic ``k`` with the recorded steps folded in: into itself (``out=None``) or a copy."""
        rows = len(self._batches)
        if statistic == "utility":
            base, values = self.utility[k], self._recorded_magnitudes(k) * self._outgoing[k][:rows]
            weights = self._weights(rows, self.outgoing_rows[k])
        else:
            base, values = self.mean_activation[k], self._sums[k][:rows]
            weights = self._weights(rows, 1)
        beta = self.decay_rate ** rows
        if out is None:
            return base.addmv_(values.t(), weights, beta=beta)
        return torch.addmv(base, values.t(), weights, beta=beta, out=out)

    def fold(self) -> None:
        """Fold every recorded step into the running averages (before they are changed in place)."""
        if self._batches:
            for k in range(len(self.utility)):
                self._fold_into(k, "utility", None)
                self._fold_into(k, "mean_activation", None)
            self._batches.clear()
            self._magnitudes_in_sums = [False for _ in self._magnitudes_in_sums]

    def current(self, k: int, statistic: str) -> Tensor:
        """``"utility"`` or ``"mean_activation"`` of layer ``k`` as of now, without folding in place."""
        if not self._batches:
            return getattr(self, statistic)[k].clone()
        return self._fold_into(k, statistic, torch.empty_like(self.utility[k]))

    def zero_units(self, k: int, units: Tensor) -> None:
        """Start ``units``' statistics afresh (call `fold` first)."""
        self.utility[k][units] = 0.0
        self.mean_activation[k][units] = 0.0

    # ------------------------------------------------------------------ persistence
    def state(self) -> dict[str, Any]:
        rows = len(self._batches)
        return {"batches": list(self._batches),
                "sums": [s[:rows].clone() for s in self._sums],
                "magnitudes": [self._recorded_magnitudes(k).clone() for k in range(len(self._magnitudes))],
                "outgoing": [o[:rows].clone() for o in self._outgoing]}

    def load(self, utility: Sequence[Tensor], mean_activation: Sequence[Tensor],
             pending: dict[str, Any] | None) -> None:
        """Restore the folded averages and, if saved (checkpoints since the deferral), the recorded steps."""
        for k in range(len(self.utility)):
            self.utility[k].copy_(utility[k])
            self.mean_activation[k].copy_(mean_activation[k])
        self._batches = [int(b) for b in pending["batches"]] if pending else []
        self._magnitudes_in_sums = [False for _ in self._magnitudes_in_sums]
        rows = len(self._batches)
        if rows > self.capacity:
            raise ValueError(f"the state has {rows} recorded steps, more than this CBP keeps "
                             f"({self.capacity})")
        for name, buffers in (("sums", self._sums), ("magnitudes", self._magnitudes),
                              ("outgoing", self._outgoing)):
            for buffer, saved in zip(buffers, pending[name] if rows else [], strict=False):
                buffer[:rows].copy_(saved)


__all__ = ["PENDING_STEPS", "RunningStatistics"]
