"""Every bad input raises ValueError naming the problem (and the allowed values where there is a list)."""

from __future__ import annotations

import gymnasium as gym
import pytest

import envs
from envs import DriftingMujocoEnv, DriftSchedule

BAD_MAKE_KWARGS = [
    ({"parameter": "viscosity"}, r"unknown parameter 'viscosity'; allowed values: 'friction', 'gravity'"),
    ({"friction_range": ()}, r"friction_range must be a \(low, high\) pair"),
    ({"friction_range": (0.5,)}, r"friction_range must be a \(low, high\) pair"),
    ({"friction_range": None, "value_range": "ab"}, r"value_range must be a \(low, high\) pair"),
    ({"friction_range": (2.0, 0.02)}, r"friction_range is inverted \(low > high\)"),
    ({"friction_range": (0.0, 2.0)}, r"friction must be finite and > 0"),
    ({"friction_range": (-1.0, 1.0), "distribution": "uniform"}, r"friction must be finite and > 0"),
    ({"friction_range": (0.1, float("inf"))}, r"friction_range must be finite"),
    ({"change_every": 0}, r"change_every must be an integer >= 1"),
    ({"change_every": 2.5}, r"change_every must be an integer >= 1"),
    ({"change_every": "10"}, r"change_every must be an integer >= 1"),
    ({"change_every": True}, r"change_every must be an integer >= 1"),
    ({"change_at": "sometimes"}, r"unknown change_at 'sometimes'; allowed values: 'episode', 'immediate'"),
    ({"schedule": "sine"}, r"unknown schedule 'sine'; allowed values: 'piecewise', 'cyclic', 'linear'"),
    ({"distribution": "normal"}, r"unknown distribution 'normal'; allowed values: 'log-uniform', 'uniform'"),
    ({"gravity_range": (0.5, 2.0)}, r"gravity_range does not apply: this env drifts 'friction'"),
    (
        {"value_range": (0.1, 1.0), "friction_range": (0.1, 1.0)},
        r"only one of value_range and friction_range",
    ),
    ({"schedule": "cyclic", "cycle_values": []}, r"cycle_values is empty"),
    ({"schedule": "cyclic", "cycle_values": [0.5, -0.1]}, r"friction must be finite and > 0"),
    ({"schedule": "linear", "drift_period": 0}, r"drift_period must be an integer >= 1"),
    ({"schedule": "random_walk", "walk_step": 0.0}, r"walk_step must be a positive fraction"),
    ({"base_env": "CartPole-v1"}, r"is not a MuJoCo env"),
    ({"base_env": "NoSuchEnv-v0"}, r"cannot make base env 'NoSuchEnv-v0'"),
    ({"base_env": 42}, r"base_env must be a Gymnasium env id or env instance"),
]


@pytest.mark.parametrize(("kwargs", "message"), BAD_MAKE_KWARGS)
def test_bad_constructor_arguments_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        gym.make("SlipperyAnt-v5", **kwargs)


def test_log_uniform_needs_a_positive_lower_bound():
    with pytest.raises(ValueError, match=r"log-uniform distribution needs low > 0"):
        gym.make("HeavyAnt-v5", gravity_range=(0.0, 2.0))
    gym.make("HeavyAnt-v5", gravity_range=(0.0, 2.0), distribution="uniform").close()


def test_base_kwargs_are_rejected_with_an_env_instance():
    with pytest.raises(ValueError, match=r"base_kwargs only apply when base_env is an environment id"):
        DriftingMujocoEnv(gym.make("Hopper-v5"), base_kwargs={"frame_skip": 2})


def test_bad_runtime_values_raise_value_error():
    slippery = gym.make("SlipperyAnt-v5", schedule_seed=0).unwrapped
    heavy = gym.make("HeavyAnt-v5", schedule_seed=0).unwrapped
    with pytest.raises(ValueError, match=r"friction must be finite and > 0"):
        slippery.set_friction(0.0)
    with pytest.raises(ValueError, match=r"friction value must be a number"):
        slippery.set_friction("slippery")
    with pytest.raises(ValueError, match=r"this env drifts 'gravity', not friction; use set_value"):
        heavy.set_friction(0.5)
    with pytest.raises(ValueError, match=r"gravity must be finite and >= 0"):
        heavy.set_value(-1.0)
    with pytest.raises(
        ValueError, match=r"schedule state is for parameter 'gravity', this env drifts 'friction'"
    ):
        slippery.set_schedule_state(heavy.get_schedule_state())
    with pytest.raises(ValueError, match=r"schedule state is for parameter None"):
        slippery.set_schedule_state({})
    incomplete = {key: value for key, value in slippery.get_schedule_state().items() if key != "rng_state"}
    with pytest.raises(
        ValueError, match=r"schedule state must be a dict from get_schedule_state\(\) with keys"
    ):
        slippery.set_schedule_state(incomplete)
    cyclic_state = DriftSchedule((0.1, 1.0), 5, kind="cyclic").get_state()
    with pytest.raises(
        ValueError, match=r"schedule state is for schedule 'cyclic', this env uses 'piecewise'"
    ):
        slippery.set_schedule_state({"parameter": "friction", **cyclic_state})
    negative = {**slippery.get_schedule_state(), "value": -0.5}
    with pytest.raises(ValueError, match=r"friction must be finite and > 0"):
        slippery.set_schedule_state(negative)
    assert slippery.friction > 0, "a rejected state must leave the env unchanged"


def test_allowed_values_are_exported():
    assert envs.PARAMETER_NAMES == ("friction", "gravity", "mass", "gear", "damping")
    assert envs.CHANGE_AT_MODES == ("episode", "immediate")
    assert envs.SCHEDULE_KINDS == ("piecewise", "cyclic", "linear", "random_walk")
