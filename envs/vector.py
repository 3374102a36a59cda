"""One entry point for vector envs: the batched MuJoCo backend where it exists, Gymnasium's otherwise.

    vec = envs.make_vec("SlipperyAnt-v5", 8, change_every=250_000, schedule_seed=0,
                        vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP})
    state = envs.get_vector_state(vec)   # works for the batched env and for Gymnasium's SyncVectorEnv
    envs.set_vector_state(vec, state)
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from envs.batched import BatchedMujocoEnv, batched_base_id, batched_support_message
from envs.checkpoint import get_sync_state, set_sync_state

BACKENDS = ("batched", "gymnasium")
# vector_kwargs that mean the same for BatchedMujocoEnv and SyncVectorEnv.
_BATCHED_VECTOR_KWARGS = {"autoreset_mode", "copy", "num_threads", "thread_choice", "step_info"}


def supports_batched(env_id: str, **env_kwargs: Any) -> bool:
    """Whether ``make_vec(env_id, backend="batched", **env_kwargs)`` gives a :class:`BatchedMujocoEnv`."""
    try:
        return batched_base_id(env_id, env_kwargs) is not None and env_kwargs.get("render_mode") != "human"
    except gym.error.Error:
        return False


def make_vec(
    env_id: str,
    num_envs: int = 1,
    backend: str = "batched",
    vectorization_mode: str = "sync",
    *,
    vector_kwargs: dict[str, Any] | None = None,
    **env_kwargs: Any,
) -> gym.vector.VectorEnv:
    """A vector env of ``num_envs`` copies of ``env_id``, each built with ``gym.make(env_id, **env_kwargs)``.

    ``backend="batched"`` returns a :class:`envs.batched.BatchedMujocoEnv` for the ids it supports
    (``envs.batched_env_ids()``) and silently falls back to Gymnasium for the others (and for
    ``vector_kwargs`` only Gymnasium understands, such as ``shared_memory``); ``backend="gymnasium"`` always
    returns ``gym.make_vec(env_id, num_envs, vectorization_mode, vector_kwargs, **env_kwargs)``
    (``vectorization_mode`` only matters for Gymnasium). Both give the same transitions for the same
    seeds and actions. ``vector_kwargs`` for the batched env: ``autoreset_mode``, ``copy``, ``num_threads``,
    ``thread_choice``, ``step_info``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; allowed values: {', '.join(map(repr, BACKENDS))}")
    vector_kwargs = dict(vector_kwargs or {})
    try:
        gym.spec(env_id)
    except gym.error.Error as error:
        raise ValueError(f"unknown env id {env_id!r} ({error}). {batched_support_message()}") from None
    batched_kwargs_only = set(vector_kwargs) <= _BATCHED_VECTOR_KWARGS
    if backend == "batched" and batched_kwargs_only and supports_batched(env_id, **env_kwargs):
        return BatchedMujocoEnv(env_id, num_envs, **vector_kwargs, **env_kwargs)
    vector_kwargs.pop("num_threads", None)
    vector_kwargs.pop("thread_choice", None)
    vector_kwargs.pop("step_info", None)  # Gymnasium's infos are always whole: more than asked, not less
    return gym.make_vec(
        env_id, num_envs, vectorization_mode=vectorization_mode, vector_kwargs=vector_kwargs, **env_kwargs
    )


def get_vector_state(vec: gym.vector.VectorEnv) -> dict[str, Any]:
    """Checkpoint of a batched or Gymnasium sync vector env (physics, time limits, generators, schedules).

    The result is plain picklable data in one format for both backends (see ``envs.checkpoint``).
    Async vector envs keep their copies in other processes and are not supported.
    """
    vec = vec.unwrapped
    if isinstance(vec, BatchedMujocoEnv):
        return vec.get_state()
    if isinstance(vec, gym.vector.SyncVectorEnv):
        return get_sync_state(vec)
    raise TypeError(f"cannot checkpoint a {type(vec).__name__}; use the batched backend or a SyncVectorEnv")


def set_vector_state(vec: gym.vector.VectorEnv, state: dict[str, Any]) -> None:
    """Restore :func:`get_vector_state`'s result; the next ``step`` continues exactly where it was taken.

    A Gymnasium sync env is reset first (it refuses to step otherwise), then fully overwritten.
    """
    vec = vec.unwrapped
    if isinstance(vec, BatchedMujocoEnv):
        vec.set_state(state)
    elif isinstance(vec, gym.vector.SyncVectorEnv):
        set_sync_state(vec, state)
    else:
        raise TypeError(f"cannot restore a {type(vec).__name__}; use the batched backend or a SyncVectorEnv")
