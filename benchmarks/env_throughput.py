"""Environment-only throughput: one Gymnasium env, Gymnasium's sync and async vector envs, the batched env.

Prints environment steps per second (copies x vector steps) with uniformly random actions drawn in
advance, all vector envs in SAME_STEP autoreset mode (as the trainer uses). The baseline is one env from
``gym.make`` stepped in a plain loop in this process. On a shared machine the load of other processes
changes from second to second, so for each number of copies every backend, the baseline included, runs
in short interleaved slices and the table shows each one's median slice.

The ``physics`` column is the ceiling of any vector env on this machine: the same copies doing nothing
but MuJoCo's step (``mj_step`` with the task's frame skip, plus ``mj_rnePostConstraint`` where the task
reads contact forces) on the batched env's thread pool, and a reset when a copy is no longer healthy;
no observation, reward or info is computed. ``physics/base`` is therefore the most ``batched/base`` can
reach here.

    python benchmarks/env_throughput.py [--env SlipperyAnt-v5] [--copies 1 2 4 8 16] [--seconds 3]
                                        [--slices 12] [--skip-async]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from functools import partial

import gymnasium as gym
import mujoco
import numpy as np

import envs
from envs.batched_tasks import task_for
from envs.checkpoint import split_env
from envs.thread_pool import SteppingPool, available_cpus

SAME_STEP = gym.vector.AutoresetMode.SAME_STEP
VECTOR_BACKENDS = ("gym sync", "gym async", "batched", "physics")


class Runner:
    """Steps one env or vector env with pre-drawn random actions; ``rate`` times one slice."""

    def __init__(self, step: Callable[[np.ndarray], None], actions: np.ndarray, copies: int) -> None:
        self.step, self.actions, self.copies, self.position = step, actions, copies, 0
        for batch in actions[:10]:  # warm-up: first steps allocate
            step(batch)

    def rate(self, seconds: float) -> float:
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            for batch in self.actions[self.position : self.position + 16]:
                self.step(batch)
            self.position = (self.position + 16) % len(self.actions)
            steps += 16
        return self.copies * steps / (time.perf_counter() - start)


def random_actions(space: gym.spaces.Box, shape: tuple[int, ...], count: int = 256) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform(space.low, space.high, size=(count, *shape, *space.shape)).astype(space.dtype)


def single_env_runner(env_id: str, env_kwargs: dict) -> tuple[Runner, gym.Env]:
    env = gym.make(env_id, **env_kwargs)
    env.reset(seed=0)

    def step(action: np.ndarray) -> None:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()

    return Runner(step, random_actions(env.action_space, ()), 1), env


def vector_runner(
    backend: str, env_id: str, num_envs: int, env_kwargs: dict
) -> tuple[Runner, gym.vector.VectorEnv]:
    vector_kwargs = {"autoreset_mode": SAME_STEP}
    if backend == "batched":
        vec = envs.make_vec(env_id, num_envs, "batched", vector_kwargs=vector_kwargs, **env_kwargs)
    else:
        mode = backend.removeprefix("gym ")
        vec = envs.make_vec(env_id, num_envs, "gymnasium", mode, vector_kwargs=vector_kwargs, **env_kwargs)
    vec.reset(seed=0)
    return Runner(vec.step, random_actions(vec.single_action_space, (num_envs,)), num_envs), vec


def physics_runner(env_id: str, num_envs: int, env_kwargs: dict) -> tuple[Runner, PhysicsOnly]:
    physics = PhysicsOnly(env_id, num_envs, env_kwargs)
    return Runner(physics.step, random_actions(physics.single_action_space, (num_envs,)), num_envs), physics


class PhysicsOnly:
    """``num_envs`` copies stepped by MuJoCo alone on the batched env's thread pool (see the module doc)."""

    def __init__(self, env_id: str, num_envs: int, env_kwargs: dict) -> None:
        self.copies = [gym.make(env_id, **env_kwargs) for _ in range(num_envs)]
        self.simulators = [split_env(env)[0] for env in self.copies]
        for index, env in enumerate(self.copies):
            env.reset(seed=index)
        task = task_for(type(self.simulators[0]))
        self.contact_forces = task is not None and task.needs_contact_forces
        self.frame_skip = self.simulators[0].frame_skip
        self.single_action_space = self.copies[0].action_space
        self.pool = SteppingPool(min(num_envs, available_cpus()))
        self.actions = np.zeros((num_envs, *self.single_action_space.shape))

    def step(self, actions: np.ndarray, ends: np.ndarray | None = None) -> None:
        """Step every copy with ``actions``; then reset the copies ``ends`` marks (a replayed agent's
        episode ends) or, without it, the copies that fell."""
        self.actions = actions
        self.pool.run(self._step_copy, range(len(self.copies)))
        for index, (env, simulator) in enumerate(zip(self.copies, self.simulators, strict=True)):
            if (ends[index] if ends is not None else not getattr(simulator, "is_healthy", True)):
                env.reset()

    def _step_copy(self, index: int) -> None:
        simulator = self.simulators[index]
        model, data = simulator.model, simulator.data
        data.ctrl[:] = self.actions[index]
        mujoco.mj_step(model, data, nstep=self.frame_skip)
        if self.contact_forces:
            mujoco.mj_rnePostConstraint(model, data)

    def close(self) -> None:
        self.pool.close()
        for env in self.copies:
            env.close()


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--env", default="SlipperyAnt-v5")
    parser.add_argument("--copies", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per backend and row")
    parser.add_argument("--slices", type=int, default=12, help="interleaved slices the seconds are cut into")
    parser.add_argument("--skip-async", action="store_true", help="async envs start one process per copy")
    args = parser.parse_args()
    # Drifting ids get a fixed schedule seed; the default change_every keeps the friction fixed here.
    env_kwargs = {"schedule_seed": 0} if "base_env" in gym.spec(args.env).kwargs else {}
    backends = ["gym.make"] + [name for name in VECTOR_BACKENDS if not (args.skip_async and "async" in name)]

    print(f"{args.env}: env steps/s, median of {args.slices} interleaved slices over {args.seconds:g} s each")
    print(f"{available_cpus()} CPUs; load average at start {os.getloadavg()[0]:.2f} (other processes: noise)")
    print("gym.make = one env in a plain loop (baseline); vector envs autoreset in SAME_STEP mode\n")
    columns = " ".join(f"{name:>10}" for name in backends)
    print(f"{'copies':>6} {columns} {'batched/base':>13} {'batched/sync':>13} {'physics/base':>13}")
    for num_envs in args.copies:
        built = {"gym.make": single_env_runner(args.env, env_kwargs)}
        for name in backends[1:]:
            make = physics_runner if name == "physics" else partial(vector_runner, name)
            built[name] = make(args.env, num_envs, env_kwargs)
        samples: dict[str, list[float]] = {name: [] for name in backends}
        for _ in range(args.slices):
            for name, (runner, _) in built.items():
                samples[name].append(runner.rate(args.seconds / args.slices))
        for _, env in built.values():
            env.close()
        rates = {name: statistics.median(values) for name, values in samples.items()}
        row = f"{num_envs:>6} " + " ".join(f"{rates[name]:>10,.0f}" for name in backends)
        over_base, over_sync = rates["batched"] / rates["gym.make"], rates["batched"] / rates["gym sync"]
        ceiling = rates["physics"] / rates["gym.make"]
        print(f"{row} {over_base:>12.2f}x {over_sync:>12.2f}x {ceiling:>12.2f}x", flush=True)
    print(f"\nload average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
