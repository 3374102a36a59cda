"""Recurring physics: visits, retention and the few-seed statistics the report gives them."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats
from torch.utils.tensorboard import SummaryWriter

from rl_plasticity.experiment.config import ConfigError, load_config
from rl_plasticity.experiment.environment import env_kwargs
from rl_plasticity.experiment.report import make_report, summarise
from rl_plasticity.experiment.runs import load_runs, retention, visits
from rl_plasticity.experiment.statistics import SeedStatistics, interquartile_mean, intervals_overlap

VISIT = 10_000  # steps per visit; the trainer logs the physics every 1,000 steps here
A, B = 2.0, 0.25


def write_cyclic_run(path: Path, end_returns: list[float], extra_steps: int = 0) -> None:
    """Visits A, B, A, B, ...; every episode of visit i returns end_returns[i]; probes every 1,000 steps."""
    writer = SummaryWriter(str(path))
    total = len(end_returns) * VISIT + extra_steps
    for step in range(1000, total + 1, 1000):
        visit = min((step - 1) // VISIT, len(end_returns) - 1)
        in_extra = step > len(end_returns) * VISIT
        value = (A if visit % 2 == 0 else B) if not in_extra else (A if len(end_returns) % 2 == 0 else B)
        writer.add_scalar("env/friction", value, step)
        writer.add_scalar("charts/episodic_return", end_returns[visit] if not in_extra else -1e6, step)
        writer.add_scalar("plasticity/policy/layer0/dormant_fraction", 0.1 * visit, step)
        writer.add_scalar("plasticity/policy/weight_change", 0.01, step)
    writer.close()


def test_visits_are_numbered_per_value_and_retention_is_last_over_first(tmp_path: Path) -> None:
    write_cyclic_run(tmp_path / "ppo" / "seed0", [100.0, 50.0, 300.0, 40.0, 200.0, 30.0])
    run = load_runs(tmp_path)["ppo"][0]
    found = visits(run)
    assert [(v.value, v.number) for v in found] == [
        (A, 0), (pytest.approx(B), 0), (A, 1), (pytest.approx(B), 1), (A, 2), (pytest.approx(B), 2)]
    assert [v.end_return for v in found] == [100.0, 50.0, 300.0, 40.0, 200.0, 30.0]
    # the boundary lies right after the last step logged under the old value
    assert [v.segment.start for v in found] == [0, 10_001, 20_001, 30_001, 40_001, 50_001]
    # (last A + last B) / (first A + first B) = (200 + 30) / (100 + 50)
    assert retention(run) == pytest.approx(230 / 150)


def test_a_visit_cut_short_at_the_end_is_not_counted(tmp_path: Path) -> None:
    write_cyclic_run(tmp_path / "ppo" / "seed0", [100.0, 50.0, 80.0, 40.0], extra_steps=2000)
    run = load_runs(tmp_path)["ppo"][0]
    assert len(visits(run)) == 4
    assert retention(run) == pytest.approx(120 / 150)


def test_no_recurring_value_has_no_retention(tmp_path: Path) -> None:
    write_cyclic_run(tmp_path / "ppo" / "seed0", [100.0, 50.0])
    assert math.isnan(retention(load_runs(tmp_path)["ppo"][0]))


def test_seed_statistics_match_scipy_and_the_definitions() -> None:
    data = [0.5, 0.7, 0.9, 1.1, 0.6, 2.5]
    result = SeedStatistics.of(data + [math.nan])
    assert result.count == 6 and result.mean == pytest.approx(np.mean(data))
    half = scipy_stats.t.ppf(0.975, 5) * np.std(data, ddof=1) / math.sqrt(6)
    assert result.t_high - result.mean == pytest.approx(half)
    # IQM of 6 values: trim int(0.25 * 6) = 1 from each end -> mean of 0.6, 0.7, 0.9, 1.1
    assert result.iqm == pytest.approx(np.mean([0.6, 0.7, 0.9, 1.1]))
    assert float(interquartile_mean(np.array(data))) == pytest.approx(result.iqm)
    assert result.boot_low < result.mean < result.boot_high
    assert min(data) <= result.boot_low and result.boot_high <= max(data)
    # the IQM resists the outlier 2.5: its interval ends below the mean's
    assert result.iqm_high < result.boot_high
    one = SeedStatistics.of([3.0])
    assert one.count == 1 and one.mean == 3.0 and math.isnan(one.boot_low) and math.isnan(one.t_low)
    same = SeedStatistics.of([1.0, 1.0, 1.0])
    assert (same.boot_low, same.boot_high) == (1.0, 1.0)


def test_overlap_and_exclusion() -> None:
    low = SeedStatistics.of([0.3, 0.4, 0.5, 0.35, 0.45])
    high = SeedStatistics.of([1.2, 1.3, 1.1, 1.25, 1.15])
    assert low.excludes(1.0) and not intervals_overlap(low, high)
    assert intervals_overlap(low, SeedStatistics.of([0.4, 0.5, 0.45, 0.42, 0.48]))
    assert intervals_overlap(low, SeedStatistics.of([1.0]))  # undefined interval: no claim


def test_report_shows_retention_visits_and_trends(tmp_path: Path) -> None:
    logdir = tmp_path / "runs"
    for seed in range(5):
        write_cyclic_run(logdir / "ppo" / f"seed{seed}", [100.0, 50.0, 60.0 - seed, 30.0, 40.0, 20.0])
        write_cyclic_run(logdir / "cbp" / f"seed{seed}", [100.0, 50.0, 150.0 + seed, 80.0, 200.0, 90.0])
    grouped = load_runs(logdir)
    ppo = summarise("ppo", grouped["ppo"])
    assert ppo.retention.mean == pytest.approx(60 / 150)
    assert [v.number for v in ppo.visits] == [0, 0, 1, 1, 2, 2]
    assert ppo.visits[2].end_return.mean == pytest.approx(58.0)
    # dormant over the last quarter of visit 0 is 0.0 and of visit 5 is 0.5
    assert ppo.visits[0].metrics["policy/dormant"].mean == pytest.approx(0.0)
    assert ppo.visits[-1].metrics["policy/dormant"].mean == pytest.approx(0.5)
    markdown = make_report(logdir, tmp_path / "out")["markdown"].read_text()
    assert "## Retention" in markdown
    assert "| ppo | 5: seed0, seed1, seed2, seed3, seed4 | 0.40 [0.40, 0.40] |" in markdown
    assert "| cbp | 5: seed0, seed1, seed2, seed3, seed4 | 1.93 [1.93, 1.93] |" in markdown
    assert "| policy/dormant | 0.000 [0.000, 0.000] | 0.500 [0.500, 0.500] |" in markdown


def test_cyclic_schedule_keys_reach_the_env_and_are_checked() -> None:
    config = load_config(None, ["env.id=SlipperyHopper-v5", "env.schedule=cyclic",
                                "env.cycle_values=[2, 0.25]"])
    kwargs = env_kwargs(config.env, seed=0)
    assert kwargs["schedule"] == "cyclic" and kwargs["cycle_values"] == [2.0, 0.25]
    with pytest.raises(ConfigError, match="env.cycle_values is set but env.schedule = piecewise"):
        load_config(None, ["env.cycle_values=[2, 0.25]"])
    with pytest.raises(ConfigError, match="write env.schedule instead"):
        load_config(None, ["env.kwargs={schedule: cyclic}"])


@pytest.mark.parametrize("agent", ["ppo", "cbp", "paper_cbp", "paper_l2"])
def test_the_demo_presets_are_the_configs_the_sweep_measured(agent: str) -> None:
    import importlib.util

    from rl_plasticity.experiment.config import flat_items

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("plasticity_sweep",
                                                  root / "benchmarks" / "plasticity_sweep.py")
    sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sweep)
    chosen = sweep.CANDIDATES[sweep.CHOSEN]
    measured = load_config(None, sweep.BASE + chosen + sweep.AGENTS[agent](chosen))
    shipped = load_config(root / "configs" / "plasticity_demo" / f"{agent}.yaml")
    assert dict(flat_items(shipped)) == dict(flat_items(measured))
