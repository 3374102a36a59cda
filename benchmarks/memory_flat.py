"""Memory stays flat over a long run: resident set size after 100k and after 1M env steps.

Trains the quickstart PPO+CBP config (SlipperyHopper-v5, friction changes, CBP replacing units) with every
kind of logging on (TensorBoard scalars, probes, utility histograms, checkpoints every 100k steps) into a
temporary run directory, and prints the process's RSS at each mark. Target: the 1M figure within 10% of
the 100k one.

    python benchmarks/memory_flat.py            # 100k and 1M steps (about 8 minutes on one core)
    python benchmarks/memory_flat.py --quick    # 20k and 200k steps
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from rl_plasticity.experiment.config import load_config
from rl_plasticity.experiment.runner import Trainer

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "quickstart" / "cbp.yaml"


def resident_mib() -> float:
    """Current resident set size of this process (Linux /proc; what `top` shows as RES)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status (this script needs Linux)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20k and 200k steps instead of 100k and 1M")
    args = parser.parse_args()
    early, late = (20_000, 200_000) if args.quick else (100_000, 1_000_000)
    overrides = [f"run.total_steps={late}", f"run.checkpoint_every={early}", "log.probe_every=10000",
                 "log.histogram_every=10000", "log.progress_bar=false", f"env.change_every={early}"]
    config = load_config(CONFIG, overrides)
    print(f"{config.env.id}, PPO+CBP, logging and checkpoints on; RSS at {early:,} and {late:,} env steps")
    with tempfile.TemporaryDirectory() as run_dir, Trainer(config, run_dir) as trainer:
        marks: dict[int, float] = {}
        started = time.perf_counter()
        while trainer.agent.global_step < late:
            trainer.iterate()
            step = trainer.agent.global_step
            for mark in (early, late):
                if mark not in marks and step >= mark:
                    marks[mark] = resident_mib()
                    print(f"  step {step:>9,}: RSS {marks[mark]:7.1f} MiB  "
                          f"({time.perf_counter() - started:.0f} s)", flush=True)
    growth = 100 * (marks[late] - marks[early]) / marks[early]
    print(f"growth from {early:,} to {late:,} steps: {growth:+.1f}% (target: within 10%)")


if __name__ == "__main__":
    main()
