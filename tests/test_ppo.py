"""PPO: it learns, CBP replaces units in both networks, the dohare preset is the paper's, GAE bootstraps
exactly at time-limit ends, and the state round-trips."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_same_state, make_trainer
from torch import nn

from agents import RunningMeanStd, compute_gae
from rl_plasticity.experiment.checkpoint import load_checkpoint, save_checkpoint
from rl_plasticity.experiment.config import load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


# ---------------------------------------------------------------------- GAE
def reference_gae(rewards: list[float], values: list[float], last_value: float, gamma: float,
                  lam: float) -> list[float]:
    """Textbook GAE for one episode that does not end inside the rollout."""
    deltas = [r + gamma * v_next - v for r, v, v_next in
              zip(rewards, values, values[1:] + [last_value], strict=True)]
    return [sum((gamma * lam) ** k * d for k, d in enumerate(deltas[t:])) for t in range(len(deltas))]


def test_gae_matches_the_textbook_formula_without_episode_ends() -> None:
    rng = np.random.default_rng(0)
    rewards, values = rng.normal(size=(6, 1)), rng.normal(size=(6, 1))
    no_end = np.zeros((6, 1), dtype=bool)
    advantages, returns = compute_gae(rewards, values, no_end, no_end, np.zeros((6, 1)), np.array([0.7]),
                                      gamma=0.9, gae_lambda=0.8)
    expected = reference_gae(list(rewards[:, 0]), list(values[:, 0]), 0.7, 0.9, 0.8)
    np.testing.assert_allclose(advantages[:, 0], expected, rtol=1e-5)
    np.testing.assert_allclose(returns, advantages + values, rtol=1e-5)


def stepwise_gae(rewards: np.ndarray, values: np.ndarray, terminated: np.ndarray, truncated: np.ndarray,
                 final_values: np.ndarray, last_values: np.ndarray, gamma: float,
                 lam: float, bootstrap: bool) -> np.ndarray:
    """The recursion one step at a time on numpy rows (compute_gae's form before it ran on scalars)."""
    rewards = rewards.astype(np.float64)
    if bootstrap:
        rewards = rewards + gamma * np.where(truncated & ~terminated, final_values, 0.0)
    continues = 1.0 - (terminated | truncated)
    advantages = np.zeros(rewards.shape)
    running, next_values = np.zeros(rewards.shape[1]), np.asarray(last_values, dtype=np.float64)
    for t in range(len(rewards) - 1, -1, -1):
        delta = rewards[t] + gamma * next_values * continues[t] - values[t]
        running = delta + gamma * lam * continues[t] * running
        advantages[t] = running
        next_values = values[t]
    return advantages.astype(np.float32)


@pytest.mark.parametrize("num_envs", [1, 3])
def test_gae_on_scalars_equals_the_stepwise_recursion_bit_for_bit(num_envs: int) -> None:
    """float32 values as the buffer holds them (gamma * V is then a float32 product), float32 and
    float64 rewards, terminations, truncations with and without bootstrapping."""
    rng = np.random.default_rng(7)
    for trial in range(40):
        steps = int(rng.integers(1, 200))
        shape = (steps, num_envs)
        rewards = rng.normal(size=shape).astype(np.float32 if trial % 2 else np.float64)
        values, final_values = (rng.normal(size=shape).astype(np.float32) for _ in range(2))
        terminated, truncated = rng.random(shape) < 0.05, rng.random(shape) < 0.05
        last_values = rng.normal(size=num_envs).astype(np.float32)
        gamma, lam, bootstrap = float(rng.uniform(0.9, 1.0)), float(rng.uniform(0.8, 1.0)), trial % 3 > 0
        advantages, returns = compute_gae(rewards, values, terminated, truncated, final_values, last_values,
                                          gamma, lam, bootstrap)
        expected = stepwise_gae(rewards, values, terminated, truncated, final_values, last_values, gamma,
                                lam, bootstrap)
        assert np.array_equal(advantages, expected), trial
        assert returns.dtype == np.float32


def test_truncation_bootstrapping_changes_only_the_episode_that_hit_the_time_limit() -> None:
    gamma, lam = 0.99, 0.95
    steps = 6
    rewards = np.ones((steps, 3))
    values = np.linspace(0.5, 2.0, steps * 3).reshape(steps, 3)
    terminated = np.zeros((steps, 3), dtype=bool)
    truncated = np.zeros((steps, 3), dtype=bool)
    truncated[2, 0] = True            # env 0: time limit at t=2
    terminated[2, 1] = True           # env 1: a real terminal state at t=2 ...
    truncated[2, 1] = True            # ... that also hits the time limit: still terminal
    final_values = np.zeros((steps, 3))
    final_values[2, 0] = 10.0
    final_values[2, 1] = 99.0         # must be ignored: the episode terminated
    last_values = np.array([0.3, 0.4, 0.5])

    on, _ = compute_gae(rewards, values, terminated, truncated, final_values, last_values, gamma, lam, True)
    off, _ = compute_gae(rewards, values, terminated, truncated, final_values, last_values, gamma, lam, False)
    difference = on - off
    # Exactly the steps of env 0's truncated episode move, by gamma * V(final) discounted back in time.
    expected = np.zeros((steps, 3))
    for t in range(3):
        expected[t, 0] = (gamma * lam) ** (2 - t) * gamma * 10.0
    np.testing.assert_allclose(difference, expected, rtol=1e-5, atol=1e-6)
    # Off: the time-limit end is terminal, as in the paper's code.
    assert off[2, 0] == pytest.approx(1.0 - values[2, 0], rel=1e-5)


def test_rollouts_bootstrap_exactly_at_time_limit_ends() -> None:
    """Pendulum always truncates at 200 steps: the first 200 returns move, the rest do not."""
    overrides = ("env.id=Pendulum-v1", "ppo.rollout_steps=256", "ppo.minibatch_size=64",
                 "ppo.hidden_sizes=[32]")
    returns = {}
    for flag in (True, False):
        trainer = make_trainer(*overrides, f"ppo.bootstrap_truncation={str(flag).lower()}")
        trainer.agent.collect_rollout()
        assert trainer.agent.buffer.truncated[199, 0] and not trainer.agent.buffer.terminated.any()
        returns[flag] = trainer.agent.buffer.returns[:, 0].clone()
        trainer.close()
    moved = (returns[True] - returns[False]).abs() > 1e-6
    assert moved[:200].all() and not moved[200:].any()


# ---------------------------------------------------------------------- the paper's preset
def test_dohare_preset_builds_the_papers_networks_and_optimizer() -> None:
    trainer = make_trainer("env.id=SlipperyAnt-v5", "run.total_steps=2048")
    agent = trainer.agent
    obs_dim, action_dim = agent.obs_dim, agent.action_dim
    for net, out in ((agent.policy.mean_net, action_dim), (agent.value.net, 1)):
        kinds = [type(m) for m in net]
        assert kinds == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
        shapes = [tuple(m.weight.shape) for m in net if isinstance(m, nn.Linear)]
        assert shapes == [(256, obs_dim), (256, 256), (out, 256)]
        for layer in (m for m in net if isinstance(m, nn.Linear)):
            bound = math.sqrt(3.0 / layer.in_features)  # LeCun uniform, the heads included
            weight = layer.weight.detach()
            assert weight.abs().max() <= bound
            if weight.numel() >= 2000:
                assert weight.abs().max() > 0.97 * bound
                assert weight.std().item() == pytest.approx(bound / math.sqrt(3.0), rel=0.05)
            assert torch.count_nonzero(layer.bias) == 0
    assert torch.equal(agent.policy.log_std.detach(), torch.zeros(action_dim))

    # ONE Adam over both networks and the log-std, held as one per network (Adam is elementwise)
    (group,) = agent.optimizer.state_dict()["param_groups"]
    assert group["params"] == list(range(13))
    assert all(isinstance(o, torch.optim.Adam) for o in agent.optimizer.by_network.values())
    assert [len(g["params"]) for g in agent.optimizer.param_groups] == [7, 6]
    assert all(g == {**group, "params": g["params"]} for g in agent.optimizer.param_groups)
    assert (group["lr"], group["betas"], group["eps"]) == (1e-4, (0.9, 0.999), 1e-8)
    assert group["weight_decay"] == 0.0
    s = agent.settings
    assert (s.max_grad_norm, s.ent_coef, s.vf_coef, s.clip_vloss) == (None, 0.0, 1.0, False)
    assert (s.norm_adv, s.normalize_obs, s.normalize_reward) == ("batch", False, False)
    assert (s.clip_coef, s.gamma, s.gae_lambda, s.clip_actions) == (0.2, 0.99, 0.95, False)
    assert agent.num_envs == 1 and agent.cbp_policy is None

    optimizer_steps, minibatch_rows = [], []
    agent.optimizer.by_network["value"].register_step_post_hook(lambda *_: optimizer_steps.append(1))
    agent.value.net[0].register_forward_pre_hook(
        lambda _m, args: minibatch_rows.append(len(args[0])) if torch.is_grad_enabled() else None)
    trainer.iterate()
    assert agent.global_step == 2048
    assert len(optimizer_steps) == 160  # 10 epochs x 16 minibatches
    assert minibatch_rows == [128] * 160
    trainer.close()


@pytest.mark.parametrize(("name", "betas", "weight_decay", "cbp"), [
    ("ppo_standard", (0.9, 0.999), 0.0, False),
    ("ppo_adam", (0.99, 0.99), 0.0, False),
    ("ppo_l2", (0.99, 0.99), 1e-3, False),
    ("ppo_cbp", (0.99, 0.99), 1e-4, True),
])
def test_slippery_ant_configs_are_the_papers_variants(name: str, betas: tuple, weight_decay: float,
                                                      cbp: bool) -> None:
    config = load_config(CONFIGS / "slippery_ant" / f"{name}.yaml")
    assert config.preset == "dohare" and config.env.id == "SlipperyAnt-v5"
    assert (config.env.change_every, config.env.friction_range, config.run.total_steps) == \
        (2_000_000, (0.02, 2.0), 20_000_000)
    assert (config.optimizer.lr, config.optimizer.eps) == (1e-4, 1e-8)
    assert config.optimizer.betas == betas
    assert (config.optimizer.weight_decay, config.cbp.enabled) == (weight_decay, cbp)
    if cbp:
        c = config.cbp
        assert (c.replacement_rate, c.maturity_threshold, c.decay_rate, c.utility, c.init) == \
            (1e-4, 10_000, 0.99, "contribution", "lecun")


def test_cleanrl_preset_builds_cleanrls_networks() -> None:
    trainer = make_trainer("preset=cleanrl", "env.id=Pendulum-v1", "run.total_steps=4096")
    agent = trainer.agent
    kinds = [type(m) for m in agent.policy.mean_net]
    assert kinds == [nn.Linear, nn.Tanh, nn.Linear, nn.Tanh, nn.Linear]
    hidden = agent.value.net[2].weight.detach()
    # Orthogonal with gain sqrt(2):
    torch.testing.assert_close(hidden @ hidden.T, 2.0 * torch.eye(64), atol=1e-4, rtol=0)
    assert agent.policy.mean_net[4].weight.abs().max() < 0.05  # policy head gain 0.01
    assert agent.obs_normalizer is not None and agent.reward_scaler is not None
    (group,) = agent.optimizer.state_dict()["param_groups"]
    assert (group["lr"], group["eps"]) == (3e-4, 1e-5)
    trainer.iterate()
    assert agent.learning_rate == pytest.approx(1.5e-4)  # annealed linearly over the 2 iterations
    trainer.close()


# ---------------------------------------------------------------------- learning and CBP
@pytest.mark.slow
def test_ppo_learns_inverted_pendulum_far_beyond_random() -> None:
    # A random policy balances for ~5-10 steps; a broken update (e.g. a flipped policy-loss sign or lr 0)
    # never gets near 200 in this budget, a working one reaches the 1000-step cap.
    trainer = make_trainer("preset=cleanrl", "env.id=InvertedPendulum-v5", "ppo.rollout_steps=1024",
                           "run.total_steps=20480")
    summary = trainer.train(progress=False)
    trainer.close()
    assert summary.recent_return > 200, summary


def test_broken_update_does_not_learn() -> None:
    """The control for the test above: with lr 0 the same budget's first iterations stay near random."""
    trainer = make_trainer("preset=cleanrl", "env.id=InvertedPendulum-v5", "ppo.rollout_steps=1024",
                           "run.total_steps=4096", "optimizer.lr=0")
    summary = trainer.train(progress=False)
    trainer.close()
    assert summary.recent_return < 50


def test_cbp_replaces_units_in_both_networks() -> None:
    trainer = make_trainer("env.id=InvertedPendulum-v5", "ppo.rollout_steps=256", "ppo.minibatch_size=64",
                           "ppo.epochs=2", "cbp.enabled=true", "cbp.maturity_threshold=8",
                           "cbp.replacement_rate=0.01", "run.total_steps=1024")
    agent = trainer.agent
    before = [p.detach().clone() for p in agent.policy.mean_net[0].parameters()]
    trainer.train(progress=False)
    assert agent.cbp_policy is not None and agent.cbp_value is not None
    assert agent.cbp_policy.steps == agent.cbp_value.steps == 4 * 2 * 4  # after every minibatch update
    for cbp in (agent.cbp_policy, agent.cbp_value):
        assert all(count > 0 for count in cbp.replaced_total), cbp.replaced_total
    assert not torch.equal(before[0], agent.policy.mean_net[0].weight)
    trainer.close()


@pytest.mark.parametrize(("preset", "parallel", "backprop"),
                         [("dohare", "true", "autograd"), ("cleanrl", "true", "autograd"),
                          ("dohare", "null", "autograd"), ("dohare", "true", "manual"),
                          ("cleanrl", "null", "manual")])
def test_parallel_network_updates_are_bit_identical_to_sequential_ones(preset: str, parallel: str,
                                                                        backprop: str) -> None:
    # cleanrl clips the joint gradient norm and clips the value loss; dohare does neither. "null" times
    # both ways in turn on these minibatches (too few to decide): switching must not change a bit either.
    overrides = (f"preset={preset}", "env.id=InvertedPendulum-v5", "ppo.rollout_steps=256",
                 "ppo.minibatch_size=64", "ppo.epochs=2", "ppo.ent_coef=0.01", "cbp.enabled=true",
                 "cbp.maturity_threshold=2", "cbp.replacement_rate=0.05", "run.total_steps=768",
                 f"ppo.backprop={backprop}", "run.overlap_value_update=false")
    value_threads: list[str] = []

    agents = []
    for mode in ("false", parallel):
        value_threads.clear()
        trainer = make_trainer(*overrides, f"run.parallel_networks={mode}")
        agent = trainer.agent
        owner = agent.manual_backprop if backprop == "manual" else agent
        name = "value_backward" if backprop == "manual" else "_value_backward"
        value_work = getattr(owner, name)

        def on_thread(*args: object, work=value_work) -> object:
            value_threads.append(threading.current_thread().name)
            return work(*args)

        setattr(owner, name, on_thread)
        trainer.train(progress=False)
        agents.append(agent)
        trainer.close()
    on_worker = sum(name.startswith("ppo-value") for name in value_threads)
    # 3 updates x 8 minibatches; "null" measures in blocks of 8, threads first
    assert on_worker == (24 if parallel == "true" else 16), value_threads
    sequential, threaded = agents
    assert sum(threaded.cbp_value.replaced_total) > 0
    for name in ("policy", "value", "optimizer", "cbp_policy", "cbp_value"):
        assert_same_state(sequential.state_dict()[name], threaded.state_dict()[name], name)


# ---------------------------------------------------------------------- persistence
def test_trainer_state_round_trips_through_a_checkpoint(tmp_path: Path) -> None:
    overrides = ("preset=cleanrl", "env.id=SlipperyHopper-v5", "env.change_every=300",
                 "ppo.rollout_steps=256", "ppo.minibatch_size=64", "ppo.epochs=1", "cbp.enabled=true",
                 "cbp.maturity_threshold=2", "cbp.replacement_rate=0.05", "run.total_steps=2048")
    trainer = make_trainer(*overrides)
    for _ in range(2):
        trainer.iterate()
    path = save_checkpoint(tmp_path / "step.pt", trainer.state_dict())
    restored = make_trainer(*overrides)
    restored.load_state_dict(load_checkpoint(path))
    a, b = trainer.agent, restored.agent
    assert b.global_step == a.global_step == 512 and b.updates_done == 2
    for x, y in zip(a.state_dict()["policy"].values(), b.state_dict()["policy"].values(), strict=True):
        assert torch.equal(x, y)
    moments = [agent.optimizer.state_dict()["state"][0]["exp_avg"] for agent in (a, b)]
    assert torch.equal(*moments)
    assert a.cbp_value.replaced_total == b.cbp_value.replaced_total and sum(b.cbp_value.replaced_total) > 0
    for x, y in zip(a.cbp_policy.utilities(), b.cbp_policy.utilities(), strict=True):
        assert torch.equal(x, y)
    np.testing.assert_array_equal(a.obs_normalizer.stats.mean, b.obs_normalizer.stats.mean)
    np.testing.assert_array_equal(a.reward_scaler.stats.var, b.reward_scaler.stats.var)
    schedules = [[copy["schedule"] for copy in t.state_dict()["envs"]["copies"]] for t in (trainer, restored)]
    assert schedules[0] == schedules[1] and schedules[0][0]["total_steps"] == 512
    # Both continue exactly alike: same simulator states, exploration noise, minibatch order and CBP draws.
    trainer.iterate()
    restored.iterate()
    assert b.global_step == 768 and b.updates_done == 3
    for x, y in zip(a.state_dict()["value"].values(), b.state_dict()["value"].values(), strict=True):
        assert torch.equal(x, y)
    trainer.close()
    restored.close()


def test_running_mean_std_matches_numpy_over_batches() -> None:
    data = np.random.default_rng(1).normal(3.0, 2.0, size=(500, 4))
    stats = RunningMeanStd((4,))
    for chunk in np.array_split(data, 7):
        stats.update(chunk)
    np.testing.assert_allclose(stats.mean, data.mean(0), rtol=1e-5)
    np.testing.assert_allclose(stats.var, data.var(0), rtol=1e-3)


def test_weight_change_is_the_norm_of_the_update() -> None:
    for lr, moved in ((0.0, False), (3e-4, True)):
        trainer = make_trainer("env.id=Pendulum-v1", "ppo.hidden_sizes=[8]", "ppo.rollout_steps=256",
                               "ppo.minibatch_size=64", "ppo.epochs=1", f"optimizer.lr={lr}")
        before = torch.cat([p.detach().reshape(-1) for p in trainer.agent.value.parameters()])
        stats = trainer.iterate()
        stats.update(trainer.finish_deferred_update())  # the value half may still have been running
        after = torch.cat([p.detach().reshape(-1) for p in trainer.agent.value.parameters()])
        assert stats["value_weight_change"] == pytest.approx(float((after - before).norm()), rel=1e-5)
        assert (stats["policy_weight_change"] > 0) == moved and (stats["value_weight_change"] > 0) == moved
        trainer.close()


@pytest.mark.parametrize("backprop", ["manual", "autograd"])
def test_logged_gradient_norms_are_each_networks_total_norm(backprop: str) -> None:
    trainer = make_trainer("env.id=Pendulum-v1", "ppo.hidden_sizes=[8]", "ppo.rollout_steps=64",
                           "ppo.minibatch_size=64", "ppo.epochs=1", "optimizer.lr=0.0",
                           f"ppo.backprop={backprop}")
    agent = trainer.agent
    agent.collect_rollout()
    stats = agent.update()  # one minibatch: the mean is that minibatch's norm
    policy = torch.nn.utils.get_total_norm([p.grad for p in agent.policy.parameters()])
    value = torch.nn.utils.get_total_norm([p.grad for p in agent.value.parameters()])
    assert stats["policy_grad_norm"] == float(policy) and stats["value_grad_norm"] == float(value)
    assert stats["policy_grad_norm"] != stats["value_grad_norm"]
    trainer.close()


@pytest.mark.parametrize(("preset", "backprop"), [("dohare", "manual"), ("cleanrl", "manual"),
                                                  ("dohare", "autograd")])
def test_each_networks_tensors_live_in_its_flat_buffers_and_the_default_update_steps_them_at_once(
        preset: str, backprop: str) -> None:
    trainer = make_trainer(f"preset={preset}", "env.id=InvertedPendulum-v5", "ppo.rollout_steps=128",
                           "ppo.minibatch_size=64", "ppo.epochs=2", "cbp.enabled=true",
                           "cbp.maturity_threshold=2", "cbp.replacement_rate=0.05", "run.total_steps=512",
                           f"ppo.backprop={backprop}")
    agent = trainer.agent
    trainer.train(progress=False)
    for name, params in agent._network_params.items():
        flat = agent.optimizer.flat[name]
        optimizer = agent.optimizer.by_network[name]
        for param in params:  # the modules' own parameters, CBP's replacements included, are the buffer's
            assert param.untyped_storage().data_ptr() == flat.parameters.untyped_storage().data_ptr()
            assert optimizer.state[param]["step"] == 4 * 2 * 2
        assert torch.equal(torch.cat([p.detach().reshape(-1) for p in params]), flat.parameters)
        # The hand-derived gradients are written into the buffer and each step was one call over it;
        # autograd (the reference) allocates its own gradients, so its steps go tensor by tensor.
        assert flat.intact(optimizer) == (backprop == "manual")
        assert not flat._steps_may_differ if backprop == "manual" else flat._steps_may_differ
    trainer.close()
