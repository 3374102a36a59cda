"""rl-plasticity: study and fix loss of plasticity in deep reinforcement learning.

The core (this package's top level) needs only torch and numpy:

- `ContinualBackprop`: continual backpropagation's generate-and-test, attached to any MLP by hooks.
- `PlasticityProbe` and the functions in `rl_plasticity.metrics`: dormant/inactive fractions, ranks,
  weight magnitude and feature norm per hidden layer.

The experiment layer (`rl_plasticity.experiment`, the `rl-plasticity` CLI) composes agents and envs on top.
"""

from rl_plasticity.cbp import ContinualBackprop
from rl_plasticity.metrics import PlasticityProbe

__all__ = ["ContinualBackprop", "PlasticityProbe"]
__version__ = "0.1.0"
