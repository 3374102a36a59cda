"""What our continual backprop costs Stable-Baselines3 PPO on Slippery Ant (target: at most 5%).

SB3 PPO with the paper's hyperparameters (2x256 ReLU policy and value networks, n_steps 2048, minibatch
128, 10 epochs, lr 1e-4, no entropy bonus, vf_coef 1, no value or gradient clipping), trained for
``--steps`` env steps without CBP and with `agents.sb3.attach_cbp` in two regimes:

- ``paper``: replacement rate 1e-4, maturity 10,000 updates: in a short run nothing matures, so this is
  the utility bookkeeping a real run pays for its first ~128k steps;
- ``mature``: replacement rate 1e-4, maturity 0: every unit eligible from the start, units being
  replaced at the paper's steady-state rate.

After a discarded warm-up run, runs are interleaved in a rotating order so load from other processes
hits all of them alike. Printed: the median steps/s per regime, the median per-repeat slowdown, and the
time spent inside ``ContinualBackprop.step`` measured directly with optimizer hooks (less noisy on a
busy machine than the steps/s difference).

    python benchmarks/sb3_cbp_overhead.py [--steps 6144] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

import envs  # noqa: F401  (registers SlipperyAnt-v5)
from agents.sb3 import attach_cbp

REGIMES = {"baseline": None, "paper": {"maturity_threshold": 10_000}, "mature": {"maturity_threshold": 0}}


def paper_ppo(seed: int) -> PPO:
    env = make_vec_env("SlipperyAnt-v5", n_envs=1, seed=seed, env_kwargs={"schedule_seed": seed})
    return PPO(
        "MlpPolicy", env, learning_rate=1e-4, n_steps=2048, batch_size=128, n_epochs=10, gamma=0.99,
        gae_lambda=0.95, clip_range=0.2, clip_range_vf=None, ent_coef=0.0, vf_coef=1.0, max_grad_norm=1e9,
        policy_kwargs={"net_arch": {"pi": [256, 256], "vf": [256, 256]}, "activation_fn": torch.nn.ReLU,
                       "optimizer_kwargs": {"betas": (0.99, 0.99), "weight_decay": 1e-4}},
        seed=seed, verbose=0,
    )


def measure(regime: str, steps: int, seed: int) -> tuple[float, float, float, int]:
    """Returns (env steps/s, share of wall time inside CBP steps, microseconds per CBP step, replaced)."""
    model = paper_ppo(seed)
    cbp_seconds = [0.0]
    replaced = 0
    cbps = None
    settings = REGIMES[regime]
    if settings is not None:
        # Post-step hooks run in registration order: ours, then both CBPs', then ours again.
        stamp = [0.0]
        optimizer = model.policy.optimizer
        optimizer.register_step_post_hook(lambda *_: stamp.__setitem__(0, time.perf_counter()))
        cbps = attach_cbp(model, replacement_rate=1e-4, **settings)
        optimizer.register_step_post_hook(
            lambda *_: cbp_seconds.__setitem__(0, cbp_seconds[0] + time.perf_counter() - stamp[0]))
    start = time.perf_counter()
    model.learn(steps)
    elapsed = time.perf_counter() - start
    per_update = 0.0
    if cbps is not None:
        replaced = sum(sum(cbp.replaced_total) for cbp in cbps)
        per_update = cbp_seconds[0] / max(cbps.policy.steps, 1) * 1e6
    model.get_env().close()
    return model.num_timesteps / elapsed, cbp_seconds[0] / elapsed, per_update, replaced


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3 * 2048, help="env steps per run (default 3 rollouts)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"SB3 PPO on SlipperyAnt-v5, paper hyperparameters, {args.steps} steps x {args.repeats} repeats, "
          f"torch {torch.__version__}, {args.threads} thread(s)")

    results: dict[str, list[tuple[float, float, float, int]]] = {regime: [] for regime in REGIMES}
    measure("baseline", 2048, args.seed)  # warm-up: the first run in a process pays one-off costs
    names = list(REGIMES)
    for repeat in range(args.repeats):
        for regime in names[repeat % 3:] + names[:repeat % 3]:  # rotated, so no regime always goes first
            results[regime].append(measure(regime, args.steps, args.seed))
            sps, share, per_update, replaced = results[regime][-1]
            print(f"  repeat {repeat}  {regime:8s} {sps:7.1f} steps/s  CBP {100 * share:5.2f}% of wall time,"
                  f" {per_update:6.0f} us/update (both networks), replaced {replaced}", flush=True)

    def median(regime: str, column: int) -> float:
        return statistics.median(row[column] for row in results[regime])

    baseline = [row[0] for row in results["baseline"]]
    print(f"\n{'regime':10s} {'steps/s':>8s} {'slowdown':>9s} {'CBP share':>10s} {'CBP us/update':>14s}")
    print(f"{'baseline':10s} {statistics.median(baseline):8.1f}")
    for regime in ("paper", "mature"):
        slowdown = statistics.median(1 - row[0] / b for row, b in zip(results[regime], baseline, strict=True))
        print(f"{regime:10s} {median(regime, 0):8.1f} {100 * slowdown:8.2f}% {100 * median(regime, 1):9.2f}% "
              f"{median(regime, 2):14.0f}")
    print("slowdown: median over repeats of 1 - steps/s(CBP) / steps/s(same repeat's baseline), noisy on a "
          "busy machine;\nCBP share: wall time inside both ContinualBackprop.step calls (capture hooks "
          "excluded), the direct measure")


if __name__ == "__main__":
    main()
