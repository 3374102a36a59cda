"""ReDo, recycling dormant neurons (Sokar, Agarwal, Castro and Evci, "The Dormant Neuron Phenomenon in
Deep Reinforcement Learning", ICML 2023).

Every ``every`` optimizer steps, each hidden unit ``i`` of a layer is scored on the most recent training
batch as ``s_i = mean_batch |h_i| / (mean_j mean_batch |h_j| + 1e-9)``; the units with ``s_i <= tau`` are
tau-dormant and are re-initialised: fresh incoming weights from the init distribution, incoming bias 0,
outgoing weights 0 (`rl_plasticity.units`). As in the authors' code (dopamine), their optimizer moments
are zeroed too (``reset_optimizer_state``; dopamine leaves the bias's moments, here they go with the
bias). Dopamine's Adam (optax) then bias-corrects the zeroed entries by its own step count: late in
training, with betas (0.9, 0.999) and a steady gradient, such an entry's step is 3.2x the learning rate
at first, 6.6x at its 12th update and 2x at its 287th, where a fresh Adam's is 1x throughout. By default
(``restart_bias_correction``) each zeroed entry is bias-corrected for its own age since the reset
instead, the per-entry step count of the CBP paper's AdamGnT (`rl_plasticity.cbp_moments.MomentResets`):
a fresh Adam's update, at the price of a correction at every update while entries are young (~16.6 /
(1 - beta2) updates). On the demo protocol (5 seeds, docs/methods.md) this default ended with fewer
dormant policy units than dopamine's treatment, the two intervals apart.

Defaults: ``tau`` 0.025 (Plasticine; the ReDo baseline in Dohare et al. 2024 uses 0.1 with L2),
``every`` 1000 optimizer steps (ReDo's DQN setting; Plasticine resets every 10 PPO iterations, which is
``every = 10 * epochs * minibatches``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from rl_plasticity.cbp_moments import MomentResets, zero_unit_moments
from rl_plasticity.cbp_options import InitFn, check_init
from rl_plasticity.hooks import capture_inputs
from rl_plasticity.method import PlasticityMethod
from rl_plasticity.units import draw_rows, reinitialise_units


@dataclass
class ReDoOptions:
    """Attributes:
        tau: a unit whose normalised score is at most ``tau`` is dormant (0: exactly inactive).
        every: optimizer steps between two checks.
        init: distribution of the redrawn incoming weights, a name in `cbp_options.INITS` or a callable.
        nonlinearity: the hidden activation, for the gain of ``kaiming`` and ``xavier`` redraws.
        reset_optimizer_state: zero the optimizer's moments of the re-initialised rows and columns.
        restart_bias_correction: with ``reset_optimizer_state`` and Adam, bias-correct the zeroed entries
            for their own age, as a fresh Adam would (off: by the optimizer's step count, as ReDo's code).
    """

    tau: float = 0.025
    every: int = 1000
    init: str | InitFn = "pytorch_default"
    nonlinearity: str = "relu"
    reset_optimizer_state: bool = True
    restart_bias_correction: bool = True

    def __post_init__(self) -> None:
        if not (math.isfinite(self.tau) and 0.0 <= self.tau < 1.0):
            raise ValueError(f"tau must be in [0, 1), got {self.tau!r}")
        if isinstance(self.every, bool) or int(self.every) != self.every or self.every < 1:
            raise ValueError(f"every must be a whole number of optimizer steps >= 1, got {self.every!r}")
        check_init(self.init, self.nonlinearity, allow_callable=True)
        self.tau, self.every = float(self.tau), int(self.every)


def dormant_units(features: Tensor, tau: float) -> Tensor:
    """Indices of the tau-dormant units of a ``(batch, units)`` feature matrix (ReDo's definition)."""
    activity = features.abs().mean(0)
    score = activity / (activity.mean() + 1e-9)
    return torch.nonzero(score <= tau).flatten()


class ReDo(PlasticityMethod):
    name = "redo"
    Options = ReDoOptions
    min_layers = 2
    acts_on_units = True

    def setup(self) -> None:
        hidden = len(self.layers) - 1
        self._latest: list[Tensor | None] = [None] * hidden
        self.reset_total = [0] * hidden
        #: units re-initialised at the last check, per hidden layer
        self.last_reset = [0] * hidden
        #: fraction of tau-dormant units at the last check, over all hidden layers
        self.dormant_fraction = math.nan
        self._moments_reset_at = MomentResets()
        self._handles += capture_inputs(self.layers[1:], self._capture)

    def _capture(self, k: int, features: Tensor) -> None:
        if torch.is_grad_enabled():  # a training forward, not rollout inference
            self._latest[k] = features

    @torch.no_grad()
    def after_update(self) -> None:
        if self._moments_reset_at:
            self._moments_reset_at.correct(self.optimizer)
        if self.updates % self.options.every or any(f is None for f in self._latest):
            return
        options, dormant, units_seen = self.options, 0, 0
        for k, features in enumerate(self._latest):
            units = dormant_units(features.reshape(-1, features.shape[-1]), options.tau)
            dormant, units_seen = dormant + len(units), units_seen + features.shape[-1]
            self.last_reset[k] = len(units)
            if not len(units):
                continue
            incoming, outgoing = self.layers[k], self.layers[k + 1]
            rows = draw_rows(len(units), incoming, options.init, options.nonlinearity, self.generator)
            reinitialise_units(incoming, outgoing, units, rows)
            if options.reset_optimizer_state and self.optimizer is not None:
                if options.restart_bias_correction:
                    self._moments_reset_at.zero_units(self.optimizer, incoming, outgoing, units)
                else:
                    zero_unit_moments(self.optimizer, incoming, outgoing, units)
            self.reset_total[k] += len(units)
        self.dormant_fraction = dormant / units_seen
        self._latest = [None] * len(self._latest)

    def statistics(self) -> dict[str, float]:
        return {"reset": float(sum(self.last_reset)), "reset_total": float(sum(self.reset_total)),
                "dormant_fraction": self.dormant_fraction}

    def _state(self) -> dict[str, Any]:
        return {"reset_total": list(self.reset_total), "last_reset": list(self.last_reset),
                "dormant_fraction": self.dormant_fraction,
                "moments_reset_at": self._moments_reset_at.saved(self.parameters())}

    def _load_state(self, state: dict[str, Any]) -> None:
        self.reset_total = [int(n) for n in state["reset_total"]]
        self.last_reset = [int(n) for n in state["last_reset"]]
        self.dormant_fraction = float(state["dormant_fraction"])
        self._moments_reset_at = MomentResets.restored(self.parameters(), state["moments_reset_at"])
        self._latest = [None] * len(self._latest)


__all__ = ["ReDo", "ReDoOptions", "dormant_units"]
