"""Env steps per second of our PPO, PPO+CBP and Stable-Baselines3's PPO with the paper's settings.

All three train SlipperyAnt-v5 with the dohare preset's hyperparameters (single env, 2x256 ReLU policy
and value nets, rollout 2048, 10 epochs x minibatch 128, lr 1e-4, no gradient or value clipping, no
entropy bonus, value loss weight 1). PPO+CBP runs with maturity 0, so it pays the steady-state cost of
replacing units at the paper's rate from the start. Our runs log to TensorBoard as a real run does
(probes every 20,480 steps, into a temporary directory).

The agents take turns, one rollout+update each per round, so load from other processes hits all of them
alike; each agent's median over the rounds is reported, and the time breakdown of our agents' median
round.

    python benchmarks/ppo_throughput.py [--rounds 8] [--threads 1] [--update-threads N] [--skip-sb3]
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
from rl_plasticity.experiment.config import load_config
from rl_plasticity.experiment.runner import Trainer

ROLLOUT = 2048
PHASES = [("env.step", "env"), ("policy inference + bookkeeping", "inference"),
          ("values, log-probs, GAE", "advantage"),
          ("update, 160 minibatches (w/o CBP)", "update"), ("CBP steps, 2 x 160", "cbp"),
          ("TensorBoard logging + probes", "logging")]


class OursRound:
    """Our trainer, timed one iteration at a time with a per-phase breakdown."""

    def __init__(self, cbp: bool, threads: int, update_threads: int | None, logdir: str) -> None:
        overrides = ["env.id=SlipperyAnt-v5", f"run.torch_threads={threads}", "run.total_steps=1_000_000_000",
                     "run.checkpoint_every=1_000_000_000"]
        if update_threads:
            overrides.append(f"run.update_threads={update_threads}")
        if cbp:
            overrides += ["cbp.enabled=true", "cbp.maturity_threshold=0", "optimizer.betas=[0.99, 0.99]",
                          "optimizer.weight_decay=1e-4"]
        self.trainer = Trainer(load_config(None, overrides), logdir)
        self.cbp_seconds = [0.0]
        for engine in (self.trainer.agent.cbp_policy, self.trainer.agent.cbp_value):
            if engine is not None:
                engine.step = _timed(engine.step, self.cbp_seconds)
        self.threads = threads
        self.trainer.iterate()  # warm-up: first allocations, first Adam state

    def __call__(self) -> dict[str, float]:
        torch.set_num_threads(self.threads)
        agent, trainer = self.trainer.agent, self.trainer
        before = {**agent.timings, "logging": trainer.timings["logging"], "cbp": self.cbp_seconds[0]}
        started = time.perf_counter()
        trainer.iterate()
        seconds = time.perf_counter() - started
        after = {**agent.timings, "logging": trainer.timings["logging"], "cbp": self.cbp_seconds[0]}
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

    def __init__(self, threads: int) -> None:
        from stable_baselines3 import PPO as SB3PPO

        self.threads = threads
        torch.set_num_threads(threads)
        self.env = gym.make("SlipperyAnt-v5", change_every=2_000_000, schedule_seed=0)
        self.model = SB3PPO(
            "MlpPolicy", self.env, n_steps=ROLLOUT, batch_size=128, n_epochs=10, learning_rate=1e-4,
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
    parser.add_argument("--threads", type=int, default=1, help="torch threads for every agent")
    parser.add_argument("--update-threads", type=int, help="our run.update_threads (default: --threads)")
    parser.add_argument("--skip-sb3", action="store_true", help="do not time Stable-Baselines3")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as logdir:
        agents: dict[str, Callable[[], dict[str, float]]] = {
            "ours PPO": OursRound(False, args.threads, args.update_threads, f"{logdir}/ppo"),
            "ours PPO+CBP": OursRound(True, args.threads, args.update_threads, f"{logdir}/cbp"),
        }
        if not args.skip_sb3:
            try:
                agents["SB3 PPO"] = SB3Round(args.threads)
            except ImportError:
                print("stable-baselines3 is not installed (pip install stable-baselines3); skipping it\n")
        rounds: dict[str, list[dict[str, float]]] = {name: [] for name in agents}
        for _ in range(args.rounds):
            for name, one_round in agents.items():
                rounds[name].append(one_round())
        replaced = agents["ours PPO+CBP"].replaced()

    print(f"torch {torch.__version__}, {args.threads} thread(s), SlipperyAnt-v5, {args.rounds} rollouts of "
          f"{ROLLOUT} steps per agent, interleaved\n")
    sps = {name: ROLLOUT / statistics.median(r["seconds"] for r in runs) for name, runs in rounds.items()}
    best = {name: ROLLOUT / min(r["seconds"] for r in runs) for name, runs in rounds.items()}
    sb3 = sps.get("SB3 PPO")
    print(f"{'agent':<16}{'steps/s (median)':>18}{'vs SB3':>8}{'best round':>12}")
    for name in rounds:
        ratio = f"{sps[name] / sb3:.2f}x" if sb3 else "-"
        print(f"{name:<16}{sps[name]:>18.0f}{ratio:>8}{best[name]:>12.0f}")
    print(f"\nPPO+CBP vs PPO: {100 * (sps['ours PPO+CBP'] / sps['ours PPO'] - 1):+.1f}% steps/s (median), "
          f"{100 * (best['ours PPO+CBP'] / best['ours PPO'] - 1):+.1f}% (best round); "
          f"{replaced} units replaced in all")

    print("\nseconds per 2048-step rollout, our median round")
    print(f"{'phase':<34}{'PPO':>8}{'PPO+CBP':>9}")
    medians = {}
    for name in ("ours PPO", "ours PPO+CBP"):
        runs = sorted(rounds[name], key=lambda r: r["seconds"])
        medians[name] = runs[len(runs) // 2]
    for label, key in PHASES + [("total", "seconds")]:
        ppo, cbp = medians["ours PPO"][key], medians["ours PPO+CBP"][key]
        if key == "update":
            ppo, cbp = ppo - medians["ours PPO"]["cbp"], cbp - medians["ours PPO+CBP"]["cbp"]
        print(f"{label:<34}{ppo:>8.3f}{cbp:>9.3f}")


if __name__ == "__main__":
    main()
