"""Runs that survive: SIGKILL/SIGTERM and resume end bit-identical, TensorBoard continues without gaps or
duplicates, corrupt checkpoints fall back, only the newest K are kept, a NaN stops the run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import assert_same_state, scalar_steps

from agents import PPO
from rl_plasticity.experiment.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
from rl_plasticity.experiment.cli import main
from rl_plasticity.experiment.config import load_config
from rl_plasticity.experiment.progress import read_progress
from rl_plasticity.experiment.runner import Trainer, TrainingDiverged

# Two env copies, friction changes, CBP replacing units and probes logging: every piece of state matters.
TINY = """\
preset: cleanrl
env: {id: SlipperyHopper-v5, num_envs: 2, change_every: 600}
ppo: {hidden_sizes: [32, 32], rollout_steps: 128, minibatch_size: 64, epochs: 2}
cbp: {enabled: true, maturity_threshold: 4, replacement_rate: 0.05}
log: {probe_every: 512, histogram_every: 0}
run: {total_steps: 12288, checkpoint_every: 512, keep_checkpoints: 2, seed: 3}
"""


def train_command(config: Path, logdir: Path, run_name: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "rl_plasticity", "train", str(config), "--logdir", str(logdir),
            "--run-name", run_name, "--quiet", *extra]


def stop_after_first_checkpoint(command: list[str], run_dir: Path, signum: int) -> int:
    """Start ``command``, send ``signum`` as soon as a checkpoint exists, return the exit code."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list_checkpoints(run_dir) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert process.poll() is None, f"the run ended before it could be stopped: {process.stderr.read()}"
    process.send_signal(signum)
    process.wait(timeout=120)
    return process.returncode


def final_state(run_dir: Path) -> dict:
    found = latest_checkpoint(run_dir)
    assert found is not None
    return found[1]


def assert_identical(a: dict, b: dict) -> None:
    for part in ("policy", "value", "optimizer", "cbp_policy", "cbp_value"):
        assert_same_state(a["agent"][part], b["agent"][part], part)
    for x, y in zip(a["envs"]["copies"], b["envs"]["copies"], strict=True):
        assert_same_state({key: x[key] for key in ("schedule", "elapsed_steps", "physics")},
                          {key: y[key] for key in ("schedule", "elapsed_steps", "physics")}, "envs")
    assert a["episodes_seen"] == b["episodes_seen"] and a["recent_returns"] == b["recent_returns"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An uninterrupted run, a run SIGKILLed then resumed, and a run SIGTERMed then resumed."""
    root = tmp_path_factory.mktemp("resume")
    config = root / "tiny.yaml"
    config.write_text(TINY)
    logdir = root / "runs"
    subprocess.run(train_command(config, logdir, "whole"), check=True, capture_output=True)
    dirs = {"whole": logdir / "whole"}
    for name, signum in (("killed", signal.SIGKILL), ("terminated", signal.SIGTERM)):
        command = train_command(config, logdir, name)
        code = stop_after_first_checkpoint(command, logdir / name, signum)
        dirs[name] = logdir / name
        dirs[f"{name}_code"] = code  # type: ignore[assignment]
        dirs[f"{name}_progress"] = read_progress(logdir / name)  # type: ignore[assignment]
        dirs[f"{name}_stopped_at"] = list_checkpoints(logdir / name)[-1][0]  # type: ignore[assignment]
        resumed = subprocess.run(command, capture_output=True, text=True, check=True)
        assert "resuming from" in resumed.stderr
    return dirs


def test_a_run_killed_with_sigkill_resumes_bit_identical(runs: dict) -> None:
    assert runs["killed_code"] == -signal.SIGKILL
    assert runs["killed_stopped_at"] < 12288
    assert_identical(final_state(runs["whole"]), final_state(runs["killed"]))


def test_sigterm_checkpoints_at_a_rollout_boundary_and_resumes_bit_identical(runs: dict) -> None:
    assert runs["terminated_code"] == 143
    assert runs["terminated_progress"]["status"] == "stopped"
    assert runs["terminated_stopped_at"] % 256 == 0 and runs["terminated_stopped_at"] < 12288
    assert_identical(final_state(runs["whole"]), final_state(runs["terminated"]))
    assert read_progress(runs["terminated"])["status"] == "finished"


@pytest.mark.parametrize("run", ["killed", "terminated"])
def test_tensorboard_curves_continue_without_duplicates_or_gaps(runs: dict, run: str) -> None:
    for tag in ("losses/policy_loss", "cbp/value/layer1/replaced", "plasticity/policy/layer0/approx_rank"):
        expected = scalar_steps(runs["whole"], tag)
        assert scalar_steps(runs[run], tag) == expected, tag
    assert expected[-1] == 12288


def test_only_the_newest_checkpoints_are_kept(runs: dict) -> None:
    assert [step for step, _ in list_checkpoints(runs["whole"])] == [11776, 12288]


# ---------------------------------------------------------------------- in-process checks
def tiny_config(tmp_path: Path, *overrides: str):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path, load_config(path, ["run.total_steps=1024", "run.checkpoint_every=256",
                                     "run.keep_checkpoints=0", *overrides])


def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous_one(tmp_path: Path) -> None:
    _, config = tiny_config(tmp_path)
    with Trainer(config, tmp_path / "run") as trainer:
        trainer.train(progress=False)
    checkpoints = list_checkpoints(tmp_path / "run")
    assert [step for step, _ in checkpoints] == [256, 512, 768, 1024]
    latest = checkpoints[-1][1]
    latest.write_bytes(latest.read_bytes()[:-100])  # a torn write
    with pytest.warns(UserWarning, match="corrupt"):
        found = latest_checkpoint(tmp_path / "run")
    assert found is not None and found[0] == checkpoints[-2][1]
    with pytest.warns(UserWarning, match="corrupt"), Trainer(config, tmp_path / "run") as resumed:
        assert resumed.agent.global_step == 768
    garbage = checkpoints[-2][1]
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(Exception, match="not an rl-plasticity checkpoint"):
        load_checkpoint(garbage)


def test_a_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    _, config = tiny_config(tmp_path)
    trainer = Trainer(config, tmp_path / "run")
    original_update = trainer.agent.update

    def update_that_diverges(defer_value: bool = False) -> dict[str, float]:
        stats = original_update()  # both halves now, so that the NaN below cannot race the value's
        if trainer.agent.global_step >= 768:
            with torch.no_grad():
                trainer.agent.value.net[0].weight[0, 0] = float("nan")
        return stats

    trainer.agent.update = update_that_diverges  # type: ignore[method-assign]
    with pytest.raises(TrainingDiverged, match=r"step 768.*value parameter net\.0\.weight.*step_512\.pt"):
        trainer.train(progress=False)
    trainer.close()
    assert [step for step, _ in list_checkpoints(tmp_path / "run")] == [256, 512]
    assert torch.isfinite(final_state(tmp_path / "run")["agent"]["value"]["net.0.weight"]).all()
    assert read_progress(tmp_path / "run")["status"] == "failed"


def test_cli_reports_a_nan_with_exit_code_1(tmp_path: Path, capsys: pytest.CaptureFixture,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    original_update = PPO.update

    def update_with_nan_loss(agent: PPO, defer_value: bool = False) -> dict[str, float]:
        return {**original_update(agent), "value_loss": float("nan")}

    monkeypatch.setattr(PPO, "update", update_with_nan_loss)
    path, _ = tiny_config(tmp_path)
    code = main(["train", str(path), "--logdir", str(tmp_path), "--run-name", "r", "--quiet",
                 "--set", "run.total_steps=512"])
    err = capsys.readouterr().err
    assert code == 1 and "diverged at step 256: non-finite losses/value_loss = nan" in err, err
    assert "Traceback" not in err and not list_checkpoints(tmp_path / "r")


def test_config_refuses_nan_and_inf(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path, _ = tiny_config(tmp_path)
    for value in ("nan", "inf"):
        assert main(["train", str(path), "--logdir", str(tmp_path), "--set", f"optimizer.lr={value}"]) == 2
        assert "optimizer.lr" in capsys.readouterr().err


def test_resume_refuses_a_different_config_and_allows_a_longer_run(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    path, _ = tiny_config(tmp_path)
    run = ["train", str(path), "--logdir", str(tmp_path), "--run-name", "r", "--quiet",
           "--set", "run.total_steps=512"]
    assert main(run) == 0
    assert main([*run, "--set", "ppo.gamma=0.9", "--set", "cbp.replacement_rate=0.1"]) == 2
    err = capsys.readouterr().err
    assert "different config (cbp.replacement_rate: 0.05 -> 0.1; ppo.gamma: 0.99 -> 0.9)" in err, err
    assert main([*run, "--total-steps", "768"]) == 0
    assert "resuming from" in capsys.readouterr().err
    assert json.loads((tmp_path / "r" / "progress.json").read_text())["step"] == 768


def test_fresh_moves_the_old_run_aside(tmp_path: Path) -> None:
    path, _ = tiny_config(tmp_path)
    run = ["train", str(path), "--logdir", str(tmp_path), "--run-name", "r", "--quiet",
           "--set", "run.total_steps=256"]
    assert main(run) == 0
    assert main([*run, "--fresh"]) == 0
    (old,) = tmp_path.glob("r.old-*")
    assert list_checkpoints(old) and list_checkpoints(tmp_path / "r")


def test_a_full_disk_is_a_clear_error_and_keeps_the_previous_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = tiny_config(tmp_path)
    run = ["train", str(path), "--logdir", str(tmp_path), "--run-name", "r", "--quiet",
           "--set", "run.total_steps=512", "--set", "run.checkpoint_every=256"]
    real_fsync = os.fsync
    calls = []

    def fsync_on_a_full_disk(descriptor: int) -> None:
        calls.append(descriptor)
        if len(calls) > 4:  # config.yaml and the first checkpoint (each file + directory) succeed
            raise OSError(28, "No space left on device")
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync_on_a_full_disk)
    assert main(run) == 2
    err = capsys.readouterr().err
    assert "no space left on the device" in err and "Traceback" not in err, err
    assert [step for step, _ in list_checkpoints(tmp_path / "r")] == [256]
    assert not list((tmp_path / "r" / "checkpoints").glob(".*partial"))
    load_checkpoint(tmp_path / "r" / "checkpoints" / "step_256.pt")


FIXTURE = Path(__file__).parent / "fixtures" / "run_before_consolidation"


def test_a_checkpoint_written_by_an_earlier_version_resumes_to_its_state(tmp_path: Path) -> None:
    """``FIXTURE`` holds step 512 of a run written before the layout's consolidation (config
    ``train.yaml``: CBP on both networks, two env copies, friction changes) and the state its uninterrupted
    run reached at step 1,024. Resuming the old checkpoint with today's code must reach the same state:
    the same replacements and episodes, and the same weights and moments to float rounding (bit for bit
    until CBP's running averages were folded every few steps rather than at each, which groups their
    sums differently; a resume within one version stays bit-identical, tested above)."""
    import shutil

    run_dir = tmp_path / "runs" / "legacy"
    shutil.copytree(FIXTURE, run_dir, ignore=shutil.ignore_patterns("train.yaml", "expected_*"))
    assert main(["train", str(FIXTURE / "train.yaml"), "--logdir", str(tmp_path / "runs"), "--run-name",
                 "legacy", "--quiet"]) == 0
    found = latest_checkpoint(run_dir)
    assert found is not None and found[1]["global_step"] == 1024
    state, expected = found[1], torch.load(FIXTURE / "expected_step_1024.pt", weights_only=False)
    agent = state["agent"]
    for network in ("policy", "value"):
        assert_same_state(agent[network], expected[network], network, rtol=1e-5)
    assert_same_state(agent["optimizer"]["state"], expected["optimizer_state"], "optimizer", rtol=1e-5)
    replaced = [agent[name]["replaced_total"] for name in ("cbp_policy", "cbp_value")]
    assert replaced == expected["replaced"]
    assert state["episodes_seen"] == expected["episodes_seen"]
    assert state["recent_returns"] == expected["recent_returns"]
