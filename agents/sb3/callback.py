"""The SB3 callback: plasticity and CBP into SB3's logger, and optionally the friction schedule."""

from __future__ import annotations

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.utils import obs_as_tensor

from agents.sb3.attach import attached_cbp, attached_methods
from agents.sb3.networks import NETWORKS, network_layers, plasticity_probes
from agents.sb3.schedule import FrictionSchedule, piecewise_schedule
from rl_plasticity import tags


class PlasticityCallback(BaseCallback):
    """Logs plasticity and CBP into SB3's logger (TensorBoard, CSV, ...) after every rollout.

    Tags (`rl_plasticity.tags`, the same as ``rl-plasticity train`` writes, so runs of both overlay in
    TensorBoard): ``plasticity/<net>/layer<k>/...`` from `PlasticityProbe` on ``probe_batch_size``
    observations of the rollout just collected, every ``probe_every`` rollouts; the cumulative
    ``cbp/<net>/layer<k>/replaced`` (0 when no CBP is attached); and ``env/friction``, the mean over the env
    copies of ``info["friction"]`` at the rollout's last step, when the env reports it.

    ``friction_schedule`` (a function ``step -> friction``, None meaning "leave it", or a list of
    ``(step, friction)`` pairs) lets the trainer own the schedule: before each env step the callback
    calls ``env_method("set_friction", value)`` whenever the value for the current step changes. Build
    the env with a ``change_every`` longer than the run so its own schedule does not interfere; the step
    is SB3's ``num_timesteps``, so a resumed run (``reset_num_timesteps=False``) continues the schedule.

    These tags are excluded from SB3's stdout table (it truncates long keys); pass
    ``exclude=()`` to print them too.
    """

    def __init__(self, probe_batch_size: int = 1024, probe_every: int = 1,
                 friction_schedule: FrictionSchedule | None = None, seed: int = 0,
                 exclude: tuple[str, ...] = ("stdout",), verbose: int = 0) -> None:
        super().__init__(verbose)
        if probe_batch_size < 2 or probe_every < 0:
            raise ValueError(f"probe_batch_size must be >= 2 and probe_every >= 0 (0 = never); got "
                             f"{probe_batch_size} and {probe_every}")
        self.probe_batch_size = probe_batch_size
        self.probe_every = probe_every
        if friction_schedule is not None and not callable(friction_schedule):
            friction_schedule = piecewise_schedule(friction_schedule)
        self.friction_schedule = friction_schedule
        self.exclude = exclude
        self.rng = np.random.default_rng(seed)
        self.rollouts = 0
        self.friction: float | None = None
        self._applied_friction: float | None = None

    def _init_callback(self) -> None:
        network_layers(self.model.policy)  # an unsupported layout fails here, not after the first rollout

    def _on_training_start(self) -> None:
        self._applied_friction = None  # the env may have been rebuilt or reset since the last learn()
        self._drive_friction()

    def _on_step(self) -> bool:
        frictions = [info["friction"] for info in self.locals.get("infos", ()) if "friction" in info]
        if frictions:
            self.friction = float(np.mean(frictions))
        self._drive_friction()
        return True

    def _drive_friction(self) -> None:
        if self.friction_schedule is None:
            return
        value = self.friction_schedule(self.model.num_timesteps)
        if value is not None and value != self._applied_friction:
            self.training_env.env_method("set_friction", float(value))
            self._applied_friction = value

    def _on_rollout_start(self) -> None:
        # SB3's train() stops an epoch early on target_kl after a forward but before optimizer.step():
        # those features must not count towards the next update's utilities.
        for cbp in attached_cbp(self.model) or ():
            cbp.discard_features()

    def _on_rollout_end(self) -> None:
        self.rollouts += 1
        record = self.logger.record
        if self.friction is not None:
            record(tags.env_parameter("friction"), self.friction, exclude=self.exclude)
        pair = attached_cbp(self.model)
        probes = plasticity_probes(self.model.policy)
        for name, cbp in zip(NETWORKS, pair or (None, None), strict=True):
            hidden = len(probes[name].layers) - 1
            for k, count in enumerate(cbp.replaced_total if cbp is not None else [0] * hidden):
                record(tags.cbp_replaced(name, k), count, exclude=self.exclude)
        for method, nets in attached_methods(self.model).items():
            for name, instance in nets.items():
                for statistic, value in instance.statistics().items():
                    record(tags.method_statistic(method, name, statistic), value, exclude=self.exclude)
        if self.probe_every and (self.rollouts - 1) % self.probe_every == 0:
            observations = obs_as_tensor(self._recent_observations(), self.model.device)
            for name, probe in probes.items():
                for key, value in probe.measure(observations).items():
                    record(tags.plasticity(name, key), value, exclude=self.exclude)

    def _recent_observations(self) -> np.ndarray | dict[str, np.ndarray]:
        """A random batch of the rollout buffer's observations (already normalised if the env is)."""
        buffer = self.model.rollout_buffer
        if isinstance(buffer.observations, dict):
            flat: dict[str, np.ndarray] | np.ndarray = {
                key: obs.reshape(-1, *buffer.obs_shape[key]) for key, obs in buffer.observations.items()}
            total = len(next(iter(flat.values())))
        else:
            flat = buffer.observations.reshape(-1, *buffer.obs_shape)
            total = len(flat)
        rows = self.rng.choice(total, size=min(total, self.probe_batch_size), replace=False)
        if isinstance(flat, dict):
            return {key: obs[rows] for key, obs in flat.items()}
        return flat[rows]
