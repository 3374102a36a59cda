"""One network's parameters, gradients and Adam state as views of a few flat buffers.

At the paper's size an Adam step over a network's seven tensors costs about as much in per-tensor work
as in arithmetic. With every parameter a view of one buffer, its gradient a view of another and its
moments views of a third, one fused Adam call steps the whole network, one ``add_`` counts its steps,
and anything that gathers scattered entries across the parameters (`rl_plasticity.cbp_moments`'s
correction of reset moments) does it in one call. The parameters stay the same ``nn.Parameter``
objects, so the modules, their hooks and every method holding them see no difference; in-place updates
(optimizer steps, unit replacements, ``load_state_dict``) keep the views.

Only a whole-tensor replacement breaks a view: an ``optimizer.load_state_dict`` (after which
`FlatStorage.adopt_state` copies the loaded state in), a gradient set to a new tensor (autograd after
``zero_grad(set_to_none=True)``), or a parameter given other memory (``param.data = ...``).
`FlatStorage.intact` tells whether the one-call step still applies; where it does not, the per-tensor
step does the same arithmetic.
"""

from __future__ import annotations

import torch
from torch import nn


class FlatStorage:
    """Flat buffers behind the parameters of ``optimizer``'s single parameter group (an Adam).

    Attributes:
        parameters: the flat parameters, in the group's order.
        gradients: the flat gradients (``p.grad`` is a view of it after construction).
        moments: ``(2, n)``: Adam's ``exp_avg`` and ``exp_avg_sq``.
        steps: each parameter's Adam step count (its ``state["step"]`` is a 0-d view of it).
    """

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        (group,) = optimizer.param_groups
        self.params: list[nn.Parameter] = list(group["params"])
        sizes = [p.numel() for p in self.params]
        with torch.no_grad():
            self.parameters = torch.cat([p.detach().reshape(-1) for p in self.params])
        self.gradients = torch.zeros_like(self.parameters)
        self.moments = torch.zeros((2, len(self.parameters)), dtype=self.parameters.dtype)
        # Adam's fused kernel counts in float32 on the CPU, as its own lazily created "step" does.
        self.steps = torch.zeros(len(self.params), dtype=torch.float32)
        self.grad_views = [flat.view_as(p) for flat, p in zip(self.gradients.split(sizes), self.params,
                                                              strict=True)]
        self._average_buffer, self._square_buffer = self.moments.unbind()
        self._averages = [flat.view_as(p) for flat, p in zip(self._average_buffer.split(sizes), self.params,
                                                             strict=True)]
        self._squares = [flat.view_as(p) for flat, p in zip(self._square_buffer.split(sizes), self.params,
                                                            strict=True)]
        self._step_views = list(self.steps.unbind())
        # After a per-tensor step (which skips a parameter without a gradient) `intact` checks the counts.
        self._steps_may_differ = False
        for param, flat, grad in zip(self.params, self.parameters.split(sizes), self.grad_views, strict=True):
            param.data = flat.view_as(param)
            if param.grad is not None:
                grad.copy_(param.grad)
            param.grad = grad
        self._addresses = [param.data_ptr() for param in self.params]
        self.adopt_state(optimizer)

    def adopt_state(self, optimizer: torch.optim.Optimizer) -> None:
        """Move each parameter's Adam state into the flat buffers (zero where it has none yet) and point
        the optimizer's state at them: after construction and after every ``optimizer.load_state_dict``."""
        self._states = []
        for k, param in enumerate(self.params):
            state = optimizer.state[param]
            with torch.no_grad():
                for name, view in (("exp_avg", self._averages[k]), ("exp_avg_sq", self._squares[k])):
                    if name in state:
                        view.copy_(state[name])
                    else:
                        view.zero_()
                self._step_views[k].fill_(float(state.get("step", 0.0)))
            state.update(step=self._step_views[k], exp_avg=self._averages[k], exp_avg_sq=self._squares[k])
            self._states.append(state)

    def intact(self, optimizer: torch.optim.Optimizer) -> bool:
        """Whether every parameter, gradient and Adam state tensor is still the flat buffers' view and the
        step counts agree (so that one kernel call over the buffers is the per-tensor step). A parameter
        given other memory (``param.data = ...``) fails it, so its step is never lost in the buffer."""
        state = optimizer.state
        for k, param in enumerate(self.params):
            own = self._states[k]
            if param.data_ptr() != self._addresses[k] or param.grad is not self.grad_views[k] or \
                    state.get(param) is not own or \
                    own["exp_avg"] is not self._averages[k] or own["exp_avg_sq"] is not self._squares[k] or \
                    own["step"] is not self._step_views[k]:
                return False
        return bool(self.steps.eq(self.steps[0]).all()) if self._steps_may_differ else True

    def note_per_tensor_step(self) -> None:
        """A step went through the per-tensor path (which may skip a parameter without a gradient): from
        now on `intact` also checks that the step counts agree."""
        self._steps_may_differ = True

    def adam_step(self, lr: float, beta1: float, beta2: float, weight_decay: float, eps: float) -> None:
        """Torch's fused Adam over the flat buffers (the caller checked `intact`)."""
        with torch.no_grad():
            self.steps.add_(1)
            torch._fused_adam_([self.parameters], [self.gradients], [self._average_buffer],
                               [self._square_buffer], [], [self._step_views[0]], amsgrad=False, lr=lr,
                               beta1=beta1, beta2=beta2, weight_decay=weight_decay, eps=eps, maximize=False)


__all__ = ["FlatStorage"]
