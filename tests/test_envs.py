"""Slippery Ant: equivalence with Ant-v5, friction of every geom, and when the friction changes."""

from __future__ import annotations

import math
import warnings

import gymnasium as gym
import mujoco
import numpy as np
import pytest

import envs  # noqa: F401 - registers the ids

LOW, HIGH = 0.02, 2.0


def paper_draws(seed: int, count: int, low: float = LOW, high: float = HIGH) -> list[float]:
    """The documented sequence: log-uniform draws from ``np.random.default_rng(schedule_seed)``."""
    rng = np.random.default_rng(seed)
    return [math.exp(rng.uniform(math.log(low), math.log(high))) for _ in range(count)]


def fixed_actions(env: gym.Env, count: int, seed: int = 123) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(env.action_space.low, env.action_space.high, size=(count, *env.action_space.shape))


def standing_episodes(env: gym.Env, episodes: int, seed: int = 0) -> tuple[list[dict], list[list[dict]]]:
    """Zero-action episodes (the ant stands, so each ends by the TimeLimit); returns reset and step infos."""
    zero = np.zeros(env.action_space.shape)
    reset_infos, step_infos = [], []
    for episode in range(episodes):
        _, info = env.reset(seed=seed if episode == 0 else None)
        reset_infos.append(info)
        step_infos.append([])
        done = False
        while not done:
            _, _, terminated, truncated, info = env.step(zero)
            assert not terminated, "a standing ant should only be truncated"
            step_infos[-1].append(info)
            done = truncated
    return reset_infos, step_infos


def test_unit_friction_reproduces_ant_v5_transitions():
    reference = gym.make("Ant-v5", max_episode_steps=60)
    slippery = gym.make("SlipperyAnt-v5", friction_range=(1.0, 1.0), schedule_seed=0, max_episode_steps=60)
    actions = fixed_actions(reference, 300)
    reference_obs, _ = reference.reset(seed=7)
    slippery_obs, _ = slippery.reset(seed=7)
    np.testing.assert_array_equal(reference_obs, slippery_obs)
    resets = 0
    for action in actions:
        expected = reference.step(action)
        actual = slippery.step(action)
        np.testing.assert_array_equal(expected[0], actual[0])
        assert expected[1:4] == actual[1:4]
        assert actual[4]["friction"] == 1.0
        if expected[2] or expected[3]:
            resets += 1
            np.testing.assert_array_equal(reference.reset()[0], slippery.reset()[0])
    assert resets >= 2
    assert slippery.spec.max_episode_steps == 60
    assert gym.spec("SlipperyAnt-v5").max_episode_steps == gym.spec("Ant-v5").max_episode_steps == 1000


def test_friction_is_set_on_every_geom_from_nominal_values():
    env = gym.make("SlipperyAnt-v5", change_every=3, change_at="immediate", schedule_seed=5)
    model = env.unwrapped.model
    nominal = model.geom_friction.copy()
    env.reset(seed=0)
    seen = set()
    for _ in range(10):
        info = env.step(env.action_space.sample())[4]
        seen.add(info["friction"])
        np.testing.assert_array_equal(model.geom_friction[:, 0], np.full(model.ngeom, info["friction"]))
        np.testing.assert_array_equal(model.geom_friction[:, 1:], nominal[:, 1:])
    assert len(seen) == 4
    floor = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, "floor")
    assert model.geom_friction[floor, 0] == env.unwrapped.friction
    for value in (0.1, 0.3, 0.1):
        env.unwrapped.set_friction(value)
        np.testing.assert_array_equal(model.geom_friction[:, 0], value)
        np.testing.assert_array_equal(model.geom_friction[:, 1:], 0.5)


def final_torso_position(friction: float, steps: int = 150) -> np.ndarray:
    env = gym.make("SlipperyAnt-v5", friction_range=(friction, friction), schedule_seed=0)
    env.reset(seed=3)
    for action in fixed_actions(env, steps, seed=9):
        env.step(action)
    return env.unwrapped.data.qpos[:3].copy()


def test_low_friction_changes_the_trajectory():
    nominal, slippery = final_torso_position(1.0), final_torso_position(0.02)
    assert np.linalg.norm(nominal - slippery) > 0.05


def test_reset_info_and_accessors_report_the_friction():
    env = gym.make("SlipperyAnt-v5", schedule_seed=11)
    _, info = env.reset(seed=0)
    expected = paper_draws(11, 1)[0]
    assert info["friction"] == pytest.approx(expected, rel=1e-12)
    assert env.unwrapped.friction == env.get_wrapper_attr("friction") == info["friction"]
    assert env.unwrapped.model is env.unwrapped.mujoco_env.model
    assert isinstance(env.unwrapped.data, mujoco.MjData)


def test_episode_mode_changes_at_first_episode_end_after_more_than_change_every_steps():
    # 20-step episodes: after 40 steps more than 30 have passed -> change at resets 2 and 4 (steps 40, 80).
    env = gym.make("SlipperyAnt-v5", change_every=30, schedule_seed=4, max_episode_steps=20)
    reset_infos, step_infos = standing_episodes(env, 6)
    draws = paper_draws(4, 3)
    expected_index = [0, 0, 1, 1, 2, 2]
    for episode, index in enumerate(expected_index):
        assert reset_infos[episode]["schedule_changes"] == index
        assert reset_infos[episode]["friction"] == pytest.approx(draws[index], rel=1e-12)
        assert {info["friction"] for info in step_infos[episode]} == {reset_infos[episode]["friction"]}


def test_episode_mode_needs_strictly_more_than_change_every_steps():
    env = gym.make("SlipperyAnt-v5", change_every=40, schedule_seed=4, max_episode_steps=20)
    reset_infos, _ = standing_episodes(env, 4)
    assert [info["schedule_changes"] for info in reset_infos] == [0, 0, 0, 1]


def test_immediate_mode_changes_after_change_every_steps_even_mid_episode():
    env = gym.make(
        "SlipperyAnt-v5", change_every=7, change_at="immediate", schedule_seed=2, max_episode_steps=20
    )
    _, step_infos = standing_episodes(env, 2)
    frictions = [info["friction"] for episode in step_infos for info in episode]
    draws = paper_draws(2, 6)
    assert frictions == pytest.approx([draws[step // 7] for step in range(40)], rel=1e-12)


def friction_sequence(schedule_seed: int, steps: int = 12) -> list[float]:
    env = gym.make("SlipperyAnt-v5", change_every=1, change_at="immediate", schedule_seed=schedule_seed)
    env.reset(seed=0)
    return [env.step(env.action_space.sample())[4]["friction"] for _ in range(steps)]


def test_sequence_is_fixed_by_the_schedule_seed():
    assert friction_sequence(3) == friction_sequence(3)
    assert friction_sequence(3) != friction_sequence(4)
    assert len(set(friction_sequence(3))) == 12


def test_passes_gymnasium_env_checker():
    from gymnasium.utils.env_checker import check_env

    with warnings.catch_warnings():
        # Ant-v5's own observation space is unbounded; the checker warns about that for Ant-v5 too.
        warnings.filterwarnings("ignore", message=".*infinity.*")
        check_env(gym.make("SlipperyAnt-v5", schedule_seed=0).unwrapped, skip_render_check=True)
