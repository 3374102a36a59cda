"""What re-initialising hidden units means, for every method that does it (CBP, ReDo): the unit's
incoming weights are redrawn from the network's init distribution and its incoming bias set to 0, and
its outgoing weights are zeroed, so that the network's output does not jump."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rl_plasticity.cbp_options import InitFn, init_bound


def draw_rows(count: int, layer: nn.Linear, init: str | InitFn, nonlinearity: str,
              generator: torch.Generator) -> Tensor:
    """``count`` fresh incoming weight rows for ``layer``: the named ``init`` (`cbp_options.INITS`)
    drawn uniformly with ``generator``, or a callable ``init(rows, fan_in)`` filling or returning them."""
    rows = torch.empty(count, layer.in_features)
    if callable(init):
        drawn = init(rows, layer.in_features)
        return rows if drawn is None else drawn
    bound = init_bound(init, layer.in_features, layer.out_features, nonlinearity)
    return rows.uniform_(-bound, bound, generator=generator)


@torch.no_grad()
def reinitialise_units(incoming: nn.Linear, outgoing: nn.Linear, units: Tensor, rows: Tensor) -> None:
    """Give ``units`` of ``incoming`` the weight ``rows`` and bias 0; zero their columns in ``outgoing``."""
    incoming.weight[units] = rows.to(incoming.weight)
    if incoming.bias is not None:
        incoming.bias[units] = 0.0
    outgoing.weight[:, units] = 0.0
