"""Aggregate env steps/s of ``rl-plasticity compare`` with two runs at once against one at a time.

``compare`` starts one ``train`` process per run, up to ``--workers`` at a time, each with its share of
the cores (``OMP_NUM_THREADS``: one thread each with ``--workers 2`` on two cores; both with ``--workers
1``, where the run's value update then overlaps its rollout). This times the whole command for the same
``--runs`` seeds of one config (the paper's PPO+CBP preset on Slippery Ant by default, one env copy) with
``--workers 1`` and with ``--workers 2``, in turn, ``--pairs`` times, each into a fresh directory
(nothing is reused), and prints the aggregate steps/s (all runs' steps over the command's wall time) of
each and their ratio per pair. Two runs at once can at most double what one run on one core does; a
lone run on both cores already gains from the second one, so the ratio here is below that bound.

    python benchmarks/compare_throughput.py [--steps 40960] [--runs 2] [--pairs 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed_compare(config: Path, runs: int, workers: int, steps: int, logdir: Path) -> float:
    command = [sys.executable, "-m", "rl_plasticity", "compare", str(config), "--seeds", str(runs),
               "--workers", str(workers), "--total-steps", str(steps), "--logdir", str(logdir)]
    started = time.perf_counter()
    finished = subprocess.run(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if finished.returncode:
        sys.exit(f"{' '.join(command)} failed (exit {finished.returncode}):\n{finished.stderr}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "slippery_ant" / "ppo_cbp.yaml")
    parser.add_argument("--steps", type=int, default=40_960, help="env steps of each run")
    parser.add_argument("--runs", type=int, default=2, help="seeds per compare command")
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args()
    total = args.runs * args.steps
    print(f"{args.runs} runs of {args.config.name} x {args.steps:,} steps per compare command, "
          f"--workers 1 and 2 in turn, {args.pairs} pairs")
    ratios = []
    with tempfile.TemporaryDirectory() as scratch:
        for pair in range(args.pairs):
            seconds = {workers: timed_compare(args.config, args.runs, workers, args.steps,
                                              Path(scratch) / f"pair{pair}-workers{workers}")
                       for workers in (1, 2)}
            rates = {workers: total / s for workers, s in seconds.items()}
            ratios.append(rates[2] / rates[1])
            print(f"pair {pair + 1}: one at a time {seconds[1]:.1f} s ({rates[1]:,.0f} steps/s), two at once "
                  f"{seconds[2]:.1f} s ({rates[2]:,.0f} steps/s): {ratios[-1]:.2f}x")
    print(f"median: two runs at once give {statistics.median(ratios):.2f}x the aggregate steps/s of one at a "
          f"time (range {min(ratios):.2f}-{max(ratios):.2f})")


if __name__ == "__main__":
    main()
