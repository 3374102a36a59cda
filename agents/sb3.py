"""Stable-Baselines3 integration: continual backprop and plasticity metrics for an existing SB3 PPO.

Three lines on top of an ordinary SB3 script::

    model = PPO("MlpPolicy", env, policy_kwargs=dict(net_arch=dict(pi=[256, 256], vf=[256, 256])))
    cbps = attach_cbp(model, replacement_rate=1e-4, maturity_threshold=10_000)
    model.learn(1_000_000, callback=PlasticityCallback())

`attach_cbp` builds one `rl_plasticity.ContinualBackprop` on the policy network
(``mlp_extractor.policy_net`` + ``action_net``) and one on the value network (``mlp_extractor.value_net`` +
``value_net``), both hooked to ``policy.optimizer``: CBP steps after every optimizer step of SB3's own
``train()``, with no subclassing. SB3 collects rollouts under ``torch.no_grad()``, and the core captures
features only in grad-enabled forwards, so only ``train()``'s minibatches move utilities.

`PlasticityCallback` logs both networks' plasticity and CBP's replacements into SB3's logger and can own
the friction schedule; `save_with_cbp` / `load_with_cbp` keep CBP's ages and utilities across a resume.

Known small effect: with ``target_kl`` set, SB3 may stop an epoch after a minibatch's forward pass but
before its optimizer step; that minibatch's features then join the first CBP step of the next ``train()``.

This module needs ``stable-baselines3`` (``pip install 'rl-plasticity[sb3]'``); ``import agents`` does not.
It never imports ``envs``: the friction is driven through ``env_method("set_friction", value)`` by name.
"""

from __future__ import annotations

import bisect
import os
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from rl_plasticity import ContinualBackprop, PlasticityProbe, tags
from rl_plasticity.cbp_options import OPTION_NAMES
from rl_plasticity.hooks import linear_layers

try:
    from stable_baselines3.common.base_class import BaseAlgorithm
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.preprocessing import preprocess_obs
    from stable_baselines3.common.utils import obs_as_tensor
except ImportError as error:  # pragma: no cover - depends on the optional extra
    raise ImportError(
        "agents.sb3 needs Stable-Baselines3: pip install 'rl-plasticity[sb3]' (or stable-baselines3>=2.3)"
    ) from error

NETWORKS = tags.NETWORKS
SIDECAR_SUFFIX = ".cbp.pt"
_SIDECAR_FORMAT = 1
#: ContinualBackprop arguments stored next to a saved model and used again when it is loaded.
_SUPPORTED = ("attach_cbp supports SB3's ActorCriticPolicy (PPO/A2C 'MlpPolicy') with separate policy and "
              "value MLPs of at least one hidden layer each, e.g. net_arch=[64, 64] or "
              "net_arch=dict(pi=[256, 256], vf=[256, 256]) (SB3 >= 1.8), and a features extractor without "
              "nn.Linear layers (the default FlattenExtractor)")


class CBPPair(NamedTuple):
    """The two `ContinualBackprop` objects of one SB3 policy; unpacks as ``policy_cbp, value_cbp``."""

    policy: ContinualBackprop
    value: ContinualBackprop


# Keyed by the policy module, so a model rebuilt by PPO.load never inherits a stale attachment.
_ATTACHED: weakref.WeakKeyDictionary[nn.Module, CBPPair] = weakref.WeakKeyDictionary()


# ---------------------------------------------------------------------- the two networks
def network_layers(policy: nn.Module) -> tuple[list[nn.Linear], list[nn.Linear]]:
    """The consecutive ``nn.Linear`` layers (input to output) of the policy and of the value network.

    Raises ValueError, saying what is supported, for layouts CBP cannot cover: no hidden layer in one
    network, ``nn.Linear`` layers shared by both networks or outside them (a features extractor with
    Linear layers, a shared trunk), or a policy that is not an SB3 ActorCriticPolicy.
    """
    extractor = getattr(policy, "mlp_extractor", None)
    heads = (getattr(policy, "action_net", None), getattr(policy, "value_net", None))
    if extractor is None or not all(isinstance(getattr(extractor, n, None), nn.Module)
                                    for n in ("policy_net", "value_net")):
        raise ValueError(f"{type(policy).__name__} has no mlp_extractor.policy_net/value_net; {_SUPPORTED}")
    if not all(isinstance(head, nn.Linear) for head in heads):
        raise ValueError(f"{type(policy).__name__}'s action_net/value_net are not nn.Linear; {_SUPPORTED}")
    chains = {
        "policy": linear_layers(extractor.policy_net) + [heads[0]],
        "value": linear_layers(extractor.value_net) + [heads[1]],
    }
    for name, chain in chains.items():
        if len(chain) < 2:
            arch = getattr(policy, "net_arch", "?")
            raise ValueError(
                f"the {name} network has no hidden layer (net_arch={arch!r}); CBP replaces hidden units, "
                f"so there is nothing to attach to. {_SUPPORTED}"
            )
    shared = {id(m) for m in chains["policy"]} & {id(m) for m in chains["value"]}
    covered = {id(m) for chain in chains.values() for m in chain}
    outside = [name for name, m in policy.named_modules()
               if isinstance(m, nn.Linear) and id(m) not in covered]
    if shared or outside:
        where = f"shared by both networks: {len(shared)} layer(s)" if shared else f"outside them: {outside}"
        raise ValueError(
            f"this policy has nn.Linear layers {where}. CBP would leave those units out, or one "
            f"ContinualBackprop would reset units the other network depends on. {_SUPPORTED}"
        )
    return chains["policy"], chains["value"]


def _network_forwards(policy: nn.Module) -> dict[str, Callable[[Any], Tensor]]:
    """Per network, observations -> its head's output along SB3's own path (preprocessing, extractor)."""

    def features(observations: Any, extractor: nn.Module) -> Tensor:
        return extractor(preprocess_obs(observations, policy.observation_space,
                                        normalize_images=policy.normalize_images))

    return {
        "policy": lambda obs: policy.action_net(
            policy.mlp_extractor.forward_actor(features(obs, policy.pi_features_extractor))),
        "value": lambda obs: policy.value_net(
            policy.mlp_extractor.forward_critic(features(obs, policy.vf_features_extractor))),
    }


def plasticity_probes(policy: nn.Module) -> dict[str, PlasticityProbe]:
    """``{"policy": probe, "value": probe}``: each network's `PlasticityProbe`; ``measure`` takes observations
    as stored in the rollout buffer (SB3's preprocessing and features extractor run inside)."""
    layers = dict(zip(NETWORKS, network_layers(policy), strict=True))
    forwards = _network_forwards(policy)
    return {name: PlasticityProbe(layers[name], model=forwards[name]) for name in NETWORKS}


# ---------------------------------------------------------------------- attaching CBP
def attach_cbp(model: BaseAlgorithm, **cbp_kwargs: Any) -> CBPPair:
    """Attach one `ContinualBackprop` to each of the model's networks, stepping after every update.

    ``cbp_kwargs`` are `ContinualBackprop`'s options (``replacement_rate``, ``maturity_threshold``,
    ``decay_rate``, ``utility``, ``init``, ...) for both networks. SB3 builds ``policy.optimizer`` once;
    ``PPO.load`` builds a new policy and optimizer, so after loading attach again (or use `load_with_cbp`).
    Returns ``(policy_cbp, value_cbp)``. ``nonlinearity`` defaults to the policy's ``activation_fn``
    (SB3's MlpPolicy: tanh), for the gain of kaiming and xavier redraws.
    """
    activation = getattr(model.policy, "activation_fn", nn.ReLU)
    cbp_kwargs.setdefault("nonlinearity", "tanh" if activation is nn.Tanh else "relu")
    return _attach(model, cbp_kwargs, cbp_kwargs)


def _attach(model: BaseAlgorithm, policy_kwargs: dict[str, Any], value_kwargs: dict[str, Any]) -> CBPPair:
    policy = model.policy
    if policy in _ATTACHED:
        raise ValueError("this model already has CBP attached (attached_cbp(model) returns it); call "
                         "detach_cbp(model) first to attach with other settings")
    policy_layers, value_layers = network_layers(policy)
    optimizer = policy.optimizer
    policy_cbp = ContinualBackprop(policy_layers, optimizer, **policy_kwargs)
    try:
        value_cbp = ContinualBackprop(value_layers, optimizer, **value_kwargs)
    except Exception:
        policy_cbp.remove()
        raise
    pair = CBPPair(policy_cbp, value_cbp)
    _ATTACHED[policy] = pair
    return pair


def attached_cbp(model: BaseAlgorithm) -> CBPPair | None:
    """The CBP pair attached to ``model``'s current policy, or None."""
    return _ATTACHED.get(model.policy)


def detach_cbp(model: BaseAlgorithm) -> CBPPair | None:
    """Remove the hooks of ``model``'s CBP (the network keeps its weights); returns the detached pair."""
    pair = _ATTACHED.pop(model.policy, None)
    if pair is not None:
        for cbp in pair:
            cbp.remove()
    return pair


# ---------------------------------------------------------------------- saving and loading
def cbp_sidecar_path(path: str | os.PathLike[str]) -> Path:
    """Where `save_with_cbp` puts the CBP state for an SB3 save path (``run/model`` and ``run/model.zip``
    both give ``run/model.cbp.pt``, since SB3 adds ``.zip`` to a path without a suffix)."""
    path = Path(path)
    base = path.with_suffix("") if path.suffix == ".zip" else path
    return base.with_name(base.name + SIDECAR_SUFFIX)


def _hyperparameters(cbp: ContinualBackprop) -> dict[str, Any]:
    values = {name: getattr(cbp.options, name) for name in OPTION_NAMES}
    if callable(values["init"]):  # a function cannot be stored safely; load_with_cbp asks for it again
        values["init"] = None
    return values


def save_with_cbp(model: BaseAlgorithm, path: str | os.PathLike[str], cbps: CBPPair | None = None) -> Path:
    """``model.save(path)`` plus both CBP states and settings in `cbp_sidecar_path(path)` (returned).

    ``cbps`` defaults to the pair attached to ``model``. Normalisation statistics are not part of an SB3
    save: keep them with ``VecNormalize.save``.
    """
    cbps = cbps if cbps is not None else attached_cbp(model)
    if cbps is None:
        raise ValueError("no CBP attached to this model: pass cbps=attach_cbp(model, ...) or use model.save")
    model.save(path)
    sidecar = cbp_sidecar_path(path)
    torch.save({
        "format": _SIDECAR_FORMAT,
        "hyperparameters": {name: _hyperparameters(cbp) for name, cbp in zip(NETWORKS, cbps, strict=True)},
        "state": {name: cbp.state_dict() for name, cbp in zip(NETWORKS, cbps, strict=True)},
    }, sidecar)
    return sidecar


def load_with_cbp(
    path: str | os.PathLike[str],
    env: Any = None,
    *,
    algorithm: type[BaseAlgorithm] | None = None,
    load_kwargs: dict[str, Any] | None = None,
    **cbp_kwargs: Any,
) -> tuple[BaseAlgorithm, CBPPair]:
    """Load a model saved by `save_with_cbp`, attach CBP again and restore its ages and utilities.

    ``algorithm`` is the SB3 class to load with (default PPO); ``load_kwargs`` go to its ``load`` (device,
    custom_objects, ...). ``cbp_kwargs`` override the saved CBP settings; a callable ``init`` is not saved
    and must be passed again. Continue with ``model.learn(..., reset_num_timesteps=False)`` to keep the
    step count (and so the TensorBoard curves and a callback-owned friction schedule) going.
    """
    sidecar = cbp_sidecar_path(path)
    if not sidecar.is_file():
        raise FileNotFoundError(f"{sidecar} not found: {path} was not saved with save_with_cbp; load it "
                                f"with the SB3 class's load() and call attach_cbp for a fresh CBP")
    saved = torch.load(sidecar, weights_only=True)
    if saved.get("format") != _SIDECAR_FORMAT:
        raise ValueError(f"{sidecar} has format {saved.get('format')!r}; this version reads "
                         f"{_SIDECAR_FORMAT}")
    kwargs = {name: {**saved["hyperparameters"][name], **cbp_kwargs} for name in NETWORKS}
    if any(k["init"] is None for k in kwargs.values()):
        raise ValueError(f"{path} was saved with a callable CBP init, which is not stored: pass init=...")
    if algorithm is None:
        from stable_baselines3 import PPO

        algorithm = PPO
    model = algorithm.load(path, env=env, **(load_kwargs or {}))
    pair = _attach(model, kwargs["policy"], kwargs["value"])
    for name, cbp in zip(NETWORKS, pair, strict=True):
        cbp.load_state_dict(saved["state"][name])
    return model, pair


# ---------------------------------------------------------------------- the callback
FrictionSchedule = Callable[[int], float | None] | Sequence[tuple[int, float]]


def piecewise_schedule(points: Sequence[tuple[int, float]]) -> Callable[[int], float | None]:
    """``[(step, friction), ...]`` -> a function giving the friction of the last point at or before a
    step (None before the first point: the env keeps its own value)."""
    points = [(int(step), float(value)) for step, value in points]
    if not points:
        raise ValueError("friction schedule: give at least one (step, friction) pair")
    steps = [step for step, _ in points]
    if steps != sorted(steps) or len(set(steps)) != len(steps):
        raise ValueError(f"friction schedule: steps must be strictly increasing, got {steps}")
    if any(value <= 0 for _, value in points):
        raise ValueError(f"friction schedule: frictions must be positive, got {[v for _, v in points]}")

    def friction_at(step: int) -> float | None:
        index = bisect.bisect_right(steps, step) - 1
        return points[index][1] if index >= 0 else None

    return friction_at


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


__all__ = [
    "CBPPair",
    "FrictionSchedule",
    "PlasticityCallback",
    "attach_cbp",
    "attached_cbp",
    "cbp_sidecar_path",
    "detach_cbp",
    "load_with_cbp",
    "network_layers",
    "piecewise_schedule",
    "plasticity_probes",
    "save_with_cbp",
]
