"""The statistics of a report, on curves already read: no MLflow, no plotting.

Curves: each run's curve is linearly interpolated onto a common grid that spans only the steps
*every* curve covers, so an estimate never mixes seeds that have stopped with seeds still running.

Over runs (curves at each grid step, the final-value table, forward transfer): the interquartile
mean (IQM, `rliable.metrics.aggregate_iqm`: the mean of the middle 50 % of the runs, 25 % cut from
each end, `int(0.25 n)` runs per end) and a stratified-bootstrap confidence interval, as rliable
computes it (Agarwal et al. 2021): the runs are resampled with replacement `BOOTSTRAP_REPS` times,
the IQM of each resample taken, and the interval is the percentile interval of those IQMs at the
layout's `confidence`; each step of a curve is a stratum, resampled on its own. The draws come from a fixed seed
(`BOOTSTRAP_SEED`), so a report is deterministic. With n ≤ 3 runs no run is cut and the IQM *is*
the mean; with n = 4 it is the mean of the middle two. A bootstrap interval lies between the
smallest and the largest run's value, so success rates keep their bands inside [0, 1]. One run:
no interval (NaN ends).

rliable's own `library.get_interval_estimates` is not called: rliable 1.2.0 needs `arch < 8`,
whose import fails under pandas 3 (`deprecate_kwarg` changed), and `arch` 8 removed the
`random_state` argument rliable passes. `interval_estimate` does the same resampling (percentile
method) with its own seeded generator; each step's interval has the distribution rliable's would.

Forward transfer (paper §5.6, Table 6, after Continual World): per run of a method,
AUC = (1/T) ∫₀ᵀ p(t) dt of its success curve p(t) (trapezoid rule over the range that run's
method and the baseline all cover, T its length); FT = (AUC − AUC_b) / (1 − AUC_b), with AUC_b
the mean AUC of the baseline's runs over the same range. The spread of AUC_b is not propagated.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import version

import numpy as np
import pandas as pd
from rliable import metrics as rliable_metrics
from scipy import stats as scipy_stats

MAX_GRID_POINTS = 400
PERFECT_TOLERANCE = 1e-6
"""1 − AUC_b below this: the baseline is already perfect and FT is undefined (NaN)."""
NO_VALUE = "(none)"
"""How an empty facet or group value is shown."""
POINT = "iqm"
"""The table column of the point estimate over runs: `<metric>:iqm`."""
FORWARD_TRANSFER_STATS = (POINT, "ci_low", "ci_high", "n", "auc", "auc_baseline")
BOOTSTRAP_REPS = 2000
"""Bootstrap resamples of the runs per interval."""
BOOTSTRAP_SEED = 0
"""Seed of every interval's resampling (each interval starts from it afresh)."""
IQM_CUT = 0.25
"""The share of runs cut from each end for the IQM (rliable's `aggregate_iqm`)."""


def label(value: str) -> str:
    """A facet or group value as shown: itself, or `(none)` when empty."""
    return value if value else NO_VALUE


@dataclass(frozen=True)
class Curve:
    """One run's history of one metric: increasing steps and the value at each."""

    steps: np.ndarray
    values: np.ndarray


CellCurves = Callable[[str], list[Curve]]
"""Metric key -> the curves of that metric logged by the runs of one cell, in run order."""


@dataclass(frozen=True)
class Grouping:
    """Runs arranged in cells: a facet (subplot, block of table rows) by a group (line, table row)."""

    facet_by: str | None
    group_by: str
    facets: list[str]
    groups: list[str]
    cells: Mapping[tuple[str, str], CellCurves]
    """Only the (facet, group) pairs that have runs."""

    @property
    def key_columns(self) -> list[str]:
        """The table columns that name a row: the facet attribute (if any), then the group attribute."""
        return ([self.facet_by] if self.facet_by is not None else []) + [self.group_by]

    def row_keys(self, facet: str, group: str) -> dict[str, object]:
        """The key columns' values of the row of one cell."""
        keys: dict[str, object] = {}
        if self.facet_by is not None:
            keys[self.facet_by] = facet
        keys[self.group_by] = group
        return keys

    def has_runs(self, facet: str, group: str) -> bool:
        """Whether any run falls in this cell."""
        return (facet, group) in self.cells

    def curves(self, facet: str, group: str, metric: str) -> list[Curve]:
        """The curves of `metric` logged by the runs of one cell (none for a cell without runs)."""
        cell = self.cells.get((facet, group))
        return cell(metric) if cell is not None else []


# --------------------------------------------------------------------------------------------
# curves and confidence intervals


def interval_text(confidence: float, *, short: bool = False) -> str:
    """How the report aggregates over runs, in words (tables' notes, figure titles)."""
    level = f"{confidence * 100:g} %"
    if short:
        return f"IQM over runs, {level} stratified-bootstrap CI ({BOOTSTRAP_REPS} repetitions)"
    return (f"IQM over runs, {level} stratified-bootstrap CI (rliable {version('rliable')}, "
            f"{BOOTSTRAP_REPS} repetitions, percentile interval, seed {BOOTSTRAP_SEED}); "
            "IQM = mean for n ≤ 3 runs; one run: no CI")


def iqm(values: np.ndarray, axis: int = 0) -> np.ndarray:
    """The interquartile mean over `axis`, kept within each slice's smallest and largest value (no
    rounding past the data). One set of runs: rliable's `aggregate_iqm`; many (a curve's steps):
    its formula, `scipy.stats.trim_mean(·, 0.25)`, along `axis` at once (a loop of `aggregate_iqm`
    over 400 steps costs ~70 ms a line)."""
    values = np.moveaxis(np.asarray(values, dtype=float), axis, 0)
    columns = values.reshape(values.shape[0], -1)
    if columns.shape[1] == 1:
        estimates = np.array([rliable_metrics.aggregate_iqm(columns[:, 0])])
    else:
        estimates = scipy_stats.trim_mean(columns, IQM_CUT, axis=0)
    return np.clip(estimates, columns.min(axis=0), columns.max(axis=0)).reshape(values.shape[1:])


def interval_estimate(
    values: np.ndarray, confidence: float, axis: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IQM over `axis` (the runs) and the two ends of its stratified-bootstrap CI, one interval
    per position of the other axes (NaN ends for n < 2)."""
    values = np.moveaxis(np.asarray(values, dtype=float), axis, 0)
    n, shape = values.shape[0], values.shape[1:]
    point = iqm(values)
    if n < 2:
        nan = np.full(shape, np.nan)
        return point, nan, nan
    # Each stratum (column) resamples its n values with replacement. Drawing sorted ranks into the
    # column's sorted values gives a sorted resample, so its IQM is the mean of the ranks kept: per
    # column the same distribution as resampling the runs, without sorting every resample. (One
    # draw of ranks serves all columns; only each column's own interval is reported.)
    ordered = np.sort(values.reshape(n, -1), axis=0)
    ranks = np.sort(np.random.default_rng(BOOTSTRAP_SEED).integers(0, n, size=(BOOTSTRAP_REPS, n)), axis=1)
    cut = int(IQM_CUT * n)
    kept = ranks[:, cut:n - cut]
    estimates = np.zeros((BOOTSTRAP_REPS, ordered.shape[1]))
    for position in range(kept.shape[1]):
        estimates += ordered[kept[:, position]]
    estimates = np.clip(estimates / kept.shape[1], ordered[0], ordered[-1])  # no rounding past the data
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(estimates, [alpha, 1.0 - alpha], axis=0)
    return point, low.reshape(shape), high.reshape(shape)


def common_grid(curves: list[Curve]) -> np.ndarray:
    """Steps inside the range every curve covers (their union there, thinned to a fixed size);
    empty when the curves share no step range."""
    low = max(curve.steps[0] for curve in curves)
    high = min(curve.steps[-1] for curve in curves)
    if low > high:
        return np.array([], dtype=float)
    steps = np.unique(np.concatenate([curve.steps for curve in curves]))
    steps = steps[(steps >= low) & (steps <= high)]
    if len(steps) > MAX_GRID_POINTS:
        steps = np.linspace(low, high, MAX_GRID_POINTS)
    return steps


def interpolate(curves: list[Curve], grid: np.ndarray) -> np.ndarray:
    """The curves' values at the grid's steps, linearly interpolated: one row per curve."""
    return np.stack([np.interp(grid, curve.steps, curve.values) for curve in curves])


def per_run_value(curve: Curve, at: str) -> float:
    """One number for a run's curve: its last value (`final`), `max`, `min` or `mean` of its values."""
    if at == "final":
        return float(curve.values[-1])
    if at == "max":
        return float(curve.values.max())
    if at == "min":
        return float(curve.values.min())
    return float(curve.values.mean())


def final_table(grouping: Grouping, metrics: list[str], *, at: str, confidence: float) -> pd.DataFrame:
    """One row per cell with runs; per metric (`key` or `key@at`) the IQM over runs of the
    per-run value, its CI ends and the number of runs: `<metric>:iqm|ci_low|ci_high|n`."""
    records: list[dict[str, object]] = []
    for facet in grouping.facets:
        for group in grouping.groups:
            if not grouping.has_runs(facet, group):
                continue
            record = grouping.row_keys(facet, group)
            for metric in metrics:
                key, _, metric_at = metric.partition("@")
                curves = grouping.curves(facet, group, key)
                values = np.array([per_run_value(curve, metric_at or at) for curve in curves], dtype=float)
                if len(values):
                    point, low, high = interval_estimate(values, confidence)
                    record.update({f"{metric}:{POINT}": float(point), f"{metric}:ci_low": float(low),
                                   f"{metric}:ci_high": float(high), f"{metric}:n": len(values)})
                else:
                    record.update({f"{metric}:{POINT}": np.nan, f"{metric}:ci_low": np.nan,
                                   f"{metric}:ci_high": np.nan, f"{metric}:n": 0})
            records.append(record)
    return pd.DataFrame.from_records(records)


# --------------------------------------------------------------------------------------------
# forward transfer


def area_under_curve(steps: np.ndarray, values: np.ndarray) -> float:
    """AUC = (1/T) ∫₀ᵀ p(t) dt by the trapezoid rule, t from the first to the last step, T their
    distance; p at that step when there is only one."""
    steps = np.asarray(steps, dtype=float)
    values = np.asarray(values, dtype=float)
    if len(steps) == 1:
        return float(values[0])
    return float(np.trapezoid(values, steps) / (steps[-1] - steps[0]))


def forward_transfer(auc: np.ndarray | float, auc_baseline: float) -> np.ndarray:
    """FT = (AUC − AUC_b) / (1 − AUC_b); NaN when the baseline is already perfect (1 − AUC_b ≈ 0)."""
    auc = np.asarray(auc, dtype=float)
    if 1.0 - auc_baseline < PERFECT_TOLERANCE:
        return np.full_like(auc, np.nan)
    return (auc - auc_baseline) / (1.0 - auc_baseline)


def forward_transfer_columns(grouping: Grouping, metrics: list[str]) -> list[str]:
    """The columns of the forward-transfer table: row keys, then `<metric>:<stat>` per metric."""
    return grouping.key_columns + [f"{metric}:{stat}" for metric in metrics for stat in FORWARD_TRANSFER_STATS]


def _forward_transfer_cell(
    *,
    metric: str,
    group: str,
    curves: list[Curve],
    baseline: str,
    baseline_curves: list[Curve],
    confidence: float,
    where: str,
    notes: list[str],
) -> dict[str, float]:
    """FT of one method on one metric: IQM, CI and n over its runs, plus mean AUC and AUC_b."""
    empty = {f"{metric}:{stat}": (0 if stat == "n" else np.nan) for stat in FORWARD_TRANSFER_STATS}
    if not baseline_curves:
        notes.append(f"{metric}{where}: the runs of baseline {baseline!r} logged no values; "
                     "forward transfer not computed")
        return empty
    if not curves:
        return empty
    # one step range for the method's runs and the baseline's, so AUC and AUC_b share T
    grid = common_grid(curves + baseline_curves)
    if len(grid) == 0:
        notes.append(f"{metric}{where}: runs of {label(group)} and of the baseline cover disjoint step ranges; "
                     "forward transfer not computed")
        return empty
    longest = max(curve.steps[-1] for curve in curves + baseline_curves)
    if grid[-1] < longest:
        notes.append(f"{metric}{where}: FT of {label(group)} over steps {grid[0]:g} to {grid[-1]:g}, the range "
                     f"all its and the baseline's runs cover (the longest reaches {longest:g})")
    auc = np.array([area_under_curve(grid, values) for values in interpolate(curves, grid)])
    auc_b = float(np.mean([area_under_curve(grid, values) for values in interpolate(baseline_curves, grid)]))
    ft = forward_transfer(auc, auc_b)
    if np.isnan(ft).all():
        notes.append(f"{metric}{where}: the baseline is already perfect (AUC_b = {auc_b:.3g}, 1 − AUC_b ≈ 0); "
                     f"forward transfer of {label(group)} undefined (NaN)")
    point, low, high = interval_estimate(ft, confidence)
    return {f"{metric}:{POINT}": float(point), f"{metric}:ci_low": float(low), f"{metric}:ci_high": float(high),
            f"{metric}:n": len(ft), f"{metric}:auc": float(auc.mean()), f"{metric}:auc_baseline": auc_b}


def forward_transfer_table(
    grouping: Grouping, metrics: list[str], *, baseline: str, confidence: float
) -> tuple[pd.DataFrame, list[str]]:
    """One row per (facet, non-baseline group) with runs; per metric: FT IQM, ci_low, ci_high, n,
    and the mean AUC of the method and of the baseline. Also the notes on what was not computed."""
    columns = forward_transfer_columns(grouping, metrics)
    if not any(grouping.has_runs(facet, baseline) for facet in grouping.facets):
        return pd.DataFrame(columns=columns), [
            f"no runs of baseline method {baseline!r} in this selection; forward transfer not computed"
        ]
    notes: list[str] = []
    records: list[dict[str, object]] = []
    for facet in grouping.facets:
        others = [group for group in grouping.groups if group != baseline and grouping.has_runs(facet, group)]
        where = f" in {grouping.facet_by}={label(facet)}" if grouping.facet_by is not None else ""
        if others and not grouping.has_runs(facet, baseline):
            notes.append(f"no runs of baseline method {baseline!r}{where}; forward transfer not computed there")
            continue
        for group in others:
            record = grouping.row_keys(facet, group)
            for metric in metrics:
                record.update(_forward_transfer_cell(
                    metric=metric, group=group, curves=grouping.curves(facet, group, metric), baseline=baseline,
                    baseline_curves=grouping.curves(facet, baseline, metric), confidence=confidence,
                    where=where, notes=notes,
                ))
            records.append(record)
    return pd.DataFrame.from_records(records, columns=columns), list(dict.fromkeys(notes))
