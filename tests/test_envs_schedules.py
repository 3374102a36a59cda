"""Schedule values (distribution, cyclic, linear, random walk) and checkpoint round trips."""

from __future__ import annotations

import math
import pickle

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs import DriftSchedule


def draws(schedule: DriftSchedule, count: int) -> np.ndarray:
    return np.array([schedule.value] + [schedule.advance() for _ in range(count - 1)])


def ks_distance_from_uniform(samples: np.ndarray) -> float:
    """Kolmogorov-Smirnov statistic of samples on [0, 1] against the uniform distribution."""
    ordered = np.sort(samples)
    n = len(ordered)
    upper = np.arange(1, n + 1) / n - ordered
    lower = ordered - np.arange(n) / n
    return float(max(upper.max(), lower.max()))


N_DRAWS = 4000
# Critical KS distance at significance 0.001; the draws are seeded, so the test is deterministic.
KS_LIMIT = 1.95 / math.sqrt(N_DRAWS)


def test_piecewise_draws_are_log_uniform_on_the_range():
    samples = draws(DriftSchedule((0.02, 2.0), 1, seed=0), N_DRAWS)
    assert samples.min() >= 0.02 and samples.max() <= 2.0
    log_position = (np.log(samples) - math.log(0.02)) / (math.log(2.0) - math.log(0.02))
    assert ks_distance_from_uniform(log_position) < KS_LIMIT
    # Sanity check that the statistic can tell the two distributions apart.
    assert ks_distance_from_uniform((samples - 0.02) / 1.98) > 10 * KS_LIMIT
    assert np.median(samples) == pytest.approx(math.sqrt(0.02 * 2.0), rel=0.05)


def test_uniform_distribution_draws_uniformly():
    samples = draws(DriftSchedule((0.5, 1.5), 1, distribution="uniform", seed=1), N_DRAWS)
    assert ks_distance_from_uniform(samples - 0.5) < KS_LIMIT


def test_equal_seeds_give_equal_sequences_and_unseeded_runs_record_their_seed():
    assert list(draws(DriftSchedule((0.02, 2.0), 1, seed=8), 20)) == list(
        draws(DriftSchedule((0.02, 2.0), 1, seed=8), 20)
    )
    assert list(draws(DriftSchedule((0.02, 2.0), 1, seed=8), 20)) != list(
        draws(DriftSchedule((0.02, 2.0), 1, seed=9), 20)
    )
    unseeded = DriftSchedule((0.02, 2.0), 1)
    replay = DriftSchedule((0.02, 2.0), 1, seed=unseeded.seed)
    assert list(draws(unseeded, 10)) == list(draws(replay, 10))


def test_change_every_accepts_whole_floats_from_dividing_by_the_number_of_copies():
    assert DriftSchedule((0.1, 1.0), 2_000_000 / 8).change_every == 250_000


def test_cyclic_schedule_repeats_its_values():
    assert list(draws(DriftSchedule((0.1, 1.0), 1, kind="cyclic"), 5)) == [0.1, 1.0, 0.1, 1.0, 0.1]
    custom = DriftSchedule((0.1, 1.0), 1, kind="cyclic", cycle_values=[0.3, 0.6, 0.9])
    assert list(draws(custom, 4)) == [0.3, 0.6, 0.9, 0.3]


def test_linear_schedule_is_a_triangle_wave_in_the_chosen_space():
    linear = DriftSchedule((1.0, 3.0), 1, kind="linear", distribution="uniform", drift_period=4)
    assert list(draws(linear, 10)) == pytest.approx([1.0, 1.5, 2.0, 2.5, 3.0, 2.5, 2.0, 1.5, 1.0, 1.5])
    logarithmic = DriftSchedule((0.01, 1.0), 1, kind="linear", drift_period=2)
    assert list(draws(logarithmic, 3)) == pytest.approx([0.01, 0.1, 1.0])


def test_random_walk_stays_in_range_moves_in_small_steps_and_is_seeded():
    walk = draws(DriftSchedule((0.1, 10.0), 1, kind="random_walk", walk_step=0.05, seed=3), 2000)
    assert walk.min() >= 0.1 and walk.max() <= 10.0
    log_steps = np.abs(np.diff(np.log(walk)))
    assert log_steps.max() < 0.3 * math.log(100.0)
    assert walk.max() / walk.min() > 10, "the walk should explore the range"
    again = draws(DriftSchedule((0.1, 10.0), 1, kind="random_walk", walk_step=0.05, seed=3), 2000)
    np.testing.assert_array_equal(walk, again)


@pytest.mark.parametrize("kind", envs.SCHEDULE_KINDS)
def test_schedule_state_round_trip_continues_the_sequence(kind):
    original = DriftSchedule((0.02, 2.0), 5, kind=kind, seed=21)
    draws(original, 7)
    for _ in range(3):
        original.count_step()
    state = pickle.loads(pickle.dumps(original.get_state()))
    restored = DriftSchedule((0.02, 2.0), 5, kind=kind, seed=999)
    restored.set_state(state)
    assert restored.steps_since_change == 3 and restored.change_count == 6
    assert list(draws(original, 10)) == list(draws(restored, 10))


def run_and_record(env: gym.Env, steps: int, episode_length: int = 15) -> list[tuple]:
    """Zero actions with a reset every ``episode_length`` steps; records (friction, changes, counter)."""
    zero = np.zeros(env.action_space.shape)
    record = []
    for step in range(steps):
        if step and step % episode_length == 0:
            env.reset()
        info = env.step(zero)[4]
        state = env.unwrapped.get_schedule_state()
        record.append((info["friction"], info["schedule_changes"], state["steps_since_change"]))
    return record


@pytest.mark.parametrize("change_at", envs.CHANGE_AT_MODES)
def test_restored_env_continues_the_same_friction_sequence_at_the_same_step(change_at):
    kwargs = {"change_every": 10, "change_at": change_at, "max_episode_steps": 1000}
    original = gym.make("SlipperyAnt-v5", schedule_seed=1, **kwargs)
    original.reset(seed=0)
    run_and_record(original, 37)
    checkpoint = pickle.loads(pickle.dumps(original.unwrapped.get_schedule_state()))
    assert all(isinstance(value, (int, float, str, dict)) for value in checkpoint.values())

    resumed = gym.make("SlipperyAnt-v5", schedule_seed=2, **kwargs)
    resumed.unwrapped.set_schedule_state(checkpoint)
    assert resumed.unwrapped.friction == original.unwrapped.friction
    assert resumed.unwrapped.model.geom_friction[0, 0] == original.unwrapped.friction
    # A resumed trainer starts a new episode, so both envs reset here.
    original.reset()
    resumed.reset(seed=0)
    expected, actual = run_and_record(original, 60), run_and_record(resumed, 60)
    assert actual == expected
    assert len({friction for friction, _, _ in actual}) >= 4
    assert resumed.unwrapped.get_schedule_state() == original.unwrapped.get_schedule_state()


def test_set_friction_overrides_the_value_without_moving_the_schedule():
    env = gym.make("SlipperyAnt-v5", change_every=5, change_at="immediate", schedule_seed=0)
    env.reset(seed=0)
    reference = gym.make("SlipperyAnt-v5", change_every=5, change_at="immediate", schedule_seed=0)
    reference.reset(seed=0)
    for _ in range(3):
        env.step(env.action_space.sample())
        reference.step(reference.action_space.sample())
    env.unwrapped.set_friction(0.7)
    infos = [env.step(np.zeros(8))[4] for _ in range(4)]
    reference_infos = [reference.step(np.zeros(8))[4] for _ in range(4)]
    assert [info["friction"] for info in infos[:2]] == [0.7, 0.7]
    assert [info["friction"] for info in infos[2:]] == [info["friction"] for info in reference_infos[2:]]
