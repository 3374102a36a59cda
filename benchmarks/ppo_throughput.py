"""Env steps per second of our PPO, PPO+CBP and Stable-Baselines3's PPO with the paper's settings.

All train SlipperyAnt-v5 with the dohare preset's hyperparameters (2x256 ReLU policy and value nets,
rollout 2048 steps in all, 10 epochs x minibatch 128, lr 1e-4, no gradient or value clipping, no entropy
bonus, value loss weight 1). With ``--num-envs N`` every agent steps N copies (rollout 2048 / N per
copy; SB3 through its DummyVecEnv); ours run on each ``--backends`` simulator (batched: the copies'
MuJoCo on threads in one process; gymnasium: gym.make_vec sync). PPO+CBP runs with maturity 0, so it
pays the steady-state cost of replacing units at the paper's rate from the start. Our runs log to
TensorBoard as a real run does (probes every 20,480 steps, into a temporary directory).

SB3 runs twice, on one torch thread and on torch's default number (as users run it; more threads help
its update a little), and ``vs SB3`` compares with the faster of the two. Ours update the policy and the
value network on two threads at once when their first minibatches time that faster
(``run.parallel_networks: null``), or never with ``--sequential-networks``.

The agents take turns, one rollout+update each per round, so load from other processes hits all of them
alike; each agent's median over the rounds is reported, and the time breakdown of our agents' median
round.

    python benchmarks/ppo_throughput.py [--rounds 8] [--threads 1] [--update-threads N] [--skip-sb3]
                                        [--sequential-networks]
    python benchmarks/ppo_throughput.py --num-envs 4 --backends batched,gymnasium
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable

import gymnasium as gym
import torch
from torch import nn

import envs  # noqa: F401  (registers SlipperyAnt-v5)
from envs.thread_pool import available_cpus
from rl_plasticity.experiment.config import load_config
from rl_plasticity.experiment.profiler import Profiler
from rl_plasticity.experiment.runner import Trainer

ROLLOUT = 2048
PHASES = [("env.step", "env"), ("policy inference + bookkeeping", "inference"),
          ("values, log-probs, GAE", "advantage"), ("update, 160 minibatches", "update"),
          ("  of which CBP steps, 2 x 160 (*)", "cbp"), ("TensorBoard logging + probes", "logging")]
DEFAULT_TORCH_THREADS = torch.get_num_threads()  # before any agent sets its own


class OursRound:
    """Our trainer, timed one iteration at a time with a per-phase breakdown."""

    def __init__(self, cbp: bool, threads: int, update_threads: int | None, logdir: str, num_envs: int = 1,
                 backend: str = "batched", parallel_networks: bool | None = None) -> None:
        overrides = ["env.id=SlipperyAnt-v5", f"run.torch_threads={threads}", "run.total_steps=1_000_000_000",
                     "run.checkpoint_every=1_000_000_000", f"env.num_envs={num_envs}",
                     f"ppo.rollout_steps={ROLLOUT // num_envs}", f"env.backend={backend}"]
        if update_threads:
            overrides.append(f"run.update_threads={update_threads}")
        if parallel_networks is not None:
            overrides.append(f"run.parallel_networks={str(parallel_networks).lower()}")
        if cbp:
            overrides += ["cbp.enabled=true", "cbp.maturity_threshold=0", "optimizer.betas=[0.99, 0.99]",
                          "optimizer.weight_decay=1e-4"]
        self.trainer = Trainer(load_config(None, overrides), logdir)
        self.cbp_seconds = [0.0]
        for engine in (self.trainer.agent.cbp_policy, self.trainer.agent.cbp_value):
            if engine is not None:
                engine.step = _timed(engine.step, self.cbp_seconds)
        self.threads = threads
        self.profiler = Profiler(self.trainer)
        self.trainer.iterate()  # warm-up: first allocations, first Adam state

    def __call__(self) -> dict[str, float]:
        torch.set_num_threads(self.threads)
        phases_of = ("env", "inference", "advantage", "update", "logging")
        before = {**{k: self.profiler.seconds[k] for k in phases_of}, "cbp": self.cbp_seconds[0]}
        started = time.perf_counter()
        self.trainer.iterate()
        seconds = time.perf_counter() - started
        after = {**{k: self.profiler.seconds[k] for k in phases_of}, "cbp": self.cbp_seconds[0]}
        phases = {key: after[key] - before[key] for key in after}
        return {"seconds": seconds, **phases}

    def replaced(self) -> int:
        agent = self.trainer.agent
        return sum(sum(e.replaced_total) for e in (agent.cbp_policy, agent.cbp_value) if e is not None)


def _timed(step: Callable[[], None], total: list[float]) -> Callable[[], None]:
    def timed_step() -> None:
        tick = time.perf_counter()
        step()
        total[0] += time.perf_counter() - tick
    return timed_step


class SB3Round:
    """Stable-Baselines3's PPO with the same hyperparameters, one rollout+update per call."""

    def __init__(self, threads: int, num_envs: int = 1) -> None:
        from stable_baselines3 import PPO as SB3PPO
        from stable_baselines3.common.vec_env import DummyVecEnv

        self.threads = threads
        torch.set_num_threads(threads)
        self.env = DummyVecEnv([lambda: gym.make("SlipperyAnt-v5", change_every=2_000_000, schedule_seed=0)
                                for _ in range(num_envs)])
        self.model = SB3PPO(
            "MlpPolicy", self.env, n_steps=ROLLOUT // num_envs, batch_size=128, n_epochs=10,
            learning_rate=1e-4,
            gamma=0.99, gae_lambda=0.95, clip_range=0.2, clip_range_vf=None, ent_coef=0.0, vf_coef=1.0,
            max_grad_norm=1e9, device="cpu", seed=0, verbose=0,
            policy_kwargs={"net_arch": {"pi": [256, 256], "vf": [256, 256]}, "activation_fn": nn.ReLU},
        )
        self.model.learn(total_timesteps=ROLLOUT)  # warm-up

    def __call__(self) -> dict[str, float]:
        torch.set_num_threads(self.threads)
        started = time.perf_counter()
        self.model.learn(total_timesteps=ROLLOUT, reset_num_timesteps=False)
        return {"seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=8, help="timed rollouts per agent (after a warm-up)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of our agents")
    parser.add_argument("--update-threads", type=int, help="our run.update_threads (default: --threads)")
    parser.add_argument("--num-envs", type=int, default=1, help="env copies per agent (rollout 2048 in all)")
    parser.add_argument("--backends", default="batched", help="our env.backend(s), comma-separated: "
                        "batched, gymnasium or both (default batched)")
    parser.add_argument("--sequential-networks", action="store_true",
                        help="update our policy and value networks one after the other "
                        "(run.parallel_networks=false; by default timed both ways, the faster kept)")
    parser.add_argument("--skip-sb3", action="store_true", help="do not time Stable-Baselines3")
    args = parser.parse_args()
    backends = args.backends.split(",")

    with tempfile.TemporaryDirectory() as logdir:
        agents: dict[str, Callable[[], dict[str, float]]] = {}
        for backend in backends:
            for cbp in (False, True):
                name = f"PPO{'+CBP' if cbp else ''} {backend}"
                agents[name] = OursRound(cbp, args.threads, args.update_threads, f"{logdir}/{name}",
                                         args.num_envs, backend, False if args.sequential_networks else None)
        if not args.skip_sb3:
            try:
                # SB3 as users run it (torch's default threads) and on one thread; the faster is the baseline.
                for threads in sorted({1, DEFAULT_TORCH_THREADS}):
                    agents[f"SB3 PPO {threads} thr"] = SB3Round(threads, args.num_envs)
            except ImportError:
                print("stable-baselines3 is not installed (pip install stable-baselines3); skipping it\n")
        rounds: dict[str, list[dict[str, float]]] = {name: [] for name in agents}
        for _ in range(args.rounds):
            for name, one_round in agents.items():
                rounds[name].append(one_round())
        replaced = {name: agent.replaced() for name, agent in agents.items() if isinstance(agent, OursRound)}

    print(f"torch {torch.__version__}, {args.threads} thread(s) for our rollouts, SlipperyAnt-v5 "
          f"x{args.num_envs}, {args.rounds} rollouts of {ROLLOUT} steps per agent, interleaved; "
          f"{available_cpus()} CPUs")
    for name, agent in agents.items():
        if isinstance(agent, OursRound):
            parallel = agent.trainer.agent.network_threads.parallel
            mode = {True: "on two threads", False: "one after the other", None: "(undecided)"}[parallel]
            print(f"{name}: policy and value networks updated {mode}")
    print()
    sps = {name: ROLLOUT / statistics.median(r["seconds"] for r in runs) for name, runs in rounds.items()}
    best = {name: ROLLOUT / min(r["seconds"] for r in runs) for name, runs in rounds.items()}
    sb3 = max((rate for name, rate in sps.items() if name.startswith("SB3")), default=None)
    print(f"{'agent':<22}{'steps/s (median)':>18}{'vs SB3':>8}{'best round':>12}")
    for name in rounds:
        ratio = f"{sps[name] / sb3:.2f}x" if sb3 else "-"
        print(f"{name:<22}{sps[name]:>18.0f}{ratio:>8}{best[name]:>12.0f}")
    for backend in backends:
        ppo, cbp = f"PPO {backend}", f"PPO+CBP {backend}"
        print(f"PPO+CBP vs PPO ({backend}): {100 * (sps[cbp] / sps[ppo] - 1):+.1f}% steps/s (median), "
              f"{100 * (best[cbp] / best[ppo] - 1):+.1f}% (best round); {replaced[cbp]} units replaced")

    ours = [name for name in rounds if name in replaced]
    print(f"\nseconds per {ROLLOUT}-step rollout, median round of each of our agents")
    print(f"{'phase':<34}" + "".join(f"{name:>19}" for name in ours))
    medians = {}
    for name in ours:
        runs = sorted(rounds[name], key=lambda r: r["seconds"])
        medians[name] = runs[len(runs) // 2]
    for label, key in PHASES + [("total", "seconds")]:
        print(f"{label:<34}" + "".join(f"{medians[name][key]:>19.3f}" for name in ours))
    print("(*) summed over both threads when the networks update in parallel (then partly overlapping)")


if __name__ == "__main__":
    main()
