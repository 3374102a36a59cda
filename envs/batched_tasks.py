"""Observations, rewards, terminations and step infos of Gymnasium's v5 locomotion tasks, for many copies.

Each task reproduces the ``step`` of one Gymnasium class (``AntEnv``, ``HopperEnv``, ``Walker2dEnv``,
``HalfCheetahEnv`` of ``gymnasium.envs.mujoco.*_v5``) on arrays with one row per copy. Every setting
(reward weights, healthy ranges, observation options, frame skip) is read from a built Gymnasium env, so
any keyword argument the user gave to ``gym.make`` is honoured and the formulas stay those of the
installed Gymnasium; the operations are done in the same order and dtype so results match bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium
import mujoco
import numpy as np
from gymnasium.envs.mujoco.ant_v5 import AntEnv
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
from gymnasium.envs.mujoco.hopper_v5 import HopperEnv
from gymnasium.envs.mujoco.walker2d_v5 import Walker2dEnv


@dataclass
class StepBuffers:
    """What the stepping threads copy out of each ``MjData`` (row ``i`` belongs to copy ``i``).

    ``qpos`` and ``qvel`` are views into one ``state`` array so one call checks both for NaN/inf.
    """

    state: np.ndarray
    qpos: np.ndarray
    qvel: np.ndarray
    contact_forces: np.ndarray | None
    position_before: np.ndarray
    position_after: np.ndarray

    @classmethod
    def allocate(
        cls, count: int, model: mujoco.MjModel, position_width: int, contact_forces: bool
    ) -> StepBuffers:
        state = np.zeros((count, model.nq + model.nv))
        return cls(
            state=state,
            qpos=state[:, : model.nq],
            qvel=state[:, model.nq :],
            contact_forces=np.zeros((count, model.nbody, 6)) if contact_forces else None,
            position_before=np.zeros((count, position_width)),
            position_after=np.zeros((count, position_width)),
        )


def _setting(env: Any, name: str) -> Any:
    # The settings are private attributes of Gymnasium's classes; fail loudly if a release renames one.
    try:
        return getattr(env, name)
    except AttributeError:
        raise ValueError(
            f"{type(env).__name__} of gymnasium {gymnasium.__version__} has no {name!r}; the batched backend "
            "does not support this Gymnasium version, use backend='gymnasium'"
        ) from None


class LocomotionTask:
    """Base for the forward-walking tasks: forward reward from a tracked position, quadratic control cost."""

    gymnasium_class: ClassVar[type]
    needs_contact_forces: ClassVar[bool] = False
    # Width of the tracked position: the torso's (x, y) for Ant, the root's x for the planar walkers.
    position_width: ClassVar[int] = 1

    def __init__(self, env: Any) -> None:
        self.forward_weight = _setting(env, "_forward_reward_weight")
        self.ctrl_cost_weight = _setting(env, "_ctrl_cost_weight")
        self.skipped_qpos = self._skipped_qpos(_setting(env, "_exclude_current_positions_from_observation"))
        self.dt = env.dt

    @staticmethod
    def _skipped_qpos(exclude_positions: bool) -> int:
        return 1 if exclude_positions else 0

    def tracked_position(self, data: mujoco.MjData) -> np.ndarray:
        """A live view of the position whose change over a step is the forward velocity."""
        return data.qpos[:1]

    def step_results(
        self, actions: np.ndarray, buffers: StepBuffers, observations: np.ndarray, diagnostics: bool = True
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Write every copy's observation into ``observations``; return rewards, terminations and the
        Gymnasium class's step info (its positions, velocities and reward terms), or ``{}`` without
        ``diagnostics``."""
        raise NotImplementedError

    def _control_cost(self, actions: np.ndarray) -> np.ndarray:
        # Kept in the actions' dtype, as Gymnasium computes it on the (float32) action it receives.
        return self.ctrl_cost_weight * np.square(actions).sum(axis=1)

    def _x_velocity(self, buffers: StepBuffers) -> np.ndarray:
        return (buffers.position_after[:, 0] - buffers.position_before[:, 0]) / self.dt


class AntTask(LocomotionTask):
    gymnasium_class = AntEnv
    needs_contact_forces = True
    position_width = 2

    def __init__(self, env: AntEnv) -> None:
        super().__init__(env)
        self.contact_cost_weight = _setting(env, "_contact_cost_weight")
        self.healthy_reward = _setting(env, "_healthy_reward")
        self.terminate_when_unhealthy = _setting(env, "_terminate_when_unhealthy")
        self.healthy_z_range = _setting(env, "_healthy_z_range")
        self.contact_force_range = _setting(env, "_contact_force_range")
        self.include_contact_forces = _setting(env, "_include_cfrc_ext_in_observation")
        self.main_body = env.data.body(_setting(env, "_main_body")).id

    @staticmethod
    def _skipped_qpos(exclude_positions: bool) -> int:
        return 2 if exclude_positions else 0

    def tracked_position(self, data: mujoco.MjData) -> np.ndarray:
        # The torso's xpos after mj_step is from the last substep's kinematics; Gymnasium uses it as is.
        return data.xpos[self.main_body, :2]

    def step_results(
        self, actions: np.ndarray, buffers: StepBuffers, observations: np.ndarray, diagnostics: bool = True
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        if len(buffers.qpos) == 1 and not diagnostics:
            return self._one_copy_results(actions, buffers, observations)
        # Few numpy calls on preallocated arrays: with few copies their fixed cost is the overhead.
        qpos, qvel, count = buffers.qpos, buffers.qvel, len(buffers.qpos)
        low, high = self.contact_force_range
        # Clipped in place (the buffer is refilled every step); maximum-then-minimum is what np.clip does.
        contact_forces = buffers.contact_forces
        np.minimum(np.maximum(contact_forces, low, out=contact_forces), high, out=contact_forces)

        positions = qpos[:, self.skipped_qpos :]
        observations[:, : positions.shape[1]] = positions
        observations[:, positions.shape[1] : positions.shape[1] + qvel.shape[1]] = qvel
        if self.include_contact_forces:
            observations[:, positions.shape[1] + qvel.shape[1] :] = contact_forces[:, 1:].reshape(count, -1)

        velocity = (buffers.position_after - buffers.position_before) / self.dt
        forward_reward = velocity[:, 0] * self.forward_weight
        min_z, max_z = self.healthy_z_range
        z = qpos[:, 2]
        healthy = np.isfinite(buffers.state).all(axis=1) & (min_z <= z) & (z <= max_z)
        healthy_reward = healthy * self.healthy_reward
        ctrl_cost = self._control_cost(actions)
        contact_cost = self.contact_cost_weight * np.square(contact_forces).reshape(count, -1).sum(axis=1)
        rewards = (forward_reward + healthy_reward) - (ctrl_cost + contact_cost)
        terminated = ~healthy if self.terminate_when_unhealthy else np.zeros(count, dtype=bool)
        if not diagnostics:
            return rewards, terminated, {}
        info = {
            "x_position": qpos[:, 0].copy(),
            "y_position": qpos[:, 1].copy(),
            "distance_from_origin": np.sqrt(qpos[:, 0] * qpos[:, 0] + qpos[:, 1] * qpos[:, 1]),
            "x_velocity": velocity[:, 0],
            "y_velocity": velocity[:, 1],
            "reward_forward": forward_reward,
            "reward_ctrl": -ctrl_cost,
            "reward_contact": -contact_cost,
            "reward_survive": healthy_reward,
        }
        return rewards, terminated, info

    def _one_copy_results(
        self, actions: np.ndarray, buffers: StepBuffers, observations: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        # The same formulas on scalars (a single env, the paper's setting): each numpy call on a
        # one-row array costs about a microsecond, a tenth of a step's overhead beside the physics.
        # Every value keeps the dtype and order of operations of the rows above, so results are equal.
        qpos, state = buffers.qpos[0], buffers.state[0]
        low, high = self.contact_force_range
        clipped = buffers.contact_forces  # ufuncs, not np.clip's Python wrapper
        contact_forces = np.minimum(np.maximum(clipped, low, out=clipped), high, out=clipped)[0]
        # qpos and qvel are one row of ``state``: the observed positions and the velocities in one copy
        observed = len(state) - self.skipped_qpos
        row = observations[0]
        row[:observed] = state[self.skipped_qpos:]
        if self.include_contact_forces:
            row[observed:] = contact_forces[1:].reshape(-1)
        forward_reward = (buffers.position_after[0, 0] - buffers.position_before[0, 0]) / self.dt \
            * self.forward_weight
        min_z, max_z = self.healthy_z_range
        z = qpos[2]
        healthy = bool(np.logical_and.reduce(np.isfinite(state))) and min_z <= z and z <= max_z
        healthy_reward = healthy * self.healthy_reward
        ctrl_cost = self.ctrl_cost_weight * np.add.reduce(np.square(actions[0]))
        contact_cost = self.contact_cost_weight * np.add.reduce(np.square(contact_forces), axis=None)
        reward = (forward_reward + healthy_reward) - (ctrl_cost + contact_cost)
        terminated = not healthy and self.terminate_when_unhealthy
        return np.array([reward], dtype=np.float64), np.array([terminated]), {}


class PlanarWalkerTask(LocomotionTask):
    """Hopper and Walker2d: root (x, z, angle) joints, clipped velocities, health by height and angle."""

    def __init__(self, env: Any) -> None:
        super().__init__(env)
        self.healthy_reward = _setting(env, "_healthy_reward")
        self.terminate_when_unhealthy = _setting(env, "_terminate_when_unhealthy")
        self.healthy_z_range = _setting(env, "_healthy_z_range")
        self.healthy_angle_range = _setting(env, "_healthy_angle_range")
        self.initial_height = float(env.init_qpos[1])

    def _healthy(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        min_z, max_z = self.healthy_z_range
        min_angle, max_angle = self.healthy_angle_range
        z, angle = qpos[:, 1], qpos[:, 2]
        return (min_z < z) & (z < max_z) & (min_angle < angle) & (angle < max_angle)

    def step_results(
        self, actions: np.ndarray, buffers: StepBuffers, observations: np.ndarray, diagnostics: bool = True
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        qpos, qvel = buffers.qpos, buffers.qvel
        positions = qpos[:, self.skipped_qpos :]
        observations[:, : positions.shape[1]] = positions
        np.clip(qvel, -10, 10, out=observations[:, positions.shape[1] :])

        x_velocity = self._x_velocity(buffers)
        forward_reward = self.forward_weight * x_velocity
        healthy = self._healthy(qpos, qvel)
        healthy_reward = healthy * self.healthy_reward
        ctrl_cost = self._control_cost(actions)
        rewards = (forward_reward + healthy_reward) - ctrl_cost
        terminated = ~healthy if self.terminate_when_unhealthy else np.zeros(len(qpos), dtype=bool)
        if not diagnostics:
            return rewards, terminated, {}
        info = {
            "x_position": qpos[:, 0].copy(),
            "z_distance_from_origin": qpos[:, 1] - self.initial_height,
            "x_velocity": x_velocity,
            "reward_forward": forward_reward,
            "reward_ctrl": -ctrl_cost,
            "reward_survive": healthy_reward,
        }
        return rewards, terminated, info


class HopperTask(PlanarWalkerTask):
    gymnasium_class = HopperEnv

    def __init__(self, env: HopperEnv) -> None:
        super().__init__(env)
        self.healthy_state_range = _setting(env, "_healthy_state_range")

    def _healthy(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        # Hopper also bounds every joint position after (x, z) and every velocity.
        low, high = self.healthy_state_range
        in_range = np.all((low < qpos[:, 2:]) & (qpos[:, 2:] < high), axis=1)
        in_range &= np.all((low < qvel) & (qvel < high), axis=1)
        return in_range & super()._healthy(qpos, qvel)


class Walker2dTask(PlanarWalkerTask):
    gymnasium_class = Walker2dEnv


class HalfCheetahTask(LocomotionTask):
    gymnasium_class = HalfCheetahEnv

    def step_results(
        self, actions: np.ndarray, buffers: StepBuffers, observations: np.ndarray, diagnostics: bool = True
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        qpos, qvel = buffers.qpos, buffers.qvel
        positions = qpos[:, self.skipped_qpos :]
        observations[:, : positions.shape[1]] = positions
        observations[:, positions.shape[1] :] = qvel
        x_velocity = self._x_velocity(buffers)
        forward_reward = self.forward_weight * x_velocity
        ctrl_cost = self._control_cost(actions)
        if not diagnostics:
            return forward_reward - ctrl_cost, np.zeros(len(qpos), dtype=bool), {}
        info = {
            "x_position": qpos[:, 0].copy(),
            "x_velocity": x_velocity,
            "reward_forward": forward_reward,
            "reward_ctrl": -ctrl_cost,
        }
        return forward_reward - ctrl_cost, np.zeros(len(qpos), dtype=bool), info


TASKS: tuple[type[LocomotionTask], ...] = (AntTask, HopperTask, Walker2dTask, HalfCheetahTask)


def task_for(env_class: type) -> type[LocomotionTask] | None:
    """The task replicating exactly ``env_class`` (subclasses may change the step, so they do not count)."""
    for task in TASKS:
        if env_class is task.gymnasium_class:
            return task
    return None


def entry_point_of(env_class: type) -> str:
    return f"{env_class.__module__}:{env_class.__qualname__}"
