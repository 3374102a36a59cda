"""Every plasticity method against plain PPO: what each costs, and how each ranks on the demo protocol.

``--overhead`` times whole training iterations (a 2048-step rollout of Slippery Ant plus the update's
160 minibatch steps, the paper's preset, CBP and every method on both networks) for plain PPO and for
PPO with each method, interleaved round by round so that the machine's drift hits all alike, and prints
each one's cost against plain PPO measured in the same rounds, in CPU time and in wall time, and, apart,
at plain PPO's physics: each agent walks its own trajectories, whose MuJoCo steps cost more or less
(contacts), so each round's ``mj_step`` time is measured and swapped for plain PPO's.

``--ranking`` trains ``configs/plasticity_demo/`` (PPO, the paper's PPO+CBP and PPO with each other
method) for ``--seeds`` seeds with ``rl-plasticity compare`` and tabulates, with 95% bootstrap CIs across
seeds, retention, final return, and dormant units and approximate rank at the end for both networks.

    python benchmarks/methods.py --overhead --rounds 12
    python benchmarks/methods.py --ranking --seeds 5 --logdir runs/methods --out docs/methods_ranking.md
    python benchmarks/methods.py --ranking --table-only --logdir runs/methods   # the table of what finished
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from ppo_throughput import mj_step_clocked

from rl_plasticity.experiment.config import load_config
from rl_plasticity.experiment.run_directory import RunDirectory
from rl_plasticity.experiment.runner import Trainer
from rl_plasticity.experiment.runs import final_return, layer_mean_at_end, load_runs, retention, wall_seconds
from rl_plasticity.experiment.statistics import SeedStatistics

DEMO = Path(__file__).resolve().parents[1] / "configs" / "plasticity_demo"
RANKED = ["ppo", "paper_cbp", "paper_l2", "cbp", "redo", "shrink_perturb", "weight_clipping", "l2_init",
          "reset", "parseval", "nap", "crelu"]
# One thread and the networks in turn, fixed: the default times two ways of updating and switches between
# them, which would add its own noise to each agent's iterations.
PAPER_SCALE = ["preset=dohare", "env.id=SlipperyAnt-v5", "env.num_envs=1", "log.probe_every=0",
               "log.histogram_every=0", "run.checkpoint_every=1000000000", "run.total_steps=100000000",
               "run.update_threads=1", "run.parallel_networks=false"]
OVERHEAD = {  # each acting at its published period; CBP at the paper's settings
    "ppo": [],
    "cbp": ["cbp.enabled=true", "cbp.maturity_threshold=0"],
    "redo": ["methods.redo.enabled=true", "methods.redo.every=160"],  # a check every iteration
    "redo_default": ["methods.redo.enabled=true"],  # every 1000 updates
    "redo_default_optax": ["methods.redo.enabled=true",  # zeroed moments under Adam's step count (dopamine)
                           "methods.redo.restart_bias_correction=false"],
    "shrink_perturb": ["methods.shrink_perturb.enabled=true"],  # every 1000 updates, a fresh draw
    "shrink_perturb_soft": ["methods.shrink_perturb.enabled=true", "methods.shrink_perturb.every=1",
                            "methods.shrink_perturb.toward=initial"],  # Plasticine's: every update
    "weight_clipping": ["methods.weight_clipping.enabled=true"],
    "l2_init": ["methods.l2_init.enabled=true"],
    "reset": ["methods.reset.enabled=true", "methods.reset.every=160"],  # a reset every iteration
    "parseval": ["methods.parseval.enabled=true"],
    "layer_norm": ["methods.layer_norm.enabled=true"],  # an architecture: LayerNorm's kernels
    "nap": ["methods.layer_norm.enabled=true", "methods.weight_projection.enabled=true"],
    "crelu": ["methods.crelu.enabled=true"],  # an architecture: its cost is the wider layers' arithmetic
}


def overhead(rounds: int, threads: int, names: list[str] | None = None, common: list[str] | None = None,
             ) -> None:
    torch.set_num_threads(threads)
    names = ["ppo", *(name for name in names or OVERHEAD if name != "ppo")]
    with tempfile.TemporaryDirectory() as logdir:
        trainers = {name: Trainer(load_config(None, PAPER_SCALE + (common or []) + OVERHEAD[name]),
                                  Path(logdir) / name)
                    for name in names}
        for trainer in trainers.values():
            trainer.iterate()  # warm-up: first allocations, first Adam state
        # Wall time and the process's CPU time: on a shared VM, other processes stretch the first but
        # hardly the second, so the CPU-time ratios are the steadier measure of what a method costs.
        wall: dict[str, list[float]] = {name: [] for name in trainers}
        cpu: dict[str, list[float]] = {name: [] for name in trainers}
        # MuJoCo's own time in each iteration: a method changes the policy, so the agent walks other
        # trajectories, whose contacts make each physics step dearer or cheaper (+-10% between agents).
        # That is behaviour, not the method's arithmetic, and is reported apart.
        physics: dict[str, list[float]] = {name: [] for name in trainers}
        for _ in range(rounds):
            for name, trainer in trainers.items():
                with mj_step_clocked() as seconds:
                    started, started_cpu = time.perf_counter(), time.process_time()
                    trainer.iterate()
                    wall[name].append(time.perf_counter() - started)
                    cpu[name].append(time.process_time() - started_cpu)
                physics[name].append(seconds[0])
        steps = trainers["ppo"].agent.batch_size
        settings = trainers["ppo"].agent.settings
        updates = settings.epochs * steps // settings.minibatch_size
        for trainer in trainers.values():
            trainer.close()
    print(f"{rounds} interleaved rounds of one iteration each ({steps} env steps + {updates} minibatch "
          f"updates), {threads} torch thread(s){', every agent with ' + ' '.join(common) if common else ''}:")
    print("| agent | CPU s per iteration | cost vs plain PPO, CPU time (median of rounds; range) | "
          "wall s per iteration | steps/s (wall) | cost vs plain PPO, wall time | physics s per iteration "
          "| cost at plain PPO's physics, CPU time |")
    print("|---|---|---|---|---|---|---|---|")
    # The last column swaps each round's physics for plain PPO's in that round: what the method's own
    # arithmetic adds to an iteration, as a share of plain PPO's.
    equalised = {name: [t - own + ppo for t, own, ppo in zip(cpu[name], physics[name], physics["ppo"],
                                                               strict=True)] for name in trainers}
    for name in trainers:
        cells = []
        for clock in (cpu, wall, equalised):
            ratios = [t / p for t, p in zip(clock[name], clock["ppo"], strict=True)]
            cost = 100 * (statistics.median(ratios) - 1)
            cells.append(f"{cost:+.1f}% ({min(ratios):.2f}-{max(ratios):.2f}x)")
        seconds = statistics.median(wall[name])
        print(f"| {name} | {statistics.median(cpu[name]):.2f} | {cells[0]} | {seconds:.2f} "
              f"| {steps / seconds:,.0f} | {cells[1]} | {statistics.median(physics[name]):.3f} "
              f"| {cells[2]} |")
    print(f"plain PPO: {steps / statistics.median(wall['ppo']):,.0f} steps/s (wall)")


def ranking(agents: list[str], seeds: int, workers: int, logdir: Path, out: Path | None,
            train: bool = True, extra: list[str] | None = None) -> None:
    if train:
        paths = [DEMO / f"{name}.yaml" for name in agents]
        command = [sys.executable, "-m", "rl_plasticity", "compare", *map(str, paths), "--seeds",
                   str(seeds), "--workers", str(workers), "--logdir", str(logdir),
                   *(f"--set={item}" for item in extra or [])]
        print(" ".join(command), flush=True)
        subprocess.run(command, check=True)
    # Only finished runs count: a run still training (or stopped early) would pull its agent's numbers
    # towards an earlier point of training.
    grouped = {name: [run for run in runs if RunDirectory(run.path).status() == "finished"]
               for name, runs in load_runs(logdir).items()}
    lines = ["| agent | seeds | retention, mean [95% CI] | retention IQM [CI] | final return [CI] | "
             "policy dormant | policy approx. rank | value dormant | value approx. rank | steps/s of its "
             "runs (vs ppo's) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    # Each agent's median training speed (steps over its event files' wall time). Not a cost measure:
    # the run beside it and how often episodes reset differ from agent to agent (`--overhead` is).
    timed = {name: [run for run in runs if wall_seconds(run) > 0] for name, runs in grouped.items()}
    speed = {name: statistics.median([(run.last_step + 1) / wall_seconds(run) for run in runs])
             for name, runs in timed.items() if runs}
    for name in agents:
        runs = grouped.get(name, [])
        cells = [SeedStatistics.of(layer_mean_at_end(run, net, metric) for run in runs).format_mean(3)
                 for net in ("policy", "value") for metric in ("dormant_fraction", "approx_rank")]
        kept = SeedStatistics.of(retention(run) for run in runs)
        finals = SeedStatistics.of(final_return(run) for run in runs)
        lines.append(f"| {name} | {kept.count} | {kept.format_mean()} | {kept.format_iqm()} | "
                     f"{finals.format_mean(0)} | {' | '.join(cells)} | {_speed(speed, name)} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if out is not None:
        out.write_text(text)


def _speed(speed: dict[str, float], name: str) -> str:
    if name not in speed:
        return ""
    ratio = f" ({speed[name] / speed['ppo']:.2f}x)" if "ppo" in speed else ""
    return f"{speed[name]:,.0f}{ratio}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--overhead", action="store_true")
    parser.add_argument("--ranking", action="store_true")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--agents", nargs="+", default=RANKED, choices=RANKED,
                        help="configs/plasticity_demo/<agent>.yaml to rank (default: all)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--logdir", type=Path, default=Path("runs/methods"))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--table-only", action="store_true",
                        help="with --ranking: tabulate the finished runs under --logdir, train nothing")
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for every run or timed agent (repeatable)")
    parser.add_argument("--overhead-agents", nargs="+", choices=list(OVERHEAD),
                        help="with --overhead: time only these against plain PPO (default: all)")
    args = parser.parse_args()
    if not (args.overhead or args.ranking):
        parser.error("pass --overhead, --ranking or both")
    if args.overhead:
        overhead(args.rounds, args.threads, args.overhead_agents, args.extra)
    if args.ranking:
        ranking(args.agents, args.seeds, args.workers, args.logdir, args.out, train=not args.table_only,
                extra=args.extra)


if __name__ == "__main__":
    main()
