"""TensorBoard logging of a PPO run: returns, losses, physics, plasticity of both networks, CBP. The tags
and what each means are in `rl_plasticity.tags`."""

from __future__ import annotations

import functools
import threading
from pathlib import Path
from typing import Any

import torch
from torch.utils.tensorboard import SummaryWriter

from agents import PPO, Rollout
from rl_plasticity import ContinualBackprop, PlasticityProbe, tags
from rl_plasticity.experiment.config import Config, flat_items
from rl_plasticity.experiment.environment import physics_values
from rl_plasticity.experiment.run_directory import RunDirectory
from rl_plasticity.hooks import linear_layers


class _EventWriter:
    """A `SummaryWriter` whose write errors name its event file.

    TensorBoard writes on a thread of its own: a failed write (a full disk) surfaces, without a file name,
    from whichever call comes next. That thread also prints the error as a traceback of its own, which
    `_quiet_event_writer_threads` silences, since the call that re-raises it is the one to report.
    """

    def __init__(self, run_dir: Path, purge_step: int | None) -> None:
        before = set(RunDirectory(run_dir).event_files())
        _quiet_event_writer_threads()
        self._writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge_step)
        created = sorted(set(RunDirectory(run_dir).event_files()) - before)
        self.path = created[-1] if created else run_dir

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._writer, name)
        if not callable(attribute):
            return attribute

        @functools.wraps(attribute)
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return attribute(*args, **kwargs)
            except OSError as error:
                if error.filename is None:
                    error.filename = str(self.path)
                raise

        return call


def _quiet_event_writer_threads() -> None:
    """Leave TensorBoard's writer threads' OSErrors to the thread that writes next (see `_EventWriter`)."""
    previous = threading.excepthook
    if getattr(previous, "leaves_event_writer_errors", False):
        return

    def excepthook(args: threading.ExceptHookArgs) -> None:
        thread = type(args.thread)
        if thread.__module__.startswith("tensorboard.") and issubclass(args.exc_type, OSError):
            return
        previous(args)

    excepthook.leaves_event_writer_errors = True  # type: ignore[attr-defined]
    threading.excepthook = excepthook


class TrainingLogger:
    """Writes one run's TensorBoard events into ``run_dir``."""

    def __init__(self, run_dir: Path, agent: PPO, purge_step: int | None = None) -> None:
        self.writer = _EventWriter(run_dir, purge_step)
        self.agent = agent
        self.networks = {"policy": agent.policy.mean_net, "value": agent.value.net}
        self.probes = {name: PlasticityProbe(linear_layers(net), model=net)
                       for name, net in self.networks.items()}
        self.cbps: dict[str, ContinualBackprop | None] = {"policy": agent.cbp_policy,
                                                          "value": agent.cbp_value}
        self.hidden_layers = len(agent.settings.hidden_sizes)

    def hyperparameters(self, config: Config) -> None:
        rows = "\n".join(f"| {key} | {value} |" for key, value in flat_items(config))
        self.writer.add_text(tags.HYPERPARAMETERS, "| key | value |\n|---|---|\n" + rows, global_step=0)

    def rollout(self, rollout: Rollout, step: int) -> None:
        for episode in rollout.episodes:
            self.writer.add_scalar(tags.EPISODIC_RETURN, episode.episodic_return, episode.step)
            self.writer.add_scalar(tags.EPISODIC_LENGTH, episode.length, episode.step)
        for name, value in physics_values(rollout.last_info).items():
            self.writer.add_scalar(tags.env_parameter(name), value, step)

    def update(self, stats: dict[str, float], step: int, networks: tuple[str, ...] = ("policy", "value"),
               steps_per_second: float | None = None) -> None:
        """The update's statistics of ``networks`` (an update whose value half finishes later is logged
        in two calls at its step): losses, gradient norms, weight change, CBP's and the methods'."""
        add = self.writer.add_scalar
        if steps_per_second is not None:
            add(tags.STEPS_PER_SECOND, steps_per_second, step)
        if "learning_rate" in stats:
            add(tags.LEARNING_RATE, stats["learning_rate"], step)
        for name in tags.LOSSES:
            if name in stats:
                add(tags.loss(name), stats[name], step)
        for name in networks:
            add(tags.plasticity(name, "grad_norm"), stats[f"{name}_grad_norm"], step)
            add(tags.plasticity(name, "weight_change"), stats[f"{name}_weight_change"], step)
            cbp = self.cbps[name]
            replaced = cbp.replaced_total if cbp is not None else [0] * self.hidden_layers
            for k, count in enumerate(replaced):
                add(tags.cbp_replaced(name, k), count, step)
        for method, nets in self.agent.methods.items():
            for network, attached in nets.items():
                if network in networks:
                    for statistic, value in attached.statistics().items():
                        add(tags.method_statistic(method, network, statistic), value, step)

    def probe(self, step: int, batch_size: int) -> dict[str, dict[str, float]]:
        """Plasticity metrics of both networks on the latest rollout's observations."""
        inputs = self.agent.recent_observations(batch_size)
        results = {}
        for name, probe in self.probes.items():
            results[name] = probe.measure(inputs)
            for key, value in results[name].items():
                self.writer.add_scalar(tags.plasticity(name, key), value, step)
        return results

    def utility_histograms(self, step: int) -> None:
        for name, cbp in self.cbps.items():
            if cbp is None:
                continue
            for k, utility in enumerate(cbp.utilities()):
                self.writer.add_histogram(tags.cbp_utility(name, k), utility.to(torch.float64), step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()

