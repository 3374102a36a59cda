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
    # The TD errors of every step at once, then the recursion on Python floats: one step's arithmetic
    # is a few scalar operations, and a numpy call per operation would cost ten times more. Every value
    # keeps the dtypes and order of operations of the per-step numpy form
    #   delta_t = r_t + gamma * V_{t+1} * c_t - V_t;  A_t = delta_t + gamma * lambda * c_t * A_{t+1}
    # (``gamma * V_{t+1}`` is a float32 product where V is float32), so the results are equal.
    next_values = np.empty(rewards.shape, dtype=np.float64)
    next_values[:-1] = gamma * values[1:]
    next_values[-1] = gamma * np.asarray(last_values, dtype=np.float64)
    deltas = rewards + next_values * continues - values
    decays = gamma * gae_lambda * continues
    advantages = np.empty(rewards.shape, dtype=np.float64)
    for env in range(rewards.shape[1]):
        running = 0.0
        column = []
        for delta, decay in zip(deltas[::-1, env].tolist(), decays[::-1, env].tolist(), strict=True):
            running = delta + decay * running
            column.append(running)
        advantages[::-1, env] = column
    returns = advantages + values
    return advantages.astype(np.float32), returns.astype(np.float32)
