"""A Gymnasium MuJoCo environment whose physics (friction, gravity, mass, gear, damping) drifts over time.

:class:`DriftingMujocoEnv` is a base environment that owns an ordinary Gymnasium MuJoCo env and
forwards steps and resets to it unchanged, editing the shared ``MjModel`` in between. Because it is
the base env, ``env.unwrapped`` is the drifting env itself: the schedule's state, ``friction`` and
the methods below are reachable through any wrapper stack and through ``VectorEnv.call``, while
``env.unwrapped.model`` / ``.data`` are the real MuJoCo model and data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, SupportsFloat

import gymnasium as gym
import mujoco

from envs.parameters import (
    DEFAULT_RANGES,
    PARAMETER_DOCS,
    PARAMETER_NAMES,
    build_parameter,
    check_parameter_name,
    check_parameter_value,
)
from envs.schedules import DriftSchedule, validate_range


def _resolve_range(parameter: str, value_range: Any, named_ranges: dict[str, Any]) -> tuple[float, float]:
    own_name = f"{parameter}_range"
    given = {name: bounds for name, bounds in named_ranges.items() if bounds is not None}
    for name in given:
        if name != own_name:
            raise ValueError(
                f"{name} does not apply: this env drifts {parameter!r}; pass value_range or {own_name}"
            )
    if value_range is not None and given:
        raise ValueError(f"pass only one of value_range and {own_name}, not both")
    name = own_name if given else "value_range"
    chosen = given.get(own_name, value_range if value_range is not None else DEFAULT_RANGES[parameter])
    low, high = validate_range(chosen, name)
    check_parameter_value(parameter, low)
    check_parameter_value(parameter, high)
    return low, high


def _is_mujoco_env(env: gym.Env) -> bool:
    raw = env.unwrapped
    return isinstance(getattr(raw, "model", None), mujoco.MjModel) and isinstance(
        getattr(raw, "data", None), mujoco.MjData
    )


def _make_base_env(
    base_env: str | gym.Env, base_kwargs: dict[str, Any] | None, render_mode: str | None
) -> gym.Env:
    if isinstance(base_env, gym.Env):
        if base_kwargs:
            raise ValueError("base_kwargs only apply when base_env is an environment id, not an env instance")
        env = base_env
    elif isinstance(base_env, str):
        try:
            # Only the raw env: time limits and checkers belong outside the drifting env.
            env = gym.make(
                base_env, render_mode=render_mode, disable_env_checker=True, **(base_kwargs or {})
            ).unwrapped
        except gym.error.Error as error:
            raise ValueError(f"cannot make base env {base_env!r}: {error}") from None
    else:
        raise ValueError(f"base_env must be a Gymnasium env id or env instance, got {base_env!r}")
    if not _is_mujoco_env(env):
        if not isinstance(base_env, gym.Env):
            env.close()
        raise ValueError(
            f"base_env {base_env!r} is not a MuJoCo env (its unwrapped env needs a mujoco.MjModel `model` "
            "and mujoco.MjData `data`); use e.g. 'Ant-v5', 'Hopper-v5', 'Walker2d-v5' or 'HalfCheetah-v5'"
        )
    return env


class DriftingMujocoEnv(gym.Env):
    """A MuJoCo env whose ``parameter`` follows a seeded schedule; observations, rewards and
    terminations are exactly the base env's.

    Args:
        base_env: Gymnasium id (e.g. ``"Ant-v5"``) or an already built MuJoCo env.
        parameter: what drifts; ``"friction"`` is the absolute sliding friction of every geom,
            the others multiply their nominal values (see ``envs.parameters.PARAMETER_DOCS``).
        change_every: steps of THIS env between changes (see ``DriftSchedule`` for the rule).
        change_at: ``"episode"`` (change at the first reset after more than ``change_every`` steps,
            as in the paper) or ``"immediate"`` (change mid-episode once ``change_every`` have passed).
        schedule: ``"piecewise"``, ``"cyclic"``, ``"linear"`` or ``"random_walk"``.
        distribution: ``"log-uniform"`` or ``"uniform"`` draws (also the space linear/random-walk move in).
        value_range: ``(low, high)`` of the parameter; ``friction_range``, ``gravity_range``, ... are
            aliases accepted only for the parameter this env drifts. Defaults to
            ``envs.parameters.DEFAULT_RANGES``.
        schedule_seed: seeds the value sequence (``None``: fresh entropy, kept in ``schedule_seed``).
        cycle_values, drift_period, walk_step: options of the cyclic, linear and random-walk schedules.
        base_kwargs: keyword arguments for the base env when it is given by id.

    Vector envs: every copy counts only its own steps, so with N copies stepping together a change
    after G global steps needs ``change_every = G // N``. Copies built from the same kwargs share
    ``schedule_seed`` and therefore draw the same value sequence (one sequence per run, as in the
    paper); their change times can differ by up to one episode because each copy waits for its own
    episode end. Pass different ``schedule_seed`` values per copy for independent sequences.

    Checkpointing: ``get_schedule_state()`` returns plain data; restore one env with
    ``set_schedule_state(state)``, a vector env with
    ``vec.set_attr("schedule_state", vec.get_attr("schedule_state"))`` (``VectorEnv.call`` passes
    the same arguments to every copy, ``set_attr`` accepts one value per copy).

    ``reset(seed=...)`` seeds the base env only: the schedule is never rewound, it follows
    ``schedule_seed`` through the whole run. ``model`` holds the drifted values from construction on;
    the nominal ones are kept in ``physical_parameter`` (``nominal["geom_friction"]``, ...).

    ``info`` of every step and reset holds ``info[parameter]`` (the value in effect, e.g.
    ``info["friction"]``) and ``info["schedule_changes"]`` (changes made so far).
    """

    # gym.make reads the class attribute to validate render_mode; instances copy the base env's.
    metadata: dict[str, Any] = {
        "render_modes": ["human", "rgb_array", "depth_array", "rgbd_tuple"],
        "render_fps": None,
    }

    def __init__(
        self,
        base_env: str | gym.Env = "Ant-v5",
        parameter: str = "friction",
        *,
        change_every: int = 2_000_000,
        change_at: str = "episode",
        schedule: str = "piecewise",
        distribution: str = "log-uniform",
        value_range: tuple[float, float] | None = None,
        friction_range: tuple[float, float] | None = None,
        gravity_range: tuple[float, float] | None = None,
        mass_range: tuple[float, float] | None = None,
        gear_range: tuple[float, float] | None = None,
        damping_range: tuple[float, float] | None = None,
        schedule_seed: int | None = None,
        cycle_values: Sequence[float] | None = None,
        drift_period: int = 10,
        walk_step: float = 0.1,
        base_kwargs: dict[str, Any] | None = None,
        render_mode: str | None = None,
    ) -> None:
        self.parameter = check_parameter_name(parameter)
        named_ranges = {
            "friction_range": friction_range,
            "gravity_range": gravity_range,
            "mass_range": mass_range,
            "gear_range": gear_range,
            "damping_range": damping_range,
        }
        value_range = _resolve_range(parameter, value_range, named_ranges)
        if cycle_values is not None:
            cycle_values = [check_parameter_value(parameter, value) for value in cycle_values]
        self._schedule = DriftSchedule(
            value_range,
            change_every,
            kind=schedule,
            change_at=change_at,
            distribution=distribution,
            seed=schedule_seed,
            cycle_values=cycle_values,
            drift_period=drift_period,
            walk_step=walk_step,
        )
        self.base_env = _make_base_env(base_env, base_kwargs, render_mode)
        self.mujoco_env = self.base_env.unwrapped
        self.observation_space = self.base_env.observation_space
        self.action_space = self.base_env.action_space
        self.metadata = dict(self.base_env.metadata)
        self.render_mode = self.base_env.render_mode
        self.physical_parameter = build_parameter(parameter, self.model, self.data)
        self.physical_parameter.apply(self._schedule.value)

    # -- the MuJoCo simulation ---------------------------------------------------------------------

    @property
    def model(self) -> mujoco.MjModel:
        return self.mujoco_env.model

    @property
    def data(self) -> mujoco.MjData:
        return self.mujoco_env.data

    @property
    def dt(self) -> float:
        return float(self.mujoco_env.dt)

    # -- Gymnasium API ------------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        # Before the base reset, so mass edits (mj_setConst) happen before the initial state is sampled.
        if self._schedule.change_due_at_reset():
            self.physical_parameter.apply(self._schedule.advance())
        observation, info = self.base_env.reset(seed=seed, options=options)
        # Share the base env's generator: it is the one that samples initial states.
        self._np_random = self.mujoco_env.np_random
        self._np_random_seed = self.mujoco_env.np_random_seed
        return observation, self._with_schedule_info(info)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict]:
        if self._schedule.change_due_before_step():
            self.physical_parameter.apply(self._schedule.advance())
        observation, reward, terminated, truncated, info = self.base_env.step(action)
        self._schedule.count_step()
        return observation, reward, terminated, truncated, self._with_schedule_info(info)

    def render(self) -> Any:
        return self.base_env.render()

    def close(self) -> None:
        self.base_env.close()

    def _with_schedule_info(self, info: dict) -> dict:
        return {**info, self.parameter: self._schedule.value, "schedule_changes": self._schedule.change_count}

    # -- the drifting parameter ---------------------------------------------------------------------

    @property
    def value(self) -> float:
        """Current value of the drifting parameter (see ``PARAMETER_DOCS[parameter]``)."""
        return self._schedule.value

    @property
    def friction(self) -> float:
        """Current sliding friction of every geom; only for envs that drift friction."""
        if self.parameter != "friction":
            raise AttributeError(f"this env drifts {self.parameter!r}, not friction; read `value` instead")
        return self._schedule.value

    @property
    def schedule_seed(self) -> int:
        return self._schedule.seed

    @property
    def schedule(self) -> DriftSchedule:
        return self._schedule

    def set_value(self, value: float) -> None:
        """Set the parameter now, keeping the schedule's timing and position in its sequence."""
        value = check_parameter_value(self.parameter, value)
        self.physical_parameter.apply(value)
        self._schedule.value = value

    def set_friction(self, value: float) -> None:
        """Set every geom's sliding friction now (usable as ``vec.call("set_friction", mu)``)."""
        if self.parameter != "friction":
            raise ValueError(f"this env drifts {self.parameter!r}, not friction; use set_value instead")
        self.set_value(value)

    # -- checkpointing ------------------------------------------------------------------------------

    def get_schedule_state(self) -> dict[str, Any]:
        """The schedule's position (counters, draw index, value, RNG state) as plain picklable data."""
        return {"parameter": self.parameter, **self._schedule.get_state()}

    def set_schedule_state(self, state: dict[str, Any]) -> None:
        """Restore a state from ``get_schedule_state`` and apply its value to the model now."""
        if not isinstance(state, dict) or state.get("parameter") != self.parameter:
            found = state.get("parameter") if isinstance(state, dict) else state
            raise ValueError(
                f"schedule state is for parameter {found!r}, this env drifts {self.parameter!r} "
                f"(allowed parameters: {', '.join(PARAMETER_NAMES)})"
            )
        if "value" in state:
            check_parameter_value(self.parameter, state["value"])
        self._schedule.set_state({key: value for key, value in state.items() if key != "parameter"})
        self.physical_parameter.apply(self._schedule.value)

    @property
    def schedule_state(self) -> dict[str, Any]:
        """Settable alias so ``vec.set_attr("schedule_state", states)`` restores each copy."""
        return self.get_schedule_state()

    @schedule_state.setter
    def schedule_state(self, state: dict[str, Any]) -> None:
        self.set_schedule_state(state)

    def __repr__(self) -> str:
        return f"<DriftingMujocoEnv {self.parameter}={self.value:.4g} on {self.mujoco_env}>"


__all__ = ["PARAMETER_DOCS", "DriftingMujocoEnv"]
