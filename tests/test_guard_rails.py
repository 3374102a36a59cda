"""Results that cannot be silently wrong: settings checked against what is on disk, duplicate and empty
configs refused, drift keys that would be ignored refused, checkpoints kept by validity. Every refusal
exits 2 with the problem and the fix named, and leaves the files on disk byte-identical."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from bad_input_sweep import SMALL  # one small config for the sweep and these tests

from rl_plasticity.experiment.checkpoint import (
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
    verify_checkpoint,
)
from rl_plasticity.experiment.cli import main


def snapshot(folder: Path) -> dict[str, str]:
    """Every file below ``folder`` with the SHA-256 of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "small.yaml"
    path.write_text(SMALL)
    return path


def refused(argv: list[str], capsys: pytest.CaptureFixture, *fragments: str) -> None:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err


# ---------------------------------------------------------------- 1: compare never reuses a stale run
def test_compare_refuses_a_finished_run_of_other_settings_and_extends_a_shorter_one(
        tmp_path: Path, config_file: Path, capsys: pytest.CaptureFixture) -> None:
    logdir = tmp_path / "runs"
    compare = ["compare", str(config_file), "--seeds", "1", "--logdir", str(logdir)]
    assert main(compare) == 0
    before = snapshot(logdir)
    assert main(compare) == 0 and "1 skipped" in capsys.readouterr().err  # same settings: skipped
    assert snapshot(logdir) == before
    refused([*compare, "--set", "optimizer.lr=3e-4"], capsys, "small/seed0 (optimizer.lr: 0.0001 -> 0.0003)",
            "--fresh")
    refused([*compare, "--total-steps", "128"], capsys, "more than the 128 asked", "--fresh")
    assert snapshot(logdir) == before
    assert main([*compare, "--total-steps", "384"]) == 0 and "1 finished" in capsys.readouterr().err
    assert [step for step, _ in list_checkpoints(logdir / "small" / "seed0")][-1] == 384
    assert main([*compare, "--set", "optimizer.lr=3e-4", "--fresh"]) == 0
    assert "moved" in capsys.readouterr().err and list(logdir.glob("small/seed0.old-*"))


# ---------------------------------------------------------------- 2: duplicate keys and empty files
@pytest.mark.parametrize("text, fragments", [
    ("preset: dohare\ncbp:\n  enabled: true\nenv:\n  id: Hopper-v5\ncbp:\n  enabled: false\n",
     ["duplicate key 'cbp' at lines 2 and 6", "merge them"]),
    ("env:\n  id: SlipperyHopper-v5\n  change_every: 1000\n  change_every: 2000\n",
     ["duplicate key 'change_every' at lines 3 and 4"]),
    ("", ["is empty", "built-in defaults"]),
    ("# nothing but a comment\n", ["is empty"]),
])
def test_duplicate_keys_and_empty_configs_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                      text: str, fragments: list[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    refused(["train", str(path), "--logdir", str(tmp_path / "runs")], capsys, *fragments)
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- 3: the run directory's own config
def test_a_run_without_checkpoints_still_refuses_other_settings(tmp_path: Path, config_file: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    train = ["train", str(config_file), "--logdir", str(tmp_path), "--run-name", "r", "--quiet"]
    assert main(train) == 0
    for _, path in list_checkpoints(tmp_path / "r"):  # as if killed before its first checkpoint
        path.unlink()
    (tmp_path / "r" / "progress.json").write_text('{"status": "running", "step": 128, "total_steps": 256}')
    before = snapshot(tmp_path / "r")
    refused([*train, "--set", "env.id=SlipperyWalker2d-v5"], capsys,
            "different config (env.id: 'SlipperyHopper-v5' -> 'SlipperyWalker2d-v5')", "--fresh")
    (tmp_path / "r" / "config.yaml").write_text("{{{ not yaml")
    refused(train, capsys, "config.yaml cannot be read", "--fresh")
    assert {k: v for k, v in snapshot(tmp_path / "r").items() if k != "config.yaml"} == \
        {k: v for k, v in before.items() if k != "config.yaml"}


# ---------------------------------------------------------------- 4: drift keys that would be ignored
@pytest.mark.parametrize("overrides, fragments", [
    (["env.id=Hopper-v5", "env.change_every=1000"], ["'Hopper-v5' does not drift", "env.change_every"]),
    (["env.id=Pendulum-v1", "env.friction_range=[0.1, 1.0]"], ["'Pendulum-v1' does not drift"]),
    (["env.id=Hopper-v5", "env.schedule=cyclic"], ["does not drift", "env.schedule"]),
    (["env.id=HeavyAnt-v5", "env.friction_range=[0.1, 1.0]"], ["drifts gravity, not friction"]),
])
def test_drift_settings_on_an_env_that_does_not_read_them_are_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture, overrides: list[str], fragments: list[str]) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("preset: dohare\n")
    argv = ["train", str(path), "--logdir", str(tmp_path / "runs")]
    for override in overrides:
        argv += ["--set", override]
    refused(argv, capsys, *fragments)
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- 6: checkpoints kept by validity
def test_only_verified_checkpoints_count_towards_keep(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    for step in (100, 200, 300):
        save_checkpoint(run_dir / "checkpoints" / f"step_{step}.pt", {"step": step})
    stray = run_dir / "checkpoints" / "step_999.pt"
    stray.write_bytes(b"not a checkpoint, but named like the newest one")
    assert not verify_checkpoint(stray) and verify_checkpoint(run_dir / "checkpoints" / "step_300.pt")
    removed = prune_checkpoints(run_dir, keep=1)
    assert sorted(p.name for p in removed) == ["step_100.pt", "step_200.pt"]
    assert [step for step, _ in list_checkpoints(run_dir)] == [300, 999]
    assert load_checkpoint(run_dir / "checkpoints" / "step_300.pt")["step"] == 300


def test_a_stray_newest_file_with_keep_1_does_not_cost_the_run_its_checkpoints(
        tmp_path: Path, config_file: Path, capsys: pytest.CaptureFixture) -> None:
    train = ["train", str(config_file), "--logdir", str(tmp_path), "--run-name", "r", "--quiet",
             "--set", "run.keep_checkpoints=1"]
    checkpoints = tmp_path / "r" / "checkpoints"
    assert main(train) == 0
    (checkpoints / "step_99999999.pt").write_bytes(b"garbage named like the newest checkpoint")
    (checkpoints / ".step_384.pt.partial").write_bytes(b"half a checkpoint, as a crash leaves it")
    with pytest.warns(UserWarning, match="falling back"):
        assert main([*train, "--total-steps", "384"]) == 0
    err = capsys.readouterr().err
    assert "resuming from" in err and "step_256.pt" in err, err
    assert not list(checkpoints.glob("*.partial"))
    # pruning by step name would have kept only the garbage and deleted step_384.pt
    assert [step for step, _ in list_checkpoints(tmp_path / "r")] == [384, 99999999]
    assert load_checkpoint(checkpoints / "step_384.pt")["global_step"] == 384


# ---------------------------------------------------------------- 7: after a NaN
def test_inf_in_adams_state_stops_the_run_before_it_is_checkpointed_and_a_lower_lr_resumes(
        tmp_path: Path, config_file: Path, capsys: pytest.CaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from agents import PPO
    from rl_plasticity.experiment.checkpoint import latest_checkpoint
    from rl_plasticity.experiment.progress import read_progress

    original_update = PPO.update

    def update_overflowing_adam(agent: PPO, defer_value: bool = False) -> dict[str, float]:
        stats = original_update(agent)  # both halves at once, so that the overflow below cannot race
        if agent.global_step >= 384:  # the parameters stay finite; only the second moment overflows
            for state in agent.optimizer.state.values():
                state["exp_avg_sq"].fill_(float("inf"))
        return stats

    monkeypatch.setattr(PPO, "update", update_overflowing_adam)
    train = ["train", str(config_file), "--logdir", str(tmp_path), "--run-name", "r", "--quiet",
             "--set", "run.total_steps=640"]
    assert main(train) == 1
    err = capsys.readouterr().err
    assert "diverged at step 384: non-finite optimizer state (Adam moments)" in err, err
    assert "step_256.pt" in err and "--set ppo.max_grad_norm" in err and "Traceback" not in err
    path, state = latest_checkpoint(tmp_path / "r")
    assert path.name == "step_256.pt"
    assert all(torch.isfinite(v["exp_avg_sq"]).all() for v in state["agent"]["optimizer"]["state"].values())
    assert read_progress(tmp_path / "r")["diverged_at"] == 384

    monkeypatch.setattr(PPO, "update", original_update)
    refused([*train, "--set", "ppo.gamma=0.9"], capsys, "ppo.gamma: 0.99 -> 0.9")  # only the remedies
    assert main([*train, "--set", "optimizer.lr=5e-5"]) == 0
    err = capsys.readouterr().err
    assert "after the divergence, changed: optimizer.lr: 0.0001 -> 5e-05" in err and "resuming from" in err
    (record,) = (tmp_path / "r" / "config_changes.jsonl").read_text().splitlines()
    assert '"step": 256' in record and "diverging at step 384" in record and "optimizer.lr" in record
    assert read_progress(tmp_path / "r")["status"] == "finished"
    assert read_progress(tmp_path / "r")["diverged_at"] is None


def test_a_checkpoint_holding_inf_is_passed_over_on_resume(tmp_path: Path, config_file: Path) -> None:
    from rl_plasticity.experiment.checkpoint import latest_checkpoint
    from rl_plasticity.experiment.runner import _finite_state

    train = ["train", str(config_file), "--logdir", str(tmp_path), "--run-name", "r", "--quiet",
             "--set", "run.keep_checkpoints=0"]
    assert main(train) == 0
    newest = tmp_path / "r" / "checkpoints" / "step_256.pt"
    state = load_checkpoint(newest)
    next(iter(state["agent"]["optimizer"]["state"].values()))["exp_avg"].fill_(float("inf"))
    state.pop("format_version")
    save_checkpoint(newest, state)  # as an older version of this code could have left it
    with pytest.warns(UserWarning, match="optimizer state holds NaN or inf"):
        path, _ = latest_checkpoint(tmp_path / "r", accept=_finite_state)
    assert path.name == "step_128.pt"


# ---------------------------------------------------------------- 8, 9: outputs and numbers
@pytest.mark.parametrize("argv_tail, fragments", [
    (["--total-steps", "inf"], ["--total-steps", "whole number"]),
    (["--total-steps", "1.5"], ["--total-steps", "whole number"]),
    (["--seed", "100000000000000000000000"], ["run.seed", "out of range", "4,294,967,295"]),
    (["--set", "run.total_steps=1e30"], ["run.total_steps", "out of range"]),
])
def test_numbers_out_of_any_sane_range_are_refused(tmp_path: Path, config_file: Path,
                                                   capsys: pytest.CaptureFixture, argv_tail: list[str],
                                                   fragments: list[str]) -> None:
    argv = ["train", str(config_file), "--logdir", str(tmp_path / "runs"), *argv_tail]
    if argv_tail[0].startswith("--total-steps"):  # argparse's own usage line comes first
        capsys.readouterr()
        with pytest.raises(SystemExit) as caught:
            main(argv)
        assert caught.value.code == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and all(f in err for f in fragments), err
    else:
        refused(argv, capsys, *fragments)
    assert not (tmp_path / "runs").exists()


def test_an_output_that_cannot_be_written_is_one_line_and_exit_2(tmp_path: Path, config_file: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    not_a_directory = tmp_path / "a_file"
    not_a_directory.write_text("precious")
    refused(["train", str(config_file), "--logdir", str(not_a_directory), "--quiet"], capsys,
            f"cannot write {not_a_directory}", "writable --logdir")
    assert not_a_directory.read_text() == "precious"
    logdir = tmp_path / "runs"
    assert main(["compare", str(config_file), "--seeds", "1", "--logdir", str(logdir)]) == 0
    before = snapshot(logdir)
    refused(["report", str(logdir), "--out", str(not_a_directory / "report")], capsys,
            "cannot write", "--out")
    assert snapshot(logdir) == before


def test_a_read_only_run_directory_on_resume_changes_nothing(tmp_path: Path, config_file: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    import shutil
    import subprocess

    if shutil.which("chattr") is None:
        pytest.skip("needs chattr")
    train = ["train", str(config_file), "--logdir", str(tmp_path), "--run-name", "r", "--quiet"]
    assert main(train) == 0
    run_dir = tmp_path / "r"
    before = snapshot(run_dir)
    if subprocess.run(["chattr", "+i", str(run_dir)], capture_output=True).returncode != 0:
        pytest.skip("this file system cannot make a directory immutable")
    try:
        refused([*train, "--total-steps", "512"], capsys, f"cannot write {run_dir}", "permissions")
    finally:
        subprocess.run(["chattr", "-i", str(run_dir)], check=True)
    assert snapshot(run_dir) == before


def test_a_broken_pipe_is_a_quiet_exit() -> None:
    import subprocess
    import sys

    result = subprocess.run(f"{sys.executable} -m rl_plasticity config | head -1", shell=True,
                            capture_output=True, text=True)
    assert result.stdout.startswith("config keys") and "Traceback" not in result.stderr, result.stderr


def test_a_key_added_by_a_later_version_counts_as_its_default() -> None:
    from rl_plasticity.experiment.config import config_to_dict, load_config
    from rl_plasticity.experiment.resume import changed_keys

    config = load_config(None, ["env.id=SlipperyHopper-v5"])
    saved = config_to_dict(config)
    del saved["cbp"]["floor_when_above_one"]  # as a run started before the key existed
    assert changed_keys(saved, config) == []
    changed = load_config(None, ["env.id=SlipperyHopper-v5", "cbp.floor_when_above_one=true"])
    assert changed_keys(saved, changed) == ["cbp.floor_when_above_one: False -> True"]


DISK_FILLS_AFTER_THE_FIRST_CHECKPOINT = """\
import errno, pathlib, sys
from tensorboard.summary.writer import record_writer

run_dir = pathlib.Path(sys.argv[1])
def full() -> bool:
    return any((run_dir / "checkpoints").glob("step_*.pt")) and (run_dir / "progress.json").exists()
def no_space() -> OSError:
    return OSError(errno.ENOSPC, "No space left on device")

write_record = record_writer.RecordWriter.write
def write(self, data):
    if full():
        raise no_space()
    return write_record(self, data)
record_writer.RecordWriter.write = write

write_text = pathlib.Path.write_text
def write_new_file(self, *args, **kwargs):
    if full() and self.name.startswith(".progress"):
        self.touch()  # as a real full disk: the file is created, its first block is not
        raise no_space()
    return write_text(self, *args, **kwargs)
pathlib.Path.write_text = write_new_file

from rl_plasticity.experiment.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_a_full_disk_during_a_tensorboard_write_is_one_line_and_the_run_resumes(
        tmp_path: Path, config_file: Path) -> None:
    import json
    import subprocess
    import sys

    run_dir = tmp_path / "runs" / "full"
    train = ["train", str(config_file), "--logdir", str(tmp_path / "runs"), "--run-name", "full", "--quiet",
             "--total-steps", "1024"]
    result = subprocess.run([sys.executable, "-c", DISK_FILLS_AFTER_THE_FIRST_CHECKPOINT, str(run_dir),
                             *train], capture_output=True, text=True)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert lines[-1].startswith("rl-plasticity train: error: no space left") and \
        "events.out.tfevents" in lines[-1] and "free some space" in lines[-1], result.stderr
    assert len(lines) == 2, result.stderr  # the "training: ..." line and the error
    assert json.loads((run_dir / "progress.json").read_text())["status"] == "failed"
    assert not list(run_dir.glob(".*.tmp"))
    checkpoints = list_checkpoints(run_dir)
    assert checkpoints and all(verify_checkpoint(path) for _, path in checkpoints)

    assert main(train) == 0  # space freed: it resumes from the checkpoint the full disk spared
    assert json.loads((run_dir / "progress.json").read_text())["status"] == "finished"
