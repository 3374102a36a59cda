"""Physical parameters of a MuJoCo model that can drift, always written from stored nominal values.

Each parameter copies the model's nominal arrays when it is created, and every ``apply`` recomputes
the model arrays from those copies, so repeated changes never compound.
"""

from __future__ import annotations

import math

import mujoco
import numpy as np

PARAMETER_DOCS = {
    "friction": "sliding friction coefficient of every geom and contact pair (absolute value)",
    "gravity": "multiplier of the nominal gravity vector",
    "mass": "multiplier of every body's mass and rotational inertia (uniform density change)",
    "gear": "multiplier of every actuator's gear",
    "damping": "multiplier of every joint's damping",
}
PARAMETER_NAMES = tuple(PARAMETER_DOCS)
DEFAULT_RANGES = {
    "friction": (0.02, 2.0),
    "gravity": (0.5, 2.0),
    "mass": (0.5, 2.0),
    "gear": (0.5, 2.0),
    "damping": (0.5, 2.0),
}
# Zero gravity or zero damping are meaningful experiments; zero friction, mass or gear are not.
_ZERO_ALLOWED = {"gravity", "damping"}


def check_parameter_name(name: str) -> str:
    if name not in PARAMETER_DOCS:
        allowed = ", ".join(map(repr, PARAMETER_NAMES))
        raise ValueError(f"unknown parameter {name!r}; allowed values: {allowed}")
    return name


def check_parameter_value(name: str, value: float) -> float:
    """Return ``value`` as a float, or raise ValueError if it is not a valid value of ``name``."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} value must be a number, got {value!r}") from None
    lowest_ok = value >= 0 if name in _ZERO_ALLOWED else value > 0
    if not (math.isfinite(value) and lowest_ok):
        bound = ">= 0" if name in _ZERO_ALLOWED else "> 0"
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
    """One drifting quantity of ``model``; ``apply(value)`` sets it relative to the nominal model."""

    def __init__(self, name: str, model: mujoco.MjModel, data: mujoco.MjData) -> None:
        self.name = check_parameter_name(name)
        self.model = model
        self.data = data
        self.nominal_geom_friction = model.geom_friction.copy()
        self.nominal_pair_friction = model.pair_friction.copy()
        self.nominal_gravity = model.opt.gravity.copy()
        self.nominal_body_mass = model.body_mass.copy()
        self.nominal_body_inertia = model.body_inertia.copy()
        self.nominal_actuator_gear = model.actuator_gear.copy()
        self.nominal_dof_damping = model.dof_damping.copy()

    def apply(self, value: float) -> None:
        value = check_parameter_value(self.name, value)
        model = self.model
        if self.name == "friction":
            # Contacts combine the two geoms' friction by element-wise max, so every geom (floor and
            # body) must change; torsional and rolling columns keep their nominal values.
            geom_friction = self.nominal_geom_friction.copy()
            geom_friction[:, 0] = value
            model.geom_friction[:] = geom_friction
            # Explicit <pair> contacts ignore geom friction and carry their own two tangential values.
            pair_friction = self.nominal_pair_friction.copy()
            pair_friction[:, :2] = value
            model.pair_friction[:] = pair_friction
        elif self.name == "gravity":
            model.opt.gravity[:] = self.nominal_gravity * value
        elif self.name == "mass":
            model.body_mass[:] = self.nominal_body_mass * value
            model.body_inertia[:] = self.nominal_body_inertia * value
            # Derived constants (body_subtreemass, dof_invweight0, ...) are only refreshed by mj_setConst.
            set_const_keeping_state(model, self.data)
        elif self.name == "gear":
            # No mj_setConst: the gear-dependent constant (actuator_acc0) only matters for muscles and
            # dampratio position actuators, which Gymnasium's MuJoCo envs do not use.
            model.actuator_gear[:] = self.nominal_actuator_gear * value
        else:
            model.dof_damping[:] = self.nominal_dof_damping * value
