"""One rollout's storage (allocated once per agent and overwritten by every rollout) and what a rollout
reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor


@dataclass
class RolloutBuffer:
    """``(rollout_steps, num_envs, ...)`` arrays for what PPO's update reads back.

    Observations and actions are torch tensors with numpy views sharing their memory (`obs_np`,
    `actions_np`), so the rollout loop writes them without a copy and the update reads them without one.
    """

    obs: Tensor
    actions: Tensor
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    logprobs: Tensor
    values: Tensor
    advantages: Tensor
    returns: Tensor

    @classmethod
    def allocate(cls, steps: int, num_envs: int, obs_dim: int, action_dim: int) -> RolloutBuffer:
        shape = (steps, num_envs)
        return cls(
            obs=torch.zeros((*shape, obs_dim)), actions=torch.zeros((*shape, action_dim)),
            rewards=np.zeros(shape, dtype=np.float32), terminated=np.zeros(shape, dtype=bool),
            truncated=np.zeros(shape, dtype=bool), logprobs=torch.zeros(shape), values=torch.zeros(shape),
            advantages=torch.zeros(shape), returns=torch.zeros(shape),
        )

    def __post_init__(self) -> None:
        self.obs_np, self.actions_np = self.obs.numpy(), self.actions.numpy()

    @property
    def flat_obs(self) -> Tensor:
        return self.obs.view(-1, self.obs.shape[-1])

    @property
    def flat_actions(self) -> Tensor:
        return self.actions.view(-1, self.actions.shape[-1])


@dataclass
class Episode:
    """A finished episode: the global env step it ended at, its undiscounted return and its length."""

    step: int
    episodic_return: float
    length: int


@dataclass
class Rollout:
    """What one `PPO.collect_rollout` saw: finished episodes and the info dict of its last step."""

    episodes: list[Episode] = field(default_factory=list)
    last_info: dict[str, Any] = field(default_factory=dict)
