"""Reading finished (or running) training runs back from their TensorBoard event files, and the
statistics across seeds that reports are made of.

A run is a directory holding ``events.out.tfevents.*`` files. Runs are grouped into configs by their
layout, ``LOGDIR/<config name>/seed<k>/`` (what ``rl-plasticity compare`` writes); a run directory with
another name is a config of its own. Event files are read with TensorBoard's own reader.

A group never pools unlike runs: each run's resolved ``config.yaml`` is read, and runs of one name
that differ in any setting but the seed (or those that change nothing about training, `SAME_RUN_KEYS`)
are split into groups named by the differing keys (`split_unlike_runs`). A run whose
``progress.json`` does not say it finished is marked unfinished: its last, partial physics segment is
never read as a visit.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from rl_plasticity import tags
from rl_plasticity.experiment.event_files import read_run_scalars
from rl_plasticity.experiment.files import path_problem
from rl_plasticity.experiment.resume import flatten_config
from rl_plasticity.experiment.run_directory import EVENT_FILE_PATTERN, RunDirectory, seed_of
from rl_plasticity.experiment.run_lock import holder
from rl_plasticity.experiment.yaml_text import read_yaml

#: Settings that do not change what a run trains, so runs that differ only in them are seeds of one
#: config: the seed itself, and how often checkpoints are written and kept.
SAME_RUN_KEYS = ("run.seed", "run.checkpoint_every", "run.keep_checkpoints", "log.progress_bar")

_MOVED_ASIDE = re.compile(r"\.old-\d{8}-\d{6}")
# Two-sided 95% Student-t quantiles for 1..30 degrees of freedom; beyond that the normal 1.96 is close.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


class RunsError(ValueError):
    """A log directory that cannot be read as runs (missing, empty, malformed)."""


@dataclass
class Run:
    """One training run: its config name, seed and every scalar series as (steps, values) arrays."""

    config: str
    seed: int | None
    path: Path
    scalars: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    wall_time: tuple[float, float] | None = None
    #: the resolved config the run trained (its ``config.yaml``, flattened to ``section.key``); None if
    #: the directory has none (a run written by another tool)
    settings: dict[str, object] | None = None
    #: its ``progress.json`` record; None if it has none
    progress: dict[str, object] | None = None
    #: the PID of a process training it now
    trained_by: int | None = None

    def series(self, tag: str) -> tuple[np.ndarray, np.ndarray]:
        return self.scalars.get(tag, (np.empty(0), np.empty(0)))

    @property
    def finished(self) -> bool:
        """Whether the run trained to its end: its progress record says so, and no process trains it.
        A run with no progress record (another tool's) counts as finished: nothing says otherwise."""
        if self.trained_by is not None:
            return False
        return self.progress is None or self.progress.get("status") == "finished"

    @property
    def label(self) -> str:
        return f"seed{self.seed}" if self.seed is not None else self.path.name

    def state(self) -> str:
        """Why the run is unfinished, in words (empty for a finished run)."""
        if self.finished:
            return ""
        progress = self.progress or {}
        step, total = progress.get("step"), progress.get("total_steps")
        where = f" at {int(step):,} of {int(total):,} steps" if isinstance(step, int) and \
            isinstance(total, int) else ""
        if self.trained_by is not None:
            return f"still training{where} (process {self.trained_by})"
        status = progress.get("status")
        return {"running": f"not finished{where} (killed, or stopped without a word)",
                "stopped": f"stopped{where}", "failed": f"failed{where}"}.get(str(status),
                                                                             f"not finished{where}")

    def nonfinite_returns(self) -> int:
        """How many logged episodic returns are NaN or infinite."""
        _, values = self.series(tags.EPISODIC_RETURN)
        return int(np.count_nonzero(~np.isfinite(values)))

    @property
    def last_step(self) -> int:
        return int(max((steps[-1] for steps, _ in self.scalars.values() if len(steps)), default=0))


@dataclass(frozen=True)
class Segment:
    """A stretch of constant physics: steps in ``[start, end)`` under ``value`` of the drifting
    parameter (`drift_parameter`)."""

    start: int
    end: int
    value: float


@dataclass(frozen=True)
class Estimate:
    """Mean across seeds with a 95% Student-t confidence interval (nan bounds for a single seed), from
    ``count`` seeds; ``left_out`` seeds had no finite value (NaN, inf or no data)."""

    mean: float
    low: float
    high: float
    count: int
    left_out: int = 0

    def format(self, digits: int = 1) -> str:
        if math.isnan(self.mean):
            text = "n/a"
        elif self.count < 2:
            text = f"{self.mean:.{digits}f}"
        else:
            text = f"{self.mean:.{digits}f} ± {self.high - self.mean:.{digits}f}"
        return text + left_out_note(self.count, self.left_out)


def left_out_note(count: int, left_out: int) -> str:
    """`` (n=1 of 3: 2 NaN/inf/none)`` where some seeds gave no finite value, else empty."""
    return f" (n={count} of {count + left_out}: {left_out} NaN/inf/none)" if left_out else ""


def find_run_dirs(logdir: Path) -> list[Path]:
    """Every directory under ``logdir`` (itself included) that holds a TensorBoard event file."""
    logdir = Path(logdir)
    problem = path_problem(logdir, "directory")
    if problem is not None:
        raise RunsError(f"log directory {str(logdir)!r} {problem}; pass the --logdir you trained into")
    # A folder named like an event file is not one.
    found = {path.parent for path in logdir.rglob(EVENT_FILE_PATTERN) if path.is_file()}
    # Runs moved aside by `train --fresh` (<run>.old-<time>) are history, not part of the comparison.
    return sorted(path for path in found if not any(_MOVED_ASIDE.search(part) for part in path.parts))


def load_run(path: Path, logdir: Path, warn: Callable[[str], None] | None = None) -> Run:
    """The run in ``path``; ``warn`` hears of every event file that could not be read whole."""
    scalars_with_walls, reports = read_run_scalars(path)
    for report in reports:
        if report.problems and warn is not None:
            warn(report.describe())
    scalars = {tag: (steps, values) for tag, (steps, _, values) in scalars_with_walls.items()}
    walls = [w for _, w, _ in scalars_with_walls.values() if len(w)]
    wall = (float(min(w.min() for w in walls)), float(max(w.max() for w in walls))) if walls else None
    seed = seed_of(path.name)
    if seed is not None and path != logdir:
        config = str(path.parent.relative_to(logdir)) if path.parent != logdir else path.parent.name
    else:
        config, seed = (path.name if path != logdir else logdir.resolve().name), None
    run = RunDirectory(path)
    return Run(config=config, seed=seed, path=path, scalars=scalars, wall_time=wall,
               settings=_read_settings(run, warn), progress=run.progress(), trained_by=holder(path))


def _read_settings(run: RunDirectory, warn: Callable[[str], None] | None) -> dict[str, object] | None:
    """The run's ``config.yaml`` as ``{"section.key": value}``; None (with a warning) if it cannot be
    read."""
    if not run.config_file.is_file():
        return None
    try:
        data = read_yaml(run.config_file.read_text(), str(run.config_file))
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as error:
        if warn is not None:
            warn(f"{run.config_file} cannot be read ({' '.join(str(error).split())}); its settings are "
                 f"unknown")
        return None
    return flatten_config(data) if isinstance(data, dict) else None


def _identity(run: Run) -> tuple | None:
    if run.settings is None:
        return None
    return tuple(sorted((k, repr(v)) for k, v in run.settings.items() if k not in SAME_RUN_KEYS))


def split_unlike_runs(name: str, runs: list[Run]) -> dict[str, list[Run]]:
    """``runs`` (one config name) as groups of runs with the same settings but the seed. One group keeps
    ``name``; several are named ``name [key=value, ...]`` by the keys in which they differ (a run
    without a ``config.yaml`` among runs with one: ``name [no config.yaml]``)."""
    identities: dict[tuple | None, list[Run]] = {}
    for run in runs:
        identities.setdefault(_identity(run), []).append(run)
    if len(identities) == 1:
        return {name: runs}
    known = [dict(identity) for identity in identities if identity is not None]
    keys = sorted({k for settings in known for k in settings}) if known else []
    differing = [k for k in keys if len({settings.get(k) for settings in known}) > 1]
    groups: dict[str, list[Run]] = {}
    for identity, members in identities.items():
        if identity is None:
            label = "no config.yaml"
        else:
            settings = dict(identity)
            label = ", ".join(f"{k}={_plain(settings.get(k, '(absent)'))}" for k in differing)
        groups[f"{name} [{label}]"] = members
    return groups


def _plain(text: str) -> str:
    return text[1:-1] if len(text) > 1 and text[0] == text[-1] == "'" else text


def _warn(message: str) -> None:
    warnings.warn(message, RunDataWarning, stacklevel=3)


class RunDataWarning(UserWarning):
    """Event data that could not be read whole, or a run left out for having none."""


def load_runs(logdir: Path, warn: Callable[[str], None] | None = _warn) -> dict[str, list[Run]]:
    """All runs under ``logdir`` that hold data, grouped by config name (configs in sorted order, runs by
    seed). ``warn`` hears of each damaged event file and each run left out for holding no data."""
    logdir = Path(logdir)
    run_dirs = find_run_dirs(logdir)
    if not run_dirs:
        raise RunsError(
            f"no TensorBoard runs under {str(logdir)!r} (no events.out.tfevents.* files); train into it "
            f"first, e.g. `rl-plasticity compare CONFIG --seeds 3 --logdir {logdir}`"
        )
    by_name: dict[str, list[Run]] = {}
    for path in run_dirs:
        run = load_run(path, logdir, warn)
        if not any(len(steps) for steps, _ in run.scalars.values()):
            if warn is not None:
                warn(f"{path}: no scalar data in its event files; left out (it does not count as a seed)")
            continue
        by_name.setdefault(run.config, []).append(run)
    if not by_name:
        raise RunsError(f"none of the {len(run_dirs)} runs under {str(logdir)!r} holds any scalar data; "
                        f"their event files are empty or unreadable (see the warnings above)")
    grouped: dict[str, list[Run]] = {}
    for name, runs in by_name.items():
        groups = split_unlike_runs(name, runs)
        if len(groups) > 1 and warn is not None:
            parts = "; ".join(f"{group}: {', '.join(r.label for r in members)}" for group, members in
                              groups.items())
            warn(f"the runs under {name!r} were trained with different settings, so they are reported as "
                 f"{len(groups)} groups, never pooled: {parts}")
        grouped.update(groups)
    for runs in grouped.values():
        runs.sort(key=lambda r: (r.seed is None, r.seed or 0, str(r.path)))
        if warn is None:
            continue
        for run in runs:
            if not run.finished:
                warn(f"{run.path} is {run.state()}: it is marked unfinished, its last, partial segment "
                     f"is not read as a visit and it is left out of retention")
            bad = run.nonfinite_returns()
            if bad:
                warn(f"{run.path}: {bad} of {len(run.series(tags.EPISODIC_RETURN)[1])} episodic returns "
                     f"are NaN or infinite; the measures of this seed that include them are left out "
                     f"(counted as such in the tables)")
    return dict(sorted(grouped.items()))


def estimate(values: Iterable[float]) -> Estimate:
    """Mean and 95% confidence interval of the finite values (t-distribution across seeds)."""
    given = list(values)
    data = np.array([v for v in given if v is not None and math.isfinite(v)], dtype=np.float64)
    left_out = len(given) - len(data)
    if len(data) == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, left_out)
    mean = float(data.mean())
    if len(data) < 2:
        return Estimate(mean, math.nan, math.nan, 1, left_out)
    dof = len(data) - 1
    half = (_T975[dof - 1] if dof <= len(_T975) else 1.96) * float(data.std(ddof=1)) / math.sqrt(len(data))
    return Estimate(mean, mean - half, mean + half, len(data), left_out)


def drift_tag(run: Run) -> str | None:
    """The tag of the run's drifting parameter: ``env/friction`` if logged, else the first ``env/*``."""
    if tags.env_parameter("friction") in run.scalars:
        return tags.env_parameter("friction")
    return next((tag for tag in sorted(run.scalars) if tag.startswith(tags.ENV_PREFIX)), None)


def drift_parameter(run: Run) -> str | None:
    """The name of the run's drifting physics parameter (``friction``, ``gravity``, ...), or None."""
    tag = drift_tag(run)
    return tag[len(tags.ENV_PREFIX):] if tag else None


def physics_segments(run: Run) -> list[Segment]:
    """Stretches of constant physics from the run's ``env/<parameter>`` series (``env/friction``
    first); one segment if the run logged none."""
    tag = drift_tag(run)
    steps, values = run.series(tag) if tag else (np.empty(0), np.empty(0))
    end = run.last_step + 1
    if len(steps) == 0:
        return [Segment(0, end, math.nan)]
    # A value is logged as it stands at a step (the trainer: at each rollout's end), so a change lies
    # somewhere after the last step logged under the old value: the boundary goes there, and a
    # segment's end, whose returns measure what was learned, holds no step under the next value.
    segments, start, current = [], 0, float(values[0])
    for previous, value in zip(steps[:-1], values[1:], strict=True):
        if not math.isclose(float(value), current, rel_tol=1e-6, abs_tol=0.0):
            segments.append(Segment(start, int(previous) + 1, current))
            start, current = int(previous) + 1, float(value)
    segments.append(Segment(start, max(end, start + 1), current))
    return segments


def mean_return_between(run: Run, start: float, end: float) -> float:
    """Mean episodic return of the episodes that ended at a step in ``[start, end)``."""
    steps, values = run.series(tags.EPISODIC_RETURN)
    chosen = values[(steps >= start) & (steps < end)]
    return float(chosen.mean()) if len(chosen) else math.nan


@dataclass(frozen=True)
class Visit:
    """The ``number``-th stretch (0-based) under one recurring physics ``value``, and the mean return
    over its last 10%."""

    value: float
    number: int
    segment: Segment
    end_return: float


def complete_segments(run: Run) -> list[Segment]:
    """The run's segments without a last one cut short: an unfinished run's last segment is still
    going (or was cut off), and a finished run's final segment under half the median length of the
    others ended mid-visit."""
    segments = physics_segments(run)
    if not run.finished:
        return segments[:-1]
    if len(segments) > 1:
        typical = float(np.median([s.end - s.start for s in segments[:-1]]))
        if segments[-1].end - segments[-1].start < 0.5 * typical:
            segments = segments[:-1]
    return segments


def visits(run: Run, tail: float = 0.1) -> list[Visit]:
    """Every complete segment as a visit of its value, numbered per value in the order they came."""
    seen: list[float] = []
    counts: list[int] = []
    result = []
    for segment in complete_segments(run):
        index = next((i for i, v in enumerate(seen) if math.isclose(v, segment.value, rel_tol=1e-6)), None)
        if index is None:
            seen.append(segment.value)
            counts.append(0)
            index = len(seen) - 1
        end_return = mean_return_between(run, segment.end - tail * (segment.end - segment.start), segment.end)
        result.append(Visit(seen[index], counts[index], segment, end_return))
        counts[index] += 1
    return result


def retention(run: Run) -> float:
    """Return at the end of the last visit over return at the end of the first visit, summed over
    every physics value visited at least twice: below 1, the agent does worse on a value it has
    already learned, with more training behind it. nan if no value recurs (or a sum is not positive)."""
    by_value: dict[float, list[Visit]] = {}
    for visit in visits(run):
        by_value.setdefault(visit.value, []).append(visit)
    recurring = [v for v in by_value.values() if len(v) >= 2]
    if not recurring:
        return math.nan
    first = sum(v[0].end_return for v in recurring)
    last = sum(v[-1].end_return for v in recurring)
    if not (math.isfinite(first) and math.isfinite(last)) or first <= 0:
        return math.nan
    return last / first


def mean_between(run: Run, tag_names: list[str], start: float, end: float) -> float:
    """Mean of the values logged in ``[start, end)`` under ``tag_names`` (each tag's mean, then their
    mean)."""
    means = []
    for tag in tag_names:
        steps, values = run.series(tag)
        chosen = values[(steps >= start) & (steps < end)]
        if len(chosen):
            means.append(float(chosen.mean()))
    return float(np.mean(means)) if means else math.nan


def visit_end_values(run: Run, pattern: str, tail: float = 0.25) -> list[float]:
    """Per visit, the mean of the metric tags matching ``pattern`` over the visit's last ``tail``."""
    found = matching_tags([run], pattern)
    return [mean_between(run, found, v.segment.end - tail * (v.segment.end - v.segment.start), v.segment.end)
            for v in visits(run)]


def wall_seconds(run: Run) -> float:
    """Seconds between the run's first and last TensorBoard event (its training time, resumes included)."""
    return run.wall_time[1] - run.wall_time[0] if run.wall_time else math.nan


def segment_end_returns(run: Run, tail: float = 0.1) -> list[float]:
    """Mean return over the last ``tail`` of every complete physics segment, in segment order (a stub
    left by the last rollout running past the final change would be a few episodes' return)."""
    return [
        mean_return_between(run, s.end - tail * (s.end - s.start), s.end) for s in complete_segments(run)
    ]


def final_return(run: Run, tail: float = 0.1) -> float:
    """Mean return over the last ``tail`` of the run's steps."""
    end = run.last_step + 1
    return mean_return_between(run, end - tail * end, end)


def binned_returns(run: Run, edges: np.ndarray) -> np.ndarray:
    """Mean episodic return per step bin (nan where no episode ended in the bin)."""
    steps, values = run.series(tags.EPISODIC_RETURN)
    result = np.full(len(edges) - 1, np.nan)
    index = np.searchsorted(edges, steps, side="right") - 1
    for b in range(len(result)):
        chosen = values[index == b]
        if len(chosen):
            result[b] = chosen.mean()
    return result


def area_under_curve(run: Run, bins: int = 100) -> float:
    """Area under the binned return curve divided by the steps it spans: the run's average return,
    with every stretch of training weighted equally however many episodes ended in it."""
    if run.nonfinite_returns():
        return math.nan  # a NaN return would vanish into nanmean: the seed is left out instead
    end = run.last_step + 1
    curve = binned_returns(run, np.linspace(0, end, bins + 1))
    return float(np.nanmean(curve)) if np.isfinite(curve).any() else math.nan


def last_value(run: Run, tag: str) -> float:
    steps, values = run.series(tag)
    return float(values[-1]) if len(values) else math.nan


def matching_tags(runs: Iterable[Run], pattern: str) -> list[str]:
    regex = re.compile(pattern)
    return sorted({tag for run in runs for tag in run.scalars if regex.fullmatch(tag)})


def layer_mean_at_end(run: Run, network: str, metric: str) -> float:
    """The last value of ``plasticity/<network>/layer*/<metric>``, averaged over the hidden layers."""
    found = matching_tags([run], tags.plasticity_layers_pattern(network, metric))
    values = [last_value(run, tag) for tag in found]
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def total_replaced(run: Run, network: str) -> float:
    found = matching_tags([run], tags.cbp_replaced_pattern(network))
    return float(sum(last_value(run, tag) for tag in found)) if found else math.nan
