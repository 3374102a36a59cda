"""rl-plasticity: study and fix loss of plasticity in deep reinforcement learning.

The core (this package's top level) needs only torch and numpy:

- `ContinualBackprop`: continual backpropagation's generate-and-test, attached to any MLP by hooks.
- the other plasticity methods behind the same interface (`PlasticityMethod`, all in `METHODS` by
  name): `ReDo`, `ShrinkPerturb`, `WeightClipping`, `L2Init`, `Reset`, `Parseval`, `WeightProjection`.
- `PlasticityProbe` and the functions in `rl_plasticity.metrics`: dormant/inactive fractions, ranks,
  weight magnitude and feature norm per hidden layer.

The experiment layer (`rl_plasticity.experiment`, the `rl-plasticity` CLI) composes agents and envs on top.
"""

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

__all__ = ["METHODS", "ContinualBackprop", "L2Init", "Parseval", "PlasticityMethod", "PlasticityProbe",
           "ReDo", "Reset", "ShrinkPerturb", "WeightClipping", "WeightProjection"]
__version__ = "0.1.0"
