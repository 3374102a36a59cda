"""What continual backprop (and ReDo and Reset) do to the optimizer when they re-initialise weights.

With ``reset_optimizer_state`` the moments of every touched entry (the new units' incoming rows and bias,
their outgoing columns) are zeroed. Adam's next update would then divide them by the bias correction of
the parameter's global step count, which is far too small a correction for moments that are one step
old: so for Adam and AdamW `MomentResets` remembers the step count of each reset per entry, and
`MomentResets.correct` redoes the last update of those entries with the correction for their own age,
as a fresh Adam would have applied it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def adam_like(optimizer: torch.optim.Optimizer) -> bool:
    """Adam and AdamW (not AMSGrad): the update whose bias correction `MomentResets.correct` redoes."""
    return isinstance(optimizer, torch.optim.Adam | torch.optim.AdamW) and not any(
        group.get("amsgrad") or group.get("maximize") for group in optimizer.param_groups)


def _zero_state(optimizer: torch.optim.Optimizer, param: nn.Parameter, dim: int | None,
                units: Tensor | None) -> dict:
    state = optimizer.state.get(param, {})
    for value in state.values():
        # Per-element moments share the parameter's shape; scalars such as "step" do not.
        if isinstance(value, Tensor) and value.shape == param.shape:
            if units is None:
                value.zero_()
            else:
                value.index_fill_(dim, units.to(value.device), 0.0)
    return state


class MomentResets:
    """The optimizer step at which the moments of each reset entry were zeroed, per parameter, for the
    entries young enough that their bias correction still differs from the parameter's.

    ``entries[param]`` has the parameter's shape and holds the step (-1: not reset, or long enough ago).
    The indices of the reset entries are cached between resets, so a step's correction gathers just
    those entries and computes on them in one go for all parameters, with Adam's bias corrections read
    from a table by age rather than raised to a power per entry.
    """

    def __init__(self, entries: dict[nn.Parameter, Tensor] | None = None) -> None:
        self.entries: dict[nn.Parameter, Tensor] = dict(entries or {})
        self._active: dict[nn.Parameter, tuple[Tensor, Tensor, float]] = {}
        self._tables: dict[tuple, tuple[Tensor, Tensor]] = {}

    def __bool__(self) -> bool:
        return bool(self.entries)

    def zero_units(self, optimizer: torch.optim.Optimizer, incoming: nn.Linear, outgoing: nn.Linear,
                   units: Tensor) -> None:
        """Zero the optimizer's moments of ``units``' rows in ``incoming`` and columns in ``outgoing``."""
        targets = [(incoming.weight, 0), (outgoing.weight, 1)]
        if incoming.bias is not None:
            targets.append((incoming.bias, 0))
        for param, dim in targets:
            state = _zero_state(optimizer, param, dim, units)
            if adam_like(optimizer) and "step" in state:
                entries = self.entries.setdefault(param, torch.full(param.shape, -1.0))
                entries.index_fill_(dim, units.cpu(), float(state["step"]))
                self._active.pop(param, None)

    def zero_parameter(self, optimizer: torch.optim.Optimizer, param: nn.Parameter) -> None:
        """Zero the optimizer's moments of every entry of ``param``."""
        state = _zero_state(optimizer, param, None, None)
        if adam_like(optimizer) and "step" in state:
            self.entries[param] = torch.full(param.shape, float(state["step"]))
            self._active.pop(param, None)

    def _corrections(self, betas: tuple[float, float], horizon: float, like: Tensor) -> tuple[Tensor, Tensor]:
        """Adam's bias corrections ``1 / (1 - beta1^n)`` and ``1 / sqrt(1 - beta2^n)`` for n = 0, 1, ...
        up to past ``horizon`` (beyond it both are 1 in float), computed once in double precision."""
        key = (*betas, like.dtype, like.device)
        if key not in self._tables:
            beta1, beta2 = betas
            n = range(int(horizon) + 2)
            first = [1.0 / (1.0 - beta1 ** k) if k else 0.0 for k in n]
            second = [1.0 / math.sqrt(1.0 - beta2 ** k) if k else 0.0 for k in n]
            self._tables[key] = (torch.tensor(first, dtype=like.dtype, device=like.device),
                                 torch.tensor(second, dtype=like.dtype, device=like.device))
        return self._tables[key]

    def _reset_entries(self, param: nn.Parameter) -> tuple[Tensor, Tensor, float]:
        """The flat indices of ``param``'s reset entries, the steps they were reset at, and the earliest."""
        if param not in self._active:
            flat = self.entries[param].view(-1)
            indices = torch.nonzero(flat >= 0).squeeze(1)
            steps = flat[indices]
            self._active[param] = (indices.to(param.device), steps.to(param.device), float(steps.min()))
        return self._active[param]

    @torch.no_grad()
    def correct(self, optimizer: torch.optim.Optimizer) -> None:
        """Redo the last Adam update of every reset entry with bias corrections for its own age; entries
        past the age where both corrections agree are forgotten."""
        for group in optimizer.param_groups:
            params = [p for p in group["params"]
                      if p in self.entries and "step" in optimizer.state.get(p, {})]
            if not params:
                continue
            horizon = _horizon(group["betas"], optimizer.state[params[0]]["exp_avg"].dtype)
            indices, reset_steps, earliest, steps, moments, squares = [], [], [], [], [], []
            for param in params:
                state = optimizer.state[param]
                index, reset_step, first_reset = self._reset_entries(param)
                indices.append(index)
                reset_steps.append(reset_step)
                earliest.append(first_reset)
                steps.append(float(state["step"]))
                moments.append(state["exp_avg"].view(-1).index_select(0, index))
                squares.append(state["exp_avg_sq"].view(-1).index_select(0, index))
            sizes = [len(index) for index in indices]
            first, second = self._corrections(group["betas"], horizon, moments[0])
            if len(set(steps)) == 1:
                step: Tensor | float = steps[0]
                applied_first, applied_second = (float(c[min(int(steps[0]), len(c) - 1)])
                                                 for c in (first, second))
            else:
                step = torch.repeat_interleave(torch.tensor(steps), torch.tensor(sizes)).to(moments[0])
                at_step = step.clamp(max=len(first) - 1).long()
                applied_first = first.index_select(0, at_step)
                applied_second = second.index_select(0, at_step)
            reset_step = torch.cat(reset_steps)
            at_age = (step - reset_step).clamp(1, len(first) - 1).long()
            m, root_v, eps = torch.cat(moments), torch.cat(squares).sqrt(), group["eps"]
            applied = m * applied_first / (root_v * applied_second + eps)
            wanted = m * first.index_select(0, at_age) / (root_v * second.index_select(0, at_age) + eps)
            deltas = (applied - wanted).split(sizes)
            for k, param in enumerate(params):
                param.view(-1).index_add_(0, indices[k], deltas[k], alpha=group["lr"])
                if earliest[k] < steps[k] - horizon:
                    self._forget(param, indices[k], reset_steps[k] < steps[k] - horizon)

    def _forget(self, param: nn.Parameter, indices: Tensor, old: Tensor) -> None:
        if bool(old.all()):
            del self.entries[param]
        else:
            self.entries[param].view(-1)[indices[old].cpu()] = -1.0
        self._active.pop(param, None)

    def saved(self, parameters: list[nn.Parameter]) -> list[Tensor | None]:
        """The entries as a list in the order of ``parameters`` (None where nothing was reset): for a
        ``state_dict``, which must not hold the parameters themselves."""
        return [self.entries[p].clone() if p in self.entries else None for p in parameters]

    @classmethod
    def restored(cls, parameters: list[nn.Parameter], saved: list[Tensor | None]) -> MomentResets:
        """The inverse of `saved`."""
        return cls({p: r.clone() for p, r in zip(parameters, saved, strict=True) if r is not None})


def _horizon(betas: tuple[float, float], dtype: torch.dtype) -> float:
    """The age past which ``beta^age`` is below half the dtype's epsilon for both betas, so a fresh Adam's
    bias corrections are 1 to the dtype's precision, as the parameter's are: ``-ln(eps / 2) / (1 - beta)``
    (16.6 / (1 - beta) for float32), since ``beta^age <= exp(-age * (1 - beta))``."""
    return -math.log(torch.finfo(dtype).eps / 2) / (1.0 - max(betas))


__all__ = ["MomentResets", "adam_like"]
