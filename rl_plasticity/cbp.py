"""Continual backpropagation: backprop plus a steady re-initialisation of the least useful hidden units.

`ContinualBackprop` attaches to the consecutive ``nn.Linear`` layers of one MLP. Forward pre-hooks on
``layers[1:]`` see every hidden feature as it enters the next layer; an optimizer post-step hook (or a
manual ``step()``) then runs one generate-and-test step (Dohare et al., Nature 2024):

1. every hidden unit ages by one;
2. its contribution utility ``mean|h_i| * mean_k |W_next[k, i]|`` on the batch just trained on updates a
   running average ``u = decay * u + (1 - decay) * instant``;
3. among units older than ``maturity_threshold``, ``replacement_rate * n_eligible`` units (rounded by a
   Bernoulli draw, or with the fraction carried over) with the lowest bias-corrected utility
   ``u / (1 - decay**age)`` are re-initialised: incoming weights redrawn, incoming bias 0, outgoing
   weights 0 (the network's output does not jump), optionally the next layer's bias compensating for the
   unit's mean activation, optionally the optimizer's moments of the touched rows and columns zeroed.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections import deque
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from rl_plasticity.cbp_moments import MomentResets
from rl_plasticity.cbp_options import INITS, OPTION_NAMES, UTILITIES, CBPOptions, InitFn
from rl_plasticity.cbp_statistics import RunningStatistics
from rl_plasticity.cbp_utilities import UTILITY_RULES
from rl_plasticity.cbp_utilities import debias as _debias
from rl_plasticity.hooks import capture_inputs, check_linear_chain, linear_layers, nonnegative_inputs
from rl_plasticity.method import PlasticityMethod, check_switches
from rl_plasticity.units import draw_rows, reinitialise_units

__all__ = ["INITS", "UTILITIES", "CBPOptions", "ContinualBackprop", "InitFn"]

MAX_PENDING_BATCHES = 64


class ContinualBackprop(PlasticityMethod):
    """Generate-and-test for one MLP; see the module docstring for the algorithm. The plasticity method
    ``"cbp"`` (`rl_plasticity.method`); it counts its own ``steps`` and keeps its checkpoint format.

    Args:
        layers: the consecutive ``nn.Linear`` layers of ONE MLP, input to output. Hidden units are the
            outputs of every layer but the last; the last is the head that consumes the last hidden layer.
        optimizer: if given, ``step()`` runs after every ``optimizer.step()`` through a post-step hook, and
            ``reset_optimizer_state`` acts on its state.

    The options below are keywords, the fields of `CBPOptions` (kept, validated, in ``cbp.options``;
    ``cbp.replacement_rate = x`` and the like read and change them):

        replacement_rate: expected fraction of eligible units replaced per step, in [0, 1].
        maturity_threshold: a unit is eligible once its age (in steps) exceeds this.
        decay_rate: decay of the running utility and mean activation, in [0, 1).
        utility: ``"contribution"``, ``"adaptable_contribution"`` or ``"random"`` (the ablation:
            eligible units are picked at random). ``adaptable_contribution`` is the reference code's
            (``gnt.py``): ``mean_batch |h_i - mean_h_i| * mean_k |W_next[k, i]| / mean_j |W[i, j]|``, the
            activation centred on its bias-corrected running mean. The paper's PPO uses ``contribution``.
        init: distribution of the redrawn incoming weights: ``"lecun"``, ``"kaiming"``, ``"xavier"``,
            ``"pytorch_default"`` or a callable ``init(rows, fan_in)`` that fills ``rows`` in place (or
            returns the new rows).
        bias_correction: add ``W_next[:, i] * mean(h_i)`` to the next layer's bias before zeroing the
            outgoing weights, so the next layer's pre-activation is unchanged on average.
        reset_optimizer_state: zero the optimizer's per-parameter moment entries (Adam's ``exp_avg``,
            ``exp_avg_sq``, ...) of the replaced incoming rows and outgoing columns. With Adam or AdamW
            the following updates of those entries are then bias-corrected by their own age since the
            reset, as a freshly started Adam would be: torch keeps one ``step`` per tensor, and its
            correction ``1 - beta**step`` for a large ``step`` would make the first update of a reset
            entry ``(1 - beta1) / sqrt(1 - beta2)`` times the learning rate (3.2x with (0.9, 0.999)).
        accumulate: ``False`` rounds the expected number of replacements by a Bernoulli draw on its
            fractional part; ``True`` carries the fraction over to the next step (the supervised code).
        floor_when_above_one: with ``accumulate=False``, round as the reference RL code does: a
            Bernoulli draw only while the expected number is below 1, ``floor`` from 1 on (fewer
            replacements than the expected number in that regime). Off: the expected number is kept.
        nonlinearity: the hidden activation, for the gain of the ``kaiming`` and ``xavier`` redraws.
        generator: ``torch.Generator`` (CPU) for every random draw. Default: a private generator seeded
            from torch's global RNG, so ``torch.manual_seed`` makes runs reproducible.
        nonnegative_features: the hidden features are never negative (each hidden layer feeds the next
            through a ReLU, say): ``sum|h_i|`` is then the batch sum the mean activation takes anyway, so
            it is taken once. A property of the network, not an option; `from_sequential` reads it off
            the ``nn.Sequential`` (`rl_plasticity.hooks.nonnegative_inputs`). Wrongly ``True`` would rank
            units by a signed sum: pass it only for such networks.
    """

    name = "cbp"
    Options = CBPOptions
    needs_optimizer = False  # without one, call step() after each update
    min_layers = 2
    acts_on_units = True

    def __init__(
        self,
        layers: Sequence[nn.Linear],
        optimizer: torch.optim.Optimizer | None = None,
        *,
        generator: torch.Generator | None = None,
        nonnegative_features: bool = False,
        **options: Any,
    ) -> None:
        self.layers: list[nn.Linear] = list(layers)
        self.nonnegative_features = nonnegative_features
        unknown = sorted(set(options) - set(OPTION_NAMES))
        if unknown:
            raise TypeError(f"ContinualBackprop got unknown option(s) {', '.join(unknown)}; the options are "
                            f"{', '.join(OPTION_NAMES)}")
        self.options = check_switches(CBPOptions(**options))
        _validate(self.layers, optimizer, self.options)
        self.optimizer = optimizer
        if generator is None:
            generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
        self.generator = generator

        device = self.layers[0].weight.device
        widths = [layer.out_features for layer in self.layers[:-1]]
        self._statistics = RunningStatistics(widths, [layer.out_features for layer in self.layers[1:]],
                                             self.options.decay_rate, device)
        # Units store the step they were born at; age = steps - birth costs nothing per step.
        self._birth = [torch.zeros(w, dtype=torch.long, device=device) for w in widths]
        self._carry = [0.0 for _ in widths]
        # Per layer, the birth steps of units replaced within the maturity window (at most one entry per
        # unit, since a young unit cannot be replaced): the eligible count without a tensor reduction.
        self._recent_births: list[deque[int]] = [deque() for _ in widths]
        self._uniform_pool: list[float] = []
        self.replaced_total: list[int] = [0 for _ in widths]
        #: indices replaced in each hidden layer by the most recent step (empty tensors if none)
        self.last_replaced: list[Tensor] = [torch.empty(0, dtype=torch.long) for _ in widths]
        self.steps = 0
        # Bounded: forwards without a following step() (a forgotten manual step, grad-enabled evaluation)
        # must not hold on to memory; the step then scores the most recent batches.
        self._features: list[deque[Tensor]] = [deque(maxlen=MAX_PENDING_BATCHES) for _ in widths]
        self._warned_no_features = False

        self._handles = capture_inputs(self.layers[1:], self._capture)
        # Optimizer step count at which each entry's moments were last zeroed, per parameter.
        self._moments_reset_at = MomentResets()
        if optimizer is not None:
            self._handles.append(optimizer.register_step_post_hook(lambda *_: self._after_optimizer_step()))

    # The options live in one place, ``self.options``; ``cbp.replacement_rate`` and the like read it, and
    # assigning one replaces the options with a validated copy.
    def __getattr__(self, name: str) -> Any:
        options = self.__dict__.get("options")
        if options is not None and name in OPTION_NAMES:
            return getattr(options, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in OPTION_NAMES:
            value, name = dataclasses.replace(self.options, **{name: value}), "options"
            if "_statistics" in self.__dict__:
                self._statistics.fold()  # the steps recorded so far average with the decay they saw
                self._statistics.decay_rate = value.decay_rate
        object.__setattr__(self, name, value)

    def _after_optimizer_step(self) -> None:
        if self._moments_reset_at:
            self._moments_reset_at.correct(self.optimizer)
        self.step()

    @classmethod
    def from_sequential(
        cls, module: nn.Module, optimizer: torch.optim.Optimizer | None = None, **kwargs: Any
    ) -> ContinualBackprop:
        """Attach to every ``nn.Linear`` inside ``module``, in registration order; ``nonnegative_features``
        defaults to what ``module``'s structure shows (`rl_plasticity.hooks.nonnegative_inputs`)."""
        kwargs.setdefault("nonnegative_features", nonnegative_inputs(module))
        return cls(linear_layers(module), optimizer, **kwargs)

    @property
    def num_hidden_layers(self) -> int:
        return len(self._birth)

    def _age(self, k: int) -> Tensor:
        return self.steps - self._birth[k]

    def _capture(self, hidden_index: int, features: Tensor) -> None:
        # Only forwards that train count: rollout inference under no_grad must not move utilities.
        if torch.is_grad_enabled():
            self._features[hidden_index].append(features)

    # ------------------------------------------------------------------ generate-and-test
    def step(self) -> None:
        """One generate-and-test step on the features seen since the previous step."""
        if not all(self._features):
            if not self._warned_no_features:
                warnings.warn(
                    "ContinualBackprop.step() found no grad-enabled forward pass since the last step; "
                    "the step is skipped. Run the network's training forward before optimizer.step().",
                    stacklevel=2,
                )
                self._warned_no_features = True
            self.discard_features()
            return
        self.steps += 1
        # Every layer's statistics first, then the replacements, as in the paper's code; a replacement
        # in layer k touches only W_k's rows and W_{k+1}'s columns, which no later ranking reads.
        self._update_statistics()
        for k in range(self.num_hidden_layers):
            count = self._number_to_replace(k)
            if count:
                with torch.no_grad():
                    self._replace_in_layer(k, count)
            elif self.last_replaced[k].numel():
                self.last_replaced[k] = self.last_replaced[k][:0]
        self.discard_features()

    def discard_features(self) -> None:
        """Forget the features captured since the last step, e.g. after a minibatch whose optimizer
        step was skipped (an early stop on the KL target): the next step then scores only the batch it
        trained on."""
        for store in self._features:
            store.clear()

    def _batch_features(self, k: int) -> Tensor:
        parts = self._features[k]
        if len(parts) == 1 and parts[0].dim() == 2:
            return parts[0]
        return torch.cat([f.reshape(-1, f.shape[-1]) for f in parts])  # gradient accumulation

    def _update_statistics(self) -> None:
        # Two or three reductions per hidden layer, recorded per step; the running averages are folded
        # every few steps (`rl_plasticity.cbp_statistics`). The features are detached and the weights
        # are read detached, so no grad-mode switch is needed (it costs as much as a reduction). The
        # feature sums stay here rather than in the capture hook, where the features are still in cache:
        # moved there, they took ~5 us out of step() and added as much to the training step
        # (benchmarks/cbp_overhead.py --fused, 2026-12-05).
        rule = UTILITY_RULES[self.options.utility]
        track_mean = self.options.bias_correction or rule.reads_mean_activation
        if not rule.scores_units and not track_mean:
            return
        features = [self._batch_features(k) for k in range(len(self._birth))]
        if not rule.scores_units:
            self._statistics.record(features, (), track_mean, None)
            return
        magnitude_is_sum = self.nonnegative_features and rule.magnitude_is_sum_if_nonnegative
        self._statistics.record(features, [layer.weight.detach() for layer in self.layers[1:]], track_mean,
                                self._feature_magnitude, magnitude_is_sum)

    @torch.no_grad()
    def _feature_magnitude(self, k: int, features: Tensor, scratch: Tensor, out: Tensor) -> None:
        rule = UTILITY_RULES[self.options.utility]
        mean = None
        if rule.reads_mean_activation:  # as of this step, its batch included
            mean = self._statistics.current(k, "mean_activation") / _debias(self.options.decay_rate,
                                                                            self._age(k))
        rule.feature_magnitude(features, self.layers[k], mean, scratch, out)

    def _number_to_replace(self, k: int) -> int:
        if self.options.replacement_rate == 0.0 or self.steps <= self.options.maturity_threshold:
            return 0  # no unit can be older than the number of steps taken
        recent = self._recent_births[k]
        while recent and recent[0] < self.steps - self.options.maturity_threshold:
            recent.popleft()
        eligible = self._birth[k].numel() - len(recent)
        expected = self.options.replacement_rate * eligible
        if self.options.accumulate:
            self._carry[k] += expected
            count = math.floor(self._carry[k] + 1e-12)
            self._carry[k] -= count
            return min(count, eligible)
        count = math.floor(expected)
        if self.options.floor_when_above_one and expected >= 1:
            return min(count, eligible)
        if self._uniform() < expected - count:
            count += 1
        return min(count, eligible)

    def _uniform(self) -> float:
        # Drawn in blocks: one tensor call per step and layer would cost more than the rest of step().
        if not self._uniform_pool:
            self._uniform_pool = torch.rand(1024, generator=self.generator, dtype=torch.float64).tolist()
        return self._uniform_pool.pop()

    def _ranked_utility(self, k: int, age: Tensor) -> Tensor:
        rule = UTILITY_RULES[self.options.utility]
        return rule.score(self._statistics.utility[k], age, self.options.decay_rate, self.generator)

    def _replace_in_layer(self, k: int, count: int) -> None:
        self._statistics.fold()
        age = self._age(k)
        score = self._ranked_utility(k, age).masked_fill(age <= self.options.maturity_threshold, math.inf)
        units = torch.topk(score, count, largest=False).indices
        incoming, outgoing = self.layers[k], self.layers[k + 1]

        if self.options.bias_correction:
            mean = self._statistics.mean_activation[k][units] / _debias(self.options.decay_rate, age[units])
            outgoing.bias.add_(outgoing.weight[:, units] @ mean)
        options = self.options
        rows = draw_rows(count, incoming, options.init, options.nonlinearity, self.generator)
        reinitialise_units(incoming, outgoing, units, rows)
        if self.options.reset_optimizer_state:
            self._moments_reset_at.zero_units(self.optimizer, incoming, outgoing, units)

        self._statistics.zero_units(k, units)
        self._birth[k][units] = self.steps
        self._recent_births[k].extend([self.steps] * count)
        self.replaced_total[k] += count
        self.last_replaced[k] = units

    # ------------------------------------------------------------------ inspection and persistence
    def utilities(self) -> list[Tensor]:
        """Bias-corrected running utility of every hidden unit, one tensor per hidden layer."""
        return [self._statistics.current(k, "utility") / _debias(self.options.decay_rate, self._age(k))
                for k in range(self.num_hidden_layers)]

    def ages(self) -> list[Tensor]:
        """Age in steps of every hidden unit, one tensor per hidden layer."""
        return [self._age(k) for k in range(self.num_hidden_layers)]

    def state_dict(self) -> dict[str, Any]:
        return {
            "hidden_sizes": [int(b.numel()) for b in self._birth],
            "steps": self.steps,
            "utility": [u.clone() for u in self._statistics.utility],
            "mean_activation": [m.clone() for m in self._statistics.mean_activation],
            # the steps recorded since the last fold (older checkpoints have none)
            "pending_statistics": self._statistics.state(),
            "age": self.ages(),
            "carry": list(self._carry),
            "replaced_total": list(self.replaced_total),
            "generator_state": self.generator.get_state(),
            "uniform_pool": list(self._uniform_pool),
            "moments_reset_at": self._moments_reset_at.saved(self.parameters()),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        sizes = [int(b.numel()) for b in self._birth]
        if list(state["hidden_sizes"]) != sizes:
            raise ValueError(
                f"state_dict is for hidden sizes {state['hidden_sizes']}, but this ContinualBackprop is "
                f"attached to hidden sizes {sizes}; load it into an object built on the same network"
            )
        self._statistics.load(state["utility"], state["mean_activation"], state.get("pending_statistics"))
        self.steps = int(state["steps"])
        for k in range(self.num_hidden_layers):
            self._birth[k].copy_(self.steps - state["age"][k])
        self._carry = [float(c) for c in state["carry"]]
        self.replaced_total = [int(r) for r in state["replaced_total"]]
        self.generator.set_state(state["generator_state"])
        self._uniform_pool = [float(u) for u in state["uniform_pool"]]
        # Checkpoints from before per-entry ages have none: their reset entries follow torch's count.
        saved = state.get("moments_reset_at") or [None] * len(self.parameters())
        self._moments_reset_at = MomentResets.restored(self.parameters(), saved)
        for k in range(self.num_hidden_layers):
            young = self._birth[k][self._birth[k] >= self.steps - self.options.maturity_threshold]
            self._recent_births[k] = deque(sorted(int(b) for b in young if b > 0 or self.steps == 0))
        self.discard_features()

    def remove(self) -> None:
        """Detach every hook; the network and optimizer are left as they are."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.discard_features()

    def statistics(self) -> dict[str, float]:
        return {"replaced": float(sum(len(units) for units in self.last_replaced)),
                "replaced_total": float(sum(self.replaced_total))}

    def __repr__(self) -> str:
        sizes = [int(b.numel()) for b in self._birth]
        return (
            f"ContinualBackprop(hidden_sizes={sizes}, replacement_rate={self.options.replacement_rate}, "
            f"maturity_threshold={self.options.maturity_threshold}, decay_rate={self.options.decay_rate}, "
            f"utility={self.options.utility!r}, replaced_total={self.replaced_total})"
        )


def _validate(layers: list[nn.Linear], optimizer: torch.optim.Optimizer | None, options: CBPOptions) -> None:
    """What the options need of the network and optimizer (`CBPOptions` checks their values)."""
    check_linear_chain(layers, 2)
    if options.bias_correction and any(layer.bias is None for layer in layers[1:]):
        raise ValueError(
            "bias_correction=True needs a bias on every layer after the first (it compensates the "
            "next layer's bias); give those layers a bias or pass bias_correction=False"
        )
    if options.reset_optimizer_state and optimizer is None:
        raise ValueError("reset_optimizer_state=True needs the optimizer: pass optimizer=...")
