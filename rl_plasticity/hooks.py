"""What the core's methods and metrics share to attach to an MLP: finding its ``nn.Linear`` layers and
capturing the hidden features as they enter each layer."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle


def linear_layers(module: nn.Module) -> list[nn.Linear]:
    """The ``nn.Linear`` layers inside ``module``, in registration order (input to output for an MLP)."""
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


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
