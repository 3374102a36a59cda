"""What a PPO checkpoint holds (`agents.ppo.PPO.state_dict`), and restoring one into an agent built with
the same settings (a state of other settings is refused, naming the setting)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from agents.manual_backprop import continue_backprop

if TYPE_CHECKING:
    from agents.ppo import PPO


def agent_state(agent: PPO) -> dict[str, Any]:
    """Everything needed to continue training: networks, optimizer, CBP, methods, normalisers, RNG,
    counters, and the gradient path that computed them."""
    return {
        "policy": agent.policy.state_dict(),
        "value": agent.value.state_dict(),
        "optimizer": agent.optimizer.state_dict(),
        "cbp_policy": agent.cbp_policy.state_dict() if agent.cbp_policy else None,
        "cbp_value": agent.cbp_value.state_dict() if agent.cbp_value else None,
        "methods": {name: {net: m.state_dict() for net, m in nets.items()}
                    for name, nets in agent.methods.items()},
        "obs_normalizer": agent.obs_normalizer.state_dict() if agent.obs_normalizer else None,
        "reward_scaler": agent.reward_scaler.state_dict() if agent.reward_scaler else None,
        "generator": agent.generator.get_state(),
        "global_step": agent.global_step,
        "updates_done": agent.updates_done,
        "episode_return": agent._episode_return.copy(),
        "episode_length": agent._episode_length.copy(),
        "next_obs": None if agent._next_obs is None else np.array(agent._next_obs),
        "backprop": "autograd" if agent.manual_backprop is None else agent.manual_backprop.path,
    }


def load_agent_state(agent: PPO, state: dict[str, Any]) -> None:
    """Restore `agent_state` into ``agent`` (ValueError if it was saved under other settings)."""
    for name in ("cbp_policy", "cbp_value", "obs_normalizer", "reward_scaler"):
        if (state[name] is None) != (getattr(agent, name) is None):
            saved = "without" if state[name] is None else "with"
            raise ValueError(f"the state was saved {saved} {name}; build the agent with the same "
                             f"settings")
    saved_methods = state.get("methods", {})  # checkpoints from before the methods have none
    if _describe(saved_methods) != _describe(agent.methods):
        raise ValueError(f"the state was saved with methods {_describe(saved_methods)}, this agent has "
                         f"{_describe(agent.methods)}; build the agent with the same methods settings")
    # States from before the choice were computed by autograd.
    agent.manual_backprop = continue_backprop(state.get("backprop", "autograd"), agent.manual_backprop,
                                              agent.settings, agent.policy, agent.value,
                                              agent.optimizer.gradient_buffers())
    agent.policy.load_state_dict(state["policy"])
    agent.value.load_state_dict(state["value"])
    agent.optimizer.load_state_dict(state["optimizer"])
    for name in ("cbp_policy", "cbp_value", "obs_normalizer", "reward_scaler"):
        if state[name] is not None:
            getattr(agent, name).load_state_dict(state[name])
    for name, nets in agent.methods.items():
        for net, method in nets.items():
            method.load_state_dict(saved_methods[name][net])
    agent.generator.set_state(state["generator"])
    agent.global_step = int(state["global_step"])
    agent.updates_done = int(state["updates_done"])
    agent._episode_return = np.array(state["episode_return"], dtype=np.float64)
    agent._episode_length = np.array(state["episode_length"], dtype=np.int64)
    agent._next_obs = None if state["next_obs"] is None else np.array(state["next_obs"])


def _describe(methods: dict[str, Any]) -> str:
    described = [f"{name} on {'+'.join(sorted(nets))}" for name, nets in sorted(methods.items())]
    return ", ".join(described) or "none"
