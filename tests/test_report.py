"""The report on synthetic TensorBoard runs whose numbers are known."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from torch.utils.tensorboard import SummaryWriter

from rl_plasticity.experiment.report import make_report, summarise
from rl_plasticity.experiment.runs import (
    RunsError,
    estimate,
    load_runs,
    physics_segments,
    segment_end_returns,
)

CHANGE_AT, END = 5000, 10_000


def write_run(path: Path, offset: float, replaced: int = 0, parameter: str = "friction",
              values: tuple[float, float] = (1.0, 0.1)) -> None:
    """Episodes end every 100 steps with return = step / 100 + offset; friction (or ``parameter``) 1.0
    then 0.1 (or ``values``)."""
    writer = SummaryWriter(str(path))
    for step in range(100, END, 100):
        writer.add_scalar("charts/episodic_return", step / 100 + offset, step)
        writer.add_scalar(f"env/{parameter}", values[0] if step < CHANGE_AT else values[1], step)
    # As the trainer logs it: the value in effect at the last step before the change.
    writer.add_scalar(f"env/{parameter}", values[0], CHANGE_AT - 1)
    for step in (1000, END - 1):
        for net in ("policy", "value"):
            for layer in (0, 1):
                writer.add_scalar(f"plasticity/{net}/layer{layer}/dormant_fraction", 0.1 * (layer + 1), step)
                writer.add_scalar(f"plasticity/{net}/layer{layer}/approx_rank", 0.5, step)
                writer.add_scalar(f"plasticity/{net}/layer{layer}/weight_magnitude", 0.05, step)
                writer.add_scalar(f"cbp/{net}/layer{layer}/replaced", replaced if step > 1000 else 0, step)
    writer.close()


@pytest.fixture
def logdir(tmp_path: Path) -> Path:
    for seed, offset in enumerate((0.0, 1.0, 2.0)):
        write_run(tmp_path / "ppo" / f"seed{seed}", offset)
        write_run(tmp_path / "cbp" / f"seed{seed}", offset + 10, replaced=4)
    return tmp_path


def test_runs_are_grouped_by_config_and_seed(logdir: Path) -> None:
    grouped = load_runs(logdir)
    assert list(grouped) == ["cbp", "ppo"]
    assert [run.seed for run in grouped["ppo"]] == [0, 1, 2]


def test_segments_and_their_end_returns(logdir: Path) -> None:
    run = load_runs(logdir)["ppo"][1]
    segments = physics_segments(run)
    assert [(s.start, s.value) for s in segments] == [(0, 1.0), (CHANGE_AT, pytest.approx(0.1))]
    assert segments[0].end == CHANGE_AT and segments[1].end == END  # the last logged step + 1
    # last 10% of [0, 5000) is [4500, 5000): episodes at 4500..4900 -> returns 45..49 (+1 offset)
    # last 10% of [5000, 10000) is [9500, 10000): episodes at 9500..9900 -> returns 95..99 (+1)
    assert segment_end_returns(run) == pytest.approx([48.0, 98.0])


def test_a_stub_segment_after_the_last_change_has_no_end_return(tmp_path: Path) -> None:
    # A run of 10,000 steps whose last rollout ran 300 steps past a change at 10,000.
    writer = SummaryWriter(str(tmp_path / "ppo" / "seed0"))
    for step in range(100, 10_300, 100):
        writer.add_scalar("charts/episodic_return", step / 100, step)
        writer.add_scalar("env/friction", (1.0, 0.1)[(step // CHANGE_AT) % 2], step)
    for change in (CHANGE_AT, 2 * CHANGE_AT):
        writer.add_scalar("env/friction", (1.0, 0.1)[(change // CHANGE_AT - 1) % 2], change - 1)
    writer.close()
    run = load_runs(tmp_path)["ppo"][0]
    assert len(physics_segments(run)) == 3  # the stub is a segment of the physics ...
    assert segment_end_returns(run) == pytest.approx([47.0, 97.0])  # ... but has no end-of-visit return
    summary = summarise("ppo", [run])
    assert len(summary.segment_returns) == len(summary.segment_values) == 2


def test_estimate_matches_student_t_by_hand() -> None:
    value = estimate([47.0, 48.0, 49.0])
    assert value.mean == 48.0 and value.count == 3
    assert value.high - value.mean == pytest.approx(4.303 * 1.0 / math.sqrt(3))
    single = estimate([5.0, math.nan])
    assert single.mean == 5.0 and single.count == 1 and math.isnan(single.low)


def test_summary_numbers(logdir: Path) -> None:
    grouped = load_runs(logdir)
    ppo, cbp = summarise("ppo", grouped["ppo"]), summarise("cbp", grouped["cbp"])
    assert ppo.seeds == 3
    assert [s.mean for s in ppo.segment_returns] == pytest.approx([48.0, 98.0])
    assert ppo.segment_returns[0].high - 48.0 == pytest.approx(4.303 / math.sqrt(3))
    assert ppo.segment_values == pytest.approx([1.0, 0.1]) and ppo.drift_parameter == "friction"
    # last 10% of [0, 10000) is [9000, 10000): episodes 9000..9900 -> mean return 94.5 (+ mean offset 1)
    assert ppo.final_return.mean == pytest.approx(95.5)
    assert cbp.final_return.mean == pytest.approx(105.5)
    assert ppo.end_metrics["policy/dormant_fraction"].mean == pytest.approx(0.15)
    assert ppo.end_metrics["value/cbp_replaced"].mean == 0
    assert cbp.end_metrics["value/cbp_replaced"].mean == 8
    # AUC: the binned curve of a linear return is its mean, (1 + 99) / 2 + offset 1
    assert ppo.auc.mean == pytest.approx(51.0, abs=1.0)


def test_make_report_writes_plot_markdown_and_csv(logdir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    paths = make_report(logdir, out)
    assert paths["plot"].stat().st_size > 10_000
    markdown = paths["markdown"].read_text()
    assert "| ppo | 3 | 95.5 ± " in markdown and "| cbp | 3 | 105.5 ± " in markdown
    with paths["csv"].open() as handle:
        rows = list(csv.DictReader(handle))
    segment_rows = [r for r in rows if r["config"] == "ppo" and r["metric"] == "segment_end_return"]
    assert [float(r["mean"]) for r in segment_rows] == pytest.approx([48.0, 98.0])
    assert np.isclose(float(segment_rows[0]["ci_low"]), 48.0 - 4.303 / math.sqrt(3))


def test_empty_or_missing_logdir_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RunsError, match="no TensorBoard runs under"):
        load_runs(tmp_path)
    with pytest.raises(RunsError, match="does not exist"):
        load_runs(tmp_path / "nope")


def _damage(path: Path, at_fraction: float) -> None:
    blob = bytearray(path.read_bytes())
    position = int(len(blob) * at_fraction)
    blob[position:position + 40] = b"\xff" * 40
    path.write_bytes(bytes(blob))


def test_damaged_event_files_are_named_and_the_rest_is_still_read(logdir: Path, tmp_path: Path) -> None:
    (events,) = (logdir / "ppo" / "seed1").glob("events.out.tfevents.*")
    intact = load_runs(logdir)["ppo"][1].series("charts/episodic_return")[1]
    _damage(events, 0.5)
    (logdir / "ppo" / "seed7").mkdir()
    (logdir / "ppo" / "seed7" / "events.out.tfevents.0.empty").write_bytes(b"")
    (logdir / "cbp" / "seed9").mkdir()
    (logdir / "cbp" / "seed9" / "events.out.tfevents.0.garbage").write_bytes(b"not an event file" * 100)
    heard: list[str] = []
    grouped = load_runs(logdir, heard.append)
    # the damaged run loses only the records hit, not the rest of its file (TensorBoard's reader would)
    damaged = grouped["ppo"][1].series("charts/episodic_return")[1]
    assert len(intact) - 3 <= len(damaged) < len(intact)
    assert damaged[-1] == intact[-1]
    # runs without data are not seeds
    assert [run.seed for run in grouped["ppo"]] == [0, 1, 2]
    assert [run.seed for run in grouped["cbp"]] == [0, 1, 2]
    assert any(str(events) in m and "fails its CRC" in m and "skipped" in m for m in heard)
    assert any("seed7" in m and "left out" in m for m in heard)
    assert any("seed9" in m and "left out" in m for m in heard)
    markdown = make_report(logdir, tmp_path / "out", heard.append)["markdown"].read_text()
    assert "**Data problems**" in markdown and "seed7" in markdown


def test_a_resumed_writer_purges_the_earlier_attempts_later_points(tmp_path: Path) -> None:
    run_dir = tmp_path / "ppo" / "seed0"
    first = SummaryWriter(str(run_dir), filename_suffix=".a")
    for step in (100, 200, 300):
        first.add_scalar("charts/episodic_return", 1.0, step)
    first.close()
    second = SummaryWriter(str(run_dir), purge_step=201, filename_suffix=".b")
    for step in (300, 400):
        second.add_scalar("charts/episodic_return", 2.0, step)
    second.close()
    steps, values = load_runs(tmp_path)["ppo"][0].series("charts/episodic_return")
    assert list(steps) == [100, 200, 300, 400] and list(values) == [1.0, 1.0, 2.0, 2.0]


def test_a_gravity_drift_reports_its_segments_by_name(tmp_path: Path) -> None:
    for seed in range(2):
        write_run(tmp_path / "heavy" / f"seed{seed}", seed, parameter="gravity", values=(-9.81, -4.9))
    (run, _), summary = load_runs(tmp_path)["heavy"], summarise("heavy", load_runs(tmp_path)["heavy"])
    assert [(s.start, s.value) for s in physics_segments(run)] == [(0, pytest.approx(-9.81)),
                                                                   (CHANGE_AT, pytest.approx(-4.9))]
    assert summary.drift_parameter == "gravity" and summary.segment_values == pytest.approx([-9.81, -4.9])
    make_report(tmp_path, tmp_path / "out")
    text = (tmp_path / "out" / "report.md").read_text()
    assert "each complete gravity segment" in text and "| gravity (mean over seeds) |" in text


def test_the_methods_statistics_are_reported_at_the_end(tmp_path: Path) -> None:
    for seed, resets in enumerate((4.0, 6.0)):
        path = tmp_path / "redo" / f"seed{seed}"
        write_run(path, seed)
        writer = SummaryWriter(str(path))
        for step, total in ((2000, resets / 2), (END - 1, resets)):
            writer.add_scalar("methods/redo/policy/reset_total", total, step)
        writer.add_scalar("methods/redo/value/dormant_fraction", 0.2, END - 1)
        writer.close()
    write_run(tmp_path / "ppo" / "seed0", 0.0)
    grouped = load_runs(tmp_path)
    redo = summarise("redo", grouped["redo"])
    assert list(redo.method_statistics) == ["methods/redo/policy/reset_total",
                                            "methods/redo/value/dormant_fraction"]
    assert redo.method_statistics["methods/redo/policy/reset_total"].mean == pytest.approx(5.0)
    assert redo.method_statistics["methods/redo/policy/reset_total"].count == 2
    assert summarise("ppo", grouped["ppo"]).method_statistics == {}
    markdown = make_report(tmp_path, tmp_path / "out")["markdown"].read_text()
    assert "| methods/redo/policy/reset_total | 2 | 5.0000 ± " in markdown
    assert markdown.count("The plasticity methods' statistics") == 1
