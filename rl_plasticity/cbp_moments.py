"""What continual backprop does to the optimizer when it replaces units.

With ``reset_optimizer_state`` the moments of every touched entry (the new units' incoming rows and bias,
their outgoing columns) are zeroed. Adam's next update would then divide them by the bias correction of
the parameter's global step count, which is far too small a correction for moments that are one step
old: so for Adam and AdamW the step count of each reset is remembered per entry (``reset_at``, -1 for
never), and `correct_reset_updates` redoes the last update of those entries with the correction for
their own age, as a fresh Adam would have applied it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def adam_like(optimizer: torch.optim.Optimizer) -> bool:
    """Adam and AdamW (not AMSGrad): the update whose bias correction `correct_reset_updates` redoes."""
    return isinstance(optimizer, torch.optim.Adam | torch.optim.AdamW) and not any(
        group.get("amsgrad") or group.get("maximize") for group in optimizer.param_groups)


def zero_moments(optimizer: torch.optim.Optimizer, reset_at: dict[nn.Parameter, Tensor], incoming: nn.Linear,
                 outgoing: nn.Linear, units: Tensor) -> None:
    """Zero the optimizer's moments of ``units``' rows in ``incoming`` and columns in ``outgoing``."""
    targets = [(incoming.weight, 0), (outgoing.weight, 1)]
    if incoming.bias is not None:
        targets.append((incoming.bias, 0))
    for param, dim in targets:
        state = optimizer.state.get(param, {})
        for value in state.values():
            # Per-element moments share the parameter's shape; scalars such as "step" do not.
            if isinstance(value, Tensor) and value.shape == param.shape:
                value.index_fill_(dim, units.to(value.device), 0.0)
        if adam_like(optimizer) and "step" in state:
            entries = reset_at.setdefault(param, torch.full(param.shape, -1.0))
            entries.index_fill_(dim, units.cpu(), float(state["step"]))


@torch.no_grad()
def correct_reset_updates(optimizer: torch.optim.Optimizer, reset_at: dict[nn.Parameter, Tensor]) -> None:
    """Redo the last Adam update of every reset entry with bias corrections for its own age; entries
    past the age where both corrections agree are forgotten. Only the reset entries are gathered and
    computed on: a few rows and columns of each matrix, where the whole matrix would cost most of a
    minibatch step."""
    for group in optimizer.param_groups:
        beta1, beta2 = group["betas"]
        # Past ~40 / (1 - beta) steps the two corrections agree to float precision.
        horizon = 40.0 / (1.0 - max(beta1, beta2))
        for param in group["params"]:
            entries = reset_at.get(param)
            state = optimizer.state.get(param, {})
            if entries is None or "step" not in state:
                continue
            step = float(state["step"])
            flat = entries.view(-1)
            active = torch.nonzero(flat >= 0).squeeze(1)
            reset_step = flat[active]
            age = (step - reset_step).clamp(min=1.0)
            on_device = active.to(param.device)
            m = state["exp_avg"].view(-1)[on_device]
            v = state["exp_avg_sq"].view(-1)[on_device]
            eps, lr = group["eps"], group["lr"]
            applied = m / (1 - beta1 ** step) / (v.sqrt() / math.sqrt(1 - beta2 ** step) + eps)
            age = age.to(param.device)
            wanted = m / (1 - beta1 ** age) / (v.sqrt() / torch.sqrt(1 - beta2 ** age) + eps)
            param.view(-1).index_add_(0, on_device, applied - wanted, alpha=lr)
            stale = reset_step < step - horizon
            if bool(stale.all()):
                del reset_at[param]
            elif bool(stale.any()):
                flat[active[stale]] = -1.0


def saved_resets(reset_at: dict[nn.Parameter, Tensor], parameters: list[nn.Parameter]) -> list[Tensor | None]:
    """``reset_at`` as a list in the order of ``parameters`` (None where nothing was reset): for a
    ``state_dict``, which must not hold the parameters themselves."""
    return [reset_at[p].clone() if p in reset_at else None for p in parameters]


def restored_resets(parameters: list[nn.Parameter], saved: list[Tensor | None]) -> dict[nn.Parameter, Tensor]:
    """The inverse of `saved_resets`."""
    return {p: r.clone() for p, r in zip(parameters, saved, strict=True) if r is not None}


__all__ = ["adam_like", "correct_reset_updates", "restored_resets", "saved_resets", "zero_moments"]
