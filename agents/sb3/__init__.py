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

This package needs ``stable-baselines3`` (``pip install 'rl-plasticity[sb3]'``); ``import agents`` does not.
It never imports ``envs``: the friction is driven through ``env_method("set_friction", value)`` by name.

    networks     the two networks' Linear layers and a plasticity probe on each
    attach       attach_cbp / attached_cbp / detach_cbp, attach / attached_methods / detach for the other
                 methods (ReDo, shrink and perturb, weight clipping, L2-Init, resets, Parseval, weight
                 projection), and what is attached
    persistence  save_with_cbp / load_with_cbp and the CBP sidecar file; save_with_methods /
                 load_with_methods for CBP and every other attached method
    schedule     the friction schedule the callback can own
    callback     PlasticityCallback
    vecenv       GymnasiumVecEnv: any Gymnasium vector env as an SB3 VecEnv
"""

from __future__ import annotations

try:
    import stable_baselines3  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the optional extra
    raise ImportError(
        "agents.sb3 needs Stable-Baselines3: pip install 'rl-plasticity[sb3]' (or stable-baselines3>=2.3)"
    ) from error

from agents.sb3.attach import CBPPair, attach, attach_cbp, attached_cbp, attached_methods, detach, detach_cbp
from agents.sb3.callback import PlasticityCallback
from agents.sb3.networks import network_layers, plasticity_probes
from agents.sb3.persistence import (
    SidecarError,
    cbp_sidecar_path,
    load_with_cbp,
    load_with_methods,
    methods_sidecar_path,
    save_with_cbp,
    save_with_methods,
)
from agents.sb3.schedule import FrictionSchedule, piecewise_schedule

__all__ = [
    "CBPPair",
    "SidecarError",
    "FrictionSchedule",
    "PlasticityCallback",
    "attach",
    "attach_cbp",
    "attached_cbp",
    "attached_methods",
    "cbp_sidecar_path",
    "detach",
    "detach_cbp",
    "load_with_cbp",
    "load_with_methods",
    "methods_sidecar_path",
    "network_layers",
    "piecewise_schedule",
    "plasticity_probes",
    "save_with_cbp",
    "save_with_methods",
]
