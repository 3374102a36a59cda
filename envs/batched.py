"""A Gymnasium vector env that steps many copies of a MuJoCo locomotion task on threads, at the physics limit.

:class:`BatchedMujocoEnv` holds ``num_envs`` ordinary Gymnasium envs built with ``gym.make(env_id,
**env_kwargs)`` (so each copy has its own ``MjModel``, ``MjData``, generator and, for the drifting ids,
its own friction schedule that changes at its own episode ends, exactly as in ``gym.make_vec``). It
never calls their ``step``: it runs ``mj_step`` on all copies from a small thread pool (MuJoCo releases
the GIL) and computes observations, rewards, terminations, time limits and infos for all copies at once
with numpy. Resets, friction changes and attribute access go through the copies themselves.

Transitions equal those of ``gym.make_vec(env_id, num_envs, vectorization_mode="sync",
vector_kwargs={"autoreset_mode": ...}, **env_kwargs)`` copy by copy, including ``reset(seed=s)`` seeding
copy ``i`` with ``s + i``, autoresets and the info dict with ``_key`` masks.
"""

from __future__ import annotations

import copy as copy_module
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from envs.batched_tasks import TASKS, StepBuffers, entry_point_of, task_for
from envs.checkpoint import capture_copy, pack_state, restore_copy, split_env, unpack_state
from envs.drifting import DriftingMujocoEnv
from envs.thread_pool import SteppingPool, available_cpus

# Wrappers gym.make adds that do not change transitions; anything else could, so it is refused.
_NEUTRAL_WRAPPERS = (gym.wrappers.TimeLimit, gym.wrappers.OrderEnforcing, gym.wrappers.PassiveEnvChecker)
_DRIFTING_ENTRY_POINT = entry_point_of(DriftingMujocoEnv)


def batched_base_id(env_id: str, env_kwargs: dict[str, Any] | None = None) -> str | None:
    """The Gymnasium task id the batched backend would simulate for ``env_id``, or ``None`` if unsupported.

    Raises ``gym.error.Error`` (e.g. ``NameNotFound``) for ids that are not registered at all.
    """
    spec = gym.spec(env_id)
    base_id = env_id
    if spec.entry_point == _DRIFTING_ENTRY_POINT:
        base_id = (env_kwargs or {}).get("base_env", spec.kwargs.get("base_env", "Ant-v5"))
        if not isinstance(base_id, str):
            return None
        spec = gym.spec(base_id)
    if spec.additional_wrappers or not isinstance(spec.entry_point, str):
        return None
    module, _, name = spec.entry_point.partition(":")
    supported = any(
        module == task.gymnasium_class.__module__ and name == task.gymnasium_class.__qualname__
        for task in TASKS
    )
    return base_id if supported else None


def batched_env_ids() -> list[str]:
    """Every registered id the batched backend supports (drifting variants with their default base env)."""
    ids = []
    for env_id in sorted(gym.registry):
        try:
            if batched_base_id(env_id) is not None:
                ids.append(env_id)
        except gym.error.Error:
            continue
    return ids


def _check_wrappers(env: gym.Env, env_id: str) -> None:
    while isinstance(env, gym.Wrapper):
        if not isinstance(env, _NEUTRAL_WRAPPERS):
            raise ValueError(
                f"gym.make({env_id!r}) adds the wrapper {type(env).__name__}, which the batched backend "
                "cannot replicate; use backend='gymnasium'"
            )
        env = env.env


class BatchedMujocoEnv(gym.vector.VectorEnv):
    """``num_envs`` copies of a Gymnasium v5 locomotion task (or a drifting variant), stepped on threads.

    Args:
        env_id: a registered id of Ant/Hopper/Walker2d/HalfCheetah-v5 or of a drifting variant such as
            ``"SlipperyAnt-v5"`` (see :func:`batched_env_ids`).
        num_envs: number of copies.
        autoreset_mode: as for Gymnasium's vector envs (``NEXT_STEP`` by default, ``SAME_STEP`` with
            ``info["final_obs"]`` / ``info["final_info"]``, or ``DISABLED`` with ``reset_mask``).
        copy: return a copy of the observation buffer (``True``, as ``SyncVectorEnv``) or the buffer itself.
        num_threads: threads stepping the physics. Default: up to ``min(num_envs, CPUs available)``.
        step_info: ``False`` leaves out of every step's info what the Gymnasium class reports besides the
            transition (``x_position``, ``x_velocity``, ``reward_ctrl``, ...), a good part of what a step
            costs beside the physics with few copies. The drifting parameter, ``schedule_changes``, a
            resetting copy's own reset info and, with same-step autoreset, ``final_obs`` and
            ``final_info`` stay; observations, rewards, terminations and truncations are the same.
        thread_choice: decides, from timings, whether stepping on the calling thread alone is faster
            (it is when other processes keep the other cores busy): an
            ``rl_plasticity.faster.FasterChoice``, which the experiment layer passes. Without one, and
            with an explicit ``num_threads``, all threads are always used.
        **env_kwargs: passed to ``gym.make`` for every copy (e.g. ``change_every``, ``schedule_seed``,
            ``max_episode_steps``, ``ctrl_cost_weight``).

    Each copy is an ordinary env: ``call``, ``get_attr`` and ``set_attr`` reach it as in ``SyncVectorEnv``
    (``vec.call("get_schedule_state")``, ``vec.set_attr("schedule_state", states)``,
    ``vec.call("set_friction", 0.1)``). Its TimeLimit wrapper is bypassed: the episode step counters are
    :attr:`elapsed_steps`. :meth:`get_state` / :meth:`set_state` checkpoint everything for a bit-exact
    resume.
    """

    def __init__(
        self,
        env_id: str,
        num_envs: int = 1,
        *,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        copy: bool = True,
        num_threads: int | None = None,
        thread_choice: Any | None = None,
        step_info: bool = True,
        **env_kwargs: Any,
    ) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
        try:
            base_id = batched_base_id(env_id, env_kwargs)
        except gym.error.Error as error:
            raise ValueError(f"unknown env id {env_id!r} ({error}). {batched_support_message()}") from None
        if base_id is None:
            raise ValueError(f"the batched backend does not support {env_id!r}. {batched_support_message()}")
        if env_kwargs.get("render_mode") == "human":
            raise ValueError("render_mode='human' renders inside every step; use backend='gymnasium' for it")
        self.autoreset_mode = AutoresetMode(autoreset_mode)
        self.copy = copy
        self._diagnostics = step_info
        self.num_envs = num_envs
        self.envs = [gym.make(env_id, **env_kwargs) for _ in range(num_envs)]
        for env in self.envs:
            _check_wrappers(env, env_id)
        self._mujoco_envs, self._drifts = zip(*(split_env(env) for env in self.envs), strict=True)
        task_class = task_for(type(self._mujoco_envs[0]))
        if task_class is None:
            self.close()
            built = type(self._mujoco_envs[0]).__name__
            raise ValueError(f"{env_id!r} builds a {built}. {batched_support_message()}")
        self._task = task_class(self._mujoco_envs[0])
        self.max_episode_steps = self.envs[0].spec.max_episode_steps if self.envs[0].spec else None

        first = self.envs[0]
        self.single_observation_space = first.observation_space
        self.single_action_space = first.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.metadata = {**first.metadata, "autoreset_mode": self.autoreset_mode}
        self.render_mode = first.render_mode
        self.spec = copy_module.deepcopy(gym.spec(env_id))
        self.spec.kwargs = {**self.spec.kwargs, **env_kwargs, "num_envs": num_envs}
        self._drift_key = self._drifts[0].parameter if self._drifts[0] is not None else None

        self._allocate_buffers()
        threads = min(num_envs, num_threads or available_cpus())
        self._pool = SteppingPool(threads, choice=thread_choice if num_threads is None else None)

    def _allocate_buffers(self) -> None:
        count, task = self.num_envs, self._task
        model = self._mujoco_envs[0].model
        self._buffers = StepBuffers.allocate(count, model, task.position_width, task.needs_contact_forces)
        self._observations = np.zeros((count, *self.single_observation_space.shape), dtype=np.float64)
        self._frame_skip = self._mujoco_envs[0].frame_skip
        self._elapsed = np.zeros(count, dtype=np.int64)
        self._needs_reset = np.zeros(count, dtype=bool)
        self._all_copies = np.ones(count, dtype=bool)
        self._actions = np.zeros((count, model.nu))
        self._action_shape = (count, *self.single_action_space.shape)
        # Live numpy views into each MjData, made once: creating them costs more than copying them.
        self._slots = [
            (
                env.model,
                env.data,
                env.data.ctrl,
                task.tracked_position(env.data),
                env.data.qpos,
                env.data.qvel,
                env.data.cfrc_ext if task.needs_contact_forces else None,
            )
            for env in self._mujoco_envs
        ]

    # -- Gymnasium VectorEnv API --------------------------------------------------------------------

    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        seeds = self._seeds(seed)
        options = dict(options) if options is not None else None
        indices = range(self.num_envs)
        if options is not None and "reset_mask" in options:
            indices = np.flatnonzero(self._reset_mask(options.pop("reset_mask"))).tolist()
        infos: dict[str, Any] = {}
        for index in indices:
            infos = self._add_info(infos, self._reset_copy(index, seeds[index], options), index)
            self._needs_reset[index] = False
        return self._observation_batch(), infos

    def step(
        self, actions: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if self.num_envs == 1 and not self._needs_reset[0]:
            return self._step_one_copy(actions)
        self._actions = self._action_batch(actions)
        resetting = None
        if np.logical_or.reduce(self._needs_reset):  # a ufunc, not ndarray.any's Python wrapper
            if self.autoreset_mode == AutoresetMode.NEXT_STEP:
                resetting = np.flatnonzero(self._needs_reset).tolist()
            elif self.autoreset_mode == AutoresetMode.DISABLED:
                raise RuntimeError(
                    f"copies {np.flatnonzero(self._needs_reset).tolist()} ended their episode; with "
                    "autoreset_mode DISABLED reset them first: reset(options={'reset_mask': mask})"
                )
        stepping = range(self.num_envs) if resetting is None else np.flatnonzero(~self._needs_reset).tolist()

        self._apply_due_changes(stepping)
        self._pool.run(self._step_copy, stepping)
        if resetting is None:
            self._elapsed += 1
        else:
            self._elapsed[stepping] += 1
        rewards, terminated, step_info = self._task.step_results(
            self._actions, self._buffers, self._observations, self._diagnostics
        )
        if self._drift_key is not None:
            schedules = [drift.schedule for drift in self._drifts]
            for index in stepping:
                schedules[index].count_step()
            step_info[self._drift_key] = np.array([schedule.value for schedule in schedules])
            step_info["schedule_changes"] = np.array([schedule.change_count for schedule in schedules])
        if self.max_episode_steps is not None:
            truncated = self._elapsed >= self.max_episode_steps
        else:
            truncated = np.zeros(self.num_envs, dtype=bool)

        if resetting is not None:
            rewards[resetting] = 0.0
            terminated[resetting] = False
            truncated[resetting] = False
        ended = terminated | truncated
        if resetting is not None:
            infos = self._masked_info(step_info, ~self._needs_reset)
            for index in resetting:
                infos = self._add_info(infos, self._reset_copy(index, None, None), index)
        elif self.autoreset_mode == AutoresetMode.SAME_STEP and np.logical_or.reduce(ended):
            infos = self._same_step_autoreset(step_info, ended)
        else:
            infos = self._masked_info(step_info, None)
        self._needs_reset = ended
        return self._observation_batch(), rewards, terminated, truncated, infos

    def _step_one_copy(
        self, actions: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        # `step` for one copy that needs no reset first (the paper's setting), on scalars where `step`
        # takes numpy calls over the copies: each costs about a microsecond, and their sum was a tenth
        # of a step beside the physics. The same values, dtypes and infos as `step`.
        self._actions = self._action_batch(actions)
        drift = self._drifts[0]
        if drift is not None and drift.schedule.change_due_before_step():
            drift.physical_parameter.apply(drift.schedule.advance())
        self._step_copy(0)
        elapsed = int(self._elapsed[0]) + 1
        self._elapsed[0] = elapsed
        rewards, terminated, step_info = self._task.step_results(
            self._actions, self._buffers, self._observations, self._diagnostics
        )
        if drift is not None:
            drift.schedule.count_step()
            step_info[self._drift_key] = np.array([drift.schedule.value])
            step_info["schedule_changes"] = np.array([drift.schedule.change_count])
        limit = self.max_episode_steps
        truncated = np.array([limit is not None and elapsed >= limit])
        ended = terminated | truncated
        if ended[0] and self.autoreset_mode == AutoresetMode.SAME_STEP:
            infos = self._same_step_autoreset(step_info, ended)
        else:
            infos = self._masked_info(step_info, None)
        self._needs_reset = ended
        return self._observation_batch(), rewards, terminated, truncated, infos

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        """Call method ``name`` of every copy (through its wrappers), or read it if it is not callable."""
        results = []
        for env in self.envs:
            attribute = env.get_wrapper_attr(name)
            results.append(attribute(*args, **kwargs) if callable(attribute) else attribute)
        return tuple(results)

    def get_attr(self, name: str) -> tuple[Any, ...]:
        return self.call(name)

    def set_attr(self, name: str, values: list[Any] | tuple[Any, ...] | Any) -> None:
        """Set ``name`` on every copy: one value for all, or a list/tuple with one value per copy."""
        if not isinstance(values, (list, tuple)):
            values = [values] * self.num_envs
        if len(values) != self.num_envs:
            raise ValueError(f"set_attr needs one value per copy ({self.num_envs}), got {len(values)}")
        for env, value in zip(self.envs, values, strict=True):
            env.set_wrapper_attr(name, value)

    def render(self) -> tuple[Any, ...] | None:
        return None if self.render_mode is None else tuple(env.render() for env in self.envs)

    def close_extras(self, **kwargs: Any) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.close()
        for env in self.envs:
            env.close()

    @property
    def np_random_seed(self) -> tuple[int, ...]:
        return tuple(env.np_random_seed for env in self._mujoco_envs)

    @property
    def np_random(self) -> tuple[np.random.Generator, ...]:
        return tuple(env.np_random for env in self._mujoco_envs)

    # -- checkpointing ------------------------------------------------------------------------------

    @property
    def elapsed_steps(self) -> np.ndarray:
        """Steps of each copy's current episode (its TimeLimit counter)."""
        return self._elapsed.copy()

    def get_state(self) -> dict[str, Any]:
        """Everything needed to resume bit-exactly, as plain picklable data (see ``envs.checkpoint``)."""
        copies = [
            capture_copy(mujoco_env, drift, elapsed)
            for mujoco_env, drift, elapsed in zip(self._mujoco_envs, self._drifts, self._elapsed, strict=True)
        ]
        return pack_state(copies, self.autoreset_mode, self._needs_reset)

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`get_state` (or ``envs.get_vector_state`` of a sync vector env)."""
        copies, needs_reset = unpack_state(state, self.num_envs, self.autoreset_mode)
        for index, saved in enumerate(copies):
            restore_copy(self._mujoco_envs[index], self._drifts[index], saved, index)
            self._elapsed[index] = saved["elapsed_steps"] or 0
        self._needs_reset = needs_reset

    # -- internals ----------------------------------------------------------------------------------

    def _step_copy(self, index: int) -> None:
        # Runs on the pool's threads; each copy owns its row of every buffer.
        model, data, ctrl, position, qpos, qvel, contact_forces = self._slots[index]
        buffers = self._buffers
        buffers.position_before[index] = position
        ctrl[:] = self._actions[index]
        mujoco.mj_step(model, data, nstep=self._frame_skip)
        if contact_forces is not None:
            # cfrc_ext is only filled on demand; Gymnasium's MujocoEnv asks for it after every step.
            mujoco.mj_rnePostConstraint(model, data)
            buffers.contact_forces[index] = contact_forces
        buffers.position_after[index] = position
        buffers.qpos[index] = qpos
        buffers.qvel[index] = qvel

    def _apply_due_changes(self, stepping: range | list[int]) -> None:
        # What DriftingMujocoEnv.step does before stepping its base env ("immediate" changes).
        if self._drift_key is None:
            return
        for index in stepping:
            drift = self._drifts[index]
            if drift.schedule.change_due_before_step():
                drift.physical_parameter.apply(drift.schedule.advance())

    def _reset_copy(self, index: int, seed: int | None, options: dict[str, Any] | None) -> dict[str, Any]:
        observation, info = self.envs[index].unwrapped.reset(seed=seed, options=options)
        self._observations[index] = observation
        self._elapsed[index] = 0
        return info

    def _same_step_autoreset(self, step_info: dict[str, np.ndarray], done: np.ndarray) -> dict[str, Any]:
        finished = np.flatnonzero(done).tolist()
        final = {index: {key: values[index] for key, values in step_info.items()} for index in finished}
        infos = self._masked_info(step_info, ~done)
        for index in finished:
            ending = {"final_obs": self._observations[index].copy(), "final_info": final[index]}
            infos = self._add_info(infos, ending, index)
            infos = self._add_info(infos, self._reset_copy(index, None, None), index)
        return infos

    def _masked_info(self, step_info: dict[str, np.ndarray], stepped: np.ndarray | None) -> dict[str, Any]:
        """Step infos in ``_add_info``'s layout; copies outside ``stepped`` read 0 and are masked out."""
        infos: dict[str, Any] = {}
        if stepped is not None and not stepped.any():
            return infos
        for key, values in step_info.items():
            if stepped is None:
                mask = self._all_copies.copy()
            else:
                values[~stepped] = 0
                mask = stepped.copy()
            infos[key], infos[f"_{key}"] = values, mask
        return infos

    def _observation_batch(self) -> np.ndarray:
        return self._observations.copy() if self.copy else self._observations

    def _action_batch(self, actions: Any) -> np.ndarray:
        actions = np.asarray(actions)
        expected = self._action_shape
        if actions.shape != expected:
            raise ValueError(f"actions must have shape {expected} (copies, action size), got {actions.shape}")
        if actions.dtype.kind != "f":
            actions = actions.astype(np.float64)
        return actions

    def _seeds(self, seed: int | list[int | None] | None) -> list[int | None]:
        if seed is None:
            return [None] * self.num_envs
        if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
            return [int(seed) + index for index in range(self.num_envs)]
        seeds = list(seed)
        if len(seeds) != self.num_envs:
            raise ValueError(f"pass one seed per copy ({self.num_envs}) or one int, got {len(seeds)} seeds")
        return seeds

    def _reset_mask(self, mask: Any) -> np.ndarray:
        if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_ or mask.shape != (self.num_envs,):
            raise ValueError(f"options['reset_mask'] must be a bool numpy array of shape ({self.num_envs},)")
        if not mask.any():
            raise ValueError("options['reset_mask'] selects no copy; set at least one entry to True")
        return mask


def batched_support_message() -> str:
    return (
        f"The batched backend supports {', '.join(batched_env_ids())}; for any other id use "
        "envs.make_vec(env_id, num_envs, backend='gymnasium') (envs.make_vec with backend='batched' falls "
        "back to it automatically)"
    )
