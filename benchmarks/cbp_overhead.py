"""Cost of ContinualBackprop.step() relative to one training step of the same network.

Prints microseconds per forward+backward+Adam step of a 2x256 ReLU MLP on a minibatch of 128 (the paper's
PPO network and minibatch), with and without CBP, and the overhead of CBP in percent, both before the
units mature (utility bookkeeping only) and in steady state (units being replaced).

    python benchmarks/cbp_overhead.py [--threads 1] [--steps 3000]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from rl_plasticity import ContinualBackprop


def make_net(obs_dim: int, act_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(obs_dim, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                         nn.Linear(256, act_dim))


def time_training(steps: int, with_cbp: bool, maturity: int, rate: float) -> tuple[float, list[int]]:
    torch.manual_seed(0)
    net = make_net(105, 8)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4, betas=(0.99, 0.99), weight_decay=1e-4)
    cbp = None
    if with_cbp:
        cbp = ContinualBackprop.from_sequential(net, optimizer, replacement_rate=rate,
                                                maturity_threshold=maturity)
    x, y = torch.randn(128, 105), torch.randn(128, 8)
    for phase in ("warmup", "timed"):
        start = time.perf_counter()
        for _ in range(steps if phase == "timed" else min(steps, maturity + 200)):
            loss = (net(x) - y).pow(2).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        elapsed = time.perf_counter() - start
    replaced = cbp.replaced_total if cbp else []
    return elapsed / steps * 1e6, replaced


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), 2x256 ReLU MLP, minibatch 128, Adam")
    for label, maturity, rate in (("utility only (immature)", 10**9, 1e-4),
                                  ("paper rate 1e-4, mature", 100, 1e-4),
                                  ("heavy: rate 1e-2, mature", 100, 1e-2)):
        base = min(time_training(args.steps, False, maturity, rate)[0] for _ in range(args.repeats))
        runs = [time_training(args.steps, True, maturity, rate) for _ in range(args.repeats)]
        with_cbp = min(r[0] for r in runs)
        print(f"{label:28s} plain {base:7.1f} us/step   +CBP {with_cbp:7.1f} us/step   "
              f"overhead {100 * (with_cbp - base) / base:5.1f}%   replaced {runs[0][1]}")


if __name__ == "__main__":
    main()
