"""An SB3 ActorCriticPolicy's two networks: their Linear layers, and a plasticity probe on each."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stable_baselines3.common.preprocessing import preprocess_obs
from torch import Tensor, nn

from rl_plasticity import PlasticityProbe, tags
from rl_plasticity.hooks import linear_layers

NETWORKS = tags.NETWORKS
_SUPPORTED = ("attach_cbp supports SB3's ActorCriticPolicy (PPO/A2C 'MlpPolicy') with separate policy and "
              "value MLPs of at least one hidden layer each, e.g. net_arch=[64, 64] or "
              "net_arch=dict(pi=[256, 256], vf=[256, 256]) (SB3 >= 1.8), and a features extractor without "
              "nn.Linear layers (the default FlattenExtractor)")



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
