"""PPO for continuous actions over a Gymnasium vector env, optionally with continual backprop.

Read it top to bottom: `PPO.__init__` builds the two networks, the one Adam (held per network,
`agents.network_optimizers`) and (optionally) one `ContinualBackprop` per network; `collect_rollout`
steps the envs and computes advantages; `update` runs the clipped-objective epochs, its gradients by
autograd (``_policy_backward``, ``_value_backward``, the reference) or, by default, by the same losses'
hand-derived backward (`agents.manual_backprop`), and may leave the value network's epochs running
beside the next rollout, which needs only the policy (``defer_value``). Everything the algorithm needs
to continue exactly (networks, optimizer, CBP, normalisers, RNG, counters, the gradient path) is in
`state_dict` (`agents.ppo_state`).

The vector env must autoreset in the SAME step (``autoreset_mode=SAME_STEP``), so a finished episode's
last observation arrives in ``info["final_obs"]`` while ``obs`` already starts the next one.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import Tensor

from agents.advantage import compute_gae
from agents.manual_backprop import manual_backprop_for
from agents.method_settings import MethodsSettings, attach_methods
from agents.network_optimizers import NetworkOptimizers
from agents.network_threads import NetworkThreads
from agents.networks import FastForward, GaussianPolicy, ValueFunction
from agents.normalization import ObservationNormalizer, RewardScaler
from agents.ppo_state import agent_state, load_agent_state
from agents.rollout_buffer import Episode, Rollout, RolloutBuffer
from agents.settings import CBPSettings, OptimizerSettings, PPOSettings
from rl_plasticity import ContinualBackprop, PlasticityMethod

UPDATE_STATS = ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac",
                "policy_grad_norm", "value_grad_norm")
#: which of them each network's steps produce, in `PPO._network_step`'s order, and their columns
NETWORK_STATS = {"policy": ("policy_loss", "entropy", "approx_kl", "clipfrac", "policy_grad_norm"),
                 "value": ("value_loss", "value_grad_norm")}
POLICY_STATS, VALUE_STATS = ([UPDATE_STATS.index(key) for key in NETWORK_STATS[name]]
                             for name in ("policy", "value"))


class PPO:
    """Clipped PPO with a Gaussian policy-mean MLP, a value MLP and one Adam over both.

    Args:
        envs: a Gymnasium vector env with Box observation and action spaces and same-step autoreset.
        settings, optimizer, cbp: hyperparameters (see `agents.settings`); ``cbp=None`` or
            ``cbp.enabled=False`` is plain PPO.
        total_steps: length of the run in env steps; needed for ``optimizer.anneal_lr``.
        seed: seeds the env resets, exploration noise, minibatch order and CBP's draws. Network
            initialisation uses torch's global RNG: call ``torch.manual_seed`` first for reproducibility.
        parallel_networks: in the update, run the value network's forward and backward pass on a worker
            thread while the policy's runs on the calling one (faster updates of large networks on two
            cores); ``None`` decides by timing both ways now and then. Results are
            bit-identical in every case (see `agents.network_threads`).
    """

    def __init__(self, envs: Any, settings: PPOSettings, optimizer: OptimizerSettings,
                 cbp: CBPSettings | None = None, *, total_steps: int | None = None, seed: int = 0,
                 parallel_networks: bool | None = False, methods: MethodsSettings | None = None) -> None:
        self.envs = envs
        self.settings = settings
        self.optimizer_settings = optimizer
        self.seed = seed
        self.num_envs = int(envs.num_envs)
        self.obs_dim, self.action_dim = _space_dims(envs)
        self.batch_size = settings.rollout_steps * self.num_envs
        if self.batch_size % settings.minibatch_size:
            raise ValueError(
                f"minibatch_size {settings.minibatch_size} does not divide the batch of {self.batch_size} "
                f"(rollout_steps {settings.rollout_steps} x {self.num_envs} envs)"
            )
        if optimizer.anneal_lr and not total_steps:
            raise ValueError("anneal_lr needs total_steps (the run length the learning rate decays over)")
        self.num_iterations = math.ceil(total_steps / self.batch_size) if total_steps else None
        self.generator = torch.Generator().manual_seed(seed)

        hidden, act = settings.hidden_sizes, settings.activation
        methods = methods if methods is not None else MethodsSettings()
        cbp_enabled = cbp is not None and cbp.enabled
        problem = methods.conflict(act, cbp_enabled)
        if problem:
            raise ValueError(problem)
        norm, crelu = methods.layer_norm, methods.crelu
        self.policy = GaussianPolicy(self.obs_dim, self.action_dim, hidden, act, settings.init,
                                     settings.log_std_init, layer_norm=norm.on("policy"),
                                     crelu=crelu.on("policy"))
        self.value = ValueFunction(self.obs_dim, hidden, act, settings.init, layer_norm=norm.on("value"),
                                   crelu=crelu.on("value"))
        self._policy_params = list(self.policy.parameters())
        self._value_params = list(self.value.parameters())
        self._all_params = self._policy_params + self._value_params
        self._network_params = {"policy": self._policy_params, "value": self._value_params}
        # One Adam over everything, as in the paper, held as one per network so that each network can
        # step on its own thread (bit-identical); the fused CPU kernel is the fastest of torch's three,
        # and with each network's tensors in flat buffers it is one call per network.
        self.optimizer = NetworkOptimizers(
            self._network_params, flat=True, lr=optimizer.lr, betas=tuple(optimizer.betas),
            eps=optimizer.eps, weight_decay=optimizer.weight_decay, fused=True,
        )
        optimizers = self.optimizer.by_network
        self.cbp_policy: ContinualBackprop | None = None
        self.cbp_value: ContinualBackprop | None = None
        if cbp is not None and cbp.enabled:
            # Each hooks its network's optimizer: a generate-and-test step after every minibatch update.
            self.cbp_policy = self._attach_cbp(self.policy.mean_net, optimizers["policy"], cbp, seed_offset=1)
            self.cbp_value = self._attach_cbp(self.value.net, optimizers["value"], cbp, seed_offset=2)
        #: the other plasticity methods, ``{name: {"policy": method, "value": method}}`` for the networks
        #: each acts on; each hooks its network's optimizer, after CBP
        self.methods: dict[str, dict[str, PlasticityMethod]] = attach_methods(
            methods, {"policy": self.policy.mean_net, "value": self.value.net}, optimizers,
            settings.activation, seed)
        self._policy_mean_fast = FastForward(self.policy.mean_net, act)
        #: the hand-derived gradients, or None where autograd computes them (``ppo.backprop``)
        self.manual_backprop = manual_backprop_for(settings, self.policy, self.value,
                                                   self.optimizer.gradient_buffers())
        self.network_threads = NetworkThreads(parallel_networks)

        self.obs_normalizer = ObservationNormalizer(self.obs_dim, settings.obs_clip) \
            if settings.normalize_obs else None
        self.reward_scaler = RewardScaler(self.num_envs, settings.gamma, settings.reward_clip) \
            if settings.normalize_reward else None
        space = envs.single_action_space
        self._action_low = np.asarray(space.low, dtype=np.float32)
        self._action_high = np.asarray(space.high, dtype=np.float32)

        self.buffer = RolloutBuffer.allocate(settings.rollout_steps, self.num_envs, self.obs_dim,
                                             self.action_dim)
        self.global_step = 0
        self.updates_done = 0
        self._next_obs: np.ndarray | None = None
        self._episode_return = np.zeros(self.num_envs, dtype=np.float64)
        self._episode_length = np.zeros(self.num_envs, dtype=np.int64)

    def _attach_cbp(self, mlp: torch.nn.Module, optimizer: torch.optim.Optimizer, cbp: CBPSettings,
                    seed_offset: int) -> ContinualBackprop:
        return ContinualBackprop.from_sequential(
            mlp, optimizer, **cbp.options(), nonlinearity=self.settings.activation,
            generator=torch.Generator().manual_seed(self.seed * 1000 + seed_offset),
        )

    # ------------------------------------------------------------------ rollout
    def _observe(self, obs: np.ndarray) -> np.ndarray:
        return self.obs_normalizer(obs) if self.obs_normalizer is not None else obs

    def collect_rollout(self) -> Rollout:
        """Step the envs ``rollout_steps`` times, then compute values, log-probs, advantages and returns."""
        if self._next_obs is None:
            # Offset by the step so that episodes restarted after a resume do not replay the first ones.
            first_obs, _ = self.envs.reset(seed=self.seed + self.global_step)
            self._next_obs = self._observe(first_obs)
        s = self.settings
        bootstrap = s.bootstrap_truncation
        rollout = Rollout()
        # Values and log-probs are batched after the loop (the parameters do not change during a rollout),
        # so each step needs only the policy mean plus pre-drawn noise.
        noise = (torch.randn((s.rollout_steps, self.num_envs, self.action_dim), generator=self.generator)
                 * self.policy.log_std.detach().exp()).numpy()
        policy_mean = self._policy_mean_fast
        policy_mean.refresh()
        pending_final: list[tuple[int, int, np.ndarray]] = []
        buffer, obs = self.buffer, self._next_obs
        for t in range(s.rollout_steps):
            buffer.obs_np[t] = obs
            action = np.add(policy_mean(buffer.obs_np[t]), noise[t], out=buffer.actions_np[t])
            if s.clip_actions:
                action = np.clip(action, self._action_low, self._action_high)
            obs, reward, terminated, truncated, info = self.envs.step(action)

            buffer.terminated[t], buffer.truncated[t] = terminated, truncated
            self._episode_return += reward
            self._episode_length += 1
            ended = terminated | truncated
            if self.reward_scaler is not None:
                reward = self.reward_scaler(reward, ended)
            buffer.rewards[t] = reward
            if ended.any():
                self._finish_episodes(ended, t, rollout)
                if bootstrap:
                    for i in np.flatnonzero(truncated & ~terminated):
                        final = info["final_obs"][i][None]
                        pending_final.append((t, i, self._observe_final(final)))
            obs = self._observe(obs)
        self._next_obs = obs
        self.global_step += self.batch_size
        rollout.last_info = info
        self.wait_for_value_update()  # the values below read the value network
        self._compute_advantages(pending_final)
        return rollout

    def _observe_final(self, final_obs: np.ndarray) -> np.ndarray:
        if self.obs_normalizer is None:
            return final_obs
        return self.obs_normalizer(final_obs, update=False)

    def _finish_episodes(self, ended: np.ndarray, t: int, rollout: Rollout) -> None:
        end_step = self.global_step + (t + 1) * self.num_envs
        for i in np.flatnonzero(ended):
            rollout.episodes.append(Episode(end_step, float(self._episode_return[i]),
                                            int(self._episode_length[i])))
        self._episode_return[ended] = 0.0
        self._episode_length[ended] = 0

    @torch.no_grad()
    def _compute_advantages(self, pending_final: list[tuple[int, int, np.ndarray]]) -> None:
        s, steps, n, buffer = self.settings, self.settings.rollout_steps, self.num_envs, self.buffer
        buffer.values.copy_(self.value(buffer.flat_obs).view(steps, n))
        buffer.logprobs.copy_(self.policy.log_prob(buffer.flat_obs, buffer.flat_actions).view(steps, n))
        last_values = self.value(_as_float_tensor(self._next_obs)).numpy()
        final_values = np.zeros((steps, n), dtype=np.float32)
        if pending_final:
            batch = _as_float_tensor(np.concatenate([obs for _, _, obs in pending_final]))
            for (t, i, _), v in zip(pending_final, self.value(batch).tolist(), strict=True):
                final_values[t, i] = v
        advantages, returns = compute_gae(
            buffer.rewards, buffer.values.numpy(), buffer.terminated, buffer.truncated, final_values,
            last_values, s.gamma, s.gae_lambda, s.bootstrap_truncation,
        )
        buffer.advantages.copy_(torch.from_numpy(advantages))
        buffer.returns.copy_(torch.from_numpy(returns))

    # ------------------------------------------------------------------ update
    @property
    def learning_rate(self) -> float:
        """The learning rate the next update uses."""
        lr = self.optimizer_settings.lr
        if self.optimizer_settings.anneal_lr and self.num_iterations:
            lr *= max(0.0, 1.0 - self.updates_done / self.num_iterations)
        return lr

    @property
    def can_defer_value(self) -> bool:
        """Whether `update` may leave the value network's half running: the networks' minibatch steps
        share nothing unless a global gradient-norm clip couples them."""
        return self.settings.max_grad_norm is None

    def update(self, defer_value: bool = False) -> dict[str, float]:
        """``epochs`` passes of clipped-PPO minibatch steps over the last rollout; returns mean statistics.

        With ``defer_value`` (where `can_defer_value`), only the policy's steps run before this returns;
        the value network's run on a worker thread, where the next rollout (which needs only the policy)
        does not wait for them, and its statistics come from `finish_update`. Every method that reads the
        value network calls that first, and the results are bit-identical to the steps in lockstep.
        Torch is then left on one thread (see `agents.network_threads.NetworkThreads.defer`).
        """
        self.finish_update()
        s, buffer = self.settings, self.buffer
        lr = self.learning_rate
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        obs, actions = buffer.flat_obs, buffer.flat_actions
        old_logprobs, old_values = buffer.logprobs.view(-1), buffer.values.view(-1)
        returns, advantages = buffer.returns.view(-1), buffer.advantages.view(-1)
        if s.norm_adv == "batch":
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

        minibatches = self.batch_size // s.minibatch_size
        before = {name: _flat(params) for name, params in self._network_params.items()}
        # Every minibatch of every epoch in one gather: minibatch i's columns are then views [i], where a
        # gather and six copies per minibatch cost each network's steps more than the gather's memory.
        orders = [torch.randperm(self.batch_size, generator=self.generator) for _ in range(s.epochs)]
        steps = s.epochs * minibatches
        rows = torch.cat((obs, actions, old_logprobs[:, None], old_values[:, None], returns[:, None],
                          advantages[:, None]), 1)[torch.cat(orders)]
        columns = rows.split((obs.shape[1], actions.shape[1], 1, 1, 1, 1), 1)
        batches = [column.contiguous().view(steps, s.minibatch_size, -1) for column in columns]
        batches[2:] = [column.squeeze(-1) for column in batches[2:]]

        def minibatch_columns(index: int) -> list[Tensor]:
            return [column[index] for column in batches]

        if self.manual_backprop is not None:
            self.manual_backprop.check()
            self.manual_backprop.warm_up(*minibatch_columns(0))
        records = torch.zeros((steps, len(UPDATE_STATS)))
        self.updates_done += 1
        stats = {"explained_variance": _explained_variance(old_values, returns), "learning_rate": lr}
        if defer_value and self.can_defer_value:
            for row in range(steps):
                records[row, POLICY_STATS] = self._network_step("policy", *minibatch_columns(row))
            stats.update(self._update_statistics(records, before, "policy"))

            def value_half() -> dict[str, float]:
                for row in range(steps):
                    records[row, VALUE_STATS] = self._network_step("value", *minibatch_columns(row))
                return self._update_statistics(records, before, "value")

            self.network_threads.defer(value_half)
            return stats
        for row in range(steps):
            with self.network_threads.minibatch():
                records[row] = self._minibatch_step(*minibatch_columns(row))
        self.network_threads.restore_threads()
        stats.update(self._update_statistics(records, before, "policy", "value"))
        return stats

    def wait_for_value_update(self) -> None:
        """Wait for a deferred value update (re-raising its error); its statistics stay for
        `finish_update`."""
        self.network_threads.wait()

    def finish_update(self) -> dict[str, float]:
        """Wait for a deferred value update (re-raising its error) and hand over its statistics; ``{}``
        if there is none (the next `update` drops those not taken)."""
        return self.network_threads.finish() or {}

    def _update_statistics(self, records: Tensor, before: dict[str, Tensor],
                           *networks: str) -> dict[str, float]:
        """The mean statistics of ``networks`` (one column mean is the same whoever fills the others)."""
        means = dict(zip(UPDATE_STATS, records.mean(0).tolist(), strict=True))
        stats = {}
        for name in networks:
            stats.update({key: means[key] for key in NETWORK_STATS[name]})
            change = _flat(self._network_params[name]) - before[name]
            stats[f"{name}_weight_change"] = float(torch.linalg.vector_norm(change))
        return stats

    def _network_step(self, network: str, obs: Tensor, actions: Tensor, old_logprobs: Tensor,
                      old_values: Tensor, returns: Tensor, advantages: Tensor) -> Tensor:
        """One network's share of `_minibatch_step` when nothing couples the two: its loss, its
        gradient norm (the same arithmetic) and its optimizer step."""
        manual = self.manual_backprop
        if manual is None:
            self.optimizer.by_network[network].zero_grad(set_to_none=True)
        if network == "policy":
            backward = manual.policy_backward if manual else self._policy_backward
            results = list(backward(obs, actions, old_logprobs, advantages))
        else:
            results = [(manual.value_backward if manual else self._value_backward)(obs, old_values, returns)]
        norms = torch.stack(torch._foreach_norm([p.grad for p in self._network_params[network]]))
        self.optimizer.step_network(network)
        return torch.stack([*results, torch.linalg.vector_norm(norms)])

    def _minibatch_step(self, obs: Tensor, actions: Tensor, old_logprobs: Tensor, old_values: Tensor,
                        returns: Tensor, advantages: Tensor) -> Tensor:
        s, manual = self.settings, self.manual_backprop
        if manual is None:
            self.optimizer.zero_grad(set_to_none=True)  # the manual path overwrites every gradient
        # The networks share no parameter, so each loss backpropagates on its own: the gradients are those
        # of the summed loss, bit for bit.
        value_loss, (policy_loss, entropy, approx_kl, clipfrac) = self.network_threads.run(
            partial(manual.value_backward if manual else self._value_backward, obs, old_values, returns),
            partial(manual.policy_backward if manual else self._policy_backward, obs, actions, old_logprobs,
                    advantages),
        )
        # get_total_norm's arithmetic (the norm of the per-tensor norms) with one per-tensor pass for both
        # networks: its grouping and second call cost ~25 us a minibatch here
        norms = torch.stack(torch._foreach_norm([p.grad for p in self._all_params]))
        split = len(self._policy_params)
        policy_norm = torch.linalg.vector_norm(norms[:split])
        value_norm = torch.linalg.vector_norm(norms[split:])
        if s.max_grad_norm is not None:
            torch.nn.utils.clip_grads_with_norm_(self._all_params, s.max_grad_norm,
                                                 torch.hypot(policy_norm, value_norm))
        self.optimizer.step()  # CBP's generate-and-test runs here, through its post-step hooks
        return torch.stack([policy_loss, value_loss, entropy, approx_kl, clipfrac, policy_norm, value_norm])

    def _policy_backward(self, obs: Tensor, actions: Tensor, old_logprobs: Tensor,
                         advantages: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        s = self.settings
        if s.norm_adv == "minibatch":
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        log_ratio = self.policy.log_prob(obs, actions) - old_logprobs
        ratio = log_ratio.exp()
        policy_loss = torch.max(-advantages * ratio,
                                -advantages * ratio.clamp(1.0 - s.clip_coef, 1.0 + s.clip_coef)).mean()
        entropy = self.policy.entropy()
        (policy_loss - s.ent_coef * entropy).backward()
        with torch.no_grad():
            approx_kl = ((ratio - 1.0) - log_ratio).mean()
            clipfrac = ((ratio - 1.0).abs() > s.clip_coef).float().mean()
        return policy_loss.detach(), entropy.detach(), approx_kl, clipfrac

    def _value_backward(self, obs: Tensor, old_values: Tensor, returns: Tensor) -> Tensor:
        s = self.settings
        values = self.value(obs)
        value_loss = (values - returns).square()
        if s.clip_vloss:
            clipped = old_values + (values - old_values).clamp(-s.clip_coef, s.clip_coef)
            value_loss = torch.max(value_loss, (clipped - returns).square())
        value_loss = value_loss.mean()
        (s.vf_coef * value_loss).backward()
        return value_loss.detach()

    def restart_episodes(self) -> None:
        """Forget the episodes in progress: the next rollout resets the envs (after restoring a state into
        freshly built envs, whose simulators are not where the saved observations came from)."""
        self._next_obs = None
        self._episode_return[:] = 0.0
        self._episode_length[:] = 0
        if self.reward_scaler is not None:
            self.reward_scaler.returns[:] = 0.0

    # ------------------------------------------------------------------ inspection and persistence
    def recent_observations(self, count: int) -> Tensor:
        """The last ``count`` observations of the latest rollout (as the networks saw them)."""
        return self.buffer.flat_obs[-count:]

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training: networks, optimizer, CBP, normalisers, RNG, counters."""
        self.wait_for_value_update()
        return agent_state(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.finish_update()  # a value update of the replaced state must not land on the loaded one
        load_agent_state(self, state)


def _space_dims(envs: Any) -> tuple[int, int]:
    obs_space, action_space = envs.single_observation_space, envs.single_action_space
    obs_shape, action_shape = getattr(obs_space, "shape", None), getattr(action_space, "shape", None)
    if not obs_shape or len(obs_shape) != 1 or not hasattr(action_space, "low") \
            or not action_shape or len(action_shape) != 1:
        raise ValueError(
            f"PPO needs flat Box observation and action spaces (continuous control); got observations "
            f"{obs_space} and actions {action_space}"
        )
    return int(obs_shape[0]), int(action_shape[0])


def _flat(params: list[torch.nn.Parameter]) -> Tensor:
    return torch.cat([p.detach().reshape(-1) for p in params])


def _as_float_tensor(array: np.ndarray) -> Tensor:
    return torch.from_numpy(np.asarray(array, dtype=np.float32))


def _explained_variance(predicted: Tensor, target: Tensor) -> float:
    variance = float(target.var())
    return math.nan if variance == 0 else 1.0 - float((target - predicted).var()) / variance
