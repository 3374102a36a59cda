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

``--split`` also times each for one 2048-step rollout per pair and splits its time into a fixed part
(startup, imports, env construction, teardown) and a part per rollout, from the medians; it then prints
what 2.5x SB3 would ask of ours per rollout, to set beside ``ppo_throughput.py``'s 1-CPU limit.

    python benchmarks/process_throughput.py [--steps 40960] [--pairs 3] [--all-cpus] [--split]
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
#: steps per rollout in both agents' settings (the paper's)
ROLLOUT = 2048


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
        "MlpPolicy", env, n_steps=ROLLOUT, batch_size=128, n_epochs=10, learning_rate=1e-4, gamma=0.99,
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
    parser.add_argument("--split", action="store_true",
                        help="also time one-rollout processes: startup against per-rollout time")
    parser.add_argument("--sb3-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.split and (args.steps % ROLLOUT or args.steps < 2 * ROLLOUT):
        parser.error(f"--split needs --steps a multiple of {ROLLOUT} of at least {2 * ROLLOUT}")
    one_thread = not args.all_cpus
    if args.sb3_only:
        train_sb3(args.steps, one_thread)
        return
    ratios: list[float] = []
    seconds: dict[tuple[str, int], list[float]] = {}
    with tempfile.TemporaryDirectory() as logdir:
        def ours(steps: int, run_name: str) -> list[str]:
            command = [sys.executable, "-m", "rl_plasticity", "train", "configs/slippery_ant/ppo_cbp.yaml",
                       "--logdir", logdir, "--quiet", "--run-name", run_name,
                       "--set", f"run.total_steps={steps}", "--set", "cbp.maturity_threshold=0",
                       "--set", "run.torch_threads=1"]
            return [*command, "--set", "run.update_threads=1"] if one_thread else command

        def sb3(steps: int) -> list[str]:
            command = [sys.executable, __file__, "--sb3-only", "--steps", str(steps)]
            return command if one_thread else [*command, "--all-cpus"]

        threads = "one thread each" if one_thread else "each on its default threads"
        print(f"{args.steps} steps of SlipperyAnt-v5 per process, {threads}, {args.pairs} pairs in turn")
        for pair in range(args.pairs):
            for steps in (args.steps, ROLLOUT) if args.split else (args.steps,):
                seconds.setdefault(("ours", steps), []).append(
                    timed(ours(steps, f"pair{pair}_{steps}"), one_thread))
                seconds.setdefault(("SB3", steps), []).append(timed(sb3(steps), one_thread))
            ours_seconds, sb3_seconds = seconds["ours", args.steps][-1], seconds["SB3", args.steps][-1]
            ratios.append(sb3_seconds / ours_seconds)
            print(f"pair {pair + 1}: ours {ours_seconds:.1f} s ({args.steps / ours_seconds:.0f} steps/s), "
                  f"SB3 {sb3_seconds:.1f} s ({args.steps / sb3_seconds:.0f} steps/s): ours {ratios[-1]:.2f}x")
    print(f"median: ours {statistics.median(ratios):.2f}x SB3's speed "
          f"(range {min(ratios):.2f}-{max(ratios):.2f})")
    if args.split:
        print_split(seconds, args.steps)


def print_split(seconds: dict[tuple[str, int], list[float]], steps: int) -> None:
    """Each agent's fixed and per-rollout seconds, from the medians of its long and one-rollout runs."""
    rollouts = steps // ROLLOUT
    fixed = {}
    for agent in ("ours", "SB3"):
        whole, one = (statistics.median(seconds[agent, n]) for n in (steps, ROLLOUT))
        per_rollout = (whole - one) / (rollouts - 1)
        fixed[agent] = one - per_rollout
        print(f"{agent}: {fixed[agent]:.2f} s fixed (startup, imports, env, teardown) + {per_rollout:.3f} s "
              f"per {ROLLOUT}-step rollout and update")
    budget = statistics.median(seconds["SB3", steps]) / 2.5
    print(f"2.5x SB3 over {steps} steps: ours within {budget:.1f} s, i.e. "
          f"{(budget - fixed['ours']) / rollouts:.3f} s per rollout after its fixed part")


if __name__ == "__main__":
    main()
