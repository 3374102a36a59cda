"""The search for a loss-of-plasticity protocol: which small, fast setting makes standard PPO's return
fall on physics it has already learned, and does CBP hold it?

Every candidate is Slippery Hopper with a *cyclic* friction schedule (A, B, A, B, ... every
``change_every`` steps, changing immediately, so every visit has the same length), on the paper's PPO
("dohare" preset) plus the accelerants the literature reports (Adam betas (0.9, 0.999), 20 epochs, a
constant and higher learning rate, ReLU, no L2, small networks). Each candidate runs three agents:

* ``ppo``: standard PPO;
* ``cbp``: the same config with only ``cbp.enabled`` changed (a clean ablation);
* ``paper_cbp``: the paper's PPO+CBP (Adam betas (0.99, 0.99), coupled L2 1e-4, CBP).

CBP is scaled to the pace of the run (see `scaled_cbp`). Retention = return at the end of the last visit
over return at the end of the first visit of the same values (per seed), with a 95% bootstrap CI over
seeds. The table goes to ``--out`` (Markdown); the runs stay under ``--logdir`` for `rl-plasticity
report`. A stage can run only some agents (``--agents ppo``): a candidate in which PPO keeps its
return has no loss of plasticity for CBP to fix.

    python benchmarks/plasticity_sweep.py --candidates w64_lr1e-3 w64_lr3e-4 --agents ppo --seeds 2 \\
        --logdir runs/sweep --out docs/plasticity_sweep_stage1.md
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from rl_plasticity.experiment.config import config_to_yaml, load_config
from rl_plasticity.experiment.runs import final_return, load_runs, retention, wall_seconds
from rl_plasticity.experiment.statistics import SeedStatistics, intervals_overlap

PAPER_UPDATES_PER_CHANGE = 2_000_000 / 2048 * 160   # the paper: 2M steps per friction, 160 updates/rollout
PAPER_RATE, PAPER_MATURITY = 1e-4, 10_000

BASE = [
    "preset=dohare", "env.id=SlipperyHopper-v5", "env.schedule=cyclic", "env.change_at=immediate",
    "env.cycle_values=[2.0, 0.2]", "env.change_every=50000", "ppo.epochs=20", "optimizer.betas=[0.9, 0.999]",
    "optimizer.weight_decay=0.0", "optimizer.anneal_lr=false", "run.total_steps=300000",
    "run.checkpoint_every=100000", "log.probe_every=10240", "log.histogram_every=0",
]

# name -> overrides on top of BASE
CANDIDATES: dict[str, list[str]] = {
    "w64_lr1e-3": ["ppo.hidden_sizes=[64, 64]", "optimizer.lr=1e-3"],
    "w64_lr3e-4": ["ppo.hidden_sizes=[64, 64]", "optimizer.lr=3e-4"],
    "w64_lr3e-3": ["ppo.hidden_sizes=[64, 64]", "optimizer.lr=3e-3"],
    "w32_lr1e-3": ["ppo.hidden_sizes=[32, 32]", "optimizer.lr=1e-3"],
    "w64_lr1e-3_every25k": ["ppo.hidden_sizes=[64, 64]", "optimizer.lr=1e-3", "env.change_every=25000"],
    "w256_lr3e-4": ["ppo.hidden_sizes=[256, 256]", "optimizer.lr=3e-4"],
    "w64_lr1e-3_mu1-0.05": ["ppo.hidden_sizes=[64, 64]", "optimizer.lr=1e-3", "env.cycle_values=[1.0, 0.05]"],
    # the chosen candidate run for 20 visits instead of 6, so the last visit is far from early learning
    "w64_lr3e-3_1M": ["ppo.hidden_sizes=[64, 64]", "optimizer.lr=3e-3", "run.total_steps=1000000"],
    # a calmer optimizer over the same 20 visits: at 300k steps its PPO had not yet lost its return
    "w64_lr1e-3_1M": ["ppo.hidden_sizes=[64, 64]", "optimizer.lr=1e-3", "run.total_steps=1000000"],
    # between the two (not run yet): PPO's loss at lr 1e-3 is mild, CBP's hold at 3e-3 failed
    "w64_lr2e-3_1M": ["ppo.hidden_sizes=[64, 64]", "optimizer.lr=2e-3", "run.total_steps=1000000"],
}

# The candidate shipped as configs/plasticity_demo/ (a test keeps the two equal).
CHOSEN = "w64_lr1e-3_1M"


def scaled_cbp(overrides: list[str], rate_scale: float = 1.0) -> list[str]:
    """CBP with the paper's turnover per physics change: the paper replaces ``1e-4`` of the eligible
    units per update over ~156k updates per friction value; a visit of ``change_every`` steps here has
    far fewer updates, so the rate grows and the maturity shrinks by the same factor."""
    config = load_config(None, BASE + overrides)
    updates_per_rollout = config.ppo.epochs * config.ppo.rollout_steps * config.env.num_envs \
        // config.ppo.minibatch_size
    updates_per_change = config.env.change_every / (config.ppo.rollout_steps * config.env.num_envs) \
        * updates_per_rollout
    factor = PAPER_UPDATES_PER_CHANGE / updates_per_change
    rate = min(1.0, PAPER_RATE * factor * rate_scale)
    maturity = max(1, round(PAPER_MATURITY / factor))
    return ["cbp.enabled=true", f"cbp.replacement_rate={rate:.3g}", f"cbp.maturity_threshold={maturity}"]


AGENTS = {
    "ppo": lambda o: [],
    "cbp": lambda o: scaled_cbp(o),
    "paper_cbp": lambda o: ["optimizer.betas=[0.99, 0.99]", "optimizer.weight_decay=1e-4", *scaled_cbp(o)],
    # control: the paper's optimizer (betas 0.99, L2 1e-4) without CBP, to tell what CBP itself adds
    "paper_l2": lambda o: ["optimizer.betas=[0.99, 0.99]", "optimizer.weight_decay=1e-4"],
    # sensitivity: a tenth of the scaled replacement rate
    "cbp_rate0.1": lambda o: scaled_cbp(o, rate_scale=0.1),
}


def write_configs(candidates: list[str], agents: list[str], directory: Path,
                  extra: list[str]) -> dict[tuple[str, str], Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for candidate in candidates:
        for agent in agents:
            overrides = BASE + CANDIDATES[candidate] + extra
            overrides = overrides + AGENTS[agent](CANDIDATES[candidate] + extra)
            path = directory / f"{candidate}__{agent}.yaml"
            text = f"# plasticity sweep: candidate {candidate}, agent {agent}\n" + \
                config_to_yaml(load_config(None, overrides))
            path.write_text(text)
            paths[candidate, agent] = path
    return paths


def describe(candidate: str, extra: list[str]) -> str:
    config = load_config(None, BASE + CANDIDATES[candidate] + extra)
    return (f"width {config.ppo.hidden_sizes}, lr {config.optimizer.lr:g}, epochs {config.ppo.epochs}, "
            f"friction {config.env.cycle_values} every {config.env.change_every:,}, "
            f"{config.run.total_steps:,} steps")


def table(logdir: Path, candidates: list[str], agents: list[str], extra: list[str],
          wall_minutes: float) -> str:
    grouped = load_runs(logdir)
    lines = [
        "| candidate | settings | agent | seeds | retention, mean [95% bootstrap CI] | retention IQM [CI] | "
        "PPO's CI excludes 1 | above PPO, no overlap | final return, mean [CI] | minutes per run |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for candidate in candidates:
        ppo_stats = None
        for agent in agents:
            runs = grouped.get(f"{candidate}__{agent}", [])
            if not runs:
                continue  # a staged search screens candidates with PPO first
            stats = SeedStatistics.of(retention(run) for run in runs)
            if agent == "ppo":
                ppo_stats = stats
            finals = SeedStatistics.of(final_return(run) for run in runs)
            minutes = np.nanmean([wall_seconds(run) / 60 for run in runs]) if runs else math.nan
            excludes = ("yes" if stats.boot_high < 1 else "no") if agent == "ppo" else ""
            above = ""
            if agent != "ppo" and ppo_stats is not None and ppo_stats.count:
                above = "yes" if stats.boot_low > ppo_stats.boot_high and \
                    not intervals_overlap(stats, ppo_stats) else "no"
            lines.append(f"| {candidate} | {describe(candidate, extra)} | {agent} | {stats.count} | "
                         f"{stats.format_mean()} | {stats.format_iqm()} | {excludes} | {above} | "
                         f"{finals.format_mean(0)} | {minutes:.1f} |")
    if wall_minutes > 0.5:
        lines += ["", f"Wall time of this invocation: {wall_minutes:.1f} min (2 runs at a time)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    parser.add_argument("--agents", nargs="+", default=list(AGENTS), choices=list(AGENTS))
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--first-seed", type=int, default=0,
                        help="seeds FIRST..FIRST+N-1 (fresh seeds confirm a result)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--logdir", type=Path, default=Path("runs/plasticity_sweep"))
    parser.add_argument("--out", type=Path, help="write the Markdown table here too")
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key in every candidate (e.g. run.total_steps=400000)")
    parser.add_argument("--table-only", action="store_true", help="tabulate runs already in --logdir")
    args = parser.parse_args()

    paths = write_configs(args.candidates, args.agents, args.logdir / "configs", args.extra)
    started = time.monotonic()
    if not args.table_only:
        command = [sys.executable, "-m", "rl_plasticity", "compare", *map(str, paths.values()),
                   "--seeds", str(args.seeds), "--first-seed", str(args.first_seed),
                   "--workers", str(args.workers), "--logdir", str(args.logdir)]
        print(" ".join(command), flush=True)
        subprocess.run(command, check=True)
    text = table(args.logdir, args.candidates, args.agents, args.extra, (time.monotonic() - started) / 60)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
