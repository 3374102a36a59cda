"""rl-plasticity: study and fix loss of plasticity in deep reinforcement learning.

The core (this package's top level) needs only torch and numpy:

- `ContinualBackprop`: continual backpropagation's generate-and-test, attached to any MLP by hooks.
- the other plasticity methods behind the same interface (`PlasticityMethod`, all in `METHODS` by
  name): `ReDo`, `ShrinkPerturb`, `WeightClipping`, `L2Init`, `Reset`, `Parseval`, `WeightProjection`.
- `PlasticityProbe` and the functions in `rl_plasticity.metrics`: dormant/inactive fractions, ranks,
  weight magnitude and feature norm per hidden layer.

The experiment layer (`rl_plasticity.experiment`, the `rl-plasticity` CLI) composes agents and envs on top.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# The names below are loaded on first use, not on ``import rl_plasticity``: the CLI starts without
# waiting for torch, so a Ctrl-C while it loads reaches the CLI's handler instead of printing a
# traceback. Loading any one loads every method, so that `METHODS` is always whole.
_EXPORTS = {
    "ContinualBackprop": "rl_plasticity.cbp", "L2Init": "rl_plasticity.l2_init",
    "METHODS": "rl_plasticity.method", "PlasticityMethod": "rl_plasticity.method",
    "PlasticityProbe": "rl_plasticity.metrics", "Parseval": "rl_plasticity.parseval",
    "ReDo": "rl_plasticity.redo", "Reset": "rl_plasticity.reset",
    "ShrinkPerturb": "rl_plasticity.shrink_perturb", "WeightClipping": "rl_plasticity.weight_clipping",
    "WeightProjection": "rl_plasticity.weight_projection",
}

if TYPE_CHECKING:
    from rl_plasticity.cbp import ContinualBackprop
    from rl_plasticity.l2_init import L2Init
    from rl_plasticity.method import METHODS, PlasticityMethod
    from rl_plasticity.metrics import PlasticityProbe
    from rl_plasticity.parseval import Parseval
    from rl_plasticity.redo import ReDo
    from rl_plasticity.reset import Reset
    from rl_plasticity.shrink_perturb import ShrinkPerturb
    from rl_plasticity.weight_clipping import WeightClipping
    from rl_plasticity.weight_projection import WeightProjection


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'rl_plasticity' has no attribute {name!r}")
    modules = {module: importlib.import_module(module) for module in sorted(set(_EXPORTS.values()))}
    for export, module in _EXPORTS.items():
        globals()[export] = getattr(modules[module], export)
    return globals()[name]


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = ["METHODS", "ContinualBackprop", "L2Init", "Parseval", "PlasticityMethod", "PlasticityProbe",
           "ReDo", "Reset", "ShrinkPerturb", "WeightClipping", "WeightProjection"]
__version__ = "0.1.0"
