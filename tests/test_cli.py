"""The rl-plasticity CLI: a tiny training run writes every TensorBoard tag, config.yaml and checkpoints;
user errors exit with code 2 and a message, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import read_events

from rl_plasticity.experiment.checkpoint import list_checkpoints, load_checkpoint
from rl_plasticity.experiment.cli import main
from rl_plasticity.experiment.config import load_config

TINY = ["--total-steps", "768", "--set", "ppo.rollout_steps=256", "--set", "ppo.minibatch_size=64",
        "--set", "ppo.epochs=1", "--set", "log.probe_every=256", "--set", "log.histogram_every=512",
        "--set", "log.probe_batch=128", "--set", "run.checkpoint_every=512", "--set", "env.change_every=300"]
METRICS = ("dormant_fraction", "inactive_fraction", "approx_rank", "effective_rank", "weight_magnitude")
SCALAR_TAGS = [
    "charts/episodic_return", "charts/episodic_length", "charts/SPS", "charts/learning_rate",
    *(f"losses/{name}" for name in ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac",
                                    "explained_variance")),
    "env/friction",
    *(f"plasticity/{net}/layer{k}/{metric}"
      for net in ("policy", "value") for k in (0, 1) for metric in METRICS),
    *(f"plasticity/{net}/{name}" for net in ("policy", "value") for name in ("grad_norm", "weight_change")),
    *(f"cbp/{net}/layer{k}/replaced" for net in ("policy", "value") for k in (0, 1)),
]
HISTOGRAM_TAGS = [f"cbp/{net}/layer{k}/utility" for net in ("policy", "value") for k in (0, 1)]


def test_train_writes_every_tag_the_config_and_checkpoints(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "slippery.yaml"
    config.write_text("env: {id: SlipperyHopper-v5}\ncbp: {enabled: true, maturity_threshold: 4, "
                      "replacement_rate: 0.02}\n")
    code = main(["train", str(config), "--logdir", str(tmp_path / "runs"), "--seed", "3", "--quiet", *TINY])
    assert code == 0, capsys.readouterr().err
    run_dir = tmp_path / "runs" / "slippery" / "seed3"
    assert "run directory" in capsys.readouterr().out

    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
    events = read_events(run_dir)
    tags = events.Tags()
    missing = [tag for tag in SCALAR_TAGS if tag not in tags["scalars"]]
    assert not missing, missing
    assert sorted(HISTOGRAM_TAGS) == sorted(tags["histograms"])
    assert "hyperparameters/text_summary" in tags["tensors"]
    assert [e.step for e in events.Scalars("charts/SPS")] == [256, 512, 768]  # global env steps
    assert [e.step for e in events.Scalars("plasticity/value/layer1/approx_rank")] == [256, 512, 768]
    assert events.Scalars("cbp/value/layer0/replaced")[-1].value > 0
    assert {e.value for e in events.Scalars("env/friction")} <= {e for e in _frictions(3)}

    resolved = load_config(run_dir / "config.yaml")
    assert resolved.run.seed == 3 and resolved.run.total_steps == 768 and resolved.cbp.enabled
    assert [step for step, _ in list_checkpoints(run_dir)] == [512, 768]
    state = load_checkpoint(run_dir / "checkpoints" / "step_768.pt")
    assert state["global_step"] == 768 and state["agent"]["cbp_policy"]["steps"] == 12
    assert state["envs"]["copies"][0]["schedule"]["total_steps"] == 768


def _frictions(seed: int) -> list[float]:
    import gymnasium as gym

    import envs  # noqa: F401

    env = gym.make("SlipperyHopper-v5", change_every=300, schedule_seed=seed)
    values = []
    for _ in range(4):
        values.append(env.unwrapped.friction)
        env.unwrapped.schedule.advance()
    env.close()
    return [float(torch.tensor(v, dtype=torch.float32)) for v in values]


def test_plain_ppo_logs_zero_replacements_so_runs_overlay(tmp_path: Path) -> None:
    config = tmp_path / "plain.yaml"
    config.write_text("env: {id: Pendulum-v1}\nppo: {hidden_sizes: [32, 32]}\n")
    no_drift = TINY[:-2]  # Pendulum does not drift: env.change_every would be refused
    assert main(["train", str(config), "--logdir", str(tmp_path), "--run-name", "p", "--quiet",
                 *no_drift]) == 0
    events = read_events(tmp_path / "p")
    for net in ("policy", "value"):
        for k in (0, 1):
            assert [e.value for e in events.Scalars(f"cbp/{net}/layer{k}/replaced")] == [0.0, 0.0, 0.0]
    assert "env/friction" not in events.Tags()["scalars"]  # a plain Gymnasium env has no schedule


@pytest.mark.parametrize(("arguments", "fragments"), [
    (["--set", "ppo.gama=0.9"], ["ppo.gama", "did you mean ppo.gamma"]),
    (["--set", "optimizer.lr=-1"], ["optimizer.lr", "out of range", ">= 0"]),
    (["--set", "env.id=SlipperyAnt-v9"], ["env.id", "unknown Gymnasium env id", "SlipperyAnt-v5"]),
])
def test_user_errors_exit_2_with_the_key_and_no_traceback(
    arguments: list[str], fragments: list[str], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("run: {total_steps: 1000}\n")
    assert main(["train", str(config), "--logdir", str(tmp_path), "--quiet", *arguments]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rl-plasticity train: error: ") and "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err


def test_missing_config_a_finished_run_and_a_foreign_directory(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    assert main(["train", str(tmp_path / "nope.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    config = tmp_path / "c.yaml"
    config.write_text("env: {id: Pendulum-v1}\nppo: {hidden_sizes: [8]}\n")
    run = ["train", str(config), "--logdir", str(tmp_path / "runs"), "--quiet", "--total-steps", "256",
           "--set", "ppo.rollout_steps=256", "--set", "ppo.minibatch_size=256", "--set", "ppo.epochs=1"]
    assert main(run) == 0
    assert main(run) == 0
    assert "already finished (256 of 256 steps)" in capsys.readouterr().err
    foreign = tmp_path / "runs" / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("precious")
    assert main([*run, "--run-name", "mine", "--fresh"]) == 2
    assert "is not a run directory" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "precious"


def test_module_entry_point_reports_bad_keys_with_exit_code_2(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("ppo:\n  learning_rate: 3e-4\n")
    command = [sys.executable, "-m", "rl_plasticity", "train", str(config), "--logdir", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "unknown key ppo.learning_rate (did you mean optimizer.lr?)" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_command_lists_keys_and_resolves_files(capsys: pytest.CaptureFixture) -> None:
    assert main(["config"]) == 0
    listing = capsys.readouterr().out
    assert "ppo.bootstrap_truncation" in listing and "cbp.maturity_threshold" in listing
    config = Path(__file__).resolve().parents[1] / "configs" / "quickstart" / "cbp.yaml"
    assert main(["config", str(config), "--set", "run.seed=7"]) == 0
    resolved = capsys.readouterr().out
    assert "seed: 7" in resolved and "enabled: true" in resolved
