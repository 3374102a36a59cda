"""What continual backprop (and ReDo and Reset) do to the optimizer when they re-initialise weights.

With ``reset_optimizer_state`` the moments of every touched entry (the new units' incoming rows and bias,
their outgoing columns) are zeroed. Adam's next update would then divide them by the bias correction of
the parameter's global step count, which is far too small a correction for moments that are one step
old: so for Adam and AdamW `MomentResets` remembers the step count of each reset per entry, and
`MomentResets.correct` redoes the last update of those entries with the correction for their own age,
as a fresh Adam would have applied it. `zero_unit_moments` zeroes without that: the entries then share
the optimizer's step count, as optax's Adam in ReDo's code does.
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


def _unit_entries(incoming: nn.Linear, outgoing: nn.Linear) -> list[tuple[nn.Parameter, int]]:
    """A unit's parameters and the dimension its entries lie along: incoming row, bias, outgoing column."""
    entries = [(incoming.weight, 0), (outgoing.weight, 1)]
    if incoming.bias is not None:
        entries.append((incoming.bias, 0))
    return entries


def zero_unit_moments(optimizer: torch.optim.Optimizer, incoming: nn.Linear, outgoing: nn.Linear,
                      units: Tensor) -> None:
    """Zero the optimizer's moments of ``units``' rows in ``incoming`` and columns in ``outgoing`` and
    leave its step count: their next updates are bias-corrected by the parameter's age, not their own."""
    for param, dim in _unit_entries(incoming, outgoing):
        _zero_state(optimizer, param, dim, units)


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
        self._plans: dict[int, _GroupPlan] = {}
        self._tables: dict[tuple, tuple[Tensor, Tensor]] = {}

    def __bool__(self) -> bool:
        return bool(self.entries)

    def zero_units(self, optimizer: torch.optim.Optimizer, incoming: nn.Linear, outgoing: nn.Linear,
                   units: Tensor) -> None:
        """Zero the optimizer's moments of ``units``' rows in ``incoming`` and columns in ``outgoing``, and
        remember when, for `correct`."""
        for param, dim in _unit_entries(incoming, outgoing):
            state = _zero_state(optimizer, param, dim, units)
            if adam_like(optimizer) and "step" in state:
                entries = self.entries.setdefault(param, torch.full(param.shape, -1.0))
                entries.index_fill_(dim, units.cpu(), float(state["step"]))
                self._plans.clear()

    def zero_parameter(self, optimizer: torch.optim.Optimizer, param: nn.Parameter) -> None:
        """Zero the optimizer's moments of every entry of ``param``."""
        state = _zero_state(optimizer, param, None, None)
        if adam_like(optimizer) and "step" in state:
            self.entries[param] = torch.full(param.shape, float(state["step"]))
            self._plans.clear()

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

    def _plan(self, group: dict, optimizer: torch.optim.Optimizer) -> _GroupPlan | None:
        """What correcting ``group`` needs until the next reset or forgetting, built once for that span
        (or again if the optimizer's state tensors were replaced, as its ``load_state_dict`` does)."""
        key = id(group)
        plan = self._plans.get(key)
        if plan is not None and plan.still_current(optimizer):
            return plan
        params = [p for p in group["params"] if p in self.entries and "step" in optimizer.state.get(p, {})]
        if not params:
            self._plans.pop(key, None)
            return None
        plan = self._plans[key] = _GroupPlan(params, self.entries, optimizer)
        return plan

    @torch.no_grad()
    def correct(self, optimizer: torch.optim.Optimizer) -> None:
        """Redo the last Adam update of every reset entry with bias corrections for its own age; entries
        past the age where both corrections agree are forgotten."""
        for group in optimizer.param_groups:
            plan = self._plan(group, optimizer)
            if plan is None:
                continue
            horizon = _horizon(group["betas"], plan.moments[0].dtype)
            first, second = self._corrections(group["betas"], horizon, plan.moments[0])
            steps = [float(optimizer.state[p]["step"]) for p in plan.params]
            last = len(first) - 1
            m, root_v = plan.gather_moments()
            root_v.sqrt_()
            eps = group["eps"]
            # delta = m * applied_first / (root_v * applied_second + eps) - m * wanted_first / (root_v *
            # wanted_second + eps), in as few passes over the entries as possible: they can be many
            # (ReDo resetting a third of a layer), and each pass costs.
            if steps.count(steps[0]) == len(steps):  # the usual case: the group's params step together
                at_step = min(int(steps[0]), last)
                applied_first, applied_second = float(first[at_step]), float(second[at_step])
                denominator = root_v.add(eps) if applied_second == 1.0 else \
                    root_v.mul(applied_second).add_(eps)
                delta = torch.div(m, denominator)
                if applied_first != 1.0:
                    delta.mul_(applied_first)
                # entries reset together share their age, so their corrections are two numbers
                at_age = None if plan.cohorts is not None else \
                    torch.rsub(plan.gathered_reset_steps, int(steps[0])).clamp_(1, last)
            else:
                per_entry = torch.repeat_interleave(torch.tensor(steps), torch.tensor(plan.sizes))
                step = plan.in_gather_order(per_entry).long()
                at_step = step.clamp(max=last)
                delta = m * first.index_select(0, at_step) / (root_v * second.index_select(0, at_step) + eps)
                at_age = (step - plan.gathered_reset_steps).clamp_(1, last)
            if at_age is None:
                for reset_step, start, stop in plan.cohorts:
                    age = min(max(int(steps[0]) - reset_step, 1), last)
                    wanted_denominator = torch.addcmul(plan.eps(eps), root_v[start:stop], second[age])
                    delta[start:stop].addcdiv_(m[start:stop].mul_(first[age]), wanted_denominator, value=-1.0)
            else:
                wanted_denominator = torch.addcmul(plan.eps(eps), root_v, second.index_select(0, at_age))
                delta.addcdiv_(m.mul_(first.index_select(0, at_age)), wanted_denominator, value=-1.0)
            plan.add_to_parameters(delta, group["lr"])
            if plan.earliest < min(steps) - horizon:
                for k, param in enumerate(plan.params):
                    if plan.earliest_of[k] < steps[k] - horizon:
                        self._forget(param, plan.indices[k], plan.reset_steps_of(k) < steps[k] - horizon)
                self._plans.pop(id(group), None)

    def _forget(self, param: nn.Parameter, indices: Tensor, old: Tensor) -> None:
        if bool(old.all()):
            del self.entries[param]
        else:
            self.entries[param].view(-1)[indices[old].cpu()] = -1.0

    def saved(self, parameters: list[nn.Parameter]) -> list[Tensor | None]:
        """The entries as a list in the order of ``parameters`` (None where nothing was reset): for a
        ``state_dict``, which must not hold the parameters themselves."""
        return [self.entries[p].clone() if p in self.entries else None for p in parameters]

    @classmethod
    def restored(cls, parameters: list[nn.Parameter], saved: list[Tensor | None]) -> MomentResets:
        """The inverse of `saved`."""
        return cls({p: r.clone() for p, r in zip(parameters, saved, strict=True) if r is not None})


class _GroupPlan:
    """One param group's reset entries, gathered between two resets: per parameter its flat indices,
    the steps they were reset at, and views of its Adam moments. Where the parameters are views of one
    buffer, and their moments of another (`agents.flat_storage`), each gather and the update are one call
    over the buffer instead of one per parameter."""

    def __init__(self, params: list[nn.Parameter], entries: dict[nn.Parameter, Tensor],
                 optimizer: torch.optim.Optimizer) -> None:
        self.params = params
        self.indices, reset_steps = [], []
        for param in params:
            flat = entries[param].view(-1)
            index = torch.nonzero(flat >= 0).squeeze(1)
            self.indices.append(index.to(param.device))
            reset_steps.append(flat[index].long().to(param.device))
        self.sizes = [len(index) for index in self.indices]
        self.reset_steps = torch.cat(reset_steps)
        self.earliest_of = [float(steps.min()) for steps in reset_steps]
        self.earliest = min(self.earliest_of)
        self._state_tensors = [optimizer.state[p]["exp_avg"] for p in params]
        self._addresses = [p.data_ptr() for p in params]
        self.moments = [optimizer.state[p]["exp_avg"].view(-1) for p in params]
        self.squares = [optimizer.state[p]["exp_avg_sq"].view(-1) for p in params]
        self._moments_flat = _one_buffer(self.moments + self.squares, self.indices + self.indices)
        self._params_flat = _one_buffer([p.detach() for p in params], self.indices)
        #: the reset steps of the entries in the order `gather_moments` returns them
        self.gathered_reset_steps = self.reset_steps
        #: ``(reset step, start, stop)`` of each group of entries reset at one step, contiguous in gather
        #: order; None where there are many (CBP's one unit at a time: per-entry tables are cheaper then)
        self.cohorts: list[tuple[int, int, int]] | None = None
        self._order: Tensor | None = None
        if self._moments_flat is not None and self._params_flat is not None:
            reset_at, counts = torch.unique(self.reset_steps, return_counts=True)
            if len(reset_at) <= _MAX_COHORTS:
                order = self._order = torch.argsort(self.reset_steps, stable=True)
                (moments, index), (parameters, param_index) = self._moments_flat, self._params_flat
                self._moments_flat = (moments, index[torch.cat((order, order + len(order)))])
                self._params_flat = (parameters, param_index[order])
                self.gathered_reset_steps = self.reset_steps[order]
                stops = torch.cumsum(counts, 0).tolist()
                self.cohorts = [(at, stop - n, stop) for at, n, stop in
                                zip(reset_at.tolist(), counts.tolist(), stops, strict=True)]

    def eps(self, value: float) -> Tensor:
        """``value`` as a 0-d tensor (one per plan: building it costs as much as an op)."""
        if getattr(self, "_eps", (None,))[0] != value:
            like = self.moments[0]
            self._eps = (value, torch.tensor(value, dtype=like.dtype, device=like.device))
        return self._eps[1]

    def still_current(self, optimizer: torch.optim.Optimizer) -> bool:
        # the parameters' memory too: the one-call update writes into the storage they had when planned
        return all(optimizer.state.get(p, {}).get("exp_avg") is t and p.data_ptr() == address
                   for p, t, address in zip(self.params, self._state_tensors, self._addresses, strict=True))

    def gather(self, flat_tensors: list[Tensor]) -> Tensor:
        parts = [t.index_select(0, index) for t, index in zip(flat_tensors, self.indices, strict=True)]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def in_gather_order(self, per_entry: Tensor) -> Tensor:
        """A tensor over the entries, parameter by parameter, in `gather_moments`' order."""
        return per_entry if self._order is None else per_entry[self._order]

    def gather_moments(self) -> tuple[Tensor, Tensor]:
        """The reset entries' first and second moments (new tensors)."""
        if self._moments_flat is None:
            return self.gather(self.moments), self.gather(self.squares)
        buffer, index = self._moments_flat
        return buffer.index_select(0, index).chunk(2)

    def add_to_parameters(self, delta: Tensor, alpha: float) -> None:
        """``param += alpha * delta`` at the reset entries (``delta`` in `gather_moments`' order)."""
        if self._params_flat is not None:
            buffer, index = self._params_flat
            # scatter_add_ of the scaled delta: the same sums as index_add_(alpha=...) (the indices are
            # distinct), in two thirds of its time
            buffer.scatter_add_(0, index, delta.mul_(alpha))
            return
        for param, index, part in zip(self.params, self.indices, delta.split(self.sizes), strict=True):
            param.view(-1).index_add_(0, index, part, alpha=alpha)

    def reset_steps_of(self, k: int) -> Tensor:
        start = sum(self.sizes[:k])
        return self.reset_steps[start:start + self.sizes[k]]


#: most groups of entries reset at different steps that `_GroupPlan` corrects group by group
_MAX_COHORTS = 4


def _one_buffer(tensors: list[Tensor], indices: list[Tensor]) -> tuple[Tensor, Tensor] | None:
    """Where ``tensors`` are all contiguous views of one storage: a 1-D tensor over that storage and
    ``indices`` (one per tensor, into it) moved to the storage's positions, concatenated; else None."""
    first = tensors[0]
    storage = first.untyped_storage()
    if any(not t.is_contiguous() or t.dtype != first.dtype or t.device != first.device
           or t.untyped_storage().data_ptr() != storage.data_ptr() for t in tensors):
        return None
    buffer = first.new_empty(0).set_(storage, 0, (storage.nbytes() // first.element_size(),))
    return buffer, torch.cat([index + t.storage_offset() for t, index in zip(tensors, indices, strict=True)])


def _horizon(betas: tuple[float, float], dtype: torch.dtype) -> float:
    """The age past which ``beta^age`` is below half the dtype's epsilon for both betas, so a fresh Adam's
    bias corrections are 1 to the dtype's precision, as the parameter's are: ``-ln(eps / 2) / (1 - beta)``
    (16.6 / (1 - beta) for float32), since ``beta^age <= exp(-age * (1 - beta))``."""
    return -math.log(torch.finfo(dtype).eps / 2) / (1.0 - max(betas))


__all__ = ["MomentResets", "adam_like", "zero_unit_moments"]
