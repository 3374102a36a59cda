"""The batched MuJoCo vector env: same transitions as gym.make_vec's sync env on every supported task and
drift, spaces, checkpoints, errors, and its thread pool."""

from __future__ import annotations

import pickle
import threading
import time

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

import envs
from envs import BatchedMujocoEnv
from envs.thread_pool import SteppingPool
from rl_plasticity.faster import FasterChoice

# Short episodes and frequent friction changes so a few hundred steps cover resets and changes.
SLIPPERY = {"change_every": 25, "schedule_seed": 3, "max_episode_steps": 40}


def make_pair(env_id: str, num_envs: int, mode: AutoresetMode, **kwargs) -> tuple[gym.vector.VectorEnv, ...]:
    reference = gym.make_vec(
        env_id, num_envs, vectorization_mode="sync", vector_kwargs={"autoreset_mode": mode}, **kwargs
    )
    # Two threads even on a one-CPU runner, so the thread pool is what gets tested.
    batched = BatchedMujocoEnv(env_id, num_envs, autoreset_mode=mode, num_threads=min(num_envs, 2), **kwargs)
    return reference, batched


def assert_same_info(expected: dict, actual: dict, where: str) -> None:
    assert expected.keys() == actual.keys(), f"{where}: info keys differ: {expected.keys() ^ actual.keys()}"
    for key, value in expected.items():
        other = actual[key]
        if isinstance(value, dict):
            assert_same_info(value, other, f"{where}/{key}")
        elif value.dtype == object:  # final_obs: one observation (or None) per copy
            for single, single_other in zip(value, other, strict=True):
                assert (single is None) == (single_other is None), f"{where}/{key}"
                if single is not None:
                    np.testing.assert_allclose(single_other, single, atol=1e-6, err_msg=f"{where}/{key}")
        else:
            assert value.dtype == other.dtype, f"{where}/{key}: dtype {other.dtype}, expected {value.dtype}"
            np.testing.assert_allclose(other, value, rtol=1e-12, atol=1e-12, err_msg=f"{where}/{key}")


def assert_same_transition(expected: tuple, actual: tuple, where: str) -> None:
    np.testing.assert_allclose(actual[0], expected[0], rtol=0, atol=1e-6, err_msg=f"{where}: observations")
    np.testing.assert_allclose(actual[1], expected[1], rtol=0, atol=1e-6, err_msg=f"{where}: rewards")
    np.testing.assert_array_equal(actual[2], expected[2], err_msg=f"{where}: terminations")
    np.testing.assert_array_equal(actual[3], expected[3], err_msg=f"{where}: truncations")
    assert_same_info(expected[4], actual[4], where)


def random_actions(vec: gym.vector.VectorEnv, steps: int, seed: int = 0) -> np.ndarray:
    space = vec.single_action_space
    rng = np.random.default_rng(seed)
    shape = (steps, vec.num_envs, *space.shape)
    return rng.uniform(space.low, space.high, size=shape).astype(space.dtype)


def run_lockstep(reference, batched, steps: int, seed: int = 5) -> tuple[int, set]:
    """Step both envs with the same actions; returns the number of episode ends and the values seen."""
    assert_same_info(reference.reset(seed=seed)[1], batched.reset(seed=seed)[1], "reset")
    episode_ends, values = 0, set()
    for step, actions in enumerate(random_actions(reference, steps)):
        expected, actual = reference.step(actions), batched.step(actions)
        assert_same_transition(expected, actual, f"step {step}")
        done = expected[2] | expected[3]
        episode_ends += int(done.sum())
        values.update(expected[4].get("friction", []))
        if batched.autoreset_mode == AutoresetMode.DISABLED and done.any():
            expected_reset = reference.reset(options={"reset_mask": done})
            actual_reset = batched.reset(options={"reset_mask": done})
            np.testing.assert_allclose(actual_reset[0], expected_reset[0], rtol=0, atol=1e-6)
            assert_same_info(expected_reset[1], actual_reset[1], f"masked reset after step {step}")
    return episode_ends, values


@pytest.mark.parametrize("num_envs", [1, 3])
@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP, AutoresetMode.DISABLED])
@pytest.mark.parametrize(
    ("env_id", "kwargs"),
    [
        ("Ant-v5", {"max_episode_steps": 60}),
        ("SlipperyAnt-v5", SLIPPERY),
        ("SlipperyAnt-v5", {**SLIPPERY, "change_every": 7, "change_at": "immediate"}),
    ],
    ids=["Ant", "SlipperyAnt-episode", "SlipperyAnt-immediate"],
)
def test_transitions_match_gymnasium_sync_vector_env(env_id, kwargs, mode, num_envs):
    reference, batched = make_pair(env_id, num_envs, mode, **kwargs)
    try:
        episode_ends, frictions = run_lockstep(reference, batched, steps=130)
    finally:
        reference.close()
        batched.close()
    assert episode_ends >= 2 * num_envs
    if env_id == "SlipperyAnt-v5":
        assert len(frictions) >= 3, "the friction never changed"


def test_full_length_episodes_match_with_the_1000_step_time_limit():
    mode = AutoresetMode.SAME_STEP
    reference, batched = make_pair("SlipperyAnt-v5", 2, mode, change_every=600, schedule_seed=1)
    try:
        episode_ends, frictions = run_lockstep(reference, batched, steps=1030)
        assert batched.max_episode_steps == 1000
        assert episode_ends >= 2 and len(frictions) >= 2
    finally:
        reference.close()
        batched.close()


def test_spaces_metadata_and_attributes_match_gym_make_vec():
    reference, batched = make_pair("SlipperyAnt-v5", 3, AutoresetMode.SAME_STEP, schedule_seed=0)
    assert batched.num_envs == reference.num_envs == 3
    assert batched.single_observation_space == reference.single_observation_space
    assert batched.single_action_space == reference.single_action_space
    assert batched.observation_space == reference.observation_space
    assert batched.action_space == reference.action_space
    assert batched.metadata == reference.metadata
    assert batched.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    reference.reset(seed=0)
    batched.reset(seed=0)
    assert batched.np_random_seed == reference.np_random_seed == (0, 1, 2)
    assert batched.get_attr("friction") == reference.get_attr("friction")
    assert batched.call("get_schedule_state") == reference.call("get_schedule_state")
    assert repr(batched) == "BatchedMujocoEnv(SlipperyAnt-v5, num_envs=3)"
    reference.close()
    batched.close()


def test_schedule_methods_reach_the_copies_the_batched_env_steps():
    vec = envs.make_vec("SlipperyAnt-v5", 2, change_every=50, schedule_seed=0)
    assert isinstance(vec, BatchedMujocoEnv)
    vec.reset(seed=0)
    zero = np.zeros(vec.action_space.shape)
    vec.call("set_friction", 0.25)
    info = vec.step(zero)[4]
    assert list(info["friction"]) == [0.25, 0.25] and info["_friction"].all()
    models = vec.get_attr("model")
    assert all((model.geom_friction[:, 0] == 0.25).all() for model in models)

    other = envs.DriftingMujocoEnv("Ant-v5", change_every=50, schedule_seed=9)
    states = vec.call("get_schedule_state")
    vec.set_attr("schedule_state", [states[0], other.get_schedule_state()])
    assert vec.get_attr("friction") == (0.25, other.friction)
    assert list(vec.step(zero)[4]["friction"]) == [0.25, other.friction]
    other.close()
    vec.close()


def snapshot_run(vec: gym.vector.VectorEnv, actions: np.ndarray) -> list[tuple]:
    return [vec.step(step_actions)[:4] for step_actions in actions]


def assert_same_run(first: list[tuple], second: list[tuple]) -> None:
    for step, (expected, actual) in enumerate(zip(first, second, strict=True)):
        for index, name in enumerate(("observations", "rewards", "terminations", "truncations")):
            np.testing.assert_array_equal(actual[index], expected[index], err_msg=f"step {step}: {name}")


# Step 30 ends every episode still running (pending NEXT_STEP autoresets are saved); 44 is mid-episode.
@pytest.mark.parametrize("checkpoint_step", [30, 44])
@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_state_round_trip_resumes_bit_exactly_in_either_backend(mode, checkpoint_step):
    kwargs = {"change_every": 20, "schedule_seed": 2, "max_episode_steps": 30}
    vec = BatchedMujocoEnv("SlipperyAnt-v5", 3, autoreset_mode=mode, **kwargs)
    vec.reset(seed=1)
    warmup, later = np.split(random_actions(vec, checkpoint_step + 60, seed=4), [checkpoint_step])
    snapshot_run(vec, warmup)
    state = pickle.loads(pickle.dumps(envs.get_vector_state(vec)))
    expected = snapshot_run(vec, later)
    assert sum(int((step[2] | step[3]).sum()) for step in expected) >= 3

    envs.set_vector_state(vec, state)
    assert_same_run(expected, snapshot_run(vec, later))

    fresh = BatchedMujocoEnv("SlipperyAnt-v5", 3, autoreset_mode=mode, **kwargs)
    fresh.set_state(state)
    assert_same_run(expected, snapshot_run(fresh, later))
    assert fresh.call("get_schedule_state") == vec.call("get_schedule_state")

    sync = gym.make_vec(
        "SlipperyAnt-v5", 3, vectorization_mode="sync", vector_kwargs={"autoreset_mode": mode}, **kwargs
    )
    envs.set_vector_state(sync, state)
    assert_same_run(expected, snapshot_run(sync, later))
    # ...and back: a checkpoint of the sync env resumes in the batched env.
    envs.set_vector_state(fresh, envs.get_vector_state(sync))
    assert_same_run(snapshot_run(sync, later[:20]), snapshot_run(fresh, later[:20]))
    for env in (vec, fresh, sync):
        env.close()


def test_factory_picks_the_backend_and_falls_back_to_gymnasium():
    assert isinstance(envs.make_vec("Ant-v5", 2), BatchedMujocoEnv)
    assert isinstance(envs.make_vec("Ant-v5", 2, backend="gymnasium"), gym.vector.SyncVectorEnv)
    fallback = envs.make_vec("Pendulum-v1", 2)
    assert isinstance(fallback, gym.vector.SyncVectorEnv)
    assert not envs.supports_batched("Pendulum-v1") and envs.supports_batched("SlipperyHopper-v5")
    same_step = {"autoreset_mode": AutoresetMode.SAME_STEP}
    vec = envs.make_vec("SlipperyAnt-v5", 2, vector_kwargs=same_step, schedule_seed=0)
    assert vec.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    assert {"Ant-v5", "SlipperyAnt-v5", "SlipperyWalker2d-v5", "HeavyAnt-v5"} <= set(envs.batched_env_ids())
    for env in (fallback, vec):
        env.close()


def test_bad_inputs_raise_value_errors_naming_the_choices():
    with pytest.raises(ValueError, match=r"(?s)NoSuchAnt-v5.*supports .*SlipperyAnt-v5.*backend='gymnasium'"):
        BatchedMujocoEnv("NoSuchAnt-v5", 2)
    with pytest.raises(ValueError, match=r"(?s)NoSuchAnt-v5.*supports .*SlipperyAnt-v5.*backend='gymnasium'"):
        envs.make_vec("NoSuchAnt-v5", 2)
    with pytest.raises(ValueError, match=r"does not support 'Pendulum-v1'.*Ant-v5.*backend='gymnasium'"):
        BatchedMujocoEnv("Pendulum-v1", 2)
    with pytest.raises(ValueError, match=r"unknown backend 'jax'; allowed values: 'batched', 'gymnasium'"):
        envs.make_vec("Ant-v5", 2, backend="jax")
    with pytest.raises(ValueError, match=r"num_envs must be an integer >= 1"):
        BatchedMujocoEnv("Ant-v5", 0)

    vec = BatchedMujocoEnv("Ant-v5", 2, autoreset_mode=AutoresetMode.DISABLED, max_episode_steps=2)
    vec.reset(seed=0)
    with pytest.raises(ValueError, match=r"actions must have shape \(2, 8\)"):
        vec.step(np.zeros(8))
    with pytest.raises(ValueError, match=r"one seed per copy \(2\)"):
        vec.reset(seed=[1, 2, 3])
    with pytest.raises(ValueError, match=r"reset_mask"):
        vec.reset(options={"reset_mask": np.zeros(2, dtype=bool)})
    zero = np.zeros((2, 8))
    vec.step(zero)
    vec.step(zero)
    with pytest.raises(RuntimeError, match=r"autoreset_mode DISABLED reset them first"):
        vec.step(zero)
    state = vec.get_state()
    with pytest.raises(ValueError, match=r"the state has 2 copies, this vector env has 3"):
        BatchedMujocoEnv("Ant-v5", 3, autoreset_mode=AutoresetMode.DISABLED).set_state(state)
    with pytest.raises(ValueError, match=r"saved with autoreset_mode 'Disabled'"):
        BatchedMujocoEnv("Ant-v5", 2).set_state(state)
    with pytest.raises(ValueError, match=r"comes from a non-drifting env"):
        BatchedMujocoEnv("SlipperyAnt-v5", 2, autoreset_mode=AutoresetMode.DISABLED).set_state(state)
    with pytest.raises(ValueError, match=r"not a vector env state"):
        vec.set_state({"copies": []})
    vec.close()
    async_vec = gym.make_vec("CartPole-v1", 1, vectorization_mode="async")
    try:
        with pytest.raises(TypeError, match=r"cannot checkpoint a AsyncVectorEnv"):
            envs.get_vector_state(async_vec)
    finally:
        async_vec.close()


IMMEDIATE = {"change_every": 5, "change_at": "immediate", "schedule_seed": 4, "max_episode_steps": 50}


@pytest.mark.parametrize(
    ("env_id", "kwargs"),
    [
        ("Hopper-v5", {"max_episode_steps": 50}),
        ("Walker2d-v5", {"max_episode_steps": 50}),
        ("HalfCheetah-v5", {"max_episode_steps": 50}),
        ("SlipperyHopper-v5", IMMEDIATE),
        ("SlipperyWalker2d-v5", IMMEDIATE),
        ("SlipperyHalfCheetah-v5", IMMEDIATE),
        ("HeavyAnt-v5", IMMEDIATE),
        # Mass changes run mj_setConst (and mj_forward) mid-episode.
        ("SlipperyHopper-v5", {**IMMEDIATE, "parameter": "mass", "mass_range": (0.5, 2.0)}),
        ("SlipperyAnt-v5", {**IMMEDIATE, "parameter": "damping", "damping_range": (0.5, 2.0)}),
    ],
)
def test_other_tasks_and_drifts_match_gymnasium(env_id, kwargs, tmp_path, monkeypatch):
    # HalfCheetah's XML makes MuJoCo write a deprecation MUJOCO_LOG.TXT into the working directory.
    monkeypatch.chdir(tmp_path)
    reference, batched = make_pair(env_id, 2, AutoresetMode.SAME_STEP, **kwargs)
    try:
        episode_ends, _ = run_lockstep(reference, batched, steps=120)
    finally:
        reference.close()
        batched.close()
    assert episode_ends >= 2


@pytest.mark.parametrize(
    ("env_id", "kwargs"),
    [
        (
            "Ant-v5",
            {
                "ctrl_cost_weight": 0.1,
                "contact_cost_weight": 1e-3,
                "healthy_z_range": (0.3, 0.9),
                "contact_force_range": (-0.5, 2.0),
                "main_body": "torso",
                "include_cfrc_ext_in_observation": False,
                "exclude_current_positions_from_observation": False,
                "max_episode_steps": 40,
            },
        ),
        ("Ant-v5", {"terminate_when_unhealthy": False, "reset_noise_scale": 0.3, "max_episode_steps": 40}),
        ("Hopper-v5", {"exclude_current_positions_from_observation": False, "healthy_state_range": (-5, 5)}),
        ("Walker2d-v5", {"forward_reward_weight": 2.0, "healthy_angle_range": (-0.5, 0.5), "frame_skip": 2}),
        ("SlipperyAnt-v5", {"base_kwargs": {"ctrl_cost_weight": 0.2}, "schedule_seed": 0}),
    ],
    ids=["ant-settings", "ant-no-termination", "hopper-settings", "walker-settings", "slippery-base-kwargs"],
)
def test_task_settings_passed_to_gym_make_are_honoured(env_id, kwargs):
    reference, batched = make_pair(env_id, 2, AutoresetMode.NEXT_STEP, **kwargs)
    try:
        assert batched.single_observation_space == reference.single_observation_space
        run_lockstep(reference, batched, steps=90)
    finally:
        reference.close()
        batched.close()


def test_pool_runs_every_index_once_on_several_threads_and_reraises_errors():
    pool = SteppingPool(3)
    seen, threads = [], set()

    def record(index: int) -> None:
        seen.append(index)
        threads.add(threading.get_ident())

    for _ in range(20):
        pool.run(record, range(50))
    assert sorted(seen) == sorted(list(range(50)) * 20)

    def fail_on_seven(index: int) -> None:
        if index == 7:
            raise KeyError("copy 7")

    with pytest.raises(KeyError, match="copy 7"):
        pool.run(fail_on_seven, range(20))
    pool.run(record, range(3))  # still usable after an error
    pool.close()
    with pytest.raises(ValueError, match="num_threads must be an integer >= 1"):
        SteppingPool(0)


def slow_on_a_worker(index: int) -> None:
    # A worker whose core another process has taken: waiting for it costs more than doing it all here.
    time.sleep(0.0005 if threading.current_thread() is threading.main_thread() else 0.004)


@pytest.mark.parametrize(("work", "threaded"), [
    (lambda index: time.sleep(0.002), True),  # releases the GIL, as mj_step does: threads pay
    (slow_on_a_worker, False),
])
def test_a_pool_given_a_choice_keeps_the_faster_way(work: object, threaded: bool) -> None:
    choice = FasterChoice(preferred=not threaded, block=3, blocks=3, gap=5)
    pool = SteppingPool(2, choice=choice)
    for _ in range(2 * 3 * 3):
        pool.run(work, range(4))
    assert choice.chosen is threaded and pool.threaded is threaded
    pool.close()
    # Without a choice the pool always uses its threads.
    one, two = SteppingPool(1), SteppingPool(2)
    assert two.threaded and not one.threaded
    one.close()
    two.close()


def test_the_experiment_layer_hands_the_batched_env_a_stepping_choice() -> None:
    from rl_plasticity.experiment.config import load_config
    from rl_plasticity.experiment.environment import make_vector_env

    config = load_config(None, ["env.id=Hopper-v5", "env.num_envs=2", "env.backend=batched"])
    vector_env = make_vector_env(config.env, seed=0)
    assert isinstance(vector_env.unwrapped._pool.choice, FasterChoice)
    vector_env.close()


DIAGNOSTICS = {"x_position", "y_position", "distance_from_origin", "x_velocity", "y_velocity",
               "reward_forward", "reward_ctrl", "reward_contact", "reward_survive", "z_distance_from_origin"}


@pytest.mark.parametrize("env_id, kwargs", [("SlipperyAnt-v5", SLIPPERY),
                                            ("Hopper-v5", {"max_episode_steps": 40}),
                                            ("HalfCheetah-v5", {"max_episode_steps": 40})])
@pytest.mark.parametrize("mode", [AutoresetMode.SAME_STEP, AutoresetMode.NEXT_STEP])
@pytest.mark.parametrize("copies", [1, 2])  # one Ant copy without diagnostics takes the scalar path
def test_step_info_false_keeps_the_transitions_and_drops_only_the_diagnostics(env_id: str, kwargs: dict,
                                                                            mode: AutoresetMode,
                                                                            copies: int) -> None:
    full = BatchedMujocoEnv(env_id, copies, autoreset_mode=mode, **kwargs)
    lean = BatchedMujocoEnv(env_id, copies, autoreset_mode=mode, step_info=False, **kwargs)
    for vec in (full, lean):
        vec.reset(seed=5)
    ends = 0
    previous_end = np.zeros(copies, dtype=bool)
    for step, actions in enumerate(random_actions(full, 120, seed=2)):
        expected, actual = full.step(actions), lean.step(actions)
        for index in range(4):
            np.testing.assert_array_equal(actual[index], expected[index], err_msg=f"step {step}: {index}")
        kept = {key: value for key, value in expected[4].items() if key.lstrip("_") not in DIAGNOSTICS}
        assert expected[4].keys() - kept.keys(), "the full info has diagnostics"
        ended = bool(np.any(expected[2] | expected[3])) or (mode == AutoresetMode.NEXT_STEP and
                                                             bool(np.any(previous_end)))
        if ended:  # a copy's own reset info (its position) comes along as Gymnasium reports it
            assert kept.keys() <= actual[4].keys() <= expected[4].keys(), f"step {step}"
        else:
            assert kept.keys() == actual[4].keys(), f"step {step}"
        previous_end = expected[2] | expected[3]
        for key in ("final_obs", "friction", "schedule_changes"):
            if key in kept and kept[key].dtype != object:
                np.testing.assert_array_equal(actual[4][key], kept[key])
        if "final_info" in actual[4]:
            assert not (actual[4]["final_info"].keys() & DIAGNOSTICS)
        ends += int(np.sum(expected[2] | expected[3]))
    assert ends >= 2
    full.close()
    lean.close()


def test_step_info_reaches_the_batched_env_and_is_dropped_for_gymnasium() -> None:
    lean = envs.make_vec("Hopper-v5", 1, vector_kwargs={"step_info": False})
    lean.reset(seed=0)
    assert "x_position" not in lean.step(np.zeros((1, 3)))[4]
    fallback = envs.make_vec("Hopper-v5", 1, backend="gymnasium", vector_kwargs={"step_info": False})
    fallback.reset(seed=0)
    assert "x_position" in fallback.step(np.zeros((1, 3)))[4]  # more than asked, never less
    lean.close()
    fallback.close()


def test_one_ant_copy_ends_an_unhealthy_episode_as_the_general_path_does() -> None:
    full = BatchedMujocoEnv("Ant-v5", 1, autoreset_mode=AutoresetMode.SAME_STEP)
    lean = BatchedMujocoEnv("Ant-v5", 1, autoreset_mode=AutoresetMode.SAME_STEP, step_info=False)
    outcomes = []
    for vec in (full, lean):
        vec.reset(seed=1)
        data = vec.envs[0].unwrapped.data
        data.qpos[2] = 3.0  # above the healthy range: the torso is thrown up
        outcomes.append(vec.step(np.full((1, 8), 0.5, dtype=np.float32)))
    for index in range(4):
        np.testing.assert_array_equal(outcomes[1][index], outcomes[0][index])
    assert outcomes[1][2][0], "the episode ended"
    np.testing.assert_array_equal(outcomes[1][4]["final_obs"][0], outcomes[0][4]["final_obs"][0])
    full.close()
    lean.close()


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_one_copy_steps_on_scalars_and_resets_through_the_general_path(mode: AutoresetMode,
                                                                       monkeypatch) -> None:
    """Which path each step of one copy takes (the Gymnasium comparisons above check what both give):
    the scalar one unless the last step ended the episode."""
    vec = BatchedMujocoEnv("SlipperyAnt-v5", 1, autoreset_mode=mode, **SLIPPERY)
    scalar_steps = []
    scalar_step = vec._step_one_copy
    monkeypatch.setattr(vec, "_step_one_copy", lambda actions: scalar_steps.append(1) or scalar_step(actions))
    vec.reset(seed=0)
    pending = []
    for actions in random_actions(vec, 90):
        pending.append(bool(vec._needs_reset[0]))
        vec.step(actions)
    vec.close()
    assert any(pending), "the 40-step time limit ended no episode"
    assert len(scalar_steps) == pending.count(False) > 80
