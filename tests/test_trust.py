"""Results you can trust, round two: a report that never pools unlike runs and says what each statistic
used, one process per run directory, one spelling per key, atomic writes, checkpoints kept by whether
they can be resumed, and a divergence before any checkpoint on the record."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from bad_input_sweep import SMALL  # one small config for the sweep and these tests
from torch.utils.tensorboard import SummaryWriter

from rl_plasticity.experiment.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from rl_plasticity.experiment.cli import main
from rl_plasticity.experiment.config import ConfigError, config_to_yaml, load_config
from rl_plasticity.experiment.files import write_text_atomically
from rl_plasticity.experiment.report import make_report, summarise
from rl_plasticity.experiment.run_lock import RunDirectoryBusy, RunLock, holder
from rl_plasticity.experiment.runs import load_runs

VISIT = 1000


def write_run(path: Path, visit_returns: list[float], settings: str = SMALL, status: str = "finished",
              steps: int | None = None) -> None:
    """Visits of friction 2.0 and 0.2 in turn, ``VISIT`` steps each, every episode of visit i returning
    ``visit_returns[i]``; with its config.yaml and progress.json as the trainer writes them."""
    path.mkdir(parents=True, exist_ok=True)
    steps = steps if steps is not None else len(visit_returns) * VISIT
    writer = SummaryWriter(str(path))
    for step in range(100, steps + 1, 100):
        visit = (step - 1) // VISIT
        writer.add_scalar("charts/episodic_return", visit_returns[min(visit, len(visit_returns) - 1)], step)
        writer.add_scalar("env/friction", 2.0 if visit % 2 == 0 else 0.2, step)
    writer.close()
    (path / "config.yaml").write_text(settings)
    (path / "progress.json").write_text(json.dumps({"status": status, "step": steps,
                                                    "total_steps": len(visit_returns) * VISIT}))


# ---------------------------------------------------------------- report: what it pools
def test_report_splits_runs_of_one_name_that_differ_in_settings_and_names_the_keys(tmp_path: Path) -> None:
    write_run(tmp_path / "cbp" / "seed0", [100, 50, 80, 40])
    write_run(tmp_path / "cbp" / "seed1", [100, 50, 90, 40])
    other = SMALL.replace("run: {", "optimizer: {lr: 0.003}\nrun: {")
    write_run(tmp_path / "cbp" / "seed2", [10, 50, 900, 40], settings=other)
    longer = SMALL.replace("total_steps: 256", "total_steps: 512")
    write_run(tmp_path / "cbp" / "seed3", [100, 50, 80, 40, 70, 30], settings=longer)
    heard: list[str] = []
    grouped = load_runs(tmp_path, heard.append)
    assert "cbp" not in grouped and len(grouped) == 3
    names = sorted(grouped)
    assert all("optimizer.lr" in name and "run.total_steps" in name for name in names), names
    assert sorted(len(runs) for runs in grouped.values()) == [1, 1, 2]
    assert any("never pooled" in message for message in heard)
    paths = make_report(tmp_path, tmp_path / "r", heard.append)
    markdown = paths["markdown"].read_text()
    assert "never pooled" in markdown and "| cbp |" not in markdown


def test_runs_that_differ_only_in_seed_and_checkpointing_stay_one_group(tmp_path: Path) -> None:
    write_run(tmp_path / "ppo" / "seed0", [100, 50, 80, 40])
    write_run(tmp_path / "ppo" / "seed1", [100, 50, 80, 40],
              settings=SMALL.replace("checkpoint_every: 128", "checkpoint_every: 64, seed: 1"))
    assert list(load_runs(tmp_path, None)) == ["ppo"]


def test_an_unfinished_run_is_marked_and_its_partial_visit_is_never_read(tmp_path: Path) -> None:
    write_run(tmp_path / "ppo" / "seed0", [100, 50, 80, 40])
    write_run(tmp_path / "ppo" / "seed1", [100, 50, 80, 40])
    # Killed 300 steps into its 4th visit, whose return is far off the others'.
    write_run(tmp_path / "ppo" / "seed2", [100, 50, 80, -5000], status="running", steps=3300)
    heard: list[str] = []
    summary = summarise("ppo", load_runs(tmp_path, heard.append)["ppo"])
    assert [label for label, _ in summary.unfinished] == ["seed2"]
    assert summary.retention.count == 2 and summary.retention_seeds == ["seed0", "seed1"]
    assert summary.visits[3].end_return.count == 2 and summary.visits[3].end_return.mean == 40
    assert summary.visits[2].end_return.count == 3
    assert any("unfinished" in message for message in heard)
    markdown = make_report(tmp_path, tmp_path / "r", heard.append)["markdown"].read_text()
    assert "| ppo | 3 (1 unfinished) |" in markdown
    assert "left out, unfinished: seed2" in markdown and "**Unfinished runs**" in markdown


def test_nan_and_inf_returns_are_counted_where_they_leave_a_seed_out(tmp_path: Path) -> None:
    write_run(tmp_path / "ppo" / "seed0", [100, 50, 80, 40])
    write_run(tmp_path / "ppo" / "seed1", [100, 50, 80, math.nan])
    write_run(tmp_path / "ppo" / "seed2", [100, 50, 80, math.inf])
    heard: list[str] = []
    summary = summarise("ppo", load_runs(tmp_path, heard.append)["ppo"])
    assert (summary.final_return.count, summary.final_return.left_out) == (1, 2)
    assert (summary.auc.count, summary.auc.left_out) == (1, 2)
    assert summary.visits[3].end_return.seeds_text() == "1 of 3 (2 NaN/inf/none)"
    assert sum("NaN or infinite" in message for message in heard) == 2
    markdown = make_report(tmp_path, tmp_path / "r", heard.append)["markdown"].read_text()
    assert "(n=1 of 3: 2 NaN/inf/none)" in markdown


def test_a_report_killed_while_writing_leaves_the_previous_files_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.figure import Figure

    write_run(tmp_path / "ppo" / "seed0", [100, 50, 80, 40])
    paths = make_report(tmp_path, tmp_path / "r", lambda message: None)
    before = {kind: path.read_bytes() for kind, path in paths.items()}
    original = Figure.savefig

    def dies_half_way(figure: Figure, target: object, **kwargs: object) -> None:
        original(figure, target, **kwargs)
        Path(str(target)).write_bytes(Path(str(target)).read_bytes()[:100])
        raise KeyboardInterrupt  # as a kill part-way through the write

    monkeypatch.setattr(Figure, "savefig", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        make_report(tmp_path, tmp_path / "r", lambda message: None)
    assert {kind: path.read_bytes() for kind, path in paths.items()} == before
    assert not list((tmp_path / "r").glob(".*partial"))


def test_an_atomic_write_that_fails_leaves_the_old_file(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "config.yaml"
    target.write_text("old")

    def full_disk(descriptor: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError):
        write_text_atomically(target, "new")
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]


# ---------------------------------------------------------------- one process per run directory
def test_a_second_train_on_a_held_run_directory_is_refused_and_a_dead_holder_never_blocks(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "c.yaml").write_text(SMALL)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    script = (f"from rl_plasticity.experiment.run_lock import RunLock; RunLock({str(run_dir)!r}).acquire(); "
              f"print('held', flush=True); import time; time.sleep(120)")
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        assert holder(run_dir) == child.pid
        train = ["train", str(tmp_path / "c.yaml"), "--logdir", str(tmp_path), "--run-name", "run", "--quiet"]
        capsys.readouterr()
        assert main(train) == 2
        err = capsys.readouterr().err
        assert f"in use by process {child.pid}" in err and len(err.strip().splitlines()) == 1, err
        with pytest.raises(RunDirectoryBusy):
            RunLock(run_dir).acquire()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert holder(run_dir) is None  # the kernel dropped the dead process's lock
    assert main(train) == 0
    assert holder(run_dir) is None  # released at the end of the run


def test_the_trainer_holds_the_lock_for_the_whole_run(tmp_path: Path) -> None:
    from rl_plasticity.experiment.runner import Trainer

    (tmp_path / "c.yaml").write_text(SMALL)
    with Trainer(load_config(tmp_path / "c.yaml"), tmp_path / "run") as trainer:
        assert holder(tmp_path / "run") == os.getpid()
        with pytest.raises(RunDirectoryBusy, match=str(os.getpid())):
            Trainer(load_config(tmp_path / "c.yaml"), tmp_path / "run")
        trainer.train(progress=False)
    assert holder(tmp_path / "run") is None


# ---------------------------------------------------------------- config
def test_two_spellings_of_one_section_are_refused_naming_both_lines(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(SMALL + "methods: {redo: {enabled: true}}\nmethods.redo: {tau: 0.1}\n")
    with pytest.raises(ConfigError,
                       match="spelled two ways, 'methods' at line 6 and 'methods.redo' at line 7"):
        load_config(path)
    path.write_text(SMALL + "methods:\n  redo:\n    enabled: true\n  redo.tau: 0.1\n")
    with pytest.raises(ConfigError, match="methods.redo is spelled two ways"):
        load_config(path)


def test_a_merge_key_is_yaml_and_works(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(SMALL + "methods:\n  redo: &on {enabled: true}\n  shrink_perturb: {<<: *on}\n")
    config = load_config(path)
    assert config.methods.redo.enabled and config.methods.shrink_perturb.enabled


def test_config_preset_acts_with_set(capsys: pytest.CaptureFixture) -> None:
    assert main(["config", "--preset", "cleanrl", "--set", "run.seed=3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("preset: cleanrl") and "seed: 3" in out


def test_errors_name_the_flag_the_user_typed(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "c.yaml").write_text(SMALL)
    assert main(["train", str(tmp_path / "c.yaml"), "--seed", "9999999999", "--logdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--seed 9999999999" in err and "--set" not in err, err


# ---------------------------------------------------------------- what a re-run may write
def test_a_finished_run_asked_for_fewer_steps_is_refused_and_its_record_kept(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "c.yaml").write_text(SMALL)
    train = ["train", str(tmp_path / "c.yaml"), "--logdir", str(tmp_path), "--run-name", "run", "--quiet"]
    assert main(train) == 0
    config_file = tmp_path / "run" / "config.yaml"
    before = config_file.read_bytes()
    events = sorted((tmp_path / "run").glob("events.out.tfevents.*"))
    capsys.readouterr()
    assert main([*train, "--total-steps", "128"]) == 2
    assert "more than the 128 asked" in capsys.readouterr().err
    assert main(train) == 0 and "already finished" in capsys.readouterr().err
    assert config_file.read_bytes() == before
    assert sorted((tmp_path / "run").glob("events.out.tfevents.*")) == events  # no new event file


def test_a_non_finite_checkpoint_never_takes_a_good_ones_place(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(SMALL)
    train = ["train", str(tmp_path / "c.yaml"), "--logdir", str(tmp_path), "--run-name", "run", "--quiet",
             "--set", "run.keep_checkpoints=1"]
    assert main([*train, "--total-steps", "128"]) == 0
    checkpoints = tmp_path / "run" / "checkpoints"
    state = load_checkpoint(checkpoints / "step_128.pt")
    for moments in state["agent"]["optimizer"]["state"].values():
        moments["exp_avg_sq"].fill_(math.inf)
    save_checkpoint(checkpoints / "step_999999.pt", state)  # checksummed, but its Adam state is inf
    with pytest.warns(UserWarning, match="cannot be resumed from"):
        assert main(train) == 0
    # Counting it as a checkpoint would have kept only it and deleted step_256.
    assert [step for step, _ in list_checkpoints(tmp_path / "run")] == [256, 999999]


def test_a_divergence_before_any_checkpoint_is_recorded_when_the_run_starts_again(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "c.yaml").write_text(SMALL)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(config_to_yaml(load_config(tmp_path / "c.yaml")))
    (run_dir / "progress.json").write_text(json.dumps({"status": "failed", "step": 128, "total_steps": 256,
                                                       "diverged_at": 128}))
    assert main(["train", str(tmp_path / "c.yaml"), "--logdir", str(tmp_path), "--run-name", "run", "--quiet",
                 "--set", "optimizer.lr=3e-5"]) == 0
    assert "after the divergence, changed: optimizer.lr" in capsys.readouterr().err
    record = [json.loads(line) for line in (run_dir / "config_changes.jsonl").read_text().splitlines()]
    assert record[0]["step"] == 0 and "before any checkpoint" in record[0]["reason"]
    assert record[0]["changes"] == ["optimizer.lr: 0.0001 -> 3e-05"]


def test_a_failed_env_build_leaves_no_run_directory(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(SMALL)
    assert main(["train", str(tmp_path / "c.yaml"), "--logdir", str(tmp_path / "runs"), "--quiet",
                 "--set", "env.kwargs={frobnicate: 1}"]) == 2
    assert not (tmp_path / "runs").exists()


def test_a_ctrl_c_while_the_cli_starts_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(SMALL)
    # From 0.3 s: before that the interpreter itself is still starting (runpy compiling our module in a
    # fresh clone), where no code of ours can catch the signal.
    for delay in (0.3, 0.8):
        process = subprocess.Popen([sys.executable, "-m", "rl_plasticity", "train", str(tmp_path / "c.yaml"),
                                    "--logdir", str(tmp_path / f"runs{delay}"), "--quiet"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
        if process.returncode == 0:  # finished first: nothing to judge at this delay
            continue
        if process.returncode == -signal.SIGINT and 'rl_plasticity' not in err.replace("-m", ""):
            continue  # a slow start: the signal came while the interpreter itself was still starting
        assert process.returncode == 130 and "Traceback" not in err, (delay, err)


# ---------------------------------------------------------------- SB3 sidecars
def test_a_sidecar_is_only_restored_onto_the_model_it_was_saved_with(tmp_path: Path) -> None:
    pytest.importorskip("stable_baselines3")
    import shutil

    from stable_baselines3 import PPO

    from agents.sb3 import SidecarError, attach, load_with_methods, save_with_methods

    models = []
    for seed in (0, 1):
        model = PPO("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=64, device="cpu", seed=seed)
        attach(model, "redo")
        save_with_methods(model, tmp_path / f"m{seed}")
        models.append(model)
    load_with_methods(tmp_path / "m0", load_kwargs={"device": "cpu"})  # its own: fine
    shutil.copy(tmp_path / "m1.methods.pt", tmp_path / "m0.methods.pt")  # same step count, other model
    with pytest.raises(SidecarError, match="belongs to another model"):
        load_with_methods(tmp_path / "m0", load_kwargs={"device": "cpu"})
    torch.save([1, 2], tmp_path / "m0.methods.pt")
    with pytest.raises(SidecarError, match="not a save_with_methods sidecar"):
        load_with_methods(tmp_path / "m0", load_kwargs={"device": "cpu"})
