"""PPO's losses and their gradients without autograd: a hand-derived forward and backward pass.

At the paper's size (2x256 networks, minibatches of 128) a minibatch step pays per operator call as much
as per FLOP, and autograd adds a graph, its bookkeeping and a ``zero_grad`` to every one. Here each
network's forward keeps its activations, the losses' derivatives are written out, and the backward
writes every gradient straight into the parameters' ``.grad`` buffers (so nothing needs zeroing).
`agents.ppo.PPO` uses this path by default where it applies (``ppo.backprop``); autograd stays the
reference, and ``tests/test_manual_backprop.py`` checks that both give the same losses, gradients,
CBP picks and parameters.

What it applies to: MLPs that are ``Linear, act, ..., Linear`` with ReLU or tanh (no LayerNorm, no CReLU)
and no forward hooks other than pre-hooks on the Linear layers. Those pre-hooks (CBP's and ReDo's
feature capture, the probes') are called with each hidden feature as ``module(x)`` would call them, so
the plasticity methods see the same batches on either path.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from agents.networks import _LOG_SQRT_2PI, ConcatenatedReLU
from rl_plasticity.hooks import linear_layers

#: the hidden activations each ``ppo.activation`` builds (CReLU: `agents.networks.ConcatenatedReLU`)
_ACTIVATION_TYPES = {"relu": (nn.ReLU, ConcatenatedReLU), "tanh": (nn.Tanh,)}


def unsupported(mlp: nn.Sequential, activation: str, owner: nn.Module | None = None) -> str | None:
    """Why `ManualMLP` cannot stand in for ``mlp(x)`` and its backward, or ``None`` if it can; ``owner``
    is the module whose forward calls ``mlp`` (its hooks would not fire either)."""
    allowed = _ACTIVATION_TYPES.get(activation)
    if allowed is None:
        return f"activation {activation!r} (only relu and tanh)"
    names = " or ".join(kind.__name__ for kind in allowed)
    modules = list(mlp)
    for index, module in enumerate(modules):
        if module._forward_hooks or (not isinstance(module, nn.Linear) and module._forward_pre_hooks):
            return f"a forward hook on {type(module).__name__} at position {index}"
    # The layout: (Linear, [LayerNorm], activation)*, Linear
    index = 0
    while True:
        if index == len(modules) or type(modules[index]) is not nn.Linear:
            return ("an MLP that does not end in a Linear layer" if index == len(modules) else
                    f"{type(modules[index]).__name__} at position {index} (expected a Linear)")
        if modules[index].bias is None:
            return f"a Linear without a bias at position {index}"
        index += 1
        if index == len(modules):
            break
        if type(modules[index]) is nn.LayerNorm:
            if len(modules[index].normalized_shape) != 1:
                return f"a LayerNorm over more than the last axis at position {index}"
            index += 1
        if index == len(modules) or type(modules[index]) not in allowed:
            found = type(modules[index]).__name__ if index < len(modules) else "the end"
            return f"{found} at position {index} (only Linear, LayerNorm and {names})"
        index += 1
    for module, what in ((mlp, "the MLP itself"), (owner, type(owner).__name__)):
        if module is not None and (module._forward_hooks or module._forward_pre_hooks):
            return f"a forward hook on {what}"
    if nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks:
        return "a global module forward hook"
    return None


def manual_backprop_for(settings: Any, policy: nn.Module, value: nn.Module) -> ManualPPOLoss | None:
    """The hand-derived gradients for these networks unless ``settings.backprop`` or the networks rule
    them out (ValueError if ``manual`` was asked for where it does not apply); ``None`` means autograd."""
    problem = next(filter(None, (unsupported(net, settings.activation, owner)
                                 for net, owner in ((policy.mean_net, policy), (value.net, value)))), None)
    if settings.backprop == "manual" and problem:
        raise ValueError(f"ppo.backprop manual does not apply here: {problem}; use auto or autograd")
    if settings.backprop == "autograd" or problem:
        return None
    return ManualPPOLoss(policy, value, settings.activation, settings)


def continue_backprop(saved_path: str, current: ManualPPOLoss | None, settings: Any, policy: nn.Module,
                      value: nn.Module) -> ManualPPOLoss | None:
    """The gradient path to continue a state computed on ``saved_path`` (``"manual"`` or ``"autograd"``):
    that same path, so that a resume is bit-identical. Under ``backprop: auto`` it may be autograd where
    manual applies; an explicit other path is a ValueError rather than a silent switch."""
    if saved_path == ("autograd" if current is None else "manual"):
        return current
    if settings.backprop != "auto":
        raise ValueError(f"the state was computed with {saved_path} gradients; continue it with "
                         f"ppo.backprop {saved_path} or auto")
    return manual_backprop_for(replace(settings, backprop=saved_path), policy, value)


class ManualMLP:
    """``mlp(x)`` and the gradients of its parameters for a given output gradient, by hand.

    ``forward`` returns the output and what ``backward`` needs (each module's input, and LayerNorm's
    statistics); ``backward(grad_out, saved)`` writes ``d loss / d parameter`` into each parameter's
    ``.grad``. LayerNorm's forward and backward are the kernels autograd itself calls
    (``native_layer_norm`` and its backward).
    """

    def __init__(self, mlp: nn.Sequential, activation: str, owner: nn.Module | None = None) -> None:
        problem = unsupported(mlp, activation, owner)
        if problem:
            raise ValueError(f"manual backprop does not apply to this network: {problem}; use autograd")
        self.mlp, self.owner, self.modules = mlp, owner, list(mlp)
        self.layers = linear_layers(mlp)
        self.activation = activation

    def forward(self, x: Tensor) -> tuple[Tensor, list[Any]]:
        """The output and, per module, what its backward needs (its input; LayerNorm's mean and rstd)."""
        saved: list[Any] = []
        for module in self.modules:
            kind = type(module)
            if kind is nn.Linear:
                for hook in module._forward_pre_hooks.values():
                    if hook(module, (x,)) is not None:
                        raise ValueError("a forward pre-hook that changes its input needs autograd backprop")
                saved.append(x)
                x = torch.addmm(module.bias.detach(), x, module.weight.detach().t())
            elif kind is nn.LayerNorm:
                weight = None if module.weight is None else module.weight.detach()
                bias = None if module.bias is None else module.bias.detach()
                normalised, mean, rstd = torch.native_layer_norm(x, module.normalized_shape, weight, bias,
                                                                 module.eps)
                saved.append((x, mean, rstd))
                x = normalised
            elif kind is ConcatenatedReLU:
                x = torch.cat((torch.relu(x), torch.relu(-x)), dim=-1)
                saved.append(x)
            else:  # ReLU, Tanh: in place on a tensor only this forward holds; the backward reads the output
                x = x.relu_() if kind is nn.ReLU else x.tanh_()
                saved.append(x)
        return x, saved

    def backward(self, grad_out: Tensor, saved: list[Any]) -> None:
        grad = grad_out
        for index in range(len(self.modules) - 1, -1, -1):
            module, kind = self.modules[index], type(self.modules[index])
            if kind is nn.Linear:
                weight, bias, inputs = module.weight, module.bias, saved[index]
                if weight.grad is None:
                    weight.grad = torch.empty_like(weight)
                if bias.grad is None:
                    bias.grad = torch.empty_like(bias)
                torch.mm(grad.t(), inputs, out=weight.grad)
                torch.sum(grad, 0, out=bias.grad)
                if index == 0:
                    break
                grad = torch.mm(grad, weight.detach())
            elif kind is nn.LayerNorm:
                inputs, mean, rstd = saved[index]
                weight = None if module.weight is None else module.weight.detach()
                bias = None if module.bias is None else module.bias.detach()
                grad, grad_weight, grad_bias = torch.ops.aten.native_layer_norm_backward(
                    grad, inputs, module.normalized_shape, mean, rstd, weight, bias,
                    [True, weight is not None, bias is not None])
                if weight is not None:
                    module.weight.grad = grad_weight
                if bias is not None:
                    module.bias.grad = grad_bias
            elif kind is ConcatenatedReLU:
                out = saved[index]
                half = out.shape[-1] // 2
                # d/dx relu(x) on the first half, d/dx relu(-x) = -(x < 0) on the second
                grad = torch.ops.aten.threshold_backward(grad[:, :half], out[:, :half], 0.0).sub_(
                    torch.ops.aten.threshold_backward(grad[:, half:], out[:, half:], 0.0))
            elif kind is nn.ReLU:
                grad = torch.ops.aten.threshold_backward(grad, saved[index], 0.0)
            else:
                grad = torch.ops.aten.tanh_backward(grad, saved[index])


def _maximum_gradient(first: Tensor, second: Tensor) -> tuple[Tensor, Tensor]:
    """Weights of ``d max(a, b)`` on ``a`` and on ``b``, as torch's ``maximum`` splits them (half each
    on a tie)."""
    tie = (first == second).float().mul_(0.5)
    return (first > second).float().add_(tie), (first < second).float().add_(tie)


class ManualPPOLoss:
    """PPO's clipped policy loss and value loss with hand-derived gradients for both networks.

    The same formulas as `agents.ppo.PPO._policy_backward` and `_value_backward` (and the same returned
    statistics); each writes the gradients of its network and, for the policy, of the log-std.
    """

    def __init__(self, policy: nn.Module, value: nn.Module, activation: str, settings: Any) -> None:
        self.policy_mean = ManualMLP(policy.mean_net, activation, policy)
        self.value = ManualMLP(value.net, activation, value)
        self.log_std = policy.log_std
        self.settings = settings

    def check(self) -> None:
        """RuntimeError if a hook added since construction (a forward hook, say) rules this path out."""
        for name, mlp in (("policy", self.policy_mean), ("value", self.value)):
            problem = unsupported(mlp.mlp, mlp.activation, mlp.owner)
            if problem:
                raise RuntimeError(f"manual backprop no longer applies to the {name} network: {problem}; "
                                   f"build the agent with ppo.backprop: autograd")

    def policy_backward(self, obs: Tensor, actions: Tensor, old_logprobs: Tensor,
                        advantages: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        s = self.settings
        if s.norm_adv == "minibatch":
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        log_std = self.log_std.detach()
        mean, inputs = self.policy_mean.forward(obs)
        inv_std = torch.exp(-log_std)
        z = (actions - mean) * inv_std
        log_prob = -(0.5 * z.square() + log_std + _LOG_SQRT_2PI).sum(-1)
        log_ratio = log_prob - old_logprobs
        ratio = log_ratio.exp()
        unclipped = -advantages * ratio
        clipped = -advantages * ratio.clamp(1.0 - s.clip_coef, 1.0 + s.clip_coef)
        policy_loss = torch.max(unclipped, clipped).mean()
        entropy = (log_std + 0.5 + _LOG_SQRT_2PI).sum()

        # d loss / d ratio through both branches of the maximum (the clamp passes gradient inside its range)
        on_unclipped, on_clipped = _maximum_gradient(unclipped, clipped)
        in_range = (ratio >= 1.0 - s.clip_coef) & (ratio <= 1.0 + s.clip_coef)
        weight = on_unclipped.addcmul_(on_clipped, in_range.float())
        grad_log_prob = weight.mul_(advantages).mul_(ratio).mul_(-1.0 / len(ratio))
        # log_prob = -sum(z^2 / 2 + log_std): d/d mean = z / std, d/d log_std = z^2 - 1
        grad_mean = z * inv_std * grad_log_prob[:, None]
        grad_log_std = (z.square() - 1.0).t() @ grad_log_prob - s.ent_coef
        if self.log_std.grad is None:
            self.log_std.grad = torch.empty_like(self.log_std)
        self.log_std.grad.copy_(grad_log_std)
        self.policy_mean.backward(grad_mean, inputs)
        approx_kl = ((ratio - 1.0) - log_ratio).mean()
        clipfrac = ((ratio - 1.0).abs() > s.clip_coef).float().mean()
        return policy_loss, entropy, approx_kl, clipfrac

    def value_backward(self, obs: Tensor, old_values: Tensor, returns: Tensor) -> Tensor:
        s = self.settings
        out, inputs = self.value.forward(obs)
        values = out.squeeze(-1)
        error = values - returns
        value_loss = error.square()
        scale = 2.0 * s.vf_coef / len(values)
        if s.clip_vloss:
            change = values - old_values
            clipped_error = old_values + change.clamp(-s.clip_coef, s.clip_coef) - returns
            clipped_loss = clipped_error.square()
            on_plain, on_clipped = _maximum_gradient(value_loss, clipped_loss)
            in_range = (change >= -s.clip_coef) & (change <= s.clip_coef)
            grad_values = on_plain.mul_(error).addcmul_(on_clipped.mul_(clipped_error), in_range.float())
            value_loss = torch.max(value_loss, clipped_loss)
            grad_values.mul_(scale)
        else:
            grad_values = error * scale
        self.value.backward(grad_values[:, None], inputs)
        return value_loss.mean()
