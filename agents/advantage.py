"""Generalised advantage estimation over a vector-env rollout, with time-limit bootstrapping."""

from __future__ import annotations

import numpy as np


def compute_gae(
    rewards: np.ndarray,
    values: np.ndarray,
    terminated: np.ndarray,
    truncated: np.ndarray,
    final_values: np.ndarray,
    last_values: np.ndarray,
    gamma: float,
    gae_lambda: float,
    bootstrap_truncation: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Advantages and returns of a rollout; every array but ``last_values`` has shape (steps, num_envs).

    Args:
        rewards: reward of step t.
        values: V(obs_t) of the observation the action was taken in.
        terminated, truncated: the episode ended at step t by a terminal state / by a time limit. With
            same-step autoreset, obs_{t+1} then belongs to the next episode, so no value flows back across.
        final_values: V(final observation) of step t; read only where ``truncated & ~terminated``.
        last_values: V(obs) after the last step, bootstrapping the unfinished episodes, shape (num_envs,).
        bootstrap_truncation: a time-limit end is not a terminal state: its reward gets
            ``gamma * V(final observation)`` added. False treats it as terminal (the paper's code).

    Returns:
        ``(advantages, returns)`` with ``returns = advantages + values``, float32.
    """
    rewards = rewards.astype(np.float64)
    if bootstrap_truncation:
        time_limit = truncated & ~terminated
        rewards = rewards + gamma * np.where(time_limit, final_values, 0.0)
    continues = 1.0 - (terminated | truncated)
    advantages = np.zeros(rewards.shape, dtype=np.float64)
    running = np.zeros(rewards.shape[1], dtype=np.float64)
    next_values = np.asarray(last_values, dtype=np.float64)
    for t in range(len(rewards) - 1, -1, -1):
        delta = rewards[t] + gamma * next_values * continues[t] - values[t]
        running = delta + gamma * gae_lambda * continues[t] * running
        advantages[t] = running
        next_values = values[t]
    returns = advantages + values
    return advantages.astype(np.float32), returns.astype(np.float32)
