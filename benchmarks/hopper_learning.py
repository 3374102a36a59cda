"""Does our PPO learn like CleanRL's? The cleanrl preset on Hopper-v5 for 1M steps.

CleanRL's ppo_continuous_action reaches 2383 +- 272 on Hopper (MuJoCo v4, 1M steps, 3 seeds); the
target here is a mean return of at least 2000 over the episodes of the last 10% of the steps. Prints
that and the mean of the last 20 episodes, per seed. One seed takes about 10-15 minutes on one core;
seeds run one after another.

    python benchmarks/hopper_learning.py [--seeds 0 1 2] [--total-steps 1000000] [--logdir runs/hopper]
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from rl_plasticity.experiment.config import load_config
from rl_plasticity.experiment.profiler import Profiler
from rl_plasticity.experiment.run_directory import run_name
from rl_plasticity.experiment.runner import Trainer

TARGET = 2000.0


def run(seed: int, total_steps: int, logdir: str | None) -> tuple[float, float]:
    config = load_config(None, ["preset=cleanrl", "env.id=Hopper-v5", f"run.seed={seed}",
                                f"run.total_steps={total_steps}", f"run.checkpoint_every={total_steps}"])
    run_dir = f"{logdir}/{run_name('cleanrl_hopper', seed)}" if logdir else None
    trainer = Trainer(config, run_dir)
    profiler = Profiler(trainer)
    tail_returns: list[float] = []
    next_report = total_steps // 10
    try:
        while trainer.agent.global_step < total_steps:
            trainer.iterate()
            tail_returns += [e.episodic_return for e in profiler.last_rollout.episodes
                             if e.step >= 0.9 * total_steps]
            if trainer.agent.global_step >= next_report:
                print(f"  seed {seed}: {trainer.agent.global_step:,} steps, {trainer.status()}", flush=True)
                next_report += total_steps // 10
    finally:
        trainer.close()
    return trainer.recent_return, float(np.mean(tail_returns)) if tail_returns else math.nan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--total-steps", type=int, default=1_000_000)
    parser.add_argument("--logdir", help="also log to TensorBoard under LOGDIR/cleanrl_hopper/seed<k>")
    args = parser.parse_args()

    finals = []
    for seed in args.seeds:
        final, tail = run(seed, args.total_steps, args.logdir)
        finals.append(tail)
        print(f"seed {seed}: mean return of the last 20 episodes {final:.0f}, of the last 10% of steps "
              f"{tail:.0f}", flush=True)
    mean = float(np.mean(finals))
    verdict = "meets" if mean >= TARGET else "misses"
    print(f"\ncleanrl preset, Hopper-v5, {args.total_steps:,} steps, {len(finals)} seed(s): mean return over "
          f"the last 10% of steps {mean:.0f} ({verdict} the target {TARGET:.0f}; CleanRL: 2383 +- 272)")


if __name__ == "__main__":
    main()
