"""`rl-plasticity report LOGDIR`: a plot, a Markdown table and a CSV comparing configs across seeds."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rl_plasticity.experiment.runs import (
    Estimate,
    Run,
    area_under_curve,
    binned_returns,
    estimate,
    final_return,
    friction_segments,
    last_value,
    layer_mean_at_end,
    load_runs,
    matching_tags,
    segment_end_returns,
    total_replaced,
)

NETWORKS = ("policy", "value")
END_METRICS = ("dormant_fraction", "approx_rank", "weight_magnitude")


@dataclass
class ConfigSummary:
    """Every number the report shows for one config."""

    name: str
    seeds: int
    segment_returns: list[Estimate]
    segment_frictions: list[float]
    final_return: Estimate
    auc: Estimate
    end_metrics: dict[str, Estimate]

    def rows(self) -> list[dict[str, object]]:
        """Flat rows for summary.csv."""
        rows: list[dict[str, object]] = []

        def add(metric: str, value: Estimate, segment: object = "") -> None:
            rows.append({"config": self.name, "metric": metric, "segment": segment, "mean": value.mean,
                         "ci_low": value.low, "ci_high": value.high, "seeds": value.count})

        for i, value in enumerate(self.segment_returns):
            add("segment_end_return", value, i)
        add("final_return", self.final_return)
        add("auc", self.auc)
        for key, value in self.end_metrics.items():
            add(key, value)
        return rows


def summarise(name: str, runs: list[Run]) -> ConfigSummary:
    per_run_segments = [segment_end_returns(run) for run in runs]
    count = max(len(s) for s in per_run_segments)
    segment_returns = [
        estimate(s[i] for s in per_run_segments if i < len(s)) for i in range(count)
    ]
    frictions = []
    for i in range(count):
        values = [friction_segments(run)[i].friction for run in runs if i < len(friction_segments(run))]
        frictions.append(float(np.mean(values)) if values else math.nan)
    end_metrics = {
        f"{network}/{metric}": estimate(layer_mean_at_end(run, network, metric) for run in runs)
        for network in NETWORKS for metric in END_METRICS
    }
    for network in NETWORKS:
        end_metrics[f"{network}/cbp_replaced"] = estimate(total_replaced(run, network) for run in runs)
    return ConfigSummary(
        name=name,
        seeds=len(runs),
        segment_returns=segment_returns,
        segment_frictions=frictions,
        final_return=estimate(final_return(run) for run in runs),
        auc=estimate(area_under_curve(run) for run in runs),
        end_metrics=end_metrics,
    )


def write_markdown(summaries: list[ConfigSummary], path: Path) -> None:
    lines = ["# rl-plasticity report", "",
             "Returns are means across seeds ± the half-width of a 95% Student-t confidence interval.", "",
             "| config | seeds | final return | AUC (mean return) | policy dormant | value dormant | "
             "policy approx rank | value approx rank | policy mean \\|w\\| | value mean \\|w\\| | "
             "CBP replaced (policy / value) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        m = s.end_metrics
        lines.append(
            f"| {s.name} | {s.seeds} | {s.final_return.format()} | {s.auc.format()} | "
            f"{m['policy/dormant_fraction'].format(3)} | {m['value/dormant_fraction'].format(3)} | "
            f"{m['policy/approx_rank'].format(3)} | {m['value/approx_rank'].format(3)} | "
            f"{m['policy/weight_magnitude'].format(4)} | {m['value/weight_magnitude'].format(4)} | "
            f"{m['policy/cbp_replaced'].format(0)} / {m['value/cbp_replaced'].format(0)} |"
        )
    for s in summaries:
        lines += ["", f"## {s.name}", "",
                  "Mean return over the last 10% of each friction segment:", "",
                  "| segment | friction (mean over seeds) | return |", "|---|---|---|"]
        for i, (value, friction) in enumerate(zip(s.segment_returns, s.segment_frictions, strict=True)):
            lines.append(f"| {i} | {friction:.4g} | {value.format()} |")
    path.write_text("\n".join(lines) + "\n")


def write_csv(summaries: list[ConfigSummary], path: Path) -> None:
    rows = [row for s in summaries for row in s.rows()]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["config", "metric", "segment", "mean", "ci_low",
                                                    "ci_high", "seeds"])
        writer.writeheader()
        writer.writerows(rows)


def _curve_with_band(runs: list[Run], edges: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per-seed binned returns, their mean and the 95% band."""
    curves = np.array([binned_returns(run, edges) for run in runs])
    stats = [estimate(curves[:, b]) for b in range(curves.shape[1])]
    return (curves, np.array([s.mean for s in stats]), np.array([s.low for s in stats]),
            np.array([s.high for s in stats]))


def _metric_curve(runs: list[Run], pattern: str) -> tuple[np.ndarray, np.ndarray]:
    """Mean over seeds (and over the matching tags) of a metric series, on the first run's steps."""
    series = []
    for run in runs:
        tags = matching_tags([run], pattern)
        if not tags:
            continue
        steps = run.series(tags[0])[0]
        series.append((steps, np.mean([np.interp(steps, *run.series(t)) for t in tags], axis=0)))
    if not series:
        return np.empty(0), np.empty(0)
    steps = series[0][0]
    return steps, np.mean([np.interp(steps, s, v) for s, v in series], axis=0)


def write_plot(grouped: dict[str, list[Run]], path: Path, bins: int = 60) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("return", None)] + [(f"{net} {metric.replace('_', ' ')}",
                                     rf"plasticity/{net}/layer\d+/{metric}")
                                    for metric in END_METRICS for net in NETWORKS]
    panels.append(("CBP replaced units (policy + value)", r"cbp/(policy|value)/layer\d+/replaced"))
    figure, axes = plt.subplots(4, 2, figsize=(12, 13), constrained_layout=True)
    axes = axes.ravel()
    end = max(run.last_step for runs in grouped.values() for run in runs) + 1
    edges = np.linspace(0, end, bins + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    first_run = next(iter(grouped.values()))[0]
    seed_curves = []
    for name, runs in grouped.items():
        curves, mean, low, high = _curve_with_band(runs, edges)
        (line,) = axes[0].plot(centres, mean, label=f"{name} (n={len(runs)})", linewidth=2)
        axes[0].fill_between(centres, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
        for curve in curves:  # each seed, thin: with few seeds the band alone says little
            axes[0].plot(centres, curve, color=line.get_color(), linewidth=0.6, alpha=0.5)
        seed_curves.append(curves)
        for axis, (_, pattern) in zip(axes[1:], panels[1:], strict=False):
            steps, values = _metric_curve(runs, pattern)
            if pattern.startswith("cbp"):
                # Sum, not mean, over layers and networks: the total number of replacements.
                totals = [sum(np.interp(steps, *run.series(t)) for t in matching_tags([run], pattern))
                          for run in runs if matching_tags([run], pattern)]
                values = np.mean(totals, axis=0) if totals else values
            if len(steps):
                axis.plot(steps, values, color=line.get_color(), label=name)
    finite = np.concatenate([c.ravel() for c in seed_curves])
    finite = finite[np.isfinite(finite)]
    if finite.size:  # frame the seeds; a small-n band may run past the frame
        span = max(finite.max() - finite.min(), 1e-9)
        axes[0].set_ylim(finite.min() - 0.05 * span, finite.max() + 0.05 * span)
    for segment in friction_segments(first_run)[1:]:
        axes[0].axvline(segment.start, color="grey", linestyle=":", linewidth=1)
    for axis, (title, _) in zip(axes, panels, strict=False):
        axis.set_title(title)
        axis.set_xlabel("env steps")
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("episodic return (mean, 95% CI, thin: seeds)")
    axes[0].legend(loc="best", fontsize="small")
    axes[0].text(0.01, 0.01, "dotted: friction changes (first run)", transform=axes[0].transAxes,
                 fontsize="x-small", color="grey")
    figure.savefig(path, dpi=110)
    plt.close(figure)


def make_report(logdir: Path, out: Path | None = None) -> dict[str, Path]:
    """Reads every run under ``logdir`` and writes report.png, report.md and summary.csv into ``out``
    (default: ``logdir``). Returns the paths written."""
    logdir = Path(logdir)
    grouped = load_runs(logdir)
    out = Path(out) if out is not None else logdir
    out.mkdir(parents=True, exist_ok=True)
    summaries = [summarise(name, runs) for name, runs in grouped.items()]
    paths = {"plot": out / "report.png", "markdown": out / "report.md", "csv": out / "summary.csv"}
    write_plot(grouped, paths["plot"])
    write_markdown(summaries, paths["markdown"])
    write_csv(summaries, paths["csv"])
    return paths


__all__ = ["ConfigSummary", "last_value", "make_report", "summarise"]
