"""PPO's losses and their gradients without autograd: a hand-derived forward and backward pass.

At the paper's size (2x256 networks, minibatches of 128) a minibatch step pays per operator call as much
as per FLOP, and autograd adds a graph, its bookkeeping and a ``zero_grad`` to every one. Here each
network's forward keeps its activations, the losses' derivatives are written out (in numpy, on the
minibatch's small arrays), and the backward's gradients become the parameters' ``.grad`` (so nothing
needs zeroing). `agents.ppo.PPO` uses this path by default where it applies (``ppo.backprop``);
``ppo.backprop: compiled`` runs the same arithmetic through ``torch.compile``. Autograd stays the
reference, and ``tests/test_manual_backprop.py`` checks that every path gives the same losses, gradients,
CBP picks and parameters.

What it applies to: MLPs of ``Linear, [LayerNorm], activation`` blocks and a final Linear, with ReLU,
CReLU or tanh, and no forward hooks other than pre-hooks on the Linear layers. Those pre-hooks (CBP's and
ReDo's feature capture, the probes') are called with each Linear's input as ``module(x)`` would call them,
so the plasticity methods see the same batches on every path.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
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


def manual_backprop_for(settings: Any, policy: nn.Module, value: nn.Module,
                        gradients: dict[nn.Parameter, Tensor] | None = None) -> ManualPPOLoss | None:
    """The hand-derived gradients for these networks unless ``settings.backprop`` or the networks rule
    them out (ValueError if ``manual`` was asked for where it does not apply); ``None`` means autograd.
    ``gradients`` maps parameters to the tensors their gradients are written into (flat buffers' views,
    `agents.flat_storage`); the others get new tensors."""
    problem = next(filter(None, (unsupported(net, settings.activation, owner)
                                 for net, owner in ((policy.mean_net, policy), (value.net, value)))), None)
    if settings.backprop in ("manual", "compiled") and problem:
        raise ValueError(f"ppo.backprop {settings.backprop} does not apply here: {problem}; use auto or "
                         f"autograd")
    if settings.backprop == "autograd" or problem:
        return None
    return ManualPPOLoss(policy, value, settings.activation, settings,
                         compiled=settings.backprop == "compiled", gradients=gradients)


def compile_unavailable() -> str | None:
    """Why ``ppo.backprop: compiled`` cannot work here (torch.compile's CPU backend builds C++ kernels
    and finds no working C++ compiler), or ``None``."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler
    except ImportError:  # another torch layout: torch.compile reports for itself
        return None
    try:
        get_cpp_compiler()
    except Exception as error:  # noqa: BLE001  (torch raises its own InvalidCxxCompiler)
        return f"torch.compile found no working C++ compiler ({str(error).splitlines()[0]})"
    return None


def continue_backprop(saved_path: str, current: ManualPPOLoss | None, settings: Any, policy: nn.Module,
                      value: nn.Module,
                      gradients: dict[nn.Parameter, Tensor] | None = None) -> ManualPPOLoss | None:
    """The gradient path to continue a state computed on ``saved_path`` (``"manual"``, ``"compiled"`` or
    ``"autograd"``): that same path, so that a resume is bit-identical. Under ``backprop: auto`` it may be
    another than auto would pick; an explicit other path is a ValueError rather than a silent switch."""
    if saved_path == ("autograd" if current is None else current.path):
        return current
    if settings.backprop != "auto":
        raise ValueError(f"the state was computed with {saved_path} gradients; continue it with "
                         f"ppo.backprop {saved_path} or auto")
    return manual_backprop_for(replace(settings, backprop=saved_path), policy, value, gradients)


class ManualMLP:
    """``mlp(x)`` and the gradients of its parameters for a given output gradient, by hand.

    Both passes are pure functions of tensors, so that ``torch.compile`` can trace them: ``forward(x,
    tensors)`` returns the output and what ``backward`` needs (each module's input, and LayerNorm's
    statistics); ``backward(grad_out, saved, tensors)`` returns ``d loss / d parameter`` for each entry of
    ``tensors`` (`tensors` gives them, detached, in the order of `parameters`). LayerNorm's forward and
    backward are the kernels autograd itself calls (``native_layer_norm`` and its backward). The side
    effects ``module(x)`` would have, its Linear layers' forward pre-hooks, are `call_pre_hooks`'.
    ``gradients`` maps parameters to the tensors `backward` may write their gradients into (``out``).
    """

    def __init__(self, mlp: nn.Sequential, activation: str, owner: nn.Module | None = None,
                 gradients: dict[nn.Parameter, Tensor] | None = None) -> None:
        problem = unsupported(mlp, activation, owner)
        if problem:
            raise ValueError(f"manual backprop does not apply to this network: {problem}; use autograd")
        self.mlp, self.owner, self.modules = mlp, owner, list(mlp)
        self.kinds = [type(module) for module in self.modules]
        self.layers = linear_layers(mlp)
        self.activation = activation
        #: per module, the index of its first entry in `parameters` (its weight; the bias follows)
        self._offsets: list[int] = []
        self.parameters: list[nn.Parameter | None] = []
        for module in self.modules:
            self._offsets.append(len(self.parameters))
            if isinstance(module, nn.Linear | nn.LayerNorm):
                self.parameters += [module.weight, module.bias]
        gradients = gradients or {}
        #: per entry of `parameters`, the tensor its gradient is kept in (None: a new one each time)
        self.gradient_buffers = [None if p is None else gradients.get(p) for p in self.parameters]

    def tensors(self) -> list[Tensor | None]:
        """The parameters as `forward` and `backward` take them: detached, in `parameters`' order."""
        return [None if p is None else p.detach() for p in self.parameters]

    def forward(self, x: Tensor, tensors: list[Tensor | None]) -> tuple[Tensor, list[Any]]:
        """The output and, per module, what its backward needs (its input; LayerNorm's mean and rstd)."""
        saved: list[Any] = []
        for module, kind, at in zip(self.modules, self.kinds, self._offsets, strict=True):
            if kind is nn.Linear:
                saved.append(x)
                x = torch.addmm(tensors[at + 1], x, tensors[at].t())
            elif kind is nn.LayerNorm:
                normalised, mean, rstd = torch.native_layer_norm(x, module.normalized_shape, tensors[at],
                                                                 tensors[at + 1], module.eps)
                saved.append((x, mean, rstd))
                x = normalised
            elif kind is ConcatenatedReLU:
                x = torch.cat((torch.relu(x), torch.relu(-x)), dim=-1)
                saved.append(x)
            else:  # ReLU, Tanh: in place on a tensor only this forward holds; the backward reads the output
                x = x.relu_() if kind is nn.ReLU else x.tanh_()
                saved.append(x)
        return x, saved

    def backward(self, grad_out: Tensor, saved: list[Any], tensors: list[Tensor | None],
                 out: list[Tensor | None] | None = None) -> list[Tensor | None]:
        """Each parameter's gradient, the Linear layers' written into ``out`` where it has a tensor."""
        grads: list[Tensor | None] = [None] * len(tensors)
        into = out or grads
        grad = grad_out
        for index in range(len(self.modules) - 1, -1, -1):
            module, kind, at = self.modules[index], self.kinds[index], self._offsets[index]
            if kind is nn.Linear:
                grads[at] = torch.mm(grad.t(), saved[index], out=into[at])
                grads[at + 1] = torch.sum(grad, 0, out=into[at + 1])
                if index == 0:
                    break
                grad = torch.mm(grad, tensors[at])
            elif kind is nn.LayerNorm:
                inputs, mean, rstd = saved[index]
                weight, bias = tensors[at], tensors[at + 1]
                grad, grads[at], grads[at + 1] = torch.ops.aten.native_layer_norm_backward(
                    grad, inputs, module.normalized_shape, mean, rstd, weight, bias,
                    [True, weight is not None, bias is not None])
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
        return grads

    def call_pre_hooks(self, saved: list[Any]) -> None:
        """Call each Linear's forward pre-hooks with its input of the last forward, as ``module(x)`` would
        have (CBP's and ReDo's feature capture, the probes')."""
        for module, kind, inputs in zip(self.modules, self.kinds, saved, strict=True):
            if kind is nn.Linear:
                for hook in module._forward_pre_hooks.values():
                    if hook(module, (inputs,)) is not None:
                        raise ValueError("a forward pre-hook that changes its input needs autograd backprop")

    def store_gradients(self, grads: list[Tensor | None]) -> None:
        for parameter, grad, buffer in zip(self.parameters, grads, self.gradient_buffers, strict=True):
            if parameter is not None:
                parameter.grad = _kept(grad, buffer)


def _kept(grad: Tensor, buffer: Tensor | None) -> Tensor:
    """``grad`` in ``buffer`` where the parameter has one (and it was not written there already)."""
    if buffer is None or grad is buffer:
        return grad
    return buffer.copy_(grad)


def _maximum_gradient(first: np.ndarray, second: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weights of ``d max(a, b)`` on ``a`` and on ``b``, as torch's ``maximum`` splits them (half each
    on a tie)."""
    tie = (first == second) * np.float32(0.5)
    return (first > second) + tie, (first < second) + tie


class ManualPPOLoss:
    """PPO's clipped policy loss and value loss with hand-derived gradients for both networks.

    The same formulas as `agents.ppo.PPO._policy_backward` and `_value_backward` (and the same returned
    statistics); each writes the gradients of its network and, for the policy, of the log-std. The
    arithmetic of each network is one pure function (`_policy_terms`, `_value_terms`); with ``compiled``
    both are ``torch.compile``d (dynamo traces the numpy loss derivatives as torch ops; inductor fuses the
    elementwise ops into a few kernels around the matrix products), which gives the same results to float
    rounding, not bit for bit.
    """

    def __init__(self, policy: nn.Module, value: nn.Module, activation: str, settings: Any,
                 compiled: bool = False, gradients: dict[nn.Parameter, Tensor] | None = None) -> None:
        self.policy_mean = ManualMLP(policy.mean_net, activation, policy, gradients)
        self.value = ManualMLP(value.net, activation, value, gradients)
        self.log_std = policy.log_std
        self._log_std_buffer = (gradients or {}).get(policy.log_std)
        self.settings = settings
        #: the name a checkpoint records (``ppo.backprop``)
        self.path = "compiled" if compiled else "manual"
        self._policy_fn, self._value_fn = self._policy_terms, self._value_terms
        if compiled:
            # Shapes never change within a run (every minibatch has minibatch_size rows), so one static
            # graph per network.
            self._policy_fn = torch.compile(self._policy_terms, fullgraph=True, dynamic=False)
            self._value_fn = torch.compile(self._value_terms, fullgraph=True, dynamic=False)
        self._warm = not compiled

    def check(self) -> None:
        """RuntimeError if a hook added since construction (a forward hook, say) rules this path out."""
        for name, mlp in (("policy", self.policy_mean), ("value", self.value)):
            problem = unsupported(mlp.mlp, mlp.activation, mlp.owner)
            if problem:
                raise RuntimeError(f"manual backprop no longer applies to the {name} network: {problem}; "
                                   f"build the agent with ppo.backprop: autograd")

    def warm_up(self, obs: Tensor, actions: Tensor, old_logprobs: Tensor, old_values: Tensor,
                returns: Tensor, advantages: Tensor) -> None:
        """Compile both functions now, on this thread, from a minibatch of the right shapes (the results
        are discarded: the functions have no side effects). Otherwise the first minibatch would compile
        them, possibly on two threads at once, and inside the timings that choose the threading."""
        if not self._warm:
            self._policy_fn(self.policy_mean.tensors(), self.log_std.detach(), obs, actions, old_logprobs,
                            advantages)
            self._value_fn(self.value.tensors(), obs, old_values, returns)
            self._warm = True

    def policy_backward(self, obs: Tensor, actions: Tensor, old_logprobs: Tensor,
                        advantages: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        grads, grad_log_std, saved, stats = self._policy_fn(
            self.policy_mean.tensors(), self.log_std.detach(), obs, actions, old_logprobs, advantages,
            self._out(self.policy_mean))
        self.policy_mean.call_pre_hooks(saved)
        self.policy_mean.store_gradients(grads)
        self.log_std.grad = _kept(grad_log_std, self._log_std_buffer)
        return stats

    def value_backward(self, obs: Tensor, old_values: Tensor, returns: Tensor) -> Tensor:
        grads, saved, value_loss = self._value_fn(self.value.tensors(), obs, old_values, returns,
                                                  self._out(self.value))
        self.value.call_pre_hooks(saved)
        self.value.store_gradients(grads)
        return value_loss

    def _out(self, mlp: ManualMLP) -> list[Tensor | None] | None:
        # A compiled function returns its gradients rather than writing into tensors it was not given.
        return None if self.path == "compiled" else mlp.gradient_buffers

    def _policy_terms(self, tensors: list[Tensor | None], log_std: Tensor, obs: Tensor, actions: Tensor,
                      old_logprobs: Tensor, advantages: Tensor,
                      out: list[Tensor | None] | None = None) -> tuple[Any, ...]:
        mean, saved = self.policy_mean.forward(obs, tensors)
        grad_mean, grad_log_std, stats = _policy_loss_gradient(
            mean.numpy(), log_std.numpy(), actions.numpy(), old_logprobs.numpy(), advantages.numpy(),
            self.settings)
        grads = self.policy_mean.backward(torch.from_numpy(grad_mean), saved, tensors, out)
        return grads, torch.from_numpy(grad_log_std), saved, tuple(torch.from_numpy(stats))

    def _value_terms(self, tensors: list[Tensor | None], obs: Tensor, old_values: Tensor, returns: Tensor,
                     out: list[Tensor | None] | None = None) -> tuple[Any, ...]:
        values, saved = self.value.forward(obs, tensors)
        grad_values, value_loss = _value_loss_gradient(values.numpy(), old_values.numpy(), returns.numpy(),
                                                       self.settings)
        grads = self.value.backward(torch.from_numpy(grad_values), saved, tensors, out)
        return grads, saved, torch.from_numpy(value_loss)


# The losses' derivatives are a few dozen elementwise ops on a minibatch's (128, actions) arrays, where
# each torch call costs ~3 us of dispatch (a Python scalar operand adds a copy) against ~1 us for numpy:
# in numpy they took 51 us a policy minibatch instead of 125 (timeit, paper preset, 2026-12-05). Float32
# throughout, as torch computes them.

def _policy_loss_gradient(mean: np.ndarray, log_std: np.ndarray, actions: np.ndarray,
                          old_logprobs: np.ndarray, advantages: np.ndarray,
                          s: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``d loss / d mean`` (per row), ``d loss / d log_std`` and (policy loss, entropy, approx. KL, clip
    fraction) of PPO's clipped objective for a Gaussian policy, as `agents.ppo.PPO._policy_backward`."""
    if s.norm_adv == "minibatch":
        advantages = (advantages - advantages.mean()) / (advantages.std(ddof=1) + 1e-8)
    inv_std = np.exp(-log_std)
    z = (actions - mean) * inv_std
    z_squared = z * z
    log_prob = -(0.5 * z_squared + log_std + _LOG_SQRT_2PI).sum(-1)
    log_ratio = log_prob - old_logprobs
    ratio = np.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * np.clip(ratio, 1.0 - s.clip_coef, 1.0 + s.clip_coef)
    policy_loss = np.maximum(unclipped, clipped).mean()
    entropy = (log_std + 0.5 + _LOG_SQRT_2PI).sum()

    # d loss / d ratio through both branches of the maximum (the clip passes gradient inside its range)
    on_unclipped, on_clipped = _maximum_gradient(unclipped, clipped)
    in_range = (ratio >= 1.0 - s.clip_coef) & (ratio <= 1.0 + s.clip_coef)
    grad_log_prob = (on_unclipped + on_clipped * in_range) * advantages * ratio * (-1.0 / len(ratio))
    # log_prob = -sum(z^2 / 2 + log_std): d/d mean = z / std, d/d log_std = z^2 - 1
    grad_mean = z * inv_std * grad_log_prob[:, None]
    grad_log_std = (z_squared - 1.0).T @ grad_log_prob - np.float32(s.ent_coef)
    approx_kl = ((ratio - 1.0) - log_ratio).mean()
    clipfrac = (np.abs(ratio - 1.0) > s.clip_coef).mean(dtype=np.float32)
    return grad_mean, grad_log_std, np.array([policy_loss, entropy, approx_kl, clipfrac], dtype=np.float32)


def _value_loss_gradient(prediction: np.ndarray, old_values: np.ndarray, returns: np.ndarray,
                         s: Any) -> tuple[np.ndarray, np.ndarray]:
    """``d loss / d prediction`` for the value network's ``(batch, 1)`` output and the value loss (a 0-d
    array), as `agents.ppo.PPO._value_backward` (loss weight ``vf_coef``, optionally clipped)."""
    values = prediction[:, 0]
    error = values - returns
    value_loss = error * error
    scale = 2.0 * s.vf_coef / len(values)
    if s.clip_vloss:
        change = values - old_values
        clipped_error = old_values + np.clip(change, -s.clip_coef, s.clip_coef) - returns
        clipped_loss = clipped_error * clipped_error
        on_plain, on_clipped = _maximum_gradient(value_loss, clipped_loss)
        in_range = (change >= -s.clip_coef) & (change <= s.clip_coef)
        grad_values = (on_plain * error + on_clipped * clipped_error * in_range) * scale
        value_loss = np.maximum(value_loss, clipped_loss)
    else:
        grad_values = error * scale
    return grad_values[:, None], np.asarray(value_loss.mean(), dtype=np.float32)
