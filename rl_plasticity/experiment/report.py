"""`rl-plasticity report LOGDIR`: a plot, a Markdown table and a CSV comparing configs across seeds."""

from __future__ import annotations

import csv
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rl_plasticity import tags
from rl_plasticity.experiment.files import replaced_atomically, write_text_atomically
from rl_plasticity.experiment.runs import (
    Estimate,
    Run,
    RunDataWarning,
    area_under_curve,
    binned_returns,
    complete_segments,
    drift_parameter,
    estimate,
    final_return,
    last_value,
    layer_mean_at_end,
    load_runs,
    matching_tags,
    physics_segments,
    retention,
    segment_end_returns,
    total_replaced,
    visit_end_values,
    visits,
)
from rl_plasticity.experiment.statistics import SeedStatistics

NETWORKS = tags.NETWORKS
END_METRICS = ("dormant_fraction", "approx_rank", "weight_magnitude")
# (label, the tag pattern for a network) of the plasticity measures followed from visit to visit.
TREND_METRICS: tuple[tuple[str, Callable[[str], str]], ...] = (
    ("dormant", lambda net: tags.plasticity_layers_pattern(net, "dormant_fraction")),
    ("approx rank", lambda net: tags.plasticity_layers_pattern(net, "approx_rank")),
    ("mean |w|", lambda net: tags.plasticity_layers_pattern(net, "weight_magnitude")),
    ("weight change", lambda net: tags.plasticity(net, "weight_change")),
)


@dataclass
class VisitSummary:
    """One visit of a recurring physics value, across seeds: its return at the end, and the plasticity
    measures over its last quarter."""

    value: float
    number: int
    end_return: SeedStatistics
    metrics: dict[str, SeedStatistics]


@dataclass
class ConfigSummary:
    """Every number the report shows for one config."""

    name: str
    seeds: int
    segment_returns: list[Estimate]
    segment_values: list[float]
    drift_parameter: str
    final_return: Estimate
    auc: Estimate
    end_metrics: dict[str, Estimate]
    visits: list[VisitSummary]
    retention: SeedStatistics
    #: the last logged value of each ``methods/<name>/<net>/<statistic>`` tag, across the seeds that have it
    method_statistics: dict[str, Estimate]
    #: ``(seed label, why)`` of each run that has not finished (marked; left out of retention)
    unfinished: list[tuple[str, str]] = field(default_factory=list)
    #: the seed labels retention was computed from
    retention_seeds: list[str] = field(default_factory=list)

    @property
    def seeds_text(self) -> str:
        """``3``, or ``3 (1 unfinished)``."""
        return f"{self.seeds} ({len(self.unfinished)} unfinished)" if self.unfinished else str(self.seeds)

    def rows(self) -> list[dict[str, object]]:
        """Flat rows for summary.csv."""
        rows: list[dict[str, object]] = []

        def add(metric: str, value: Estimate, segment: object = "") -> None:
            rows.append({"config": self.name, "metric": metric, "segment": segment, "mean": value.mean,
                         "ci_low": value.low, "ci_high": value.high, "seeds": value.count,
                         "left_out": value.left_out})

        def add_seed_statistics(metric: str, value: SeedStatistics, segment: object = "") -> None:
            rows.append({"config": self.name, "metric": metric, "segment": segment, "mean": value.mean,
                         "ci_low": value.t_low, "ci_high": value.t_high, "seeds": value.count,
                         "left_out": value.left_out, "boot_low": value.boot_low,
                         "boot_high": value.boot_high, "iqm": value.iqm,
                         "iqm_low": value.iqm_low, "iqm_high": value.iqm_high})

        for i, value in enumerate(self.segment_returns):
            add("segment_end_return", value, i)
        add("final_return", self.final_return)
        add("auc", self.auc)
        for key, value in self.end_metrics.items():
            add(key, value)
        add_seed_statistics("retention", self.retention)
        for tag, value in self.method_statistics.items():
            add(tag, value)
        for i, visit in enumerate(self.visits):
            add_seed_statistics("visit_end_return", visit.end_return, i)
            for key, value in visit.metrics.items():
                add_seed_statistics(f"visit_{key}", value, i)
        return rows


def summarise(name: str, runs: list[Run]) -> ConfigSummary:
    per_run_segments = [segment_end_returns(run) for run in runs]
    count = max(len(s) for s in per_run_segments)
    segment_returns = [
        estimate(s[i] for s in per_run_segments if i < len(s)) for i in range(count)
    ]
    per_run_physics = [complete_segments(run) for run in runs]
    segment_values = []
    for i in range(count):
        values = [segments[i].value for segments in per_run_physics if i < len(segments)]
        segment_values.append(float(np.mean(values)) if values else math.nan)
    end_metrics = {
        f"{network}/{metric}": estimate(layer_mean_at_end(run, network, metric) for run in runs)
        for network in NETWORKS for metric in END_METRICS
    }
    for network in NETWORKS:
        end_metrics[f"{network}/cbp_replaced"] = estimate(total_replaced(run, network) for run in runs)
    method_statistics = {
        tag: estimate(last_value(run, tag) for run in runs if tag in run.scalars)
        for tag in matching_tags(runs, tags.method_statistics_pattern())
    }
    finished = [run for run in runs if run.finished]
    return ConfigSummary(
        method_statistics=method_statistics,
        visits=summarise_visits(runs),
        # An unfinished run's last visit is not the run's last: its ratio would mean something else.
        retention=SeedStatistics.of(retention(run) for run in finished),
        retention_seeds=[run.label for run in finished],
        unfinished=[(run.label, run.state()) for run in runs if not run.finished],
        name=name,
        seeds=len(runs),
        segment_returns=segment_returns,
        segment_values=segment_values,
        drift_parameter=next(filter(None, map(drift_parameter, runs)), "physics"),
        final_return=estimate(final_return(run) for run in runs),
        auc=estimate(area_under_curve(run) for run in runs),
        end_metrics=end_metrics,
    )


def summarise_visits(runs: list[Run]) -> list[VisitSummary]:
    """Visit i across seeds; runs that share a schedule visit the same values in the same order."""
    per_run = [visits(run) for run in runs]
    per_run_metrics = {
        f"{net}/{label}": [visit_end_values(run, pattern(net)) for run in runs]
        for net in NETWORKS for label, pattern in TREND_METRICS
    }
    summaries = []
    for i in range(max((len(v) for v in per_run), default=0)):
        present = [k for k, v in enumerate(per_run) if i < len(v)]
        first = per_run[present[0]][i]
        metrics = {key: SeedStatistics.of(values[k][i] for k in present if i < len(values[k]))
                   for key, values in per_run_metrics.items()}
        summaries.append(VisitSummary(first.value, first.number,
                                      SeedStatistics.of(per_run[k][i].end_return for k in present), metrics))
    return summaries


def _retention_lines(summaries: list[ConfigSummary]) -> list[str]:
    lines = ["## Retention", "",
             "Retention = return at the end of the last visit / return at the end of the first visit of the "
             "same physics values, per seed (values visited at least twice; `env.schedule: cyclic`). "
             "Below 1: the agent does worse on physics it has already learned, with more training behind "
             "it. Mean with its 95% bootstrap CI (BCa, scipy), interquartile mean with its 95% bootstrap "
             "CI (as rliable), mean with its 95% t-interval.", "",
             "Only finished runs enter it; `seeds` names those it used.", "",
             "| config | seeds | retention, mean [bootstrap CI] | IQM [bootstrap CI] | mean [t CI] |",
             "|---|---|---|---|---|"]
    for s in summaries:
        r = s.retention
        used = f"{r.seeds_text()}: {', '.join(s.retention_seeds)}" if s.retention_seeds else "0"
        if s.unfinished:
            used += f"; left out, unfinished: {', '.join(label for label, _ in s.unfinished)}"
        lines.append(f"| {s.name} | {used} | {r.format_mean()} | {r.format_iqm()} | {r.format_t()} |")
    return lines


def _visit_lines(summary: ConfigSummary) -> list[str]:
    if not any(v.number > 0 for v in summary.visits):
        return []
    lines = ["", "Return at the end of each visit (mean [95% bootstrap CI]; IQM [CI]):", "",
             "| visit | physics value | visit of this value | seeds | return | IQM |",
             "|---|---|---|---|---|---|"]
    for i, v in enumerate(summary.visits):
        lines.append(f"| {i} | {v.value:.4g} | {v.number + 1} | {v.end_return.seeds_text()} | "
                     f"{v.end_return.format_mean(0)} | {v.end_return.format_iqm(0)} |")
    first, last = summary.visits[0], summary.visits[-1]
    lines += ["", "Plasticity of both networks over the last quarter of the first and the last visit "
              "(mean [95% bootstrap CI] across seeds):", "",
              "| measure | first visit | last visit |", "|---|---|---|"]
    for key in first.metrics:
        digits = 4 if "|w|" in key or "change" in key else 3
        lines.append(f"| {key} | {first.metrics[key].format_mean(digits)} | "
                     f"{last.metrics[key].format_mean(digits)} |")
    return lines


def write_markdown(summaries: list[ConfigSummary], path: Path, problems: Sequence[str] = ()) -> None:
    lines = ["# rl-plasticity report", ""]
    if problems:
        lines += ["**Data problems** (these numbers use only what could be read):", "",
                  *[f"- {problem}" for problem in problems], ""]
    lines += [
             "Returns are means across seeds ± the half-width of a 95% Student-t confidence interval.", "",
             "| config | seeds | final return | AUC (mean return) | policy dormant | value dormant | "
             "policy approx rank | value approx rank | policy mean \\|w\\| | value mean \\|w\\| | "
             "CBP replaced (policy / value) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        m = s.end_metrics
        lines.append(
            f"| {s.name} | {s.seeds_text} | {s.final_return.format()} | {s.auc.format()} | "
            f"{m['policy/dormant_fraction'].format(3)} | {m['value/dormant_fraction'].format(3)} | "
            f"{m['policy/approx_rank'].format(3)} | {m['value/approx_rank'].format(3)} | "
            f"{m['policy/weight_magnitude'].format(4)} | {m['value/weight_magnitude'].format(4)} | "
            f"{m['policy/cbp_replaced'].format(0)} / {m['value/cbp_replaced'].format(0)} |"
        )
    lines += ["", *_retention_lines(summaries)]
    for s in summaries:
        lines += ["", f"## {s.name}", ""]
        if s.unfinished:
            lines += ["**Unfinished runs** (their last, partial segment is not read as a visit; left out of "
                      "retention):", "", *[f"- {label}: {why}" for label, why in s.unfinished], ""]
        lines += [
                  f"Mean return over the last 10% of each complete {s.drift_parameter} segment:", "",
                  f"| segment | {s.drift_parameter} (mean over seeds) | return |", "|---|---|---|"]
        for i, (value, physics) in enumerate(zip(s.segment_returns, s.segment_values, strict=True)):
            lines.append(f"| {i} | {physics:.4g} | {value.format()} |")
        lines += _visit_lines(s)
        lines += _method_lines(s)
    write_text_atomically(path, "\n".join(lines) + "\n")


def _method_lines(summary: ConfigSummary) -> list[str]:
    if not summary.method_statistics:
        return []
    lines = ["", "The plasticity methods' statistics at the end of the run (`methods/<name>/<network>/...`; "
             "mean ± 95% t half-width across seeds):", "", "| tag | seeds | value |", "|---|---|---|"]
    for tag, value in summary.method_statistics.items():
        lines.append(f"| {tag} | {value.count} | {value.format(4)} |")
    return lines


def write_csv(summaries: list[ConfigSummary], path: Path) -> None:
    rows = [row for s in summaries for row in s.rows()]
    with replaced_atomically(path) as temporary, temporary.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["config", "metric", "segment", "mean", "ci_low",
                                                    "ci_high", "seeds", "left_out", "boot_low", "boot_high",
                                                    "iqm", "iqm_low", "iqm_high"])
        writer.writeheader()
        writer.writerows(rows)


def _curve_with_band(runs: list[Run], edges: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per-seed binned returns, their mean and the 95% band."""
    curves = np.array([binned_returns(run, edges) for run in runs])
    stats = [estimate(curves[:, b]) for b in range(curves.shape[1])]
    return (curves, np.array([s.mean for s in stats]), np.array([s.low for s in stats]),
            np.array([s.high for s in stats]))


def _metric_curve(runs: list[Run], pattern: str, combine=np.mean) -> tuple[np.ndarray, np.ndarray]:
    """Mean over seeds of a metric series combined over the matching tags (mean by default; sum for
    counts such as replaced units), on the first run's steps."""
    series = []
    for run in runs:
        found = matching_tags([run], pattern)
        if not found:
            continue
        steps = run.series(found[0])[0]
        series.append((steps, combine([np.interp(steps, *run.series(t)) for t in found], axis=0)))
    if not series:
        return np.empty(0), np.empty(0)
    steps = series[0][0]
    return steps, np.mean([np.interp(steps, s, v) for s, v in series], axis=0)


def write_plot(grouped: dict[str, list[Run]], path: Path, summaries: list[ConfigSummary] | None = None,
               bins: int = 60) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric_panels = [(f"{net} {metric.replace('_', ' ')}", tags.plasticity_layers_pattern(net, metric))
                     for metric in END_METRICS for net in NETWORKS]
    figure, axes = plt.subplots(5, 2, figsize=(12, 16), constrained_layout=True)
    axes = axes.ravel()
    return_axis, visit_axis, change_axis, cbp_axis = axes[0], axes[1], axes[8], axes[9]
    end = max(run.last_step for runs in grouped.values() for run in runs) + 1
    edges = np.linspace(0, end, bins + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    first_run = next(iter(grouped.values()))[0]
    by_name = {s.name: s for s in summaries or []}
    seed_curves = []
    for name, runs in grouped.items():
        curves, mean, low, high = _curve_with_band(runs, edges)
        (line,) = return_axis.plot(centres, mean, label=f"{name} (n={len(runs)})", linewidth=2)
        colour = line.get_color()
        return_axis.fill_between(centres, low, high, color=colour, alpha=0.2, linewidth=0)
        for curve in curves:  # each seed, thin: with few seeds the band alone says little
            return_axis.plot(centres, curve, color=colour, linewidth=0.6, alpha=0.5)
        seed_curves.append(curves)
        for axis, (_, pattern) in zip(axes[2:8], metric_panels, strict=True):
            steps, values = _metric_curve(runs, pattern)
            if len(steps):
                axis.plot(steps, values, color=colour, label=name)
        for net, style in zip(NETWORKS, ("-", "--"), strict=True):
            steps, values = _metric_curve(runs, tags.plasticity(net, "weight_change"))
            if len(steps):
                change_axis.plot(steps, values, color=colour, linestyle=style, label=f"{name} {net}")
        # Sum, not mean, over layers and networks: the total number of replacements.
        steps, values = _metric_curve(runs, tags.cbp_replaced_pattern(), combine=np.sum)
        if len(steps):
            cbp_axis.plot(steps, values, color=colour, label=name)
        summary = by_name.get(name)
        if summary and summary.visits:
            _plot_visits(visit_axis, summary, colour)
    finite = np.concatenate([c.ravel() for c in seed_curves])
    finite = finite[np.isfinite(finite)]
    if finite.size:  # frame the seeds; a small-n band may run past the frame
        span = max(finite.max() - finite.min(), 1e-9)
        return_axis.set_ylim(finite.min() - 0.05 * span, finite.max() + 0.05 * span)
    for segment in physics_segments(first_run)[1:]:
        return_axis.axvline(segment.start, color="grey", linestyle=":", linewidth=1)
    titles = ["return", "return at the end of each visit (mean, 95% bootstrap CI)",
              *[title for title, _ in metric_panels], "weight change per update (solid policy, dashed value)",
              "CBP replaced units (policy + value)"]
    for axis, title in zip(axes, titles, strict=True):
        axis.set_title(title)
        axis.set_xlabel("env steps")
        axis.grid(alpha=0.3)
    visit_axis.set_xlabel("visit (marker: physics value)")
    return_axis.set_ylabel("episodic return (mean, 95% CI, thin: seeds)")
    return_axis.legend(loc="best", fontsize="small")
    if visit_axis.lines:
        visit_axis.legend(loc="best", fontsize="x-small")
    return_axis.text(0.01, 0.01, "dotted: physics changes (first run)", transform=return_axis.transAxes,
                     fontsize="x-small", color="grey")
    with replaced_atomically(path) as temporary:  # a kill mid-write leaves the previous plot whole
        figure.savefig(temporary, dpi=110, format="png")
    plt.close(figure)


def _plot_visits(axis, summary: ConfigSummary, colour: str) -> None:
    values = sorted({v.value for v in summary.visits})
    markers = "os^Dv*"
    positions = np.arange(len(summary.visits))
    means = np.array([v.end_return.mean for v in summary.visits])
    low = np.array([v.end_return.boot_low for v in summary.visits])
    high = np.array([v.end_return.boot_high for v in summary.visits])
    axis.plot(positions, means, color=colour, linewidth=1, alpha=0.6,
              label=f"{summary.name}: retention {summary.retention.format_mean()}")
    axis.fill_between(positions, low, high, color=colour, alpha=0.15, linewidth=0)
    for position, visit in zip(positions, summary.visits, strict=True):
        marker = markers[values.index(visit.value) % len(markers)]
        axis.plot(position, visit.end_return.mean, marker=marker, color=colour, linestyle="none")


def make_report(logdir: Path, out: Path | None = None,
                warn: Callable[[str], None] | None = None) -> dict[str, Path]:
    """Reads every run under ``logdir`` and writes report.png, report.md and summary.csv into ``out``
    (default: ``logdir``). Returns the paths written. Damaged event files and runs left out for having
    no data go to ``warn`` (default: a `RunDataWarning`) and into report.md."""
    logdir = Path(logdir)
    problems: list[str] = []

    def note(message: str) -> None:
        problems.append(message)
        if warn is not None:
            warn(message)
        else:
            warnings.warn(message, RunDataWarning, stacklevel=2)

    grouped = load_runs(logdir, note)
    out = Path(out) if out is not None else logdir
    out.mkdir(parents=True, exist_ok=True)
    summaries = [summarise(name, runs) for name, runs in grouped.items()]
    paths = {"plot": out / "report.png", "markdown": out / "report.md", "csv": out / "summary.csv"}
    write_plot(grouped, paths["plot"], summaries)
    write_markdown(summaries, paths["markdown"], problems)
    write_csv(summaries, paths["csv"])
    return paths


__all__ = ["ConfigSummary", "last_value", "make_report", "summarise"]
