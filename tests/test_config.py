"""Configs: presets, shipped files, overrides, and errors that name the key and the fix."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from rl_plasticity.experiment.config import (
    SECTIONS,
    ConfigError,
    build_config,
    config_to_yaml,
    describe_keys,
    flat_items,
    load_config,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def error_for(*overrides: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(None, list(overrides))
    return str(caught.value)


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_config_loads_and_round_trips(path: Path) -> None:
    config = load_config(path)
    assert build_config([("resolved", yaml.safe_load(config_to_yaml(config)))]) == config


def test_quickstart_configs_differ_only_in_cbp_and_its_optimizer() -> None:
    ppo = dict(flat_items(load_config(CONFIGS / "quickstart" / "ppo.yaml")))
    cbp = dict(flat_items(load_config(CONFIGS / "quickstart" / "cbp.yaml")))
    differing = {key for key in ppo if ppo[key] != cbp[key]}
    assert differing == {"cbp.enabled", "optimizer.betas", "optimizer.weight_decay"}
    assert (cbp["optimizer.betas"], cbp["optimizer.weight_decay"]) == ([0.99, 0.99], 1e-4)
    assert cbp["cbp.maturity_threshold"] * 2048 / 160 < cbp["run.total_steps"] / 10  # CBP acts early on


def test_preset_sets_defaults_that_sections_and_overrides_refine(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("preset: cleanrl\nppo:\n  gamma: 0.95\noptimizer:\n  lr: 1e-3\n"
                    "run:\n  total_steps: 2e6\n")
    config = load_config(path, ["ppo.gamma=0.9", "ppo.hidden_sizes=[32, 16]"])
    assert config.ppo.minibatch_size == 64 and config.ppo.activation == "tanh"  # from the preset
    assert config.ppo.gamma == 0.9  # --set beats the file
    assert config.optimizer.lr == 1e-3  # YAML reads 1e-3 as a string: accepted as the number
    assert config.run.total_steps == 2_000_000 and isinstance(config.run.total_steps, int)
    assert config.ppo.hidden_sizes == [32, 16]
    assert load_config(path, ["preset=dohare"]).ppo.minibatch_size == 128


def test_dohare_is_the_default_preset() -> None:
    config = load_config(None)
    assert config.preset == "dohare"
    assert config.ppo.hidden_sizes == [256, 256]
    assert (config.ppo.minibatch_size, config.optimizer.lr) == (128, 1e-4)


@pytest.mark.parametrize(("override", "fragments"), [
    ("ppo.gama=0.9", ["ppo.gama", "did you mean ppo.gamma"]),
    ("ppo.learning_rate=3e-4", ["ppo.learning_rate", "did you mean optimizer.lr"]),
    ("optimiser.lr=1", ["'optimiser'", "did you mean optimizer"]),
    ("ppo.gamma=1.5", ["ppo.gamma = 1.5", "out of range", "<= 1", "default: ppo.gamma: 0.99"]),
    ("ppo.gamma=fast", ["ppo.gamma", "wrong type", "a number"]),
    ("ppo.clip_vloss=1", ["ppo.clip_vloss", "true or false"]),
    ("ppo.activation=gelu", ["ppo.activation", "relu, tanh"]),
    ("preset=sb3", ["preset", "dohare, cleanrl"]),
    ("optimizer.betas=[0.9]", ["optimizer.betas", "list of 2 numbers"]),
    ("optimizer.betas=[0.9, 1.0]", ["optimizer.betas", "< 1"]),
    ("cbp.replacement_rate=2", ["cbp.replacement_rate", "<= 1"]),
    ("env.num_envs=0", ["env.num_envs", ">= 1"]),
    ("ppo.minibatch_size=100", ["ppo.minibatch_size", "does not divide", "2048", "e.g. 128"]),
    ("env.friction_range=[2.0, 0.02]", ["env.friction_range", "inverted"]),
    ("ppo.max_grad_norm=0", ["ppo.max_grad_norm", "> 0"]),
    ("gamma", ["not key=value", "--set"]),
])
def test_bad_values_name_the_key_the_problem_and_the_fix(override: str, fragments: list[str]) -> None:
    message = error_for(override)
    for fragment in fragments:
        assert fragment in message, message


def test_errors_name_the_file_they_come_from(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("ppo:\n  rollout_step: 1024\n")
    expected = r"bad\.yaml: unknown key ppo\.rollout_step \(did you mean ppo\.rollout_steps"
    with pytest.raises(ConfigError, match=expected):
        load_config(path)
    path.write_text("ppo: [1, 2]\n")
    with pytest.raises(ConfigError, match="section 'ppo' must be a mapping"):
        load_config(path)
    path.write_text("ppo: {gamma: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


def test_every_key_is_documented() -> None:
    rows = describe_keys()
    keys = [row[0] for row in rows]
    expected = ["preset"] + [f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)]
    assert keys == expected
    for key, _type, _default, doc in rows:
        assert len(doc) > 10, key
    cleanrl = {row[0]: row[2] for row in describe_keys("cleanrl")}
    assert cleanrl["ppo.max_grad_norm"] == 0.5 and cleanrl["optimizer.anneal_lr"] is True
