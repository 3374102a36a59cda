"""Gymnasium ids for the drifting-physics tasks, and a helper to register more."""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from envs.drifting import DriftingMujocoEnv

ENTRY_POINT = f"{DriftingMujocoEnv.__module__}:{DriftingMujocoEnv.__qualname__}"

# id -> (base env id, drifting parameter); every variant takes DriftingMujocoEnv's keyword arguments.
READY_VARIANTS = {
    "SlipperyAnt-v5": ("Ant-v5", "friction"),
    "SlipperyHopper-v5": ("Hopper-v5", "friction"),
    "SlipperyWalker2d-v5": ("Walker2d-v5", "friction"),
    "SlipperyHalfCheetah-v5": ("HalfCheetah-v5", "friction"),
    "HeavyAnt-v5": ("Ant-v5", "gravity"),
}


def register_drifting_env(env_id: str, base_id: str, parameter: str, **default_kwargs: Any) -> None:
    """Register ``env_id`` as ``base_id`` with a drifting ``parameter``.

    The episode limit is copied from ``base_id`` (1000 steps for Ant-v5), so ``gym.make(env_id)`` gets
    the same TimeLimit truncation as the base task; ``default_kwargs`` become overridable defaults.
    """
    base_spec = gym.spec(base_id)
    gym.register(
        id=env_id,
        entry_point=ENTRY_POINT,
        max_episode_steps=base_spec.max_episode_steps,
        kwargs={"base_env": base_id, "parameter": parameter, **default_kwargs},
    )


def register_ready_variants() -> None:
    for env_id, (base_id, parameter) in READY_VARIANTS.items():
        if env_id not in gym.registry:
            register_drifting_env(env_id, base_id, parameter)
