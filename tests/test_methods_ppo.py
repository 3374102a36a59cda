"""The plasticity methods in the PPO: configured under ``methods:``, acting on both networks (or the one
named), logged as ``methods/<name>/<net>/...``, and resumed exactly."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from conftest import assert_same_state, make_trainer, read_events

from agents.method_settings import MethodsSettings
from rl_plasticity import METHODS, tags
from rl_plasticity.experiment.checkpoint import latest_checkpoint
from rl_plasticity.experiment.config import ConfigError, describe_keys, load_config

TINY = ("env.id=SlipperyHopper-v5", "env.num_envs=2", "ppo.hidden_sizes=[16,16]", "ppo.rollout_steps=128",
        "ppo.minibatch_size=64", "ppo.epochs=2", "log.probe_every=0", "run.checkpoint_every=512",
        "run.total_steps=1024")
ACTING = {  # settings under which each method visibly acts within four PPO updates of a tiny ReLU network
    "redo": ("methods.redo.every=4", "methods.redo.tau=0.9"),
    "shrink_perturb": ("methods.shrink_perturb.every=2",),
    "weight_clipping": ("methods.weight_clipping.kappa=0.2",),
    "l2_init": ("methods.l2_init.strength=0.1",),
    "reset": ("methods.reset.every=8",),
    "parseval": (),
    "weight_projection": (),
}
EVIDENCE = {"redo": "reset_total", "shrink_perturb": "applied", "weight_clipping": "clipped",
            "l2_init": "penalty", "reset": "resets", "parseval": "penalty", "weight_projection": "rescale"}


def test_every_method_has_a_config_section_with_the_cores_options() -> None:
    sections = {f.name: f.type for f in dataclasses.fields(MethodsSettings)}
    settings = MethodsSettings()
    hooked = {name for name in sections if not getattr(settings, name).architecture}
    assert hooked == set(METHODS) - {"cbp"} == set(ACTING)
    assert set(sections) - hooked == {"layer_norm", "crelu"}
    for name in hooked:
        options = {f.name for f in dataclasses.fields(METHODS[name].Options)} - {"nonlinearity"}
        assert set(getattr(settings, name).options()) == options, name
    keys = [row[0] for row in describe_keys()]
    assert "methods.redo.tau" in keys and "methods.l2_init.networks" in keys


@pytest.mark.parametrize("name", sorted(ACTING))
def test_each_method_acts_on_both_networks_and_is_logged(name: str, tmp_path: Path) -> None:
    with make_trainer(*TINY, f"methods.{name}.enabled=true", *ACTING[name], run_dir=tmp_path) as trainer:
        for _ in range(4):
            trainer.iterate()
        attached = trainer.agent.methods[name]
        assert sorted(attached) == ["policy", "value"]
        for network, method in attached.items():
            assert method.statistics()[EVIDENCE[name]] > 0, (network, method.statistics())
    events = read_events(tmp_path)
    for network in ("policy", "value"):
        assert tags.method_statistic(name, network, EVIDENCE[name]) in events.Tags()["scalars"]


def test_networks_chooses_where_a_method_acts() -> None:
    with make_trainer(*TINY, "methods.weight_clipping.enabled=true",
                      "methods.weight_clipping.networks=value") as trainer:
        assert list(trainer.agent.methods["weight_clipping"]) == ["value"]


@pytest.mark.parametrize("restart", ["false", "true"])  # ReDo's moments: the optimizer's age or their own
def test_methods_combine_with_cbp_and_a_run_with_them_resumes_exactly(tmp_path: Path, restart: str) -> None:
    every_method = [f"methods.{name}.enabled=true" for name in (*ACTING, "layer_norm")]
    settings = (*TINY, "cbp.enabled=true", "cbp.maturity_threshold=2", "cbp.replacement_rate=0.05",
                *every_method, *(s for v in ACTING.values() for s in v),
                f"methods.redo.restart_bias_correction={restart}")
    with make_trainer(*settings, run_dir=tmp_path / "whole") as trainer:
        trainer.train(progress=False)
    with make_trainer(*settings, run_dir=tmp_path / "split") as trainer:
        for _ in range(2):
            trainer.iterate()  # a checkpoint at 512, then the run "dies"
    with make_trainer(*settings, run_dir=tmp_path / "split") as trainer:
        assert trainer.agent.global_step == 512
        trainer.train(progress=False)
    whole, split = (latest_checkpoint(tmp_path / name)[1]["agent"] for name in ("whole", "split"))
    assert set(whole["methods"]) == set(ACTING)
    for part in ("policy", "value", "optimizer", "cbp_policy", "cbp_value", "methods"):
        assert_same_state(whole[part], split[part], part)


def test_a_checkpoint_resumes_only_under_the_same_methods(tmp_path: Path) -> None:
    with make_trainer(*TINY, run_dir=tmp_path) as trainer:
        trainer.iterate()
        trainer.save_checkpoint()
    with pytest.raises(ConfigError, match="different config"):
        make_trainer(*TINY, "methods.redo.enabled=true", run_dir=tmp_path)


def test_method_keys_are_checked_like_every_other_key() -> None:
    with pytest.raises(ConfigError, match=r"unknown section 'methods.redoo' \(did you mean methods.redo\?\)"):
        load_config(None, ["methods.redoo.tau=0.1"])
    with pytest.raises(ConfigError, match="methods.redo.tau = 2.0 is out of range"):
        load_config(None, ["methods.redo.tau=2"])
    with pytest.raises(ConfigError, match="must be a mapping of sections"):
        load_config(None, ["methods=3"])
    assert load_config(None, ["methods={redo: {enabled: true}}"]).methods.redo.enabled


def test_a_reset_at_each_physics_change() -> None:
    with make_trainer(*TINY, "env.change_every=600", "env.change_at=immediate", "methods.reset.enabled=true",
                      "methods.reset.every=0", "methods.reset.at_change=true") as trainer:
        seen = []
        for _ in range(4):  # 512 steps of each of 2 copies, whose friction changes after 300 each
            trainer.iterate()
            seen.append(trainer.agent.methods["reset"]["policy"].resets)
        assert seen == [0, 0, 1, 1]


def test_layer_norm_goes_before_each_hidden_activation_of_the_networks_it_names() -> None:
    import numpy as np
    import torch
    from torch import nn

    with make_trainer(*TINY, "preset=dohare", "methods.layer_norm.enabled=true",
                      "methods.layer_norm.networks=value", "cbp.enabled=true") as trainer:
        value, policy = trainer.agent.value.net, trainer.agent.policy.mean_net
        kinds = [type(m).__name__ for m in value]
        assert kinds == ["Linear", "LayerNorm", "ReLU", "Linear", "LayerNorm", "ReLU", "Linear"]
        assert not any(isinstance(m, nn.LayerNorm) for m in policy)
        trainer.iterate()
        # The rollout's numpy forward agrees with torch's, LayerNorm included.
        with make_trainer(*TINY, "methods.layer_norm.enabled=true") as normed:
            from agents.networks import FastForward

            fast = FastForward(normed.agent.policy.mean_net, normed.config.ppo.activation)
            x = np.random.default_rng(0).normal(size=(5, normed.agent.obs_dim)).astype(np.float32)
            with torch.no_grad():
                expected = normed.agent.policy.mean_net(torch.from_numpy(x)).numpy()
            np.testing.assert_allclose(fast(x.copy()), expected, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(fast(x.astype(np.float64)), expected, rtol=1e-5, atol=1e-6)



def test_crelu_concatenates_both_halves_and_leaves_no_unit_dead() -> None:
    import numpy as np
    import torch

    from agents.networks import ConcatenatedReLU, FastForward

    with make_trainer(*TINY, "methods.crelu.enabled=true", "methods.crelu.networks=policy",
                      "log.probe_every=128") as trainer:
        policy, value = trainer.agent.policy.mean_net, trainer.agent.value.net
        assert [type(m).__name__ for m in policy] == ["Linear", "ConcatenatedReLU"] * 2 + ["Linear"]
        assert [m.in_features for m in policy if isinstance(m, torch.nn.Linear)] == [11, 32, 32]
        assert not any(isinstance(m, ConcatenatedReLU) for m in value)
        x = torch.randn(300, 16)
        features = ConcatenatedReLU()(x)
        torch.testing.assert_close(features, torch.cat((x.clamp(min=0), (-x).clamp(min=0)), dim=1))
        # each pre-activation passes through exactly one half, so every unit is active on some input
        assert ((features[:, :16] > 0) ^ (features[:, 16:] > 0)).all()
        trainer.iterate()  # trains and probes the 32-wide features of the 16 units
        obs = np.random.default_rng(0).normal(size=(5, trainer.agent.obs_dim)).astype(np.float32)
        with torch.no_grad():
            expected = policy(torch.from_numpy(obs)).numpy()
        np.testing.assert_allclose(FastForward(policy, "relu")(obs.copy()), expected, rtol=1e-5, atol=1e-6)


def test_crelu_takes_the_weight_methods_and_resumes_exactly(tmp_path: Path) -> None:
    settings = (*TINY, "methods.crelu.enabled=true", *(f"methods.{name}.enabled=true" for name in
                ("shrink_perturb", "weight_clipping", "l2_init", "parseval", "weight_projection")),
                "methods.shrink_perturb.every=2")
    with make_trainer(*settings, run_dir=tmp_path / "whole") as trainer:
        trainer.train(progress=False)
        assert trainer.agent.methods["shrink_perturb"]["value"].statistics()["applied"] > 0
    with make_trainer(*settings, run_dir=tmp_path / "split") as trainer:
        for _ in range(2):
            trainer.iterate()
    with make_trainer(*settings, run_dir=tmp_path / "split") as trainer:
        trainer.train(progress=False)
    whole, split = (latest_checkpoint(tmp_path / name)[1]["agent"] for name in ("whole", "split"))
    for part in ("policy", "value", "optimizer", "methods"):
        assert_same_state(whole[part], split[part], part)


@pytest.mark.parametrize(("settings", "message"), [
    (("cbp.enabled=true",), "methods.crelu does not combine with cbp"),
    (("methods.redo.enabled=true", "methods.redo.networks=value"), "does not combine with methods.redo"),
    (("ppo.activation=tanh",), "methods.crelu replaces ReLU but ppo.activation = tanh"),
])
def test_crelu_refuses_what_it_cannot_serve(settings: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["methods.crelu.enabled=true", *settings])
    # on separate networks, ReDo and CReLU do combine
    load_config(None, ["methods.crelu.enabled=true", "methods.crelu.networks=policy",
                       "methods.redo.enabled=true", "methods.redo.networks=value"])
