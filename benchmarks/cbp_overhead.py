"""Cost of ContinualBackprop.step() relative to one training step of the same network.

The paper's PPO network and minibatch: a 2x256 ReLU MLP (105 inputs, 8 outputs), minibatch 128, Adam
(torch's default implementation; ``--fused`` for the fused CPU kernel our PPO uses). For each regime a
plain network and a CBP network train side by side in interleaved blocks, so load from other processes
hits both alike. Printed per regime, as medians over the blocks:

- ``step()``: microseconds inside ``cbp.step()`` and its share of the same network's
  forward+backward+Adam step;
- end to end: the CBP network's whole training step (capture hooks included) against the plain one's
  (the project's target: at most 5% at the paper's rate).

Regimes: before the units mature (utility bookkeeping only), the paper's rate with units maturing after
100 steps (steady-state replacement with every unit eligible: twice the replacements of the paper's
steady state, where about half of each layer is younger than its maturity of 10,000 steps), and a heavy
rate of 1e-2.

    python benchmarks/cbp_overhead.py [--threads 1] [--blocks 12] [--block-steps 250] [--fused]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from rl_plasticity import ContinualBackprop

REGIMES = (("utility only (immature)", 10**9, 1e-4), ("paper rate 1e-4, mature", 100, 1e-4),
           ("heavy: rate 1e-2, mature", 100, 1e-2))


class Training:
    """One network (with or without CBP in manual mode) and its timings."""

    def __init__(self, with_cbp: bool, maturity: int, rate: float, fused: bool) -> None:
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(105, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                                 nn.Linear(256, 8))
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=1e-4, betas=(0.99, 0.99),
                                          weight_decay=1e-4, fused=fused or None)
        self.cbp = ContinualBackprop.from_sequential(self.net, replacement_rate=rate,
                                                     maturity_threshold=maturity) if with_cbp else None
        self.x, self.y = torch.randn(128, 105), torch.randn(128, 8)

    def block(self, steps: int) -> tuple[float, float]:
        """Microseconds per step: (forward+backward+Adam, cbp.step())."""
        train = cbp = 0.0
        clock = time.perf_counter
        for _ in range(steps):
            start = clock()
            loss = (self.net(self.x) - self.y).pow(2).mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            middle = clock()
            if self.cbp is not None:
                self.cbp.step()
            cbp += clock() - middle
            train += middle - start
        return train / steps * 1e6, cbp / steps * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--blocks", type=int, default=12, help="interleaved timed blocks per network")
    parser.add_argument("--block-steps", type=int, default=250)
    parser.add_argument("--fused", action="store_true", help="Adam(fused=True), as our PPO uses")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), 2x256 ReLU MLP, minibatch 128, "
          f"Adam{' (fused)' if args.fused else ''}; medians of {args.blocks} interleaved blocks of "
          f"{args.block_steps} steps")
    for label, maturity, rate in REGIMES:
        plain = Training(False, maturity, rate, args.fused)
        with_cbp = Training(True, maturity, rate, args.fused)
        for training in (plain, with_cbp):
            training.block(max(200, min(maturity + 200, 2000)))  # warm-up (and maturity, if reachable)
        plain_train, cbp_train, cbp_step = [], [], []
        for _ in range(args.blocks):
            plain_train.append(plain.block(args.block_steps)[0])
            train, step = with_cbp.block(args.block_steps)
            cbp_train.append(train)
            cbp_step.append(step)
        base, step = statistics.median(plain_train), statistics.median(cbp_step)
        end_to_end = statistics.median(cbp_train) + step
        assert with_cbp.cbp is not None
        print(f"{label:26s} train step {base:7.1f} us   cbp.step() {step:6.1f} us = "
              f"{100 * step / base:5.1f}%   end to end {100 * (end_to_end - base) / base:+5.1f}%   "
              f"replaced {with_cbp.cbp.replaced_total}")


if __name__ == "__main__":
    main()
