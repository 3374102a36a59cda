"""PPO's hyperparameters as typed dataclasses, and the two presets.

Every field carries its documentation and its allowed values in ``metadata`` (see `setting`), so the
experiment layer can validate a YAML config and explain any key without a second copy of the rules.
The dataclass defaults are the paper's settings (Dohare et al., Nature 2024); `PRESETS` lists the
values each preset sets explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from rl_plasticity.cbp_options import INITS as CBP_INITS
from rl_plasticity.cbp_options import UTILITIES as CBP_UTILITIES


def setting(
    default: Any,
    doc: str,
    *,
    choices: tuple[str, ...] | None = None,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> Any:
    """A dataclass field with its documentation and allowed values (checked by the config loader)."""
    metadata = {
        "doc": doc,
        "choices": choices,
        "low": low,
        "high": high,
        "low_inclusive": low_inclusive,
        "high_inclusive": high_inclusive,
    }
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


ACTIVATIONS = ("relu", "tanh")
NETWORK_INITS = ("lecun", "orthogonal", "pytorch_default")
ADVANTAGE_NORMALIZATION = ("batch", "minibatch", "off")
BACKPROP_PATHS = ("auto", "manual", "compiled", "autograd")


@dataclass
class PPOSettings:
    """The PPO algorithm and its two networks."""

    rollout_steps: int = setting(2048, "env steps per env copy in one rollout; the batch is "
                                 "rollout_steps * env.num_envs", low=1)
    epochs: int = setting(10, "passes over the batch per update", low=1)
    minibatch_size: int = setting(128, "samples per gradient step; must divide the batch "
                                  "(rollout_steps * env.num_envs)", low=1)
    gamma: float = setting(0.99, "discount factor", low=0.0, high=1.0)
    gae_lambda: float = setting(0.95, "GAE lambda", low=0.0, high=1.0)
    clip_coef: float = setting(0.2, "PPO ratio clipping epsilon (also the value clipping range)",
                               low=0.0, low_inclusive=False)
    vf_coef: float = setting(1.0, "weight of the value loss, a plain mean squared error without a 1/2 "
                             "factor (CleanRL's 0.5 on its 0.5*MSE is 0.25 here)", low=0.0)
    ent_coef: float = setting(0.0, "weight of the entropy bonus", low=0.0)
    clip_vloss: bool = setting(False, "clip the value prediction to old_value +- clip_coef (CleanRL)")
    max_grad_norm: float | None = setting(None, "clip the global gradient norm to this; null = no "
                                          "clipping", low=0.0, low_inclusive=False)
    norm_adv: str = setting("batch", "standardise advantages over the whole batch (the paper), per "
                            "minibatch (CleanRL), or off", choices=ADVANTAGE_NORMALIZATION)
    bootstrap_truncation: bool = setting(True, "on a time-limit end, add gamma * V(final_obs) to the "
                                         "reward instead of treating it as terminal; false reproduces "
                                         "the paper's code")
    normalize_obs: bool = setting(False, "normalise observations by a running mean/std (checkpointed)")
    obs_clip: float = setting(10.0, "clip normalised observations to +-obs_clip", low=0.0,
                              low_inclusive=False)
    normalize_reward: bool = setting(False, "scale rewards by the running std of the discounted return")
    reward_clip: float = setting(10.0, "clip scaled rewards to +-reward_clip", low=0.0, low_inclusive=False)
    clip_actions: bool = setting(False, "clip actions to the action space before the env sees them (the "
                                 "log-probability uses the unclipped sample); the paper does not")
    hidden_sizes: list[int] = setting([256, 256], "hidden widths of the policy-mean and value MLPs", low=1)
    activation: str = setting("relu", "hidden activation of both MLPs", choices=ACTIVATIONS)
    init: str = setting("lecun", "weight init of both MLPs: lecun = U(+-sqrt(3/fan_in)) on every layer; "
                        "orthogonal = gain sqrt(2) hidden, 0.01 policy head, 1 value head; biases 0",
                        choices=NETWORK_INITS)
    log_std_init: float = setting(0.0, "initial value of the state-independent action log-std")
    backprop: str = setting("auto", "how the update computes gradients: manual = a hand-derived forward "
                            "and backward of both MLPs and the losses, without autograd (faster; "
                            "Linear+ReLU/CReLU/tanh networks, with or without LayerNorm); compiled = the "
                            "same through torch.compile (opt-in: the policy's update ~18% faster on the "
                            "paper's networks; compiling takes 10-25 s when a run starts and needs a C++ "
                            "compiler); autograd = "
                            "torch.autograd, the reference (any network); auto = manual where it applies. "
                            "All give the same results to float rounding, not bit for bit",
                            choices=BACKPROP_PATHS)


@dataclass
class OptimizerSettings:
    """The single Adam over both networks and the log-std."""

    lr: float = setting(1e-4, "learning rate", low=0.0)
    betas: tuple[float, float] = setting((0.9, 0.999), "Adam (beta1, beta2)", low=0.0, high=1.0,
                                         high_inclusive=False)
    eps: float = setting(1e-8, "Adam epsilon", low=0.0, low_inclusive=False)
    weight_decay: float = setting(0.0, "coupled L2 weight decay (torch Adam's weight_decay)", low=0.0)
    anneal_lr: bool = setting(False, "decay the learning rate linearly to 0 over run.total_steps")


@dataclass
class CBPSettings:
    """Continual backprop on both networks (one ContinualBackprop each), stepped after every update.

    Besides ``enabled``, the fields are `rl_plasticity.cbp_options.CBPOptions`' (names, defaults and valid
    values, which a test keeps equal) but ``nonlinearity``, which the PPO takes from ``ppo.activation``.
    """

    enabled: bool = setting(False, "attach CBP to the policy-mean and the value network; with "
                            "replacement_rate 0 it only tracks utilities (for the histograms)")
    replacement_rate: float = setting(1e-4, "expected fraction of eligible units replaced per update",
                                      low=0.0, high=1.0)
    maturity_threshold: int = setting(10_000, "updates a unit must live before it can be replaced", low=0)
    decay_rate: float = setting(0.99, "decay of the running utility", low=0.0, high=1.0,
                                high_inclusive=False)
    utility: str = setting("contribution", "how units are ranked", choices=CBP_UTILITIES)
    init: str = setting("lecun", "distribution of a replaced unit's incoming weights", choices=CBP_INITS)
    bias_correction: bool = setting(True, "fold a replaced unit's mean output into the next layer's bias")
    reset_optimizer_state: bool = setting(False, "zero Adam's moments of replaced units (the paper keeps "
                                          "them)")
    accumulate: bool = setting(False, "carry fractional replacements over instead of a Bernoulli draw")
    floor_when_above_one: bool = setting(False, "round as the reference RL code: Bernoulli only while the "
                                         "expected number of replacements is below 1, floor from 1 on "
                                         "(false keeps the expected number)")

    def options(self) -> dict[str, Any]:
        """These settings as `ContinualBackprop` keywords (all but ``enabled``)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "enabled"}


#: Values each preset sets; the config's own sections are applied on top.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # Dohare et al. 2024, PPO on (Slippery) Ant: the "Standard PPO" row of their table.
    "dohare": {
        "ppo": {
            "rollout_steps": 2048, "epochs": 10, "minibatch_size": 128, "gamma": 0.99, "gae_lambda": 0.95,
            "clip_coef": 0.2, "vf_coef": 1.0, "ent_coef": 0.0, "clip_vloss": False, "max_grad_norm": None,
            "norm_adv": "batch", "normalize_obs": False, "normalize_reward": False, "clip_actions": False,
            "hidden_sizes": [256, 256], "activation": "relu", "init": "lecun", "log_std_init": 0.0,
        },
        "optimizer": {"lr": 1e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0,
                      "anneal_lr": False},
    },
    # CleanRL's ppo_continuous_action.py.
    "cleanrl": {
        "ppo": {
            "rollout_steps": 2048, "epochs": 10, "minibatch_size": 64, "gamma": 0.99, "gae_lambda": 0.95,
            "clip_coef": 0.2, "vf_coef": 0.25, "ent_coef": 0.0, "clip_vloss": True, "max_grad_norm": 0.5,
            "norm_adv": "minibatch", "normalize_obs": True, "obs_clip": 10.0, "normalize_reward": True,
            "reward_clip": 10.0, "clip_actions": True, "hidden_sizes": [64, 64], "activation": "tanh",
            "init": "orthogonal", "log_std_init": 0.0,
        },
        "optimizer": {"lr": 3e-4, "betas": (0.9, 0.999), "eps": 1e-5, "weight_decay": 0.0, "anneal_lr": True},
    },
}
