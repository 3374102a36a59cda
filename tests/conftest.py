"""What several test modules share: small MLPs for the core, building a small trainer, comparing states
bit for bit, and reading a run's TensorBoard events back. Test modules import these by name
(``from conftest import ...``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tensorboard.backend.event_processing.event_accumulator import (
    HISTOGRAMS,
    SCALARS,
    TENSORS,
    EventAccumulator,
)
from torch import nn

from rl_plasticity.experiment.config import load_config
from rl_plasticity.experiment.runner import Trainer


def mlp(*sizes: int, seed: int = 0) -> nn.Sequential:
    """Linear layers of ``sizes`` with ReLU between them, initialised from ``seed``."""
    torch.manual_seed(seed)
    modules: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:], strict=False)):
        modules.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            modules.append(nn.ReLU())
    return nn.Sequential(*modules)


def linears(net: nn.Module) -> list[nn.Linear]:
    return [m for m in net.modules() if isinstance(m, nn.Linear)]


def train_step(net: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    """One squared-error optimizer step (which also runs CBP's post-step hook, if attached)."""
    loss = (net(x) - y).pow(2).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def make_trainer(*overrides: str, config: Path | None = None, run_dir: Path | None = None) -> Trainer:
    """A `Trainer` for ``config`` (the defaults if None) with ``key=value`` overrides."""
    return Trainer(load_config(config, list(overrides)), run_dir)


def assert_same_state(a: object, b: object, where: str = "state", rtol: float = 0.0) -> None:
    """``a`` and ``b`` hold the same keys, lengths and values, tensors and arrays bit for bit (tensors to
    ``rtol``, and an absolute 1e-7, if given); the failure names the path to the first difference
    (``agent.optimizer.state.3.exp_avg``)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: keys differ"
        for key in a:
            assert_same_state(a[key], b[key], f"{where}.{key}", rtol)
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{where}: lengths differ"
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_state(x, y, f"{where}[{index}]", rtol)
    elif isinstance(a, torch.Tensor) and rtol:
        assert isinstance(b, torch.Tensor), where
        torch.testing.assert_close(a, b, rtol=rtol, atol=1e-7, msg=lambda text: f"{where}: {text}")
    elif isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), where
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def read_events(run_dir: Path) -> EventAccumulator:
    """Every scalar, histogram and tensor in a run directory's event files (a resumed run has several)."""
    accumulator = EventAccumulator(str(run_dir), size_guidance={SCALARS: 0, HISTOGRAMS: 0, TENSORS: 0})
    accumulator.Reload()
    return accumulator


def scalar_values(run_dir: Path) -> dict[str, list[float]]:
    events = read_events(run_dir)
    return {tag: [event.value for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def scalar_steps(run_dir: Path, tag: str) -> list[int]:
    return [event.step for event in read_events(run_dir).Scalars(tag)]
