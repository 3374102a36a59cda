"""Agents that build on the rl_plasticity core: PPO with optional continual backprop on both networks.

``agents`` never imports ``envs``: it steps any Gymnasium-style vector env it is given. Composing the
two is the experiment layer's job (``rl_plasticity.experiment``).
"""

from agents.advantage import compute_gae
from agents.networks import GaussianPolicy, ValueFunction, build_mlp, initialize
from agents.normalization import ObservationNormalizer, RewardScaler, RunningMeanStd
from agents.ppo import PPO, Episode, Rollout
from agents.settings import PRESETS, CBPSettings, OptimizerSettings, PPOSettings
from rl_plasticity.hooks import linear_layers  # re-exported: agents' users found it here

__all__ = [
    "PPO",
    "PRESETS",
    "CBPSettings",
    "Episode",
    "GaussianPolicy",
    "ObservationNormalizer",
    "OptimizerSettings",
    "PPOSettings",
    "RewardScaler",
    "Rollout",
    "RunningMeanStd",
    "ValueFunction",
    "build_mlp",
    "compute_gae",
    "initialize",
    "linear_layers",
]
