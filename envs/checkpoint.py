"""Full checkpoints of vector envs of MuJoCo tasks, shared by the batched and the Gymnasium sync backend.

A state is plain picklable data (dicts, lists, ints, floats and numpy arrays) with one entry per copy:

* ``physics``: ``mj_getState(..., mjSTATE_INTEGRATION)``, everything the next ``mj_step`` reads
  (time, qpos, qvel, act, warm start, ctrl, applied forces, ...);
* ``xpos``: body positions left in ``MjData`` by the last step. They are not part of the integration
  state but Ant-v5 reads the torso's ``xpos`` before stepping, so a bit-exact resume needs them;
* ``elapsed_steps``: the TimeLimit counter; ``rng_state``: the generator that samples initial states;
* ``schedule``: ``get_schedule_state()`` of a drifting env (``None`` for a plain Gymnasium task).

Both backends write the same format, so a checkpoint of one resumes in the other.
"""

from __future__ import annotations

import copy
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium.envs.mujoco import MujocoEnv

from envs.drifting import DriftingMujocoEnv

STATE_FORMAT = "rl-plasticity/mujoco-vector-state/1"
_PHYSICS = mujoco.mjtState.mjSTATE_INTEGRATION
_COPY_KEYS = ("physics", "xpos", "elapsed_steps", "rng_state", "schedule")


def split_env(env: gym.Env) -> tuple[Any, DriftingMujocoEnv | None]:
    """The Gymnasium MuJoCo env that simulates and the drifting env around it (if any) of ``env``."""
    raw = env.unwrapped
    if isinstance(raw, DriftingMujocoEnv):
        return raw.mujoco_env, raw
    return raw, None


def capture_copy(
    mujoco_env: Any, drift: DriftingMujocoEnv | None, elapsed_steps: int | None
) -> dict[str, Any]:
    model, data = mujoco_env.model, mujoco_env.data
    physics = np.empty(mujoco.mj_stateSize(model, _PHYSICS))
    mujoco.mj_getState(model, data, physics, _PHYSICS)
    return {
        "physics": physics,
        "xpos": data.xpos.copy(),
        "elapsed_steps": None if elapsed_steps is None else int(elapsed_steps),
        "rng_state": copy.deepcopy(mujoco_env.np_random.bit_generator.state),
        "schedule": None if drift is None else drift.get_schedule_state(),
    }


def restore_copy(mujoco_env: Any, drift: DriftingMujocoEnv | None, state: dict[str, Any], index: int) -> None:
    """Restore one copy's model parameters, physics and generator (not its time-limit counter)."""
    if not isinstance(state, dict) or any(key not in state for key in _COPY_KEYS):
        raise ValueError(f"copy {index} of the state must be a dict with keys {list(_COPY_KEYS)}")
    if (state["schedule"] is None) != (drift is None):
        saved = "a drifting" if state["schedule"] is not None else "a non-drifting"
        raise ValueError(f"copy {index} of the state comes from {saved} env, this env is not one")
    model, data = mujoco_env.model, mujoco_env.data
    physics = np.asarray(state["physics"], dtype=np.float64)
    expected = mujoco.mj_stateSize(model, _PHYSICS)
    if physics.shape != (expected,) or np.shape(state["xpos"]) != data.xpos.shape:
        raise ValueError(
            f"copy {index} of the state is for another model: physics has {physics.size} values "
            f"(expected {expected}), xpos has shape {np.shape(state['xpos'])} (expected {data.xpos.shape})"
        )
    # Parameters first: a mass change runs mj_forward, which would overwrite the restored xpos.
    if drift is not None:
        drift.set_schedule_state(state["schedule"])
    mujoco.mj_setState(model, data, physics, _PHYSICS)
    data.xpos[:] = state["xpos"]
    mujoco_env.np_random.bit_generator.state = copy.deepcopy(state["rng_state"])


def pack_state(
    copies: list[dict[str, Any]], autoreset_mode: gym.vector.AutoresetMode, needs_reset: np.ndarray
) -> dict[str, Any]:
    return {
        "format": STATE_FORMAT,
        "num_envs": len(copies),
        "autoreset_mode": autoreset_mode.value,
        "needs_reset": [bool(flag) for flag in needs_reset],
        "copies": copies,
    }


def unpack_state(
    state: Any, num_envs: int, autoreset_mode: gym.vector.AutoresetMode
) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Validate a state from ``pack_state`` against the env; return its copies and pending autoresets."""
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ValueError(f"not a vector env state from get_state()/get_vector_state() ({STATE_FORMAT!r})")
    if state["num_envs"] != num_envs or len(state["copies"]) != num_envs:
        raise ValueError(f"the state has {state['num_envs']} copies, this vector env has {num_envs}")
    if state["autoreset_mode"] != autoreset_mode.value:
        raise ValueError(
            f"the state was saved with autoreset_mode {state['autoreset_mode']!r}, this vector env uses "
            f"{autoreset_mode.value!r}; pending autoresets mean different things in the two modes"
        )
    return state["copies"], np.array(state["needs_reset"], dtype=bool)


def _time_limit(env: gym.Env) -> gym.wrappers.TimeLimit | None:
    while isinstance(env, gym.Wrapper):
        if isinstance(env, gym.wrappers.TimeLimit):
            return env
        env = env.env
    return None


def get_sync_state(vec: gym.vector.SyncVectorEnv) -> dict[str, Any]:
    copies = []
    for env in vec.envs:
        if not isinstance(split_env(env)[0], MujocoEnv):
            raise TypeError(f"{env.unwrapped} is not a Gymnasium MuJoCo env; only MuJoCo tasks have a "
                            f"physics state to checkpoint")
        time_limit = _time_limit(env)
        # TimeLimit keeps its counter in a private attribute; there is no public accessor.
        elapsed = None if time_limit is None else time_limit._elapsed_steps
        copies.append(capture_copy(*split_env(env), elapsed))
    # Likewise SyncVectorEnv's record of which copies reset at the next step (NEXT_STEP mode).
    return pack_state(copies, vec.autoreset_mode, vec._autoreset_envs)


def set_sync_state(vec: gym.vector.SyncVectorEnv, state: dict[str, Any]) -> None:
    copies, needs_reset = unpack_state(state, vec.num_envs, vec.autoreset_mode)
    # A fresh env refuses to step before its first reset (OrderEnforcing); everything the reset sets is
    # overwritten below.
    vec.reset()
    for index, (env, saved) in enumerate(zip(vec.envs, copies, strict=True)):
        restore_copy(*split_env(env), saved, index)
        time_limit = _time_limit(env)
        if time_limit is not None:
            time_limit._elapsed_steps = saved["elapsed_steps"]
    vec._autoreset_envs = needs_reset
