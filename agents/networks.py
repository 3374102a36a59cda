"""The policy-mean and value MLPs, their initialisations, and a fast batch-1 forward for rollouts."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from rl_plasticity.hooks import linear_layers

_ACTIVATIONS = {"relu": (nn.ReLU, torch.relu), "tanh": (nn.Tanh, torch.tanh)}
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


class ConcatenatedReLU(nn.Module):
    """CReLU (Abbas et al. 2023, after Shang et al. 2016): ``cat(relu(x), relu(-x))`` on the last axis.
    Every pre-activation reaches the next layer through one half or the other, so no unit can go dead;
    the next layer sees twice the width."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat((torch.relu(x), torch.relu(-x)), dim=-1)


def build_mlp(in_features: int, hidden_sizes: Sequence[int], out_features: int,
              activation: str, layer_norm: bool = False, crelu: bool = False) -> nn.Sequential:
    """``Linear, act, Linear, act, ..., Linear``: every Linear is a layer CBP and the probes can attach to.
    With ``layer_norm``, a LayerNorm before each hidden activation (Lyle et al. 2024), so CBP, ReDo and the
    probes still see the post-activation features. With ``crelu`` (ReLU networks only), each hidden
    activation is `ConcatenatedReLU`, so each Linear after the first takes twice its predecessor's width."""
    if crelu and activation != "relu":
        raise ValueError(f"crelu replaces ReLU; it does not apply to activation {activation!r}")
    module_type = ConcatenatedReLU if crelu else _ACTIVATIONS[activation][0]
    layers: list[nn.Module] = []
    width = in_features
    for hidden in hidden_sizes:
        layers += [nn.Linear(width, hidden), *([nn.LayerNorm(hidden)] if layer_norm else []), module_type()]
        width = 2 * hidden if crelu else hidden
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


@torch.no_grad()
def initialize(mlp: nn.Sequential, scheme: str, output_gain: float) -> None:
    """Initialise every Linear of ``mlp``; biases become 0 except under ``pytorch_default``.

    ``lecun``: U(+-sqrt(3/fan_in)) on every layer, the head included (the paper's PPO).
    ``orthogonal``: orthogonal with gain sqrt(2) on hidden layers and ``output_gain`` on the head (CleanRL).
    ``pytorch_default``: nn.Linear's own initialisation, untouched.
    """
    if scheme == "pytorch_default":
        return
    layers = linear_layers(mlp)
    for index, layer in enumerate(layers):
        if scheme == "lecun":
            bound = math.sqrt(3.0 / layer.in_features)
            layer.weight.uniform_(-bound, bound)
        elif scheme == "orthogonal":
            is_head = index == len(layers) - 1
            nn.init.orthogonal_(layer.weight, gain=output_gain if is_head else math.sqrt(2.0))
        else:
            raise ValueError(f"unknown init scheme {scheme!r}; use lecun, orthogonal or pytorch_default")
        layer.bias.zero_()


class GaussianPolicy(nn.Module):
    """A diagonal Gaussian whose mean is an MLP of the observation and whose log-std is a free parameter."""

    def __init__(self, obs_dim: int, action_dim: int, hidden_sizes: Sequence[int], activation: str,
                 init: str, log_std_init: float, layer_norm: bool = False, crelu: bool = False) -> None:
        super().__init__()
        self.mean_net = build_mlp(obs_dim, hidden_sizes, action_dim, activation, layer_norm, crelu)
        initialize(self.mean_net, init, output_gain=0.01)
        self.log_std = nn.Parameter(torch.full((action_dim,), float(log_std_init)))

    def forward(self, obs: Tensor) -> Tensor:
        return self.mean_net(obs)

    def log_prob(self, obs: Tensor, actions: Tensor) -> Tensor:
        """Log-density of ``actions`` (summed over action dimensions), one value per row of ``obs``."""
        z = (actions - self.mean_net(obs)) * torch.exp(-self.log_std)
        return -(0.5 * z.square() + self.log_std + _LOG_SQRT_2PI).sum(-1)

    def entropy(self) -> Tensor:
        """Entropy of the action distribution: the same for every state (the std does not depend on it)."""
        return (self.log_std + 0.5 + _LOG_SQRT_2PI).sum()


class ValueFunction(nn.Module):
    """State value V(s) as an MLP with one output."""

    def __init__(self, obs_dim: int, hidden_sizes: Sequence[int], activation: str, init: str,
                 layer_norm: bool = False, crelu: bool = False) -> None:
        super().__init__()
        self.net = build_mlp(obs_dim, hidden_sizes, 1, activation, layer_norm, crelu)
        initialize(self.net, init, output_gain=1.0)

    def forward(self, obs: Tensor) -> Tensor:
        return self.net(obs).squeeze(-1)


class FastForward:
    """``mlp(x)`` in numpy, for the batch-1 inference of every rollout step.

    Each torch op costs microseconds of dispatch, which at batch size 1 exceeds its arithmetic; numpy's
    is about four times cheaper. The arrays share memory with the live parameters, so optimizer steps,
    CBP replacements and ``load_state_dict`` (all in place) are seen; `refresh` re-binds them in case a
    parameter object was replaced.
    """

    def __init__(self, mlp: nn.Sequential, activation: str) -> None:
        self.mlp = mlp
        crelu = any(isinstance(m, ConcatenatedReLU) for m in mlp)
        self.activation = _crelu if crelu else {"relu": _relu_inplace, "tanh": _tanh_inplace}[activation]
        self.refresh()

    def refresh(self) -> None:
        self.params = [(layer.weight.detach().numpy().T, layer.bias.detach().numpy())
                       for layer in linear_layers(self.mlp)]
        norms = [m for m in self.mlp if isinstance(m, nn.LayerNorm)]
        self.norms = [(m.normalized_shape, _detached(m.weight), _detached(m.bias), m.eps)
                      for m in norms] or None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        *hidden, (weight_t, bias) = self.params
        x = x.astype(weight_t.dtype, copy=False)  # as the module would see it; torch's kernels need it
        for k, (w_t, b) in enumerate(hidden):
            x = x @ w_t + b
            if self.norms is not None:
                # torch's one kernel on the array's memory: at batch 1 a numpy LayerNorm is about ten
                # calls, each costing more than its arithmetic
                x = torch.native_layer_norm(torch.from_numpy(x), *self.norms[k])[0].numpy()
            x = self.activation(x)
        return x @ weight_t + bias


def _detached(parameter: nn.Parameter | None) -> Tensor | None:
    return None if parameter is None else parameter.detach()


def _relu_inplace(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0, out=x)


def _crelu(x: np.ndarray) -> np.ndarray:
    return np.concatenate((np.maximum(x, 0.0), np.maximum(-x, 0.0)), axis=-1)


def _tanh_inplace(x: np.ndarray) -> np.ndarray:
    return np.tanh(x, out=x)
