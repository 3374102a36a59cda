"""What the core's methods and metrics share to attach to an MLP: finding its ``nn.Linear`` layers and
capturing the hidden features as they enter each layer."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle


def linear_layers(module: nn.Module) -> list[nn.Linear]:
    """The ``nn.Linear`` layers inside ``module``, in registration order (input to output for an MLP)."""
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


#: activations whose every output is >= 0: a hidden feature after one of them is its own magnitude
NONNEGATIVE_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Sigmoid, nn.Softplus, nn.Hardsigmoid)


def nonnegative_inputs(mlp: nn.Module) -> bool:
    """Whether every ``nn.Linear`` of the ``nn.Sequential`` ``mlp`` but the first takes the output of one
    of `NONNEGATIVE_ACTIVATIONS` directly, so its inputs (the hidden features) are never negative.
    ``False`` when it cannot tell (not a Sequential, a norm or anything else in between, a module or
    global forward hook that could change what the activation returns)."""
    if not isinstance(mlp, nn.Sequential) or nn.modules.module._global_forward_hooks:
        return False
    modules = list(mlp)
    consumers = [index for index, module in enumerate(modules) if isinstance(module, nn.Linear)][1:]
    for index in consumers:
        before = modules[index - 1]
        if not isinstance(before, NONNEGATIVE_ACTIVATIONS) or before._forward_hooks:
            return False
    return bool(consumers)


def check_linear_chain(layers: Sequence[nn.Linear], minimum: int = 2,
                       chained: bool = True) -> list[nn.Linear]:
    """``layers`` as a list, or ValueError unless they are at least ``minimum`` ``nn.Linear`` layers and,
    with ``chained``, of one MLP that chain (each one's outputs are the next one's inputs). Methods that
    act on each weight matrix alone pass ``chained=False``: between CReLU layers, say, the next layer's
    inputs are twice the previous one's outputs."""
    layers = list(layers)
    if len(layers) < minimum:
        raise ValueError(f"layers: need at least {minimum} nn.Linear layers (a hidden layer and the layer "
                         f"that consumes it), got {len(layers)}" if minimum == 2 else
                         f"layers: need at least {minimum} nn.Linear layer(s), got {len(layers)}")
    for i, layer in enumerate(layers):
        if not isinstance(layer, nn.Linear):
            raise ValueError(f"layers[{i}] is a {type(layer).__name__}; every entry must be an nn.Linear")
    for i, (a, b) in enumerate(zip(layers, layers[1:], strict=False)):
        if chained and a.out_features != b.in_features:
            raise ValueError(
                f"layers do not chain: layers[{i}].out_features={a.out_features} but "
                f"layers[{i + 1}].in_features={b.in_features}; pass the consecutive Linear layers of ONE "
                f"MLP, input to output"
            )
    return layers


def capture_inputs(layers: Sequence[nn.Linear],
                   on_input: Callable[[int, Tensor], None]) -> list[RemovableHandle]:
    """Call ``on_input(k, features)`` with the detached input of ``layers[k]`` on every forward pass:
    for the consumers ``layers[1:]`` of an MLP, its hidden features, after whatever activation or norm
    the model applies. Returns the hooks' handles (``remove()`` detaches them)."""
    handles = []
    for k, layer in enumerate(layers):
        def hook(module: nn.Module, inputs: tuple[Tensor, ...], k: int = k, layer: nn.Linear = layer) -> None:
            # A deepcopy of the network (a target network, say) carries the hook along: ignore it.
            if module is layer:
                on_input(k, inputs[0].detach())

        handles.append(layer.register_forward_pre_hook(hook))
    return handles
