"""Stable-Baselines3 integration: CBP on SB3 PPO's two networks, the logging callback, save/load, layouts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch import nn

pytest.importorskip("stable_baselines3")

from conftest import assert_same_state, scalar_values
from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.callbacks import BaseCallback, CallbackList  # noqa: E402
from stable_baselines3.common.env_util import make_vec_env  # noqa: E402
from stable_baselines3.common.evaluation import evaluate_policy  # noqa: E402
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor  # noqa: E402

from agents.sb3 import (  # noqa: E402
    PlasticityCallback,
    attach,
    attach_cbp,
    attached_cbp,
    attached_methods,
    cbp_sidecar_path,
    detach,
    load_with_cbp,
    network_layers,
    save_with_cbp,
)

METRICS = ("dormant_fraction", "inactive_fraction", "approx_rank", "effective_rank", "weight_magnitude")


class TargetReach(gym.Env):
    """Put the action on the observed target: reward -|a - target|, a new target every step, 16 steps.

    Learnable in a few thousand steps; the best constant action (0) returns -16, a random policy about -24.
    """

    observation_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.steps = 0
        self.target = self.np_random.uniform(-1, 1, 2).astype(np.float32)
        return self.target, {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        reward = -float(np.abs(np.clip(action, -1, 1) - self.target).sum())
        self.steps += 1
        self.target = self.np_random.uniform(-1, 1, 2).astype(np.float32)
        return self.target, reward, False, self.steps >= 16, {}


def make_model(n_envs: int = 1, net_arch: Any = (32, 32), **kwargs: Any) -> PPO:
    torch.set_num_threads(1)
    settings = {"n_steps": 128, "batch_size": 64, "n_epochs": 2, "seed": 0, **kwargs}
    net_arch = list(net_arch) if isinstance(net_arch, tuple) else net_arch
    policy_kwargs = {"net_arch": net_arch, **settings.pop("policy_kwargs", {})}
    return PPO("MlpPolicy", make_vec_env(TargetReach, n_envs=n_envs, seed=0), policy_kwargs=policy_kwargs,
               **settings)


def gradient_steps_per_train(model: PPO) -> int:
    return model.n_epochs * model.n_steps * model.n_envs // model.batch_size


# ---------------------------------------------------------------------- CBP inside SB3's train()
def test_cbp_replaces_units_in_both_networks_and_ppo_still_learns() -> None:
    model = make_model(n_envs=2, n_steps=256, n_epochs=4, learning_rate=1e-3)
    cbps = attach_cbp(model, replacement_rate=0.02, maturity_threshold=20)
    untrained, _ = evaluate_policy(model, model.get_env(), n_eval_episodes=20, deterministic=True)
    model.learn(6144)
    trained, _ = evaluate_policy(model, model.get_env(), n_eval_episodes=20, deterministic=True)

    for cbp in cbps:
        assert all(count > 0 for count in cbp.replaced_total), cbp
    with torch.no_grad():
        outputs = model.policy(torch.rand(64, 2) * 2 - 1)
    assert all(torch.isfinite(t).all() for t in outputs)
    # -16 is the best a constant policy can do and a random one gets about -24.
    assert trained > -10.0 > untrained, (untrained, trained)


class RolloutWatcher(BaseCallback):
    """Snapshots CBP around each rollout and, after the second one, runs a manual CBP step."""

    def __init__(self) -> None:
        super().__init__()
        self.snapshots: list[tuple[str, list[list[torch.Tensor]]]] = []
        self.manual_step_warnings: list[str] = []

    def snapshot(self, moment: str) -> None:
        pair = attached_cbp(self.model)
        assert pair is not None
        self.snapshots.append((moment, [cbp.utilities() + cbp.ages() for cbp in pair]))

    def _on_rollout_start(self) -> None:
        self.snapshot("start")

    def _on_rollout_end(self) -> None:
        self.snapshot("end")
        if len(self.snapshots) == 4:
            # A rollout captured no features, so a step now finds none and is skipped.
            with pytest.warns(UserWarning, match="no grad-enabled forward") as record:
                for cbp in attached_cbp(self.model):
                    cbp.step()
            self.manual_step_warnings = [str(w.message) for w in record]

    def _on_step(self) -> bool:
        return True


def test_rollouts_leave_cbp_alone_and_cbp_steps_once_per_gradient_step() -> None:
    model = make_model(n_envs=2, n_steps=64, batch_size=32, n_epochs=3)
    cbps = attach_cbp(model, replacement_rate=0.05, maturity_threshold=5)
    optimizer_steps = []
    model.policy.optimizer.register_step_post_hook(lambda *_: optimizer_steps.append(1))
    watcher = RolloutWatcher()
    model.learn(2 * 128, callback=watcher)

    per_train = gradient_steps_per_train(model)
    assert per_train == 12
    assert len(optimizer_steps) == 2 * per_train
    assert [cbp.steps for cbp in cbps] == [2 * per_train, 2 * per_train]
    assert watcher.manual_step_warnings
    for (start, before), (end, after) in zip(watcher.snapshots[::2], watcher.snapshots[1::2], strict=True):
        assert (start, end) == ("start", "end")
        for tensors_before, tensors_after in zip(before, after, strict=True):
            for a, b in zip(tensors_before, tensors_after, strict=True):
                torch.testing.assert_close(a, b)


class StaleFeatureWatcher(BaseCallback):
    """Records, at every rollout start, how many captured batches each CBP still holds."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[list[int]] = []

    def _on_rollout_start(self) -> None:
        self.pending.append([len(store) for cbp in attached_cbp(self.model) for store in cbp._features])

    def _on_step(self) -> bool:
        return True


def test_callback_discards_features_of_an_update_stopped_early_on_target_kl() -> None:
    # target_kl so small that SB3 breaks out after the forward of the second minibatch, before its step.
    model = make_model(n_steps=64, batch_size=32, n_epochs=2, target_kl=1e-12)
    cbps = attach_cbp(model, replacement_rate=0.0)
    model.learn(64)
    assert [len(store) for cbp in cbps for store in cbp._features] == [1, 1, 1, 1]  # the stale batch

    watcher = StaleFeatureWatcher()
    model.learn(2 * 64, callback=CallbackList([PlasticityCallback(probe_every=0), watcher]),
                reset_num_timesteps=False)
    assert watcher.pending == [[0, 0, 0, 0], [0, 0, 0, 0]]


# ---------------------------------------------------------------------- the callback
def scalars(log_dir: Path) -> dict[str, list[float]]:
    (run_dir,) = [p for p in log_dir.iterdir() if p.is_dir()]
    return scalar_values(run_dir)


def test_callback_logs_plasticity_cbp_and_a_trainer_owned_friction(tmp_path: Path) -> None:
    import envs  # noqa: F401  (registers SlipperyHopper-v5)

    torch.set_num_threads(1)
    env = make_vec_env("SlipperyHopper-v5", n_envs=1, seed=0, env_kwargs={"change_every": 10**9})
    model = PPO("MlpPolicy", env, n_steps=128, batch_size=64, n_epochs=1, seed=0,
                policy_kwargs={"net_arch": [16, 16]}, tensorboard_log=str(tmp_path))
    attach_cbp(model, replacement_rate=0.1, maturity_threshold=1)
    model.learn(512, callback=PlasticityCallback(probe_batch_size=100,
                                                  friction_schedule=[(0, 0.3), (256, 1.2)]))
    logged = scalars(tmp_path)

    for network in ("policy", "value"):
        for k in (0, 1):
            for metric in METRICS:
                assert len(logged[f"plasticity/{network}/layer{k}/{metric}"]) == 4
            replaced = logged[f"cbp/{network}/layer{k}/replaced"]
            assert replaced[0] == 0 and replaced[-1] > 0
        assert f"plasticity/{network}/layer2/weight_magnitude" in logged
    # The schedule's value for step 256 is set after step 256: rollouts 3 and 4 run on it.
    np.testing.assert_allclose(logged["env/friction"], [0.3, 0.3, 1.2, 1.2], rtol=1e-6)
    assert env.get_attr("friction") == [pytest.approx(1.2)]
    assert 0.0 <= logged["plasticity/policy/layer1/dormant_fraction"][-1] <= 1.0


def test_callback_logs_zero_replacements_without_cbp(tmp_path: Path) -> None:
    model = make_model(tensorboard_log=str(tmp_path))
    model.learn(256, callback=PlasticityCallback(probe_every=2))
    logged = scalars(tmp_path)
    assert logged["cbp/policy/layer0/replaced"] == [0, 0]
    assert logged["cbp/value/layer1/replaced"] == [0, 0]
    assert len(logged["plasticity/value/layer0/effective_rank"]) == 1  # probed on rollout 1 of 2
    assert "env/friction" not in logged


# ---------------------------------------------------------------------- save and load
def test_save_and_load_keep_the_cbp_state_and_keep_stepping(tmp_path: Path) -> None:
    model = make_model()
    cbps = attach_cbp(model, replacement_rate=0.05, maturity_threshold=3, decay_rate=0.9)
    model.learn(384)
    sidecar = save_with_cbp(model, tmp_path / "model")
    assert sidecar == cbp_sidecar_path(tmp_path / "model.zip") == tmp_path / "model.cbp.pt"

    loaded, loaded_cbps = load_with_cbp(tmp_path / "model.zip", env=model.get_env())
    assert attached_cbp(loaded) is loaded_cbps
    for original, restored in zip(cbps, loaded_cbps, strict=True):
        assert (restored.maturity_threshold, restored.decay_rate) == (3, 0.9)
        assert restored.steps == original.steps > 0
        assert restored.replaced_total == original.replaced_total
        assert sum(restored.replaced_total) > 0
        for a, b in zip(original.ages() + original.utilities(), restored.ages() + restored.utilities(),
                        strict=True):
            torch.testing.assert_close(a, b)

    steps_before = [cbp.steps for cbp in loaded_cbps]
    loaded.learn(128, reset_num_timesteps=False)
    per_train = gradient_steps_per_train(loaded)
    assert [cbp.steps for cbp in loaded_cbps] == [s + per_train for s in steps_before]
    assert [cbp.steps for cbp in cbps] == steps_before  # the original model's hooks stay on its optimizer


def test_loading_a_model_saved_without_cbp_says_how(tmp_path: Path) -> None:
    make_model().save(tmp_path / "plain")
    with pytest.raises(FileNotFoundError, match="attach_cbp"):
        load_with_cbp(tmp_path / "plain")


# ---------------------------------------------------------------------- layouts
def test_separate_and_unequal_networks_are_supported() -> None:
    model = make_model(net_arch={"pi": [16, 16], "vf": [8]},
                       policy_kwargs={"share_features_extractor": False})
    policy_cbp, value_cbp = attach_cbp(model)
    assert [len(u) for u in policy_cbp.utilities()] == [16, 16]
    assert [len(u) for u in value_cbp.utilities()] == [8]
    assert policy_cbp.layers[-1] is model.policy.action_net
    assert value_cbp.layers[-1] is model.policy.value_net


class LinearExtractor(BaseFeaturesExtractor):
    def __init__(self, observation_space: spaces.Box) -> None:
        super().__init__(observation_space, features_dim=8)
        self.linear = nn.Linear(observation_space.shape[0], 8)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.linear(observations))


@pytest.mark.parametrize(("layout", "message"), [
    ({"net_arch": []}, "policy network has no hidden layer"),
    ({"net_arch": {"pi": [16], "vf": []}}, "value network has no hidden layer"),
    ({"net_arch": [16], "policy_kwargs": {"features_extractor_class": LinearExtractor}},
     "nn.Linear layers outside them"),
])
def test_unsupported_layouts_are_refused_with_what_is_supported(layout: dict[str, Any], message: str) -> None:
    model = make_model(**layout)
    with pytest.raises(ValueError, match=message) as error:
        attach_cbp(model)
    assert "net_arch=dict(pi=[256, 256], vf=[256, 256])" in str(error.value)
    assert attached_cbp(model) is None


def test_layers_shared_by_both_networks_and_a_second_attachment_are_refused() -> None:
    model = make_model(net_arch=[16])
    model.policy.mlp_extractor.value_net = model.policy.mlp_extractor.policy_net  # a shared trunk
    with pytest.raises(ValueError, match="shared by both networks"):
        network_layers(model.policy)
    with pytest.raises(ValueError, match="no mlp_extractor"):
        network_layers(nn.Sequential(nn.Linear(2, 2)))

    model = make_model(net_arch=[16])
    attach_cbp(model)
    with pytest.raises(ValueError, match="already has CBP attached"):
        attach_cbp(model)


def test_agents_imports_without_sb3_and_agents_sb3_says_what_to_install() -> None:
    code = ("import sys; sys.modules['stable_baselines3'] = None\n"
            "import agents\n"
            "try:\n    import agents.sb3\nexcept ImportError as error:\n    print(error)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[1])
    assert "pip install 'rl-plasticity[sb3]'" in result.stdout


# ---------------------------------------------------------------------- the other methods
def test_any_method_attaches_to_both_networks_and_is_logged(tmp_path: Path) -> None:
    model = make_model(tensorboard_log=str(tmp_path))
    clipping = attach(model, "weight_clipping", kappa=0.2)
    l2 = attach(model, "l2_init", networks=("value",), strength=0.1)
    assert sorted(clipping) == ["policy", "value"] and list(l2) == ["value"]
    model.learn(256, callback=PlasticityCallback(probe_every=0))
    policy_layers, value_layers = network_layers(model.policy)
    for layer in (*policy_layers, *value_layers):
        assert layer.weight.abs().max() <= 0.2 / layer.in_features ** 0.5 + 1e-7
    logged = scalars(tmp_path)
    assert len(logged["methods/weight_clipping/policy/clipped"]) == 2
    assert logged["methods/l2_init/value/penalty"][-1] > 0 and "methods/l2_init/policy/penalty" not in logged
    with pytest.raises(ValueError, match="already has weight_clipping attached"):
        attach(model, "weight_clipping")
    assert detach(model, "weight_clipping") is not None and "weight_clipping" not in attached_methods(model)
    listed = ("unknown method 'redoo'; the methods are l2_init, parseval, redo, reset, shrink_perturb, "
              "weight_clipping, weight_projection \\(and cbp, through attach_cbp\\)")
    with pytest.raises(ValueError, match="crelu is an architecture"):
        attach(model, "crelu")
    with pytest.raises(ValueError, match=listed):
        attach(model, "redoo")


def test_save_and_load_with_methods_restore_every_method_and_cbp(tmp_path: Path) -> None:
    from agents.sb3 import load_with_methods, methods_sidecar_path, save_with_methods

    model = make_model()
    attach_cbp(model, replacement_rate=0.05, maturity_threshold=3)
    attach(model, "redo", every=4, tau=0.9, init="lecun")
    attach(model, "l2_init", networks=("value",), strength=0.1)
    model.learn(256)
    with pytest.raises(ValueError, match="no plasticity method is attached"):
        save_with_methods(make_model(), tmp_path / "bare")
    sidecar = save_with_methods(model, tmp_path / "model")
    assert sidecar == methods_sidecar_path(tmp_path / "model.zip") == tmp_path / "model.methods.pt"

    loaded = load_with_methods(tmp_path / "model.zip", env=model.get_env())
    before, after = attached_methods(model), attached_methods(loaded)
    assert {name: sorted(nets) for name, nets in after.items()} == {"redo": ["policy", "value"],
                                                                    "l2_init": ["value"]}
    assert after["redo"]["policy"].options == before["redo"]["policy"].options
    assert after["redo"]["value"].reset_total == before["redo"]["value"].reset_total
    assert sum(after["redo"]["value"].reset_total) > 0
    for name, nets in before.items():
        for net, method in nets.items():
            assert_same_state(method.state_dict(), after[name][net].state_dict(), f"{name}/{net}")
    for original, restored in zip(attached_cbp(model), attached_cbp(loaded), strict=True):
        assert_same_state(original.state_dict(), restored.state_dict(), "cbp")
    updates = after["l2_init"]["value"].updates
    loaded.learn(128, reset_num_timesteps=False)
    assert after["l2_init"]["value"].updates == updates + gradient_steps_per_train(loaded)
    with pytest.raises(FileNotFoundError, match="save_with_methods"):
        load_with_methods(tmp_path / "bare")
    # a model saved again on its own no longer matches its sidecar: refused, not restored stale
    model.learn(128, reset_num_timesteps=False)
    model.save(tmp_path / "model")
    with pytest.raises(ValueError, match="saved again without it"):
        load_with_methods(tmp_path / "model.zip", env=model.get_env())
