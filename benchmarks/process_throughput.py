"""Whole processes: our PPO+CBP against Stable-Baselines3's PPO, the paper's settings.

Each pair starts our ``rl-plasticity train`` (the ``slippery_ant/ppo_cbp.yaml`` preset; CBP on both
networks, maturity 0 so that it replaces units from the start) and then an SB3 PPO with the same
hyperparameters (as in ``ppo_throughput.py``), each as a fresh process, for ``--steps`` env steps on
SlipperyAnt-v5 with one env copy. Startup, imports and env construction count, as a user waits for them.
Printed: each process's wall seconds, and per pair the ratio SB3 / ours, then the median ratio (pairs in
turn, so a drift of the machine's speed hits both).

By default both run on one thread (``OMP_NUM_THREADS=1``, torch on one thread; ours then updates both
networks before the next rollout). ``--all-cpus`` runs each as a user would on this machine: ours with
its defaults (rollouts on one thread, updates on every CPU, the value network's beside the next
rollout) and SB3 on torch's default thread count, nothing pinned: the same comparison as
``ppo_throughput.py``'s, one agent per process.

    python benchmarks/process_throughput.py [--steps 40960] [--pairs 3] [--all-cpus]
    python benchmarks/process_throughput.py --sb3-only --steps 40960   # one SB3 process (used by the above)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def train_sb3(steps: int, one_thread: bool) -> None:
    import gymnasium as gym
    import torch
    from stable_baselines3 import PPO as SB3PPO
    from torch import nn

    import envs  # noqa: F401  (registers SlipperyAnt-v5)

    if one_thread:
        torch.set_num_threads(1)
    env = gym.make("SlipperyAnt-v5", change_every=2_000_000, schedule_seed=0)
    model = SB3PPO(
        "MlpPolicy", env, n_steps=2048, batch_size=128, n_epochs=10, learning_rate=1e-4, gamma=0.99,
        gae_lambda=0.95, clip_range=0.2, clip_range_vf=None, ent_coef=0.0, vf_coef=1.0, max_grad_norm=1e9,
        device="cpu", seed=0, verbose=0,
        policy_kwargs={"net_arch": {"pi": [256, 256], "vf": [256, 256]}, "activation_fn": nn.ReLU},
    )
    model.learn(total_timesteps=steps)


def timed(command: list[str], one_thread: bool) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1"} if one_thread else dict(os.environ)
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40_960)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--all-cpus", action="store_true",
                        help="each with its default threads instead of one (see above)")
    parser.add_argument("--sb3-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    one_thread = not args.all_cpus
    if args.sb3_only:
        train_sb3(args.steps, one_thread)
        return
    ratios = []
    with tempfile.TemporaryDirectory() as logdir:
        ours = [sys.executable, "-m", "rl_plasticity", "train", "configs/slippery_ant/ppo_cbp.yaml",
                "--logdir", logdir, "--quiet", "--set", f"run.total_steps={args.steps}",
                "--set", "cbp.maturity_threshold=0", "--set", "run.torch_threads=1"]
        sb3 = [sys.executable, __file__, "--sb3-only", "--steps", str(args.steps)]
        if one_thread:
            ours += ["--set", "run.update_threads=1"]
        else:
            sb3.append("--all-cpus")
        threads = "one thread each" if one_thread else "each on its default threads"
        print(f"{args.steps} steps of SlipperyAnt-v5 per process, {threads}, {args.pairs} pairs in turn")
        for pair in range(args.pairs):
            ours_seconds = timed([*ours, "--run-name", f"pair{pair}"], one_thread)
            sb3_seconds = timed(sb3, one_thread)
            ratios.append(sb3_seconds / ours_seconds)
            print(f"pair {pair + 1}: ours {ours_seconds:.1f} s ({args.steps / ours_seconds:.0f} steps/s), "
                  f"SB3 {sb3_seconds:.1f} s ({args.steps / sb3_seconds:.0f} steps/s): ours {ratios[-1]:.2f}x")
    print(f"median: ours {statistics.median(ratios):.2f}x SB3's speed "
          f"(range {min(ratios):.2f}-{max(ratios):.2f})")


if __name__ == "__main__":
    main()
