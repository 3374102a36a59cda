"""Our batched vector env through the SB3 adapter: the same transitions as SB3's DummyVecEnv over the
same Gymnasium envs, SB3's autoreset conventions, attributes and methods, and SB3 PPO training on it."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("stable_baselines3")

from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor  # noqa: E402

import envs  # noqa: E402
from agents.sb3.vecenv import GymnasiumVecEnv  # noqa: E402

SAME_STEP = {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}
KWARGS = {"change_every": 150, "schedule_seed": 4}


def test_matches_dummy_vec_env_step_for_step_including_resets_and_friction_changes() -> None:
    batched = GymnasiumVecEnv(envs.make_vec("SlipperyHopper-v5", 2, vector_kwargs=SAME_STEP, **KWARGS))
    assert isinstance(batched.vector_env, envs.BatchedMujocoEnv)
    dummy = DummyVecEnv([lambda: gym.make("SlipperyHopper-v5", **KWARGS) for _ in range(2)])
    for vec in (batched, dummy):
        vec.seed(7)
    obs_a, obs_b = batched.reset(), dummy.reset()
    np.testing.assert_allclose(obs_a, obs_b, atol=1e-6)
    rng = np.random.default_rng(0)
    ends = 0
    for _ in range(400):
        actions = rng.uniform(-1, 1, (2, 3)).astype(np.float32)
        (obs_a, rew_a, done_a, info_a), (obs_b, rew_b, done_b, info_b) = \
            (vec.step(actions) for vec in (batched, dummy))
        np.testing.assert_allclose(obs_a, obs_b, atol=1e-6)
        np.testing.assert_allclose(rew_a, rew_b, atol=1e-6)
        np.testing.assert_array_equal(done_a, done_b)
        for a, b in zip(info_a, info_b, strict=True):
            assert a["friction"] == pytest.approx(b["friction"])
            if "terminal_observation" in b:
                ends += 1
                np.testing.assert_allclose(a["terminal_observation"], b["terminal_observation"], atol=1e-6)
                assert a["TimeLimit.truncated"] == b.get("TimeLimit.truncated", False)
    assert ends > 5
    assert batched.get_attr("friction") == dummy.get_attr("friction")


def test_attributes_methods_and_the_autoreset_mode_check() -> None:
    vec = GymnasiumVecEnv(envs.make_vec("SlipperyHopper-v5", 2, vector_kwargs=SAME_STEP, **KWARGS))
    vec.reset()
    vec.env_method("set_friction", 0.5)
    assert vec.get_attr("friction") == [0.5, 0.5]
    with pytest.raises(ValueError, match="subset"):
        vec.env_method("set_friction", 0.1, indices=[0])
    next_step = envs.make_vec("Hopper-v5", 1, backend="gymnasium")
    with pytest.raises(ValueError, match="SAME_STEP"):
        GymnasiumVecEnv(next_step)
    vec.close()
    next_step.close()


def test_sb3_ppo_trains_on_the_batched_env() -> None:
    vec = VecMonitor(GymnasiumVecEnv(envs.make_vec("Hopper-v5", 2, vector_kwargs=SAME_STEP)))
    model = PPO("MlpPolicy", vec, n_steps=256, batch_size=128, n_epochs=2, seed=0,
                policy_kwargs={"net_arch": [32, 32]})
    model.learn(2048)
    assert model.num_timesteps == 2048
    returns = [episode["r"] for episode in model.ep_info_buffer]
    assert returns and all(np.isfinite(returns))
    vec.close()
