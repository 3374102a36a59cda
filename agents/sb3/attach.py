"""Attaching one ContinualBackprop (or any other plasticity method) to each network of an SB3 model,
and finding it again."""

from __future__ import annotations

import dataclasses
import weakref
from typing import Any, NamedTuple

from stable_baselines3.common.base_class import BaseAlgorithm
from torch import nn

from agents.method_settings import MethodsSettings
from agents.sb3.networks import NETWORKS, network_layers
from rl_plasticity import METHODS, ContinualBackprop, PlasticityMethod


class CBPPair(NamedTuple):
    """The two `ContinualBackprop` objects of one SB3 policy; unpacks as ``policy_cbp, value_cbp``."""

    policy: ContinualBackprop
    value: ContinualBackprop


# Keyed by the policy module, so a model rebuilt by PPO.load never inherits a stale attachment.
_ATTACHED: weakref.WeakKeyDictionary[nn.Module, CBPPair] = weakref.WeakKeyDictionary()


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
    return attach_pair(model, cbp_kwargs, cbp_kwargs)


def attach_pair(model: BaseAlgorithm, policy_kwargs: dict[str, Any], value_kwargs: dict[str, Any]) -> CBPPair:
    """`attach_cbp` with each network's own options (as `load_with_cbp` restores them)."""
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


# ---------------------------------------------------------------------- the other methods
_METHODS: weakref.WeakKeyDictionary[nn.Module, dict[str, dict[str, PlasticityMethod]]] = \
    weakref.WeakKeyDictionary()


def attach(model: BaseAlgorithm, method: str, networks: tuple[str, ...] = NETWORKS,
           **options: Any) -> dict[str, PlasticityMethod]:
    """`attach_cbp`'s counterpart for every other method in `rl_plasticity.METHODS` (``"redo"``,
    ``"shrink_perturb"``, ``"weight_clipping"``, ``"l2_init"``, ``"reset"``, ``"parseval"``,
    ``"weight_projection"``): one instance per network in ``networks``,
    hooked to ``policy.optimizer``. Returns ``{network: method}``; `PlasticityCallback` logs their
    statistics as ``methods/<method>/<network>/...``."""
    if method == "cbp":
        raise ValueError("CBP has its own attach: attach_cbp(model, ...)")
    if method in MethodsSettings.architectures():
        raise ValueError(f"{method} is an architecture, not a method that attaches to a built network: "
                         f"build the SB3 policy with it (our PPO does so with methods.{method}.enabled)")
    if method not in METHODS:
        others = ", ".join(sorted(set(METHODS) - {"cbp"}))
        raise ValueError(f"unknown method {method!r}; the methods are {others} (and cbp, through attach_cbp)")
    unknown = sorted(set(networks) - set(NETWORKS))
    if unknown or not networks:
        raise ValueError(f"networks must name some of {', '.join(NETWORKS)}; got {networks!r}")
    registry = _METHODS.setdefault(model.policy, {})
    if method in registry:
        raise ValueError(f"this model already has {method} attached; call detach(model, {method!r}) first")
    cls = METHODS[method]
    if "nonlinearity" in {f.name for f in dataclasses.fields(cls.Options)}:
        activation = getattr(model.policy, "activation_fn", nn.ReLU)
        options.setdefault("nonlinearity", "tanh" if activation is nn.Tanh else "relu")
    layers = dict(zip(NETWORKS, network_layers(model.policy), strict=True))
    attached: dict[str, PlasticityMethod] = {}
    try:
        for network in networks:
            attached[network] = cls(layers[network], model.policy.optimizer, **options)
    except Exception:
        for done in attached.values():
            done.remove()
        raise
    registry[method] = attached
    return attached


def attached_methods(model: BaseAlgorithm) -> dict[str, dict[str, PlasticityMethod]]:
    """``{method: {network: instance}}`` of what `attach` put on ``model``'s current policy."""
    return dict(_METHODS.get(model.policy, {}))


def detach(model: BaseAlgorithm, method: str) -> dict[str, PlasticityMethod] | None:
    """Remove ``method``'s hooks from ``model`` (the networks keep their weights); returns what it removed."""
    removed = _METHODS.get(model.policy, {}).pop(method, None)
    for instance in (removed or {}).values():
        instance.remove()
    return removed
