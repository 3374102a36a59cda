"""The one interface every plasticity method follows, in the style of ``torch.nn.utils.prune``.

A method attaches to the consecutive ``nn.Linear`` layers of one MLP (input to output) and, when it acts
at optimizer steps, to the optimizer, through hooks: nothing in the training loop changes. Each has
``state_dict()`` / ``load_state_dict()`` for an exact resume, ``remove()`` to detach it, and
``statistics()``, a small dict for logging (``methods/<name>/<net>/<key>`` in TensorBoard).

A method is a subclass with a ``name`` and an ``Options`` dataclass (its options, defaults and checks);
subclassing registers it in `METHODS` under its name. It overrides what it needs of ``setup()`` (its
own state, built at attach time), ``before_update()`` (after the backward pass, before the optimizer
step: the gradients are final), ``after_update()`` (after the step), ``_state()`` / ``_load_state()``
and ``statistics()``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from rl_plasticity.hooks import check_linear_chain

#: every method by name (`ContinualBackprop` is ``"cbp"``)
METHODS: dict[str, type[PlasticityMethod]] = {}


class PlasticityMethod:
    """A way of keeping one MLP plastic; see the module's docstring for the contract."""

    name: ClassVar[str]
    Options: ClassVar[type]
    #: whether the method acts through the optimizer's step hooks (so ``optimizer`` is required)
    needs_optimizer: ClassVar[bool] = True
    #: the fewest Linear layers it works on (2 for methods that act on hidden units)
    min_layers: ClassVar[int] = 1
    #: whether it acts on hidden units, each one a row of a layer and the matching column of the next, so
    #: the layers must chain (ReDo, CBP); methods on each weight matrix alone also take CReLU networks
    acts_on_units: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            METHODS[cls.name] = cls

    def __init__(self, layers: Sequence[nn.Linear], optimizer: torch.optim.Optimizer | None = None, *,
                 generator: torch.Generator | None = None, **options: Any) -> None:
        self.layers: list[nn.Linear] = check_linear_chain(layers, self.min_layers, self.acts_on_units)
        known = {f.name for f in dataclasses.fields(self.Options)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"{type(self).__name__} got unknown option(s) {', '.join(unknown)}; the options "
                            f"are {', '.join(sorted(known))}")
        self.options = check_switches(self.Options(**options))
        if self.needs_optimizer and optimizer is None:
            raise ValueError(f"{type(self).__name__} acts at optimizer steps: pass optimizer=...")
        self.optimizer = optimizer
        if generator is None:
            generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
        self.generator = generator
        #: optimizer steps seen since the method was attached
        self.updates = 0
        self._handles: list[RemovableHandle] = []
        self.setup()
        if optimizer is not None:
            self._handles.append(optimizer.register_step_pre_hook(lambda *_: self.before_update()))
            self._handles.append(optimizer.register_step_post_hook(lambda *_: self._after_step()))

    def _after_step(self) -> None:
        self.updates += 1
        self.after_update()

    def setup(self) -> None:
        """The method's own state, built once ``layers``, ``options`` and ``optimizer`` are set."""

    def before_update(self) -> None:
        """Runs before every optimizer step, once the gradients are final."""

    def after_update(self) -> None:
        """Runs after every optimizer step (``self.updates`` already counts it)."""

    def statistics(self) -> dict[str, float]:
        """What to log now, e.g. ``{"reset": 3, "reset_total": 41}``."""
        return {}

    def parameters(self) -> list[nn.Parameter]:
        return [p for layer in self.layers for p in (layer.weight, layer.bias) if p is not None]

    def state_dict(self) -> dict[str, Any]:
        return {"method": self.name, "updates": self.updates, "generator_state": self.generator.get_state(),
                **self._state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("method") != self.name:
            raise ValueError(f"the state is of method {state.get('method')!r}, this is {self.name!r}; load "
                             f"it into the method that saved it")
        self.updates = int(state["updates"])
        self.generator.set_state(state["generator_state"])
        self._load_state(state)

    def _state(self) -> dict[str, Any]:
        return {}

    def _load_state(self, state: dict[str, Any]) -> None:
        pass

    def remove(self) -> None:
        """Detach every hook; the network and optimizer are left as they are."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __repr__(self) -> str:
        options = ", ".join(f"{f.name}={getattr(self.options, f.name)!r}"
                            for f in dataclasses.fields(self.Options))
        return f"{type(self).__name__}({options}, updates={self.updates})"


def check_switches(options: Any) -> Any:
    """``options`` (a dataclass), once every ``bool`` option holds a bool: a string such as ``"false"``
    would otherwise be truthy and silently switch the option on."""
    for field in dataclasses.fields(options):
        value = getattr(options, field.name)
        if field.type in ("bool", bool) and not isinstance(value, bool):
            raise ValueError(f"{field.name} must be True or False, got {value!r}")
    return options


__all__ = ["METHODS", "PlasticityMethod", "check_switches"]
