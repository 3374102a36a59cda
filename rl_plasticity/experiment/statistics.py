"""Few-seed statistics the field trusts: the mean with a t-interval and a bootstrap interval (as the
paper reports, scipy's ``bootstrap``), and the interquartile mean with a bootstrap interval (Agarwal et
al. 2021, NeurIPS, the ``rliable`` package).

With one task, rliable's *stratified* bootstrap resamples the runs of that one task, which is the
plain bootstrap over seeds used here; its IQM is ``scipy.stats.trim_mean(scores, 0.25)``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000


def interquartile_mean(values: np.ndarray, axis: int = -1) -> np.ndarray:
    """The mean of the middle 50% of ``values`` along ``axis`` (trimmed mean, 25% cut from each end)."""
    from scipy.stats import trim_mean

    return trim_mean(np.asarray(values, dtype=np.float64), 0.25, axis=axis)


def mean(values: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(values, axis=axis)


def bootstrap_interval(values: np.ndarray, statistic: Callable[..., np.ndarray],
                       seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of ``statistic`` over ``values`` (BCa, as scipy defaults to; percentile
    where BCa is undefined, e.g. when every resample gives the same value). nan below 2 values.
    ``statistic(sample, axis)`` reduces along ``axis``, as `mean` and `interquartile_mean` do."""
    from scipy.stats import bootstrap

    data = np.asarray(values, dtype=np.float64)
    if len(data) < 2:
        return math.nan, math.nan
    if np.ptp(data) == 0:
        return float(data[0]), float(data[0])

    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            # BCa warns (and returns nan) on degenerate resamples; the percentile method then answers.
            warnings.simplefilter("ignore")
            result = bootstrap((data,), statistic, confidence_level=CONFIDENCE,
                               n_resamples=BOOTSTRAP_RESAMPLES, method=method, vectorized=True,
                               rng=np.random.default_rng(seed))
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
        if math.isfinite(low) and math.isfinite(high):
            return low, high
    return math.nan, math.nan


@dataclass(frozen=True)
class SeedStatistics:
    """One quantity across seeds: mean with its t- and bootstrap intervals, IQM with its bootstrap
    interval. Bounds are nan where fewer than 2 seeds have a finite value."""

    count: int
    mean: float
    t_low: float
    t_high: float
    boot_low: float
    boot_high: float
    iqm: float
    iqm_low: float
    iqm_high: float
    #: seeds given whose value was not finite (NaN, inf, or none to compute): counted, never hidden
    left_out: int = 0

    @classmethod
    def of(cls, values: Iterable[float]) -> SeedStatistics:
        from scipy.stats import t as student_t

        given = list(values)
        data = np.array([v for v in given if v is not None and math.isfinite(v)], dtype=np.float64)
        left_out = len(given) - len(data)
        if len(data) == 0:
            return cls(0, *([math.nan] * 8), left_out=left_out)
        centre = float(data.mean())
        if len(data) < 2:
            return cls(1, centre, math.nan, math.nan, math.nan, math.nan, centre, math.nan, math.nan,
                       left_out=left_out)
        half = float(student_t.ppf(0.5 + CONFIDENCE / 2, len(data) - 1)) * float(data.std(ddof=1)) \
            / math.sqrt(len(data))
        boot = bootstrap_interval(data, mean)
        iqm_bounds = bootstrap_interval(data, interquartile_mean)
        return cls(len(data), centre, centre - half, centre + half, *boot, float(interquartile_mean(data)),
                   *iqm_bounds, left_out=left_out)

    def seeds_text(self) -> str:
        """The seeds the statistic used: ``3``, or ``2 of 3 (1 NaN/inf/none)``."""
        if not self.left_out:
            return str(self.count)
        return f"{self.count} of {self.count + self.left_out} ({self.left_out} NaN/inf/none)"

    def excludes(self, value: float) -> bool:
        """True when the bootstrap interval of the mean lies entirely on one side of ``value``."""
        return self.boot_high < value or self.boot_low > value

    def format_mean(self, digits: int = 2) -> str:
        """``mean [bootstrap low, high]``."""
        return _format(self.mean, self.boot_low, self.boot_high, digits)

    def format_iqm(self, digits: int = 2) -> str:
        return _format(self.iqm, self.iqm_low, self.iqm_high, digits)

    def format_t(self, digits: int = 2) -> str:
        return _format(self.mean, self.t_low, self.t_high, digits)


def _format(centre: float, low: float, high: float, digits: int) -> str:
    if math.isnan(centre):
        return "n/a"
    if math.isnan(low):
        return f"{centre:.{digits}f}"
    return f"{centre:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def intervals_overlap(first: SeedStatistics, second: SeedStatistics) -> bool:
    """Whether the two bootstrap intervals of the mean share any value (True if either is undefined)."""
    if any(math.isnan(b) for b in (first.boot_low, first.boot_high, second.boot_low, second.boot_high)):
        return True
    return not (first.boot_high < second.boot_low or second.boot_high < first.boot_low)
