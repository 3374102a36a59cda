"""The ``methods:`` config section: one sub-section per plasticity method besides CBP (``cbp:`` keeps its
own section), each with ``enabled``, ``networks`` and the method's options; and `attach_methods`, which
the PPO uses to put the enabled ones on its networks.

The option names are those of the core's ``Options`` dataclass of each method (`rl_plasticity.METHODS`);
a test keeps the two equal. ``nonlinearity`` is not a key: the PPO passes ``ppo.activation``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import torch
from torch import nn

from agents.settings import setting
from rl_plasticity import METHODS, PlasticityMethod
from rl_plasticity.cbp_options import INITS
from rl_plasticity.hooks import linear_layers
from rl_plasticity.shrink_perturb import TOWARDS

NETWORK_CHOICES = ("both", "policy", "value")


def _enabled(what: str) -> Any:
    return setting(False, f"{what}, on the networks `networks` names")


def _networks() -> Any:
    return setting("both", "the networks it acts on: both, policy (its mean network) or value",
                   choices=NETWORK_CHOICES)


@dataclass
class MethodSettings:
    """What every method's section has besides its options."""

    architecture: ClassVar[bool] = False  # True: it shapes the networks instead of attaching to them

    def options(self) -> dict[str, Any]:
        """The method's keywords: every field but ``enabled`` and ``networks``."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("enabled", "networks")}

    def on(self, network: str) -> bool:
        return self.enabled and self.networks in ("both", network)


@dataclass
class ReDoSettings(MethodSettings):
    enabled: bool = _enabled("ReDo (Sokar et al. 2023): re-initialise the tau-dormant units every "
                             "`every` updates")
    networks: str = _networks()
    tau: float = setting(0.025, "a unit is dormant when mean|h_i| / mean_j mean|h_j| <= tau (0: exactly "
                         "inactive)", low=0.0, high=1.0, high_inclusive=False)
    every: int = setting(1000, "updates (minibatch steps) between two checks", low=1)
    init: str = setting("lecun", "distribution of a re-initialised unit's incoming weights", choices=INITS)
    reset_optimizer_state: bool = setting(True, "zero Adam's moments of re-initialised units (as ReDo's "
                                          "code does)")
    restart_bias_correction: bool = setting(True, "with reset_optimizer_state, bias-correct the zeroed "
                                            "entries for their own age since the reset, as a fresh Adam "
                                            "would (a correction per update while they are young); false: "
                                            "by Adam's step count, as ReDo's code")


@dataclass
class ShrinkPerturbSettings(MethodSettings):
    enabled: bool = _enabled("shrink and perturb (Ash & Adams 2020): theta <- shrink * theta + "
                             "perturb * noise every `every` updates")
    networks: str = _networks()
    shrink: float = setting(0.999, "factor every parameter is multiplied by", low=0.0, high=1.0,
                            low_inclusive=False)
    perturb: float = setting(0.005, "weight of the noise added", low=0.0)
    every: int = setting(1000, "updates between two applications (1: Plasticine's soft per-step form)",
                         low=1)
    toward: str = setting("fresh", "noise: a fresh init draw (the paper) or the initial parameters "
                          "(Plasticine's soft variant)", choices=TOWARDS)
    init: str = setting("lecun", "distribution of a fresh draw", choices=INITS)


@dataclass
class WeightClippingSettings(MethodSettings):
    enabled: bool = _enabled("weight clipping (Elsayed et al. 2024): clamp every weight to "
                             "+-kappa times its init's bound after each update")
    networks: str = _networks()
    kappa: float = setting(1.0, "the clipping range in units of the init's bound", low=0.0,
                           low_inclusive=False)
    skip_last: bool = setting(False, "leave the output layer unclipped")
    init: str = setting("pytorch_default", "the init whose uniform bound is the unit: pytorch_default "
                        "(1/sqrt(fan_in), the reference code's) or the networks' own (lecun for "
                        "ppo.init=lecun)", choices=INITS)


@dataclass
class L2InitSettings(MethodSettings):
    enabled: bool = _enabled("L2-Init (Kumar et al. 2023): add strength * ||theta - theta_0||^2 to the "
                             "loss")
    networks: str = _networks()
    strength: float = setting(0.01, "the penalty's coefficient", low=0.0)


@dataclass
class ResetSettings(MethodSettings):
    enabled: bool = _enabled("resets (Nikishin et al. 2022): re-initialise the last `last_layers` layers "
                             "every `every` updates and/or at each change of the physics")
    networks: str = _networks()
    last_layers: int = setting(1, "layers reset, counted from the output (0: the whole network)", low=0)
    every: int = setting(200_000, "updates between two resets (0: only at changes, with at_change)", low=0)
    at_change: bool = setting(False, "also reset whenever the drifting physics parameter changes (at the "
                              "next rollout boundary)")
    init: str = setting("lecun", "distribution of the redrawn weights", choices=INITS)

    def options(self) -> dict[str, Any]:
        return {key: value for key, value in super().options().items() if key != "at_change"}


@dataclass
class ParsevalSettings(MethodSettings):
    enabled: bool = _enabled("Parseval regularisation (Chung et al. 2024): add strength * "
                             "||W W^T - scale I||_F^2 of every hidden layer to the loss")
    networks: str = _networks()
    strength: float = setting(1e-3, "the penalty's coefficient", low=0.0)
    scale: float = setting(1.0, "the target W W^T = scale * I", low=0.0, low_inclusive=False)
    include_last: bool = setting(False, "regularise the output layer too")


@dataclass
class WeightProjectionSettings(MethodSettings):
    enabled: bool = _enabled("weight projection, NaP's second half (Lyle et al. 2024): rescale every "
                             "weight matrix to its initial norm every `every` updates; with "
                             "methods.layer_norm it is NaP")
    networks: str = _networks()
    every: int = setting(1, "updates between two projections", low=1)


@dataclass
class LayerNormSettings(MethodSettings):
    """Not a hooked method but the networks' architecture: the PPO builds them with it."""

    architecture = True
    enabled: bool = _enabled("LayerNorm (Lyle et al. 2024) before each hidden activation")
    networks: str = _networks()


@dataclass
class CReLUSettings(MethodSettings):
    """Not a hooked method but the networks' architecture: the PPO builds them with it."""

    architecture = True
    enabled: bool = _enabled("CReLU (Abbas et al. 2023) as each hidden activation: cat(relu(x), relu(-x)), "
                             "so the next layer sees twice the width (ppo.activation relu only; not with "
                             "CBP or ReDo, whose units would feed two features each)")
    networks: str = _networks()


@dataclass
class MethodsSettings:
    """Every method's section, by the method's name in `rl_plasticity.METHODS`."""

    redo: ReDoSettings = field(default_factory=ReDoSettings)
    shrink_perturb: ShrinkPerturbSettings = field(default_factory=ShrinkPerturbSettings)
    weight_clipping: WeightClippingSettings = field(default_factory=WeightClippingSettings)
    l2_init: L2InitSettings = field(default_factory=L2InitSettings)
    reset: ResetSettings = field(default_factory=ResetSettings)
    parseval: ParsevalSettings = field(default_factory=ParsevalSettings)
    weight_projection: WeightProjectionSettings = field(default_factory=WeightProjectionSettings)
    layer_norm: LayerNormSettings = field(default_factory=LayerNormSettings)
    crelu: CReLUSettings = field(default_factory=CReLUSettings)

    def conflict(self, activation: str, cbp_enabled: bool) -> str | None:
        """Why these settings cannot build or train the networks, naming the fix, or None."""
        if not self.crelu.enabled:
            return None
        if activation != "relu":
            return (f"methods.crelu replaces ReLU but ppo.activation = {activation}; set ppo.activation: "
                    f"relu or disable methods.crelu")
        on_units = [f"methods.{name}" for name, settings in self.enabled().items()
                    if METHODS[name].acts_on_units and _overlap(settings, self.crelu)]
        on_units += ["cbp"] if cbp_enabled else []
        if on_units:
            return (f"methods.crelu does not combine with {' and '.join(on_units)}: they re-initialise "
                    f"hidden units, and a CReLU unit feeds two features; disable one of them")
        return None

    @classmethod
    def architectures(cls) -> list[str]:
        """The sections that shape the networks (LayerNorm, CReLU) rather than attach to them."""
        return [f.name for f in fields(cls) if f.default_factory().architecture]

    def enabled(self) -> dict[str, MethodSettings]:
        """The enabled methods that attach by hooks (not the architecture options such as layer_norm)."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name).enabled and not getattr(self, f.name).architecture}


def _overlap(a: MethodSettings, b: MethodSettings) -> bool:
    return any(a.on(net) and b.on(net) for net in ("policy", "value"))


def attach_methods(methods: MethodsSettings | None, networks: dict[str, nn.Module],
                   optimizers: dict[str, torch.optim.Optimizer], activation: str, seed: int,
                   ) -> dict[str, dict[str, PlasticityMethod]]:
    """Every enabled method on the Linear layers of each network it names, hooked to that network's
    optimizer: ``{name: {net: method}}``. Each gets its own generator, seeded from ``seed``, the method
    and the network."""
    attached: dict[str, dict[str, PlasticityMethod]] = {}
    for index, (name, settings) in enumerate((methods.enabled() if methods else {}).items()):
        method = METHODS[name]
        options = settings.options()
        if "nonlinearity" in {f.name for f in fields(method.Options)}:
            options["nonlinearity"] = activation
        attached[name] = {
            net: method(linear_layers(mlp), optimizers[net], **options,
                        generator=torch.Generator().manual_seed(seed * 1000 + 10 * (index + 1) + k))
            for k, (net, mlp) in enumerate(networks.items()) if settings.on(net)
        }
    return attached


__all__ = ["NETWORK_CHOICES", "CReLUSettings", "L2InitSettings", "LayerNormSettings", "MethodSettings",
           "MethodsSettings",
           "ParsevalSettings", "ReDoSettings", "ResetSettings", "ShrinkPerturbSettings",
           "WeightClippingSettings", "WeightProjectionSettings", "attach_methods"]
