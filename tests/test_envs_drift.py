"""Gravity, mass, gear and damping drifts, other registered variants, and vector envs."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs import DriftingMujocoEnv


def step_zero(env: gym.Env) -> dict:
    return env.step(np.zeros(env.action_space.shape))[4]


def test_gravity_drift_scales_the_nominal_gravity_as_scheduled():
    env = gym.make("HeavyAnt-v5", change_every=4, change_at="immediate", schedule_seed=6)
    model = env.unwrapped.model
    _, info = env.reset(seed=0)
    scales = {info["gravity"]}
    for _ in range(13):
        info = step_zero(env)
        scales.add(info["gravity"])
        np.testing.assert_allclose(model.opt.gravity, [0.0, 0.0, -9.81 * info["gravity"]], rtol=1e-12)
    assert len(scales) == 4 and all(0.5 <= scale <= 2.0 for scale in scales)
    assert env.unwrapped.value == info["gravity"]
    with pytest.raises(AttributeError, match="not friction"):
        _ = env.unwrapped.friction


def test_mass_drift_updates_masses_inertias_and_derived_constants_at_reset():
    nominal = gym.make("Hopper-v5").unwrapped.model
    drifting = DriftingMujocoEnv("Hopper-v5", "mass", change_every=5, mass_range=(0.5, 2.0), schedule_seed=0)
    model = drifting.model
    drifting.reset(seed=0)
    scales = []
    for _ in range(4):
        for _ in range(6):
            drifting.step(np.zeros(3))
        _, info = drifting.reset()
        scales.append(info["mass"])
        np.testing.assert_allclose(model.body_mass, nominal.body_mass * info["mass"], rtol=1e-12)
        np.testing.assert_allclose(model.body_inertia, nominal.body_inertia * info["mass"], rtol=1e-12)
        np.testing.assert_allclose(model.body_subtreemass, nominal.body_subtreemass * info["mass"], rtol=1e-9)
        # mj_setConst ran before the reset sampled the state: the episode starts near init_qpos.
        assert np.abs(drifting.data.qpos - drifting.mujoco_env.init_qpos).max() <= 5e-3
    assert len(set(scales)) == 4


def test_mid_episode_mass_change_keeps_the_simulation_state():
    env = DriftingMujocoEnv("Hopper-v5", "mass", change_every=100, mass_range=(1.0, 1.0), schedule_seed=0)
    env.reset(seed=0)
    for _ in range(5):
        env.step(np.full(3, 0.5))
    qpos, qvel = env.data.qpos.copy(), env.data.qvel.copy()
    nominal_total_mass = env.model.body_mass.sum()
    env.set_value(2.0)
    np.testing.assert_array_equal(env.data.qpos, qpos)
    np.testing.assert_array_equal(env.data.qvel, qvel)
    assert env.model.body_subtreemass[0] == pytest.approx(2.0 * nominal_total_mass)


@pytest.mark.parametrize(("parameter", "field"), [("gear", "actuator_gear"), ("damping", "dof_damping")])
def test_gear_and_damping_drifts_scale_their_nominal_values_without_compounding(parameter, field):
    nominal = getattr(gym.make("Hopper-v5").unwrapped.model, field)
    env = DriftingMujocoEnv("Hopper-v5", parameter, change_every=1, change_at="immediate", schedule_seed=0)
    env.reset(seed=0)
    for _ in range(5):
        info = step_zero(env)
        np.testing.assert_allclose(getattr(env.model, field), nominal * info[parameter], rtol=1e-12)


# HalfCheetah is left out only because its XML makes MuJoCo write a deprecation MUJOCO_LOG.TXT into the cwd.
@pytest.mark.parametrize("env_id", ["SlipperyHopper-v5", "SlipperyWalker2d-v5"])
def test_other_slippery_variants_share_the_keyword_interface(env_id):
    env = gym.make(env_id, change_every=2, change_at="immediate", friction_range=(0.1, 0.2), schedule_seed=0)
    _, info = env.reset(seed=0)
    values = {info["friction"]} | {step_zero(env)["friction"] for _ in range(7)}
    assert len(values) == 4
    np.testing.assert_array_equal(env.unwrapped.model.geom_friction[:, 0], env.unwrapped.friction)
    assert env.spec.max_episode_steps == gym.spec(env_id.replace("Slippery", "")).max_episode_steps


def test_ready_variants_are_registered_on_their_base_envs():
    for env_id, (base_id, parameter) in envs.READY_VARIANTS.items():
        spec = gym.spec(env_id)
        assert spec.kwargs["base_env"] == base_id and spec.kwargs["parameter"] == parameter
        assert spec.max_episode_steps == gym.spec(base_id).max_episode_steps
    assert set(envs.READY_VARIANTS) >= {"SlipperyAnt-v5", "SlipperyHalfCheetah-v5", "HeavyAnt-v5"}


def test_register_drifting_env_adds_an_id_with_the_base_episode_limit():
    envs.register_drifting_env("TestDampedSwimmer-v5", "Swimmer-v5", "damping", change_every=3)
    try:
        env = gym.make("TestDampedSwimmer-v5", damping_range=(0.5, 0.5), schedule_seed=0)
        assert env.spec.max_episode_steps == gym.spec("Swimmer-v5").max_episode_steps
        assert env.reset(seed=0)[1]["damping"] == 0.5
    finally:
        del gym.registry["TestDampedSwimmer-v5"]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_vector_copies_follow_their_schedules_and_expose_the_methods(mode):
    vec = gym.make_vec(
        "SlipperyAnt-v5",
        num_envs=2,
        vectorization_mode=mode,
        change_every=3,
        change_at="immediate",
        schedule_seed=0,
    )
    try:
        _, info = vec.reset(seed=0)
        zero = np.zeros(vec.action_space.shape)
        frictions = [vec.step(zero)[4]["friction"] for _ in range(7)]
        expected = envs.DriftSchedule((0.02, 2.0), 3, change_at="immediate", seed=0)
        sequence = [expected.value, expected.advance(), expected.advance()]
        # Same schedule_seed in every copy: both draw the same sequence, changing every 3 own steps.
        assert [list(pair) for pair in frictions] == [[sequence[step // 3]] * 2 for step in range(7)]

        states = vec.call("get_schedule_state")
        assert [state["change_count"] for state in states] == [2, 2]
        vec.call("set_friction", 0.25)
        assert vec.get_attr("friction") == (0.25, 0.25)
        assert list(vec.step(zero)[4]["friction"]) == [0.25, 0.25]

        # One state per copy goes through set_attr; call() would send the same arguments to both.
        other = envs.DriftingMujocoEnv("Ant-v5", change_every=3, schedule_seed=5)
        vec.set_attr("schedule_state", [states[0], other.get_schedule_state()])
        restored = vec.get_attr("schedule_state")
        assert restored[0] == states[0] and restored[1] == other.get_schedule_state()
        assert vec.get_attr("friction") == (states[0]["value"], other.friction)
        other.close()
    finally:
        vec.close()


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_vector_copies_see_gravity_changes_in_info(mode):
    vec = gym.make_vec(
        "HeavyAnt-v5",
        num_envs=2,
        vectorization_mode=mode,
        change_every=2,
        change_at="immediate",
        schedule_seed=1,
    )
    try:
        vec.reset(seed=0)
        zero = np.zeros(vec.action_space.shape)
        scales = [vec.step(zero)[4]["gravity"] for _ in range(4)]
        assert scales[0][0] == scales[1][0] != scales[2][0] == scales[3][0]
        gravity_z = vec.call("get_wrapper_attr", "model")
        assert [model.opt.gravity[2] for model in gravity_z] == pytest.approx(list(-9.81 * scales[-1]))
    finally:
        vec.close()
