"""Building the vector env a config describes, and reading the drifting physics back out of it."""

from __future__ import annotations

import difflib
from typing import Any

import gymnasium as gym
import numpy as np

import envs  # noqa: F401  (registers SlipperyAnt-v5 and the other drifting ids)
from envs import PARAMETER_NAMES
from envs.parameters import check_parameter_value
from rl_plasticity.experiment.config import ConfigError, EnvConfig
from rl_plasticity.faster import FasterChoice


def is_drifting_env(spec: gym.envs.registration.EnvSpec) -> bool:
    """True for ids whose entry point lives in the ``envs`` package (they take the schedule kwargs)."""
    entry_point = spec.entry_point if isinstance(spec.entry_point, str) else \
        f"{spec.entry_point.__module__}:{spec.entry_point.__qualname__}"
    return entry_point.split(":")[0].split(".")[0] == envs.__name__


def _spec(env_id: str) -> gym.envs.registration.EnvSpec:
    try:
        return gym.spec(env_id)
    except gym.error.Error:
        close = difflib.get_close_matches(env_id, list(gym.registry), n=3, cutoff=0.5)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(
            f"env.id: unknown Gymnasium env id {env_id!r}{hint}; use a registered id such as "
            f"SlipperyAnt-v5, SlipperyHopper-v5, Hopper-v5 or Pendulum-v1"
        ) from None


SCHEDULE_KEYS = ("change_every", "schedule_seed", "change_at", "schedule", "cycle_values", "friction_range")


def _check_drift_keys_apply(config: EnvConfig, spec: gym.envs.registration.EnvSpec) -> None:
    """A schedule key set away from its default on an env that does not read it would be silently
    ignored: the run would not be the experiment asked for."""
    defaults = EnvConfig()
    changed = [key for key in SCHEDULE_KEYS if getattr(config, key) != getattr(defaults, key)]
    if not is_drifting_env(spec):
        if changed:
            raise ConfigError(
                f"env.id {config.id!r} does not drift, so {', '.join(f'env.{k}' for k in changed)} would be "
                f"ignored; use a drifting id ({', '.join(envs.READY_VARIANTS)}) or remove those keys")
        return
    parameter = spec.kwargs.get("parameter", "friction")
    for value in config.cycle_values or ():
        try:
            check_parameter_value(parameter, value)
        except ValueError as error:
            raise ConfigError(f"env.cycle_values = {list(config.cycle_values)}: {error}; give values the "
                              f"{parameter} can take") from None
    if parameter != "friction" and "friction_range" in changed:
        raise ConfigError(
            f"env.id {config.id!r} drifts {parameter}, not friction, so env.friction_range would be ignored; "
            f"remove it (set the {parameter} range with env.kwargs: {{value_range: [low, high]}})")


def env_kwargs(config: EnvConfig, seed: int) -> dict[str, Any]:
    """Keyword arguments for each copy: the schedule keys only for drifting envs, plus ``env.kwargs``."""
    spec = _spec(config.id)
    _check_drift_keys_apply(config, spec)
    kwargs: dict[str, Any] = {}
    if is_drifting_env(spec):
        kwargs = {
            # Every copy counts only its own steps.
            "change_every": max(1, config.change_every // config.num_envs),
            "schedule_seed": seed if config.schedule_seed is None else config.schedule_seed,
            "change_at": config.change_at,
            "schedule": config.schedule,
        }
        if config.cycle_values is not None:
            kwargs["cycle_values"] = list(config.cycle_values)
        if spec.kwargs.get("parameter", "friction") == "friction":
            kwargs["friction_range"] = tuple(config.friction_range)
    kwargs.update(config.kwargs)
    return kwargs


def stepping_choice() -> FasterChoice:
    """Whether the batched env steps its copies on all threads or on the calling one alone: two blocks of
    10 steps each way after a warm-up block, all threads kept unless one thread is 3% faster, measured
    again after 100 steps, then after up to 3,200 while the choice holds (a step is short, so it can
    afford to look often)."""
    return FasterChoice(preferred=True, block=10, blocks=3, gap=100, max_gap=3200, margin=0.03)


def make_vector_env(config: EnvConfig, seed: int) -> gym.vector.VectorEnv:
    """The config's env as a Gymnasium vector env with same-step autoreset (``info["final_obs"]``): the
    batched MuJoCo env where ``env.backend`` asks for it and the id supports it, else ``gym.make_vec``."""
    kwargs = env_kwargs(config, seed)
    try:
        vector_env = envs.make_vec(
            config.id, config.num_envs, backend=config.backend, vectorization_mode=config.vectorization,
            # The trainer reads only final_obs and the drifting parameter from the infos.
            vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP,
                           "thread_choice": stepping_choice(), "step_info": False}, **kwargs,
        )
    except (TypeError, ValueError, gym.error.Error) as error:
        raise ConfigError(f"env: cannot build {config.id!r} with these settings: {error}; check env.kwargs "
                          f"and the schedule keys (env.change_every, env.friction_range, ...)") from None
    action_space = vector_env.single_action_space
    if not isinstance(action_space, gym.spaces.Box) or \
            not isinstance(vector_env.single_observation_space, gym.spaces.Box):
        vector_env.close()
        raise ConfigError(f"env.id: {config.id!r} has actions {action_space}; PPO here needs continuous "
                          f"(Box) "
                          f"actions and observations: use a MuJoCo or classic-control continuous env")
    return vector_env


def backend_name(vector_env: gym.vector.VectorEnv) -> str:
    """Which simulator backend a vector env from `make_vector_env` uses: ``batched``,
    ``gymnasium-sync`` or ``gymnasium-async``."""
    raw = vector_env.unwrapped
    if isinstance(raw, envs.BatchedMujocoEnv):
        return "batched"
    return "gymnasium-async" if isinstance(raw, gym.vector.AsyncVectorEnv) else "gymnasium-sync"


def physics_values(info: dict[str, Any]) -> dict[str, float]:
    """The drifting parameters in a step's info (``friction`` etc.), averaged over the copies."""
    values = {}
    for name in PARAMETER_NAMES:
        if name in info:
            present = info.get(f"_{name}")
            chosen = np.asarray(info[name], dtype=np.float64)
            if present is not None:
                chosen = chosen[np.asarray(present, dtype=bool)]
            if chosen.size:
                values[name] = float(chosen.mean())
    return values
