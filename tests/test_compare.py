"""`rl-plasticity compare` on the local backend, then `report`: the run matrix and layout, skipping
finished runs, retrying crashed ones, refusing bad input before any run starts."""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from rl_plasticity.experiment.cli import main
from rl_plasticity.experiment.compare import CompareError, RunSpec, run_local, run_matrix
from rl_plasticity.experiment.progress import read_progress, write_progress

TINY = """\
preset: cleanrl
env: {{id: SlipperyHopper-v5, change_every: 256}}
ppo: {{hidden_sizes: [16, 16], rollout_steps: 128, minibatch_size: 64, epochs: 1}}
cbp: {{enabled: {cbp}, maturity_threshold: 2, replacement_rate: 0.05}}
log: {{probe_every: 256}}
run: {{total_steps: 512, checkpoint_every: 256}}
"""


def write_configs(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, cbp in (("ppo", "false"), ("ppo_cbp", "true")):
        path = folder / f"{name}.yaml"
        path.write_text(TINY.format(cbp=cbp))
        paths.append(path)
    return paths


def test_the_matrix_is_every_config_times_every_seed_in_its_own_directory(tmp_path: Path) -> None:
    configs = write_configs(tmp_path)
    specs = run_matrix(configs, 3, tmp_path / "runs", total_steps=1000, overrides=["optimizer.lr=1e-3"])
    assert [(s.config_name, s.seed) for s in specs] == [
        ("ppo", 0), ("ppo", 1), ("ppo", 2), ("ppo_cbp", 0), ("ppo_cbp", 1), ("ppo_cbp", 2)]
    assert specs[4].run_dir == tmp_path / "runs" / "ppo_cbp" / "seed1"
    command = specs[4].command()
    assert command[1:4] == ["-m", "rl_plasticity", "train"]
    for flag, value in (("--seed", "1"), ("--logdir", str(tmp_path / "runs" / "ppo_cbp")),
                        ("--run-name", "seed1"), ("--total-steps", "1000"), ("--set", "optimizer.lr=1e-3")):
        assert command[command.index(flag) + 1] == value
    assert "--quiet" in command and "--fresh" not in command  # an unfinished run resumes


def test_first_seed_starts_the_matrix_at_fresh_seeds(tmp_path: Path) -> None:
    configs = write_configs(tmp_path / "configs")
    specs = run_matrix(configs[:1], 2, tmp_path / "runs", first_seed=10)
    assert [(s.seed, s.run_dir.name) for s in specs] == [(10, "seed10"), (11, "seed11")]
    logdir = tmp_path / "runs"
    command = ["compare", str(configs[0]), "--seeds", "1", "--first-seed", "7", "--logdir", str(logdir)]
    assert main(command) == 0
    assert [p.name for p in (logdir / "ppo").iterdir()] == ["seed7"]
    assert read_progress(logdir / "ppo" / "seed7")["status"] == "finished"


def test_clashing_names_missing_files_and_no_seeds_are_refused(tmp_path: Path) -> None:
    configs = write_configs(tmp_path / "a")
    other = write_configs(tmp_path / "b")
    with pytest.raises(CompareError, match="would both be stored as 'ppo'"):
        run_matrix([configs[0], other[0]], 1, tmp_path)
    with pytest.raises(CompareError, match="does not exist"):
        run_matrix([tmp_path / "nope.yaml"], 1, tmp_path)
    with pytest.raises(CompareError, match="--seeds must be at least 1"):
        run_matrix(configs, 0, tmp_path)


def test_finished_runs_are_skipped_and_unfinished_ones_are_run(tmp_path: Path) -> None:
    specs = run_matrix(write_configs(tmp_path), 1, tmp_path / "runs")
    for spec, status in zip(specs, ("finished", "stopped"), strict=True):
        spec.run_dir.mkdir(parents=True)
        write_progress(spec.run_dir, status=status, step=256, total_steps=512)
    assert [s.is_finished() for s in specs] == [True, False]

    launched: list[RunSpec] = []

    @dataclass(frozen=True)
    class Recorded(RunSpec):
        def command(self) -> list[str]:
            launched.append(self)
            return [sys.executable, "-c", "pass"]

    recorded = [Recorded(*(getattr(s, f) for f in RunSpec.__dataclass_fields__)) for s in specs]
    outcome = run_local(recorded, workers=2, refresh=0.0, stream=open("/dev/null", "w"))  # noqa: SIM115
    assert launched == [recorded[1]]
    assert outcome["skipped"] == [str(specs[0].run_dir)] and outcome["finished"] == [str(specs[1].run_dir)]


def test_a_crashed_run_is_retried_once_and_a_user_error_is_not(tmp_path: Path) -> None:
    specs = run_matrix(write_configs(tmp_path), 1, tmp_path / "runs")
    marker = tmp_path / "crashed-once"
    # The first attempt crashes (exit 1); the retry finds the marker and succeeds.
    crash_once = f"import pathlib, sys; m = pathlib.Path({str(marker)!r}); " \
                 f"sys.exit(0) if m.exists() else (m.touch(), sys.exit(1))"

    @dataclass(frozen=True)
    class Scripted(RunSpec):
        script: str = ""

        def command(self) -> list[str]:
            return [sys.executable, "-c", self.script]

    fields = [getattr(specs[0], f) for f in RunSpec.__dataclass_fields__]
    crashing = Scripted(*fields, script=crash_once)
    fields = [getattr(specs[1], f) for f in RunSpec.__dataclass_fields__]
    user_error = Scripted(*fields, script="import sys; sys.exit(2)")
    outcome = run_local([crashing, user_error], workers=1, refresh=0.0, stream=open("/dev/null", "w"))  # noqa: SIM115
    assert outcome["finished"] == [str(crashing.run_dir)]
    assert outcome["failed"] == [str(user_error.run_dir)]


def test_compare_then_report_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    configs = [str(p) for p in write_configs(tmp_path / "configs")]
    logdir = tmp_path / "runs"
    assert main(["compare", *configs, "--seeds", "2", "--workers", "2", "--logdir", str(logdir)]) == 0
    assert "4 finished" in capsys.readouterr().err
    for name in ("ppo", "ppo_cbp"):
        for seed in (0, 1):
            run_dir = logdir / name / f"seed{seed}"
            assert read_progress(run_dir)["status"] == "finished"
            assert list(run_dir.glob("events.out.tfevents.*")) and (run_dir / "checkpoints").is_dir()

    assert main(["compare", *configs, "--seeds", "2", "--logdir", str(logdir)]) == 0
    assert "4 skipped" in capsys.readouterr().err

    assert main(["report", str(logdir), "--out", str(tmp_path / "report")]) == 0
    for name in ("report.png", "report.md", "summary.csv"):
        assert (tmp_path / "report" / name).stat().st_size > 0
    with (tmp_path / "report" / "summary.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    final = {row["config"]: row for row in rows if row["metric"] == "final_return"}
    assert set(final) == {"ppo", "ppo_cbp"} and {row["seeds"] for row in final.values()} == {"2"}


def test_a_bad_config_fails_once_before_any_run_starts(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    configs = write_configs(tmp_path / "configs")
    configs[1].write_text(configs[1].read_text() + "ppo_typo: {}\n")
    assert main(["compare", *map(str, configs), "--logdir", str(tmp_path / "runs")]) == 2
    assert "ppo_typo" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "ppo").exists()
    assert main(["compare", str(configs[0]), "--set", "env.id=Nope-v0", "--logdir", str(tmp_path)]) == 2
    assert "unknown Gymnasium env id 'Nope-v0'" in capsys.readouterr().err


def test_report_on_a_directory_without_runs_says_how_to_make_some(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no TensorBoard runs" in err and "rl-plasticity compare" in err


@pytest.mark.parametrize(("workers", "inherited", "expected"),
                         [(1, None, "2"), (2, None, "1"), (1, "1", "1")])
def test_each_run_gets_its_share_of_the_cores_unless_omp_num_threads_says(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int, inherited: str | None,
        expected: str) -> None:
    """A lone run on two cores gets both (its update overlaps the next rollout, as under `train`); two
    runs at once get one each; a user's OMP_NUM_THREADS stands."""
    monkeypatch.setattr("envs.thread_pool.available_cpus", lambda: 2)
    if inherited is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", inherited)
    seen = tmp_path / "threads"

    @dataclass(frozen=True)
    class Reporting(RunSpec):
        def command(self) -> list[str]:
            return [sys.executable, "-c", f"import os, pathlib; pathlib.Path({str(seen)!r}).open('a')"
                    f".write(os.environ['OMP_NUM_THREADS'] + ' ')"]

    specs = run_matrix(write_configs(tmp_path), 1, tmp_path / "runs")
    reporting = [Reporting(*(getattr(s, f) for f in RunSpec.__dataclass_fields__)) for s in specs]
    outcome = run_local(reporting, workers=workers, refresh=0.0, stream=open("/dev/null", "w"))  # noqa: SIM115
    assert len(outcome["finished"]) == 2
    assert seen.read_text().split() == [expected, expected]
