"""Physical parameters of a MuJoCo model that can drift, always written from stored nominal values.

Each parameter copies the model's nominal arrays when it is created, and every ``apply`` recomputes
the model arrays from those copies, so repeated changes never compound.
"""

from __future__ import annotations

import math
from operator import attrgetter

import mujoco
import numpy as np


def check_parameter_name(name: str) -> str:
    if name not in PARAMETERS:
        allowed = ", ".join(map(repr, PARAMETER_NAMES))
        raise ValueError(f"unknown parameter {name!r}; allowed values: {allowed}")
    return name


def check_parameter_value(name: str, value: float) -> float:
    """Return ``value`` as a float, or raise ValueError if it is not a valid value of ``name``."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} value must be a number, got {value!r}") from None
    zero_allowed = PARAMETERS[name].zero_allowed
    lowest_ok = value >= 0 if zero_allowed else value > 0
    if not (math.isfinite(value) and lowest_ok):
        bound = ">= 0" if zero_allowed else "> 0"
        raise ValueError(f"{name} must be finite and {bound} ({PARAMETER_DOCS[name]}), got {value!r}")
    return value


def set_const_keeping_state(model: mujoco.MjModel, data: mujoco.MjData) -> None:
    """Run ``mj_setConst`` without losing the simulation state.

    ``mj_setConst`` evaluates the model at ``qpos0`` and leaves ``data.qpos`` there, which would
    teleport a running episode; saving and restoring the integration state avoids that.
    """
    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    state = np.empty(mujoco.mj_stateSize(model, spec))
    mujoco.mj_getState(model, data, state, spec)
    mujoco.mj_setConst(model, data)
    mujoco.mj_setState(model, data, state, spec)
    mujoco.mj_forward(model, data)


class PhysicalParameter:
    """One drifting quantity of a MuJoCo model; ``apply(value)`` sets it relative to the nominal model.

    One subclass per parameter, each with its ``name``, ``doc``, ``default_range``, whether zero is a
    meaningful value, and the model ``arrays`` it changes (copied as ``nominal`` when it is built);
    `PARAMETERS` lists them by name, and `build_parameter` builds one.
    """

    name: str
    doc: str
    arrays: tuple[str, ...]  # attribute paths on the MjModel, e.g. "opt.gravity"
    default_range: tuple[float, float] = (0.5, 2.0)
    zero_allowed = False

    def __init__(self, model: mujoco.MjModel, data: mujoco.MjData) -> None:
        self.model = model
        self.data = data
        self.nominal = {path: attrgetter(path)(model).copy() for path in self.arrays}

    def apply(self, value: float) -> None:
        self._apply(check_parameter_value(self.name, value))

    def _apply(self, value: float) -> None:
        raise NotImplementedError


class Multiplier(PhysicalParameter):
    """A parameter whose value multiplies the nominal values of its arrays."""

    def _apply(self, value: float) -> None:
        for path, nominal in self.nominal.items():
            attrgetter(path)(self.model)[:] = nominal * value


class Friction(PhysicalParameter):
    name = "friction"
    doc = "sliding friction coefficient of every geom and contact pair (absolute value)"
    arrays = ("geom_friction", "pair_friction")
    default_range = (0.02, 2.0)

    def _apply(self, value: float) -> None:
        # Contacts combine the two geoms' friction by element-wise max, so every geom (floor and body)
        # must change; torsional and rolling columns keep their nominal values.
        geom_friction = self.nominal["geom_friction"].copy()
        geom_friction[:, 0] = value
        self.model.geom_friction[:] = geom_friction
        # Explicit <pair> contacts ignore geom friction and carry their own two tangential values.
        pair_friction = self.nominal["pair_friction"].copy()
        pair_friction[:, :2] = value
        self.model.pair_friction[:] = pair_friction


class Gravity(Multiplier):
    name = "gravity"
    doc = "multiplier of the nominal gravity vector"
    arrays = ("opt.gravity",)
    zero_allowed = True  # zero gravity is a meaningful experiment


class Mass(Multiplier):
    name = "mass"
    doc = "multiplier of every body's mass and rotational inertia (uniform density change)"
    arrays = ("body_mass", "body_inertia")

    def _apply(self, value: float) -> None:
        super()._apply(value)
        # Derived constants (body_subtreemass, dof_invweight0, ...) are only refreshed by mj_setConst.
        set_const_keeping_state(self.model, self.data)


class Gear(Multiplier):
    # No mj_setConst: the gear-dependent constant (actuator_acc0) only matters for muscles and
    # dampratio position actuators, which Gymnasium's MuJoCo envs do not use.
    name = "gear"
    doc = "multiplier of every actuator's gear"
    arrays = ("actuator_gear",)


class Damping(Multiplier):
    name = "damping"
    doc = "multiplier of every joint's damping"
    arrays = ("dof_damping",)
    zero_allowed = True  # undamped joints are a meaningful experiment


PARAMETERS: dict[str, type[PhysicalParameter]] = {
    cls.name: cls for cls in (Friction, Gravity, Mass, Gear, Damping)
}
PARAMETER_NAMES = tuple(PARAMETERS)
PARAMETER_DOCS = {name: cls.doc for name, cls in PARAMETERS.items()}
DEFAULT_RANGES = {name: cls.default_range for name, cls in PARAMETERS.items()}


def build_parameter(name: str, model: mujoco.MjModel, data: mujoco.MjData) -> PhysicalParameter:
    """The drifting parameter ``name`` of ``model``, its nominal values copied now."""
    return PARAMETERS[check_parameter_name(name)](model, data)
