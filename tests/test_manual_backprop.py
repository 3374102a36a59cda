"""The hand-derived update (`agents.manual_backprop`) against autograd, the reference path."""

from __future__ import annotations

import pytest
import torch
from conftest import make_trainer

from agents.ppo import PPO

# dohare: ReLU, no clipping of the value or the gradient, batch advantage normalisation. cleanrl: tanh,
# a clipped value loss, the global gradient-norm clip, per-minibatch advantages; both with an entropy
# bonus and CBP replacing units from the second update on.
PRESETS = ("dohare", "cleanrl")


def trainer_for(preset: str, backprop: str, *extra: str):
    return make_trainer(f"preset={preset}", "env.id=InvertedPendulum-v5", "ppo.rollout_steps=256",
                        "ppo.minibatch_size=64", "ppo.epochs=2", "ppo.ent_coef=0.01", "cbp.enabled=true",
                        "cbp.maturity_threshold=2", "cbp.replacement_rate=0.05", "run.total_steps=768",
                        f"ppo.backprop={backprop}", *extra)


def minibatch(agent: PPO, size: int = 64) -> tuple[torch.Tensor, ...]:
    b = agent.buffer
    index = torch.randperm(agent.batch_size, generator=torch.Generator().manual_seed(3))[:size]
    advantages = b.advantages.view(-1)
    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    return (b.flat_obs[index], b.flat_actions[index], b.logprobs.view(-1)[index], b.values.view(-1)[index],
            b.returns.view(-1)[index], advantages[index])


def gradients(agent: PPO) -> list[torch.Tensor]:
    return [p.grad.clone() for p in agent._policy_params + agent._value_params]


# compiled: the same arithmetic through torch.compile (each agent compiles its functions, ~10-20 s)
PATHS = [(preset, "manual") for preset in PRESETS] + [("cleanrl", "compiled")]


@pytest.mark.parametrize(("preset", "path"), PATHS)
def test_one_minibatch_gives_autograds_losses_gradients_and_features(preset: str, path: str) -> None:
    trainer = trainer_for(preset, path)
    agent = trainer.agent
    agent.collect_rollout()
    obs, actions, old_logprobs, old_values, returns, advantages = minibatch(agent)
    # make every branch of the clipped losses occur: ratios and value changes outside the clip range
    old_logprobs = old_logprobs + torch.linspace(-0.5, 0.5, len(old_logprobs))
    old_values = old_values + torch.linspace(-1.0, 1.0, len(old_values))
    manual, cbp = agent.manual_backprop, agent.cbp_policy
    assert manual is not None and cbp is not None

    results, grads, features = [], [], []
    for backward in ((agent._value_backward, agent._policy_backward),
                     (manual.value_backward, manual.policy_backward)):
        agent.optimizer.zero_grad(set_to_none=True)
        cbp.discard_features()
        value_loss = backward[0](obs, old_values, returns)
        policy_stats = backward[1](obs, actions, old_logprobs, advantages)
        results.append(torch.stack([value_loss, *policy_stats]))
        grads.append(gradients(agent))
        features.append([f.clone() for store in cbp._features for f in store])
    clipfrac = results[0][4]
    assert 0.0 < clipfrac < 1.0, "the ratios must fall on both sides of the clip range"
    torch.testing.assert_close(results[1], results[0], rtol=1e-5, atol=1e-7)
    for auto_grad, manual_grad in zip(*grads, strict=True):
        torch.testing.assert_close(manual_grad, auto_grad, rtol=1e-4, atol=1e-7)
    assert len(features[0]) == len(features[1]) == 2  # both hidden layers, one batch each
    for auto_features, manual_features in zip(*features, strict=True):
        torch.testing.assert_close(manual_features, auto_features, rtol=1e-5, atol=1e-6)
    trainer.close()


@pytest.mark.parametrize(("preset", "path"), PATHS[:2] + [("dohare", "compiled")])
def test_whole_updates_end_with_the_same_parameters_moments_and_cbp_picks(preset: str, path: str) -> None:
    agents, stats = [], []
    for backprop in ("autograd", path):
        trainer = trainer_for(preset, backprop)
        assert trainer.agent.state_dict()["backprop"] == backprop
        for _ in range(3):
            trainer.agent.collect_rollout()
            stats.append(trainer.agent.update())
        agents.append(trainer.agent)
        trainer.close()
    auto, manual = agents
    for key in stats[0]:
        assert stats[5][key] == pytest.approx(stats[2][key], rel=1e-4, abs=1e-6), key
    for a, b in zip(auto._policy_params + auto._value_params, manual._policy_params + manual._value_params,
                    strict=True):
        torch.testing.assert_close(b.detach(), a.detach(), rtol=1e-4, atol=1e-6)
        for moment in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(manual.optimizer.state[b][moment], auto.optimizer.state[a][moment],
                                       rtol=1e-3, atol=1e-9)
    for name in ("cbp_policy", "cbp_value"):
        auto_cbp, manual_cbp = getattr(auto, name), getattr(manual, name)
        assert sum(auto_cbp.replaced_total) > 0
        assert manual_cbp.replaced_total == auto_cbp.replaced_total
        for auto_age, manual_age in zip(auto_cbp.ages(), manual_cbp.ages(), strict=True):
            assert torch.equal(manual_age, auto_age), f"{name}: other units were replaced"


def test_auto_falls_back_to_autograd_where_manual_does_not_apply_and_manual_says_why() -> None:
    from dataclasses import replace

    from agents.manual_backprop import manual_backprop_for

    trainer = trainer_for("dohare", "auto")
    agent = trainer.agent
    agent.policy.mean_net[1].register_forward_hook(lambda *_: None)
    assert manual_backprop_for(agent.settings, agent.policy, agent.value) is None
    with pytest.raises(ValueError, match="ppo.backprop manual does not apply here: a forward hook on ReLU"):
        manual_backprop_for(replace(agent.settings, backprop="manual"), agent.policy, agent.value)
    trainer.close()


# The architectures the methods build: LayerNorm before each activation (NaP with weight projection, as the
# demo preset runs it), CReLU, and both on tanh and ReLU presets.
ARCHITECTURES = [("dohare", "methods.layer_norm.enabled=true", "methods.weight_projection.enabled=true"),
                 ("cleanrl", "methods.layer_norm.enabled=true"),
                 ("dohare", "methods.crelu.enabled=true")]


@pytest.mark.parametrize("preset_and_settings", ARCHITECTURES, ids=["nap", "layer_norm_tanh", "crelu"])
def test_layer_norm_and_crelu_networks_get_autograds_gradients_and_updates(
        preset_and_settings: tuple) -> None:
    preset, *settings = preset_and_settings
    agents, stats = [], []
    for backprop in ("autograd", "manual"):
        trainer = trainer_for(preset, backprop, "cbp.enabled=false", *settings)
        agent = trainer.agent
        assert (agent.manual_backprop is None) == (backprop == "autograd")
        agent.collect_rollout()
        obs, actions, old_logprobs, old_values, returns, advantages = minibatch(agent)
        old_logprobs = old_logprobs + torch.linspace(-0.5, 0.5, len(old_logprobs))
        agent.optimizer.zero_grad(set_to_none=True)
        if agent.manual_backprop is None:
            agent._value_backward(obs, old_values, returns)
            agent._policy_backward(obs, actions, old_logprobs, advantages)
        else:
            agent.manual_backprop.value_backward(obs, old_values, returns)
            agent.manual_backprop.policy_backward(obs, actions, old_logprobs, advantages)
        stats.append(gradients(agent))
        agent.optimizer.zero_grad(set_to_none=True)
        for _ in range(2):
            agent.update()
            agent.collect_rollout()
        agents.append(agent)
        trainer.close()
    assert len(stats[0]) > 6  # LayerNorm's weight and bias, or CReLU's wider layers, are among them
    for auto_grad, manual_grad in zip(*stats, strict=True):
        torch.testing.assert_close(manual_grad, auto_grad, rtol=1e-4, atol=1e-7)
    auto, manual = agents
    for a, b in zip(auto._policy_params + auto._value_params, manual._policy_params + manual._value_params,
                    strict=True):
        torch.testing.assert_close(b.detach(), a.detach(), rtol=1e-4, atol=1e-6)


def test_networks_it_cannot_stand_in_for_are_named() -> None:
    from torch import nn

    from agents.manual_backprop import unsupported

    relu_mlp = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    assert unsupported(relu_mlp, "relu") is None
    assert unsupported(relu_mlp, "tanh") == "ReLU at position 1 (only Linear, LayerNorm and Tanh)"
    assert unsupported(nn.Sequential(nn.Linear(3, 4), nn.Dropout(), nn.ReLU(), nn.Linear(4, 2)), "relu") == \
        "Dropout at position 1 (only Linear, LayerNorm and ReLU or ConcatenatedReLU)"
    assert unsupported(nn.Sequential(nn.Linear(3, 4, bias=False), nn.ReLU(), nn.Linear(4, 2)), "relu") \
        == "a Linear without a bias at position 0"
    assert unsupported(nn.Sequential(nn.Linear(3, 4), nn.ReLU()), "relu") == \
        "an MLP that does not end in a Linear layer"
    relu_mlp[1].register_forward_pre_hook(lambda *_: None)
    assert unsupported(relu_mlp, "relu") == "a forward hook on ReLU at position 1"


def test_a_forward_hook_added_later_stops_the_manual_path_instead_of_going_unseen() -> None:
    trainer = trainer_for("dohare", "auto")
    seen = []
    trainer.agent.value.register_forward_hook(lambda *_: seen.append(1))
    trainer.agent.collect_rollout()
    with pytest.raises(RuntimeError, match="forward hook on ValueFunction.*ppo.backprop: autograd"):
        trainer.agent.update()
    trainer.close()


def test_a_state_continues_on_the_path_that_computed_it() -> None:
    # A resume must be bit-identical, so under auto the saved path wins (states from before the choice
    # were computed by autograd); an explicit other path is refused rather than silently switched.
    source = trainer_for("dohare", "autograd")
    source.agent.collect_rollout()
    source.agent.update()
    state = source.agent.state_dict()
    source.close()
    assert state["backprop"] == "autograd"
    legacy = {key: value for key, value in state.items() if key != "backprop"}
    for saved in (state, legacy):
        resumed = trainer_for("dohare", "auto")
        assert resumed.agent.manual_backprop is not None
        resumed.agent.load_state_dict(saved)
        assert resumed.agent.manual_backprop is None
        resumed.close()
    explicit = trainer_for("dohare", "manual")
    with pytest.raises(ValueError, match="computed with autograd gradients; continue it with ppo.backprop "
                                         "autograd or auto"):
        explicit.agent.load_state_dict(state)
    explicit.close()
    manual = trainer_for("dohare", "auto")
    assert manual.agent.state_dict()["backprop"] == "manual"
    manual.close()


def test_compiled_without_a_cpp_compiler_is_a_config_error_naming_the_fix(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from torch._inductor import config as inductor_config  # reads CXX once, when first imported

    from rl_plasticity.experiment.config import ConfigError, load_config

    monkeypatch.setattr(inductor_config.cpp, "cxx", (None, "/nonexistent/c++"))
    with pytest.raises(ConfigError, match="ppo.backprop = compiled, but torch.compile found no working "
                                          "C\\+\\+ compiler .*; install one .* or use ppo.backprop: auto"):
        load_config(None, ["ppo.backprop=compiled"])
    load_config(None, ["ppo.backprop=manual"])  # the other paths need none
