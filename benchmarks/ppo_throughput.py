"""Env steps per second of our PPO, PPO+CBP and Stable-Baselines3's PPO with the paper's settings.

All train SlipperyAnt-v5 with the dohare preset's hyperparameters (2x256 ReLU policy and value nets,
rollout 2048 steps in all, 10 epochs x minibatch 128, lr 1e-4, no gradient or value clipping, no entropy
bonus, value loss weight 1). With ``--num-envs N`` every agent steps N copies (rollout 2048 / N per
copy; SB3 through its DummyVecEnv); ours run on each ``--backends`` simulator (batched: the copies'
MuJoCo on threads in one process; gymnasium: gym.make_vec sync). PPO+CBP runs with maturity 0, so it
pays the steady-state cost of replacing units at the paper's rate from the start. Our runs log to
TensorBoard as a real run does (probes every 20,480 steps, into a temporary directory).

SB3 runs twice, on one torch thread and on torch's default number (as users run it; more threads help its
update a little), and ``vs SB3`` compares with the faster of the two. Ours update the value network
beside the next rollout (``run.overlap_value_update``, on by default with 2 CPUs) but for ``PPO+CBP
lockstep``, which updates both networks before the next rollout starts; there the two networks' passes
run on two threads at once when their first minibatches time that faster (``run.parallel_networks:
null``), or never with ``--sequential-networks``. A value update left for the next rollout starts when
that agent's next round does, so it runs beside the agent's own rollout, as in a real run, and never
beside another agent's round (in the README's rows before 2026-12-05's last it did: plain PPO and the
compiled agent then had no value update beside their rollouts, and lockstep had PPO+CBP's). ``PPO+CBP
compiled`` runs the hand-derived update through torch.compile (``ppo.backprop=compiled``, opt-in),
``PPO+CBP autograd`` the reference path.

The machine's limit for one rollout and update is printed beside them: the bare physics of the same
copies (``mj_step`` with the task's frame skip, nothing else; `env_throughput.PhysicsOnly`) replaying
the PPO+CBP agent's latest actions and episode ends, plus the
update's matrix-product FLOPs (both networks, every minibatch: the forward products, the weight
gradients and the input gradients but the observations') at the rate this machine multiplies those same
shapes, on one thread and on all CPUs. Both are timed in the same rounds as the agents.

The physics cost of a step depends on the trajectory (contacts), and the agents' trajectories differ
(compiled and autograd agree with the default to float rounding, which a run amplifies): so each of our
agents' ``mj_step`` calls are also timed inside its own env.step, and the share of env.step they take is
printed too (the timing wrapper adds well under a microsecond to a ~200 us step).

The agents take turns, one rollout+update each per round, so load from other processes hits all of them
alike; each agent's median over the rounds is reported, and the time breakdown of our agents' median
round.

    python benchmarks/ppo_throughput.py [--rounds 8] [--threads 1] [--update-threads N] [--skip-sb3]
                                        [--sequential-networks] [--skip-variants]
    python benchmarks/ppo_throughput.py --num-envs 4 --backends batched,gymnasium
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
import torch
from env_throughput import PhysicsOnly
from torch import nn

import envs  # noqa: F401  (registers SlipperyAnt-v5)
from envs.thread_pool import available_cpus
from rl_plasticity.experiment.config import load_config
from rl_plasticity.experiment.profiler import Profiler
from rl_plasticity.experiment.runner import TORCH_DEFAULT_THREADS, Trainer
from rl_plasticity.hooks import linear_layers

ROLLOUT = 2048
PHASES = [("env.step", "env"), ("policy inference + bookkeeping", "inference"),
          ("values, log-probs, GAE", "advantage"), ("update, 160 minibatches (**)", "update"),
          ("  of which CBP steps, 2 x 160 (*)", "cbp"), ("TensorBoard logging + probes", "logging")]
DEFAULT_TORCH_THREADS = torch.get_num_threads()  # before any agent sets its own


class OursRound:
    """Our trainer, timed one iteration at a time with a per-phase breakdown."""

    def __init__(self, cbp: bool, threads: int, update_threads: int | None, logdir: str, num_envs: int = 1,
                 backend: str = "batched", parallel_networks: bool | None = None,
                 backprop: str = "auto", overlap: bool | None = None) -> None:
        overrides = [f"ppo.backprop={backprop}",
                     "env.id=SlipperyAnt-v5", f"run.torch_threads={threads}", "run.total_steps=1_000_000_000",
                     "run.checkpoint_every=1_000_000_000", f"env.num_envs={num_envs}",
                     f"ppo.rollout_steps={ROLLOUT // num_envs}", f"env.backend={backend}"]
        if update_threads:
            overrides.append(f"run.update_threads={update_threads}")
        if parallel_networks is not None:
            overrides.append(f"run.parallel_networks={str(parallel_networks).lower()}")
        if overlap is not None:
            overrides.append(f"run.overlap_value_update={str(overlap).lower()}")
        if cbp:
            overrides += ["cbp.enabled=true", "cbp.maturity_threshold=0", "optimizer.betas=[0.99, 0.99]",
                          "optimizer.weight_decay=1e-4"]
        self.trainer = Trainer(load_config(None, overrides), logdir)
        self.cbp_seconds = [0.0]
        for engine in (self.trainer.agent.cbp_policy, self.trainer.agent.cbp_value):
            if engine is not None:
                engine.step = clocked(engine.step, self.cbp_seconds)
        self.threads = threads
        self.profiler = Profiler(self.trainer)
        # A value update left to run beside the next rollout is held until this agent's next round
        # starts: started at once, it would run beside the other agents' rounds instead (slowing
        # them, and sparing this agent's own rollout what a real run's rollout shares its time with).
        threads_of_agent = self.trainer.agent.network_threads
        self._start_deferred = threads_of_agent.defer
        self._held: list[Callable[[], Any]] = []
        threads_of_agent.defer = self._held.append
        self.trainer.iterate()  # warm-up: first allocations, first Adam state

    def __call__(self) -> dict[str, float]:
        torch.set_num_threads(self.threads)
        if self._held:
            self._start_deferred(self._held.pop())
            torch.set_num_threads(self.threads)
        phases_of = ("env", "inference", "advantage", "update", "logging")
        before = {**{k: self.profiler.seconds[k] for k in phases_of}, "cbp": self.cbp_seconds[0]}
        with mj_step_clocked() as physics:
            started = time.perf_counter()
            self.trainer.iterate()
            seconds = time.perf_counter() - started
        after = {**{k: self.profiler.seconds[k] for k in phases_of}, "cbp": self.cbp_seconds[0]}
        phases = {key: after[key] - before[key] for key in after}
        return {"seconds": seconds, **phases, "mj_step": physics[0]}

    def replaced(self) -> int:
        agent = self.trainer.agent
        return sum(sum(e.replaced_total) for e in (agent.cbp_policy, agent.cbp_value) if e is not None)


def clocked(step: Callable[..., None], total: list[float]) -> Callable[..., None]:
    """``step`` adding its wall seconds to ``total[0]`` (thread-safe)."""
    lock = threading.Lock()  # the batched env steps several copies on threads

    def timed_step(*args: Any, **kwargs: Any) -> None:
        tick = time.perf_counter()
        step(*args, **kwargs)
        elapsed = time.perf_counter() - tick
        with lock:
            total[0] += elapsed
    return timed_step


@contextlib.contextmanager
def mj_step_clocked() -> Iterator[list[float]]:
    """Within the block, every ``mujoco.mj_step`` adds its wall seconds to the yielded ``[total]`` (the
    envs look the function up at every step); the bare function is restored after."""
    total, bare_step = [0.0], mujoco.mj_step
    mujoco.mj_step = clocked(bare_step, total)
    try:
        yield total
    finally:
        mujoco.mj_step = bare_step


class PhysicsRound:
    """The simulator alone: ``ROLLOUT`` steps of the copies' ``mj_step``, the floor under any rollout. It
    replays the actions and episode ends of ``agent``'s latest rollout (physics costs more or less with
    the actions: an early policy's Gaussian actions step slower than uniform ones), so it steps what the
    agents' env.step steps, minus everything but the physics."""

    def __init__(self, num_envs: int, agent: OursRound) -> None:
        fixed_friction = {"change_every": 2_000_000, "schedule_seed": 0}
        self.physics = PhysicsOnly("SlipperyAnt-v5", num_envs, fixed_friction)
        self.buffer = agent.trainer.agent.buffer
        self()

    def __call__(self) -> dict[str, float]:
        actions = self.buffer.actions_np.astype(np.float64)  # as the env receives them
        ends = self.buffer.terminated | self.buffer.truncated
        started = time.perf_counter()
        for batch, ended in zip(actions, ends, strict=True):
            self.physics.step(batch, ended)
        return {"seconds": time.perf_counter() - started}


class MatmulRound:
    """GFLOP/s of the update's matrix products (a minibatch through one 2x256 network, forward and
    backward shapes) on ``threads`` threads."""

    def __init__(self, threads: int, shapes: list[tuple[int, int, int]], repeats: int = 20) -> None:
        self.threads, self.repeats = threads, repeats
        self.operands = [(torch.randn(m, k), torch.randn(k, n)) for m, k, n in shapes]
        self.flops = 2 * sum(m * k * n for m, k, n in shapes) * repeats
        self()

    def __call__(self) -> dict[str, float]:
        torch.set_num_threads(self.threads)
        started = time.perf_counter()
        for _ in range(self.repeats):
            for a, b in self.operands:
                torch.mm(a, b)
        return {"seconds": time.perf_counter() - started}

    def rate(self, seconds: float) -> float:
        return self.flops / seconds


def update_shapes(layers: list[nn.Linear], batch: int) -> list[tuple[int, int, int]]:
    """(m, k, n) of every matrix product one minibatch needs in one network: the forward ``x W^T`` and,
    in the backward, the weight gradient ``g^T x`` and, but for the first layer (the observations need
    none), the input gradient ``g W``."""
    shapes = []
    for index, layer in enumerate(layers):
        fan_in, fan_out = layer.in_features, layer.out_features
        shapes += [(batch, fan_in, fan_out), (fan_out, batch, fan_in)]
        if index:
            shapes.append((batch, fan_out, fan_in))
    return shapes


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
    parser.add_argument("--update-threads", type=int, help="our run.update_threads (default: torch's)")
    parser.add_argument("--num-envs", type=int, default=1, help="env copies per agent (rollout 2048 in all)")
    parser.add_argument("--backends", default="batched", help="our env.backend(s), comma-separated: "
                        "batched, gymnasium or both (default batched)")
    parser.add_argument("--sequential-networks", action="store_true",
                        help="update our policy and value networks one after the other "
                        "(run.parallel_networks=false; by default timed both ways, the faster kept)")
    parser.add_argument("--skip-sb3", action="store_true", help="do not time Stable-Baselines3")
    parser.add_argument("--skip-variants", action="store_true",
                        help="time only our PPO and PPO+CBP on the default path (not lockstep, compiled, "
                        "autograd): fewer agents, fewer threads in the process")
    args = parser.parse_args()
    backends = args.backends.split(",")

    with tempfile.TemporaryDirectory() as logdir:
        agents: dict[str, Callable[[], dict[str, float]]] = {}
        parallel = False if args.sequential_networks else None
        for backend in backends:
            for cbp in (False, True):
                name = f"PPO{'+CBP' if cbp else ''} {backend}"
                agents[name] = OursRound(cbp, args.threads, args.update_threads, f"{logdir}/{name}",
                                         args.num_envs, backend, parallel)
            if args.skip_variants:
                continue
            name = f"PPO+CBP lockstep {backend}"
            agents[name] = OursRound(True, args.threads, args.update_threads, f"{logdir}/{name}",
                                     args.num_envs, backend, parallel, overlap=False)
            for backprop in ("compiled", "autograd"):
                name = f"PPO+CBP {backprop} {backend}"
                agents[name] = OursRound(True, args.threads, args.update_threads, f"{logdir}/{name}",
                                         args.num_envs, backend, parallel, backprop=backprop)
        reference = next(a for a in agents.values() if isinstance(a, OursRound)).trainer.agent
        shapes = [shape for net in (reference.policy.mean_net, reference.value.net)
                  for shape in update_shapes(linear_layers(net), reference.settings.minibatch_size)]
        minibatches = reference.settings.epochs * ROLLOUT // reference.settings.minibatch_size
        replayed = next(a for name, a in agents.items() if name.startswith("PPO+CBP"))
        limits = {"physics": PhysicsRound(args.num_envs, replayed)}
        for threads in sorted({1, available_cpus()}):
            limits[f"matmul {threads} thr"] = MatmulRound(threads, shapes)
        if not args.skip_sb3:
            try:
                # SB3 as users run it (torch's default threads) and on one thread; the faster is the baseline.
                for threads in sorted({1, DEFAULT_TORCH_THREADS}):
                    agents[f"SB3 PPO {threads} thr"] = SB3Round(threads, args.num_envs)
            except ImportError:
                print("stable-baselines3 is not installed (pip install stable-baselines3); skipping it\n")
        rounds: dict[str, list[dict[str, float]]] = {name: [] for name in {**agents, **limits}}
        for _ in range(args.rounds):
            for name, one_round in {**agents, **limits}.items():
                rounds[name].append(one_round())
        replaced = {name: agent.replaced() for name, agent in agents.items() if isinstance(agent, OursRound)}

    print(f"torch {torch.__version__}, {args.threads} thread(s) for our rollouts, SlipperyAnt-v5 "
          f"x{args.num_envs}, {args.rounds} rollouts of {ROLLOUT} steps per agent, interleaved; "
          f"{available_cpus()} CPUs")
    for name, agent in agents.items():
        if isinstance(agent, OursRound):
            parallel = agent.trainer.agent.network_threads.parallel
            threads = args.update_threads or TORCH_DEFAULT_THREADS
            mode = {True: "at once on two threads", False: f"in turn on {threads} torch thread(s)",
                    None: "(undecided)"}[parallel]
            beside = "value network updated beside the next rollout; where both update before it, " \
                if agent.trainer.overlap_value_update else ""
            print(f"{name}: {beside}policy and value networks updated {mode}")
    print()
    median_seconds = {name: statistics.median(r["seconds"] for r in runs) for name, runs in rounds.items()}
    physics = median_seconds.pop("physics")
    update_flops = minibatches * sum(2 * m * k * n for m, k, n in shapes)
    limit_seconds = {}
    for threads in sorted({1, available_cpus()}):
        matmul = limits[f"matmul {threads} thr"]
        rate = matmul.rate(median_seconds.pop(f"matmul {threads} thr"))
        limit_seconds[threads] = physics + update_flops / rate
        print(f"limit on {threads} CPU(s): physics {physics:.3f} s + update {update_flops / 1e9:.1f} GFLOP "
              f"at {rate / 1e9:.0f} GFLOP/s = {limit_seconds[threads]:.3f} s per rollout, "
              f"{ROLLOUT / limit_seconds[threads]:.0f} steps/s")
    limit = min(limit_seconds.values())
    print()
    rounds = {name: runs for name, runs in rounds.items() if name in agents}
    sps = {name: ROLLOUT / median_seconds[name] for name in rounds}
    best = {name: ROLLOUT / min(r["seconds"] for r in runs) for name, runs in rounds.items()}
    sb3 = max((rate for name, rate in sps.items() if name.startswith("SB3")), default=None)
    print(f"{'agent':<26}{'steps/s (median)':>18}{'vs SB3':>8}{'of limit':>10}{'best round':>12}")
    for name in rounds:
        ratio = f"{sps[name] / sb3:.2f}x" if sb3 else "-"
        of_limit = f"{100 * sps[name] * limit / ROLLOUT:.0f}%"
        print(f"{name:<26}{sps[name]:>18.0f}{ratio:>8}{of_limit:>10}{best[name]:>12.0f}")
    for backend in backends:
        ppo, cbp = f"PPO {backend}", f"PPO+CBP {backend}"
        print(f"PPO+CBP vs PPO ({backend}): {100 * (sps[cbp] / sps[ppo] - 1):+.1f}% steps/s (median), "
              f"{100 * (best[cbp] / best[ppo] - 1):+.1f}% (best round); {replaced[cbp]} units replaced")

    ours = [name for name in rounds if name in replaced]
    print(f"\nseconds per {ROLLOUT}-step rollout, median round of each of our agents")
    print(f"{'phase':<34}" + "".join(f"{name:>25}" for name in ours))
    medians = {}
    for name in ours:
        runs = sorted(rounds[name], key=lambda r: r["seconds"])
        medians[name] = runs[len(runs) // 2]
    for label, key in PHASES + [("total", "seconds")]:
        print(f"{label:<34}" + "".join(f"{medians[name][key]:>25.3f}" for name in ours))
    print("(*) summed over both threads when the networks update in parallel (then partly overlapping)")
    print("(**) with the value network's update beside the next rollout, the policy's alone: the value's "
          "runs inside the next round's env.step")
    print("bare physics (the limit's, replaying PPO+CBP's actions) / env.step: " +
          ", ".join(f"{name} {physics / medians[name]['env']:.0%}" for name in ours))
    print("mj_step's own time in env.step (each agent's own trajectory, summed over copies) / env.step: " +
          ", ".join(f"{name} {medians[name]['mj_step'] / medians[name]['env']:.0%}" for name in ours))


if __name__ == "__main__":
    main()
