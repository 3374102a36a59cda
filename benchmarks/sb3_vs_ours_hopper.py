"""Sanity check of our PPO against Stable-Baselines3 PPO on Hopper-v5, same hyperparameters, same steps.

Both run CleanRL's ppo_continuous_action settings: 64x64 tanh policy and value networks with orthogonal
init (gain sqrt 2, 0.01 policy head, 1 value head), state-independent log-std starting at 0, Adam lr 3e-4
(eps 1e-5) annealed linearly to 0, rollout 2048, 10 epochs of minibatches of 64, gamma 0.99, GAE 0.95,
clip 0.2, no entropy bonus, gradient norm clipped to 0.5, advantages standardised per minibatch, actions
clipped to the action space, observations and rewards normalised (clip 10), bootstrapping at time-limit
ends. Ours is the ``cleanrl`` preset; SB3 gets VecNormalize. Two conventions are aligned explicitly:

- value loss weight: CleanRL's vf_coef 0.5 multiplies 0.5 * MSE, i.e. 0.25 * MSE. SB3 and our preset
  both weigh a plain MSE, so both use 0.25;
- value clipping is off on both sides: SB3's ``clip_range_vf`` keeps only the clipped loss while CleanRL
  (and our ``clip_vloss``) take the max of clipped and unclipped, so they cannot be made identical.

Reported per implementation: the mean return of the last 10 finished training episodes of each seed,
then mean +- std (numpy's, ddof 0) over seeds. Published for reference (MuJoCo v4, 1M steps): CleanRL
Hopper 2383 +- 272 (3 seeds); RL Zoo SB3 Hopper 2410 +- 10 (tuned hyperparameters, not these).

    python benchmarks/sb3_vs_ours_hopper.py                          # 1M steps x 3 seeds each (hours)
    python benchmarks/sb3_vs_ours_hopper.py --steps 4096 --seeds 1   # smoke test
    python benchmarks/sb3_vs_ours_hopper.py --workers 2              # runs in parallel (returns only;
                                                                      # steps/s then shares the cores)
"""

from __future__ import annotations

import argparse
import math
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize

from rl_plasticity.experiment.config import build_config
from rl_plasticity.experiment.runner import Trainer

ENV_ID = "Hopper-v5"
LAST_EPISODES = 10
LEARNING_RATE = 3e-4


def last_episodes_mean(returns: list[float]) -> float:
    recent = returns[-LAST_EPISODES:]
    return float(np.mean(recent)) if recent else math.nan


def run_sb3(steps: int, seed: int) -> tuple[float, float]:
    """Returns (mean of the last 10 episode returns, env steps per second)."""
    torch.set_num_threads(1)
    env = VecNormalize(make_vec_env(ENV_ID, n_envs=1, seed=seed), norm_obs=True, norm_reward=True,
                       clip_obs=10.0, clip_reward=10.0, gamma=0.99, epsilon=1e-8)
    model = PPO(
        "MlpPolicy", env,
        learning_rate=lambda progress_remaining: LEARNING_RATE * progress_remaining,
        n_steps=2048, batch_size=64, n_epochs=10, gamma=0.99, gae_lambda=0.95, clip_range=0.2,
        clip_range_vf=None, normalize_advantage=True, ent_coef=0.0, vf_coef=0.25, max_grad_norm=0.5,
        policy_kwargs={"net_arch": {"pi": [64, 64], "vf": [64, 64]}, "activation_fn": torch.nn.Tanh,
                       "ortho_init": True, "log_std_init": 0.0},  # Adam eps is SB3's default 1e-5
        seed=seed, verbose=0,
    )
    start = time.perf_counter()
    model.learn(steps)
    elapsed = time.perf_counter() - start
    returns = [float(info["r"]) for info in model.ep_info_buffer]  # Monitor: raw, unnormalised returns
    env.close()
    return last_episodes_mean(returns), model.num_timesteps / elapsed


def run_ours(steps: int, seed: int) -> tuple[float, float]:
    """Returns (mean of the last 10 episode returns, env steps per second)."""
    config = build_config([("sb3_vs_ours_hopper", {
        "preset": "cleanrl",
        "env": {"id": ENV_ID, "num_envs": 1},
        "ppo": {"clip_vloss": False},  # see the module docstring
        "log": {"probe_every": 0, "histogram_every": 0, "progress_bar": False},
        "run": {"total_steps": steps, "seed": seed, "checkpoint_every": 0, "torch_threads": 1},
    })])
    trainer = Trainer(config)
    try:
        summary = trainer.train(progress=False)
        returns = list(trainer.recent_returns)
    finally:
        trainer.close()
    return last_episodes_mean(returns), summary.global_step / summary.seconds


def describe(values: list[float]) -> str:
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return "no finished episodes"
    return f"{np.mean(finite):8.1f} +- {np.std(finite):6.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1_000_000, help="env steps per run (default 1M)")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds for each implementation")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds FIRST..FIRST+N-1 (default 0)")
    parser.add_argument("--workers", type=int, default=1, help="runs at once (default 1: clean steps/s)")
    args = parser.parse_args()
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    print(f"{ENV_ID}, {args.steps} env steps per run, seeds {seeds[0]}..{seeds[-1]}, CleanRL hyperparameters")

    runners = {"SB3 PPO": run_sb3, "our PPO": run_ours}
    jobs = [(name, seed) for seed in seeds for name in runners]
    results: dict[str, list[float]] = {name: [] for name in runners}
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        futures = [pool.submit(runners[name], args.steps, seed) for name, seed in jobs]
        for (name, seed), future in zip(jobs, futures, strict=True):
            final, steps_per_second = future.result()
            results[name].append(final)
            print(f"  seed {seed}  {name}: last-{LAST_EPISODES} return {final:8.1f}  "
                  f"({steps_per_second:.0f} steps/s)", flush=True)

    print(f"\nfinal return (mean of the last {LAST_EPISODES} episodes; mean +- std over {args.seeds} seeds)")
    for name, values in results.items():
        print(f"  {name}: {describe(values)}")


if __name__ == "__main__":
    main()
