"""Forgetting-curve reports from MLflow runs: figures with confidence bands, a final-value table,
one self-contained HTML page, all logged back to MLflow as a `report` run.

What is read: the runs of one MLflow experiment (one per Tune trial) with `ftcl.stage == stage`,
by default only those of the latest `ftcl.group` (one `ftcl run` invocation). Runs tagged
`ftcl.kind=report` are never read. Each run is one sample (normally one seed) of its
`group_by` value (normally `method`) within its `facet_by` value (normally `ftcl.variant`).

Curves: the MLflow step is the x axis (environment steps; gradient steps for analytic toys).
Each run's curve is linearly interpolated onto a common grid that spans only the steps *every*
run of that line covers, so the mean never mixes seeds that have stopped with seeds still
running: a line ends where its shortest run ends. The band is the Student-t confidence interval
of the mean over runs; a line with one run has no band.

Table: per run, the metric's last logged value by step (`at: final`), its maximum (`max`) or the
unweighted mean of its logged values (`mean`); then, over runs, the mean and its Student-t
confidence interval.

Forward transfer (optional `forward_transfer` section of the layout; paper §5.6, Table 6, after
Continual World): per run of a method, AUC = (1/T) ∫₀ᵀ p(t) dt of its success curve p(t) (trapezoid
rule from the first to the last step of the range that run's method and the baseline all cover,
T its length); FT = (AUC − AUC_b) / (1 − AUC_b), with AUC_b the mean AUC of the baseline's runs
(same facet, same metric, same step range). The table gives, over a method's runs, the mean FT and
its Student-t confidence interval (the spread of AUC_b is not propagated). Finetune-stage runs only.
"""
from __future__ import annotations

import base64
import datetime as dt
import html
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from mlflow.entities import Run, ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from scipy import stats

from ftcl.tracking.dashboard import DashboardLayout, LayoutError, expand_metric, is_glob, load_layout

REPORT_KIND_TAG = "ftcl.kind"
REPORT_KIND = "report"
GROUP_TAG = "ftcl.group"
STAGE_TAG = "ftcl.stage"
ALL_GROUPS = "all"
MAX_GRID_POINTS = 400
FORWARD_TRANSFER_STAGE = "finetune"
PERFECT_TOLERANCE = 1e-6
"""1 − AUC_b below this: the baseline is already perfect and FT is undefined (NaN)."""
_NO_VALUE = "(none)"


class ReportError(ValueError):
    """The report cannot be built: unknown experiment, layout, group or stage, or no runs."""


@dataclass(frozen=True)
class PanelFigure:
    """One figure written: which metric, where, and which facets (subplots) it has."""

    metric: str
    path: Path
    facets: list[str]
    groups: list[str]


@dataclass(frozen=True)
class ReportFiles:
    """Everything `build_report` wrote, and the MLflow run that holds it as artifacts."""

    out_dir: Path
    html: Path
    table_csv: Path
    table_md: Path
    figures: list[PanelFigure]
    warnings: list[str]
    run_count: int
    group: str
    report_run_id: str | None = None
    table: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False, compare=False)
    forward_transfer_csv: Path | None = None
    """`forward_transfer.csv` (None when the layout has no `forward_transfer` section)."""
    forward_transfer_md: Path | None = None
    forward_transfer: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False, compare=False)
    forward_transfer_notes: list[str] = field(default_factory=list)

    def all_paths(self) -> list[Path]:
        """All files written, HTML first."""
        forward = [path for path in (self.forward_transfer_csv, self.forward_transfer_md) if path is not None]
        return [self.html, self.table_csv, self.table_md, *forward, *(figure.path for figure in self.figures)]


# --------------------------------------------------------------------------------------------
# reading runs


def resolve_tracking_uri(tracking_uri: str | None) -> str:
    """The tracking URI to read: the argument, else `MLFLOW_TRACKING_URI`, else ftcl's store
    (`sqlite:///<ftcl home>/mlflow.db`, see `ftcl.tracking.store`)."""
    from ftcl.tracking.store import tracking_uri as default_tracking_uri

    return default_tracking_uri(tracking_uri)


def _check_store_exists(tracking_uri: str) -> None:
    """Refuse to read a SQLite store that does not exist (MLflow would silently create it)."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return
    database = unquote(tracking_uri[len(prefix):].split("?", 1)[0])
    if database in ("", ":memory:"):
        return
    if not Path(database).exists():
        raise ReportError(f"no MLflow store at {tracking_uri!r} (run `ftcl run` first or pass a tracking URI)")


def _search_all(client: MlflowClient, experiment_id: str, filter_string: str) -> list[Run]:
    runs: list[Run] = []
    page_token: str | None = None
    while True:
        page = client.search_runs(
            experiment_ids=[experiment_id],
            filter_string=filter_string,
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=1000,
            page_token=page_token,
        )
        runs.extend(page)
        page_token = page.token
        if not page_token:
            return runs


def _quote(value: str) -> str:
    """A string literal for an MLflow filter."""
    if "'" in value:
        raise ReportError(f"value {value!r} contains a quote, which MLflow filters cannot express")
    return f"'{value}'"


def _is_report(run: Run) -> bool:
    return run.data.tags.get(REPORT_KIND_TAG) == REPORT_KIND


def _select_runs(
    client: MlflowClient, experiment: str, stage: str, group: str | None
) -> tuple[str, list[Run], str]:
    """(experiment id, runs to report on, group label) — or a `ReportError` saying why none."""
    found = client.get_experiment_by_name(experiment)
    if found is None or found.lifecycle_stage != "active":
        names = sorted(e.name for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY))
        raise ReportError(
            f"MLflow experiment {experiment!r} does not exist; experiments: {', '.join(names) or '(none)'}"
        )
    experiment_id = found.experiment_id
    staged = [
        run
        for run in _search_all(client, experiment_id, f"tags.`{STAGE_TAG}` = {_quote(stage)}")
        if not _is_report(run)
    ]
    if not staged:
        everything = [run for run in _search_all(client, experiment_id, "") if not _is_report(run)]
        if not everything:
            raise ReportError(f"MLflow experiment {experiment!r} has no runs")
        stages = sorted({run.data.tags.get(STAGE_TAG, _NO_VALUE) for run in everything})
        raise ReportError(
            f"experiment {experiment!r} has no runs with {STAGE_TAG}={stage!r}; stages present: {', '.join(stages)}"
        )
    if group == ALL_GROUPS:
        return experiment_id, staged, ALL_GROUPS
    groups = {run.data.tags.get(GROUP_TAG, "") for run in staged}
    if group is None:
        latest = max(staged, key=lambda run: (run.info.start_time or 0, run.info.run_id))
        group = latest.data.tags.get(GROUP_TAG, "")
    elif group not in groups:
        raise ReportError(
            f"experiment {experiment!r} has no {stage} runs in group {group!r}; groups: "
            f"{', '.join(sorted(groups))} (or 'all')"
        )
    return experiment_id, [run for run in staged if run.data.tags.get(GROUP_TAG, "") == group], group


def _attribute(run: Run, name: str) -> str:
    """A run's value of a tag (`method`, `tags.method`) or param (`params.lr`); '' when absent."""
    if name.startswith("params."):
        return run.data.params.get(name[len("params."):], "")
    if name.startswith("tags."):
        name = name[len("tags."):]
    return run.data.tags.get(name, "")


# --------------------------------------------------------------------------------------------
# statistics


def mean_confidence_interval(values: np.ndarray, confidence: float, axis: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over `axis` and the two ends of its Student-t confidence interval (NaN for n < 2)."""
    values = np.asarray(values, dtype=float)
    n = values.shape[axis]
    mean = values.mean(axis=axis)
    if n < 2:
        nan = np.full_like(mean, np.nan, dtype=float)
        return mean, nan, nan
    sem = values.std(axis=axis, ddof=1) / math.sqrt(n)
    half = stats.t.ppf((1.0 + confidence) / 2.0, df=n - 1) * sem
    return mean, mean - half, mean + half


@dataclass
class _Curve:
    steps: np.ndarray
    values: np.ndarray


class _Histories:
    """Metric histories fetched once per (run, key), sorted by step, one value per step."""

    def __init__(self, client: MlflowClient) -> None:
        self._client = client
        self._cache: dict[tuple[str, str], _Curve | None] = {}

    def get(self, run_id: str, key: str) -> _Curve | None:
        if (run_id, key) not in self._cache:
            points = self._client.get_metric_history(run_id, key)
            by_step: dict[int, tuple[int, float]] = {}
            for point in points:
                if point.value is None or not math.isfinite(point.value):
                    continue
                previous = by_step.get(point.step)
                if previous is None or point.timestamp >= previous[0]:
                    by_step[point.step] = (point.timestamp, float(point.value))
            if by_step:
                steps = np.array(sorted(by_step), dtype=float)
                values = np.array([by_step[int(step)][1] for step in steps], dtype=float)
                self._cache[(run_id, key)] = _Curve(steps, values)
            else:
                self._cache[(run_id, key)] = None
        return self._cache[(run_id, key)]


def _common_grid(curves: list[_Curve]) -> np.ndarray:
    """Steps inside the range every curve covers (their union there, thinned to a fixed size)."""
    low = max(curve.steps[0] for curve in curves)
    high = min(curve.steps[-1] for curve in curves)
    if low > high:
        return np.array([], dtype=float)
    steps = np.unique(np.concatenate([curve.steps for curve in curves]))
    steps = steps[(steps >= low) & (steps <= high)]
    if len(steps) > MAX_GRID_POINTS:
        steps = np.linspace(low, high, MAX_GRID_POINTS)
    return steps


def _per_run_value(curve: _Curve, at: str) -> float:
    if at == "final":
        return float(curve.values[-1])
    if at == "max":
        return float(curve.values.max())
    if at == "min":
        return float(curve.values.min())
    return float(curve.values.mean())


# --------------------------------------------------------------------------------------------
# figures


def _natural_key(text: str) -> list[object]:
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", text)]


def _label(value: str) -> str:
    return value if value else _NO_VALUE


def metric_slug(metric: str) -> str:
    """A file-name-safe form of a metric key (`evaluation/far/success` -> `evaluation_far_success`)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", metric).strip("_") or "metric"


def _draw_panel(
    *,
    metric: str,
    title: str,
    ylabel: str,
    ylim: tuple[float, float] | None,
    yscale: str,
    layout: DashboardLayout,
    facets: list[str],
    groups: list[str],
    cells: dict[tuple[str, str], list[Run]],
    histories: _Histories,
    colors: dict[str, tuple[float, ...]],
    path: Path,
    warnings: list[str],
) -> list[str]:
    """Draw one figure (one subplot per facet) to `path`; returns the groups that had data."""
    columns = min(len(facets), 3)
    rows = math.ceil(len(facets) / columns)
    figure = Figure(figsize=(5.2 * columns, 3.8 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False, sharey=True)
    drawn_groups: set[str] = set()
    truncated: list[str] = []
    for index, facet in enumerate(facets):
        ax = axes[index // columns][index % columns]
        lines = 0
        for group in groups:
            runs = cells.get((facet, group), [])
            curves = [curve for run in runs if (curve := histories.get(run.info.run_id, metric)) is not None]
            if not curves:
                continue
            color = colors[group]
            grid = _common_grid(curves)
            if len(grid) == 0:
                warnings.append(
                    f"{metric}: runs of {_label(group)} in facet {_label(facet)} cover disjoint step "
                    "ranges; drawn individually without a mean"
                )
                for number, curve in enumerate(curves):
                    ax.plot(curve.steps, curve.values, color=color, alpha=0.6, linewidth=1,
                            label=f"{_label(group)} (runs, n={len(curves)})" if number == 0 else None)
                lines += 1
                drawn_groups.add(group)
                continue
            longest = max(curve.steps[-1] for curve in curves)
            if grid[-1] < longest:
                truncated.append(f"{_label(group)} in {_label(facet)} at step {grid[-1]:g} of {longest:g}")
            samples = np.stack([np.interp(grid, curve.steps, curve.values) for curve in curves])
            mean, low, high = mean_confidence_interval(samples, layout.confidence)
            label = f"{_label(group)} (n={len(curves)})"
            if len(grid) == 1:
                error = None if len(curves) < 2 else [[mean[0] - low[0]], [high[0] - mean[0]]]
                ax.errorbar(grid, mean, yerr=error, color=color, marker="o", capsize=4, label=label)
            else:
                ax.plot(grid, mean, color=color, linewidth=1.8, label=label)
                if len(curves) >= 2:
                    ax.fill_between(grid, low, high, color=color, alpha=0.2, linewidth=0)
            lines += 1
            drawn_groups.add(group)
        if lines == 0:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")
        if len(facets) > 1 or (layout.facet_by is not None and facet):
            ax.set_title(_label(facet), fontsize="medium")
        ax.set_xlabel(layout.xlabel)
        if index % columns == 0:
            ax.set_ylabel(ylabel)
        if yscale == "symlog":
            ax.set_yscale("symlog", linthresh=10.0)  # linear in [-10, 10], logarithmic beyond
        if ylim is not None:
            ax.set_ylim(*ylim)
        ax.grid(alpha=0.3)
        if lines:
            ax.legend(fontsize="small", title=layout.group_by, title_fontsize="small")
    for index in range(len(facets), rows * columns):
        axes[index // columns][index % columns].set_visible(False)
    if truncated:
        warnings.append(
            f"{metric}: a line ends where its shortest run ends ({'; '.join(truncated)})"
        )
    band = f"mean ± {layout.confidence:.0%} CI over runs"
    figure.suptitle(f"{title}\n{band}", fontsize="medium")
    figure.savefig(path, dpi=100)
    return [group for group in groups if group in drawn_groups]


# --------------------------------------------------------------------------------------------
# table


def _final_table(
    *,
    metrics: list[str],
    layout: DashboardLayout,
    facets: list[str],
    groups: list[str],
    cells: dict[tuple[str, str], list[Run]],
    histories: _Histories,
) -> pd.DataFrame:
    """One row per (facet, group) with runs; per metric: mean, ci_low, ci_high, n."""
    records: list[dict[str, object]] = []
    for facet in facets:
        for group in groups:
            runs = cells.get((facet, group), [])
            if not runs:
                continue
            record: dict[str, object] = {}
            if layout.facet_by is not None:
                record[layout.facet_by] = facet
            record[layout.group_by] = group
            for metric in metrics:
                key, _, at = metric.partition("@")
                values = np.array(
                    [
                        _per_run_value(curve, at or layout.table.at)
                        for run in runs
                        if (curve := histories.get(run.info.run_id, key)) is not None
                    ],
                    dtype=float,
                )
                if len(values):
                    mean, low, high = mean_confidence_interval(values, layout.confidence)
                    record.update({f"{metric}:mean": float(mean), f"{metric}:ci_low": float(low),
                                   f"{metric}:ci_high": float(high), f"{metric}:n": len(values)})
                else:
                    record.update({f"{metric}:mean": np.nan, f"{metric}:ci_low": np.nan,
                                   f"{metric}:ci_high": np.nan, f"{metric}:n": 0})
            records.append(record)
    return pd.DataFrame.from_records(records)


def _format_cell(row: pd.Series, metric: str) -> str:
    n = int(row[f"{metric}:n"])
    if n == 0:
        return "—"
    mean = row[f"{metric}:mean"]
    if n == 1:
        return f"{mean:.3g} (n=1)"
    return f"{mean:.3g} [{row[f'{metric}:ci_low']:.3g}, {row[f'{metric}:ci_high']:.3g}] (n={n})"


def _display_table(table: pd.DataFrame, metrics: list[str], layout: DashboardLayout) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the human-readable table (`mean [CI] (n=…)` per metric)."""
    keys = ([layout.facet_by] if layout.facet_by is not None else []) + [layout.group_by]
    header = keys + [f"{metric.partition('@')[0]} ({metric.partition('@')[2] or layout.table.at})" for metric in metrics]
    rows = [
        [_label(str(row[key])) for key in keys] + [_format_cell(row, metric) for metric in metrics]
        for _, row in table.iterrows()
    ]
    return header, rows


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return "\n".join([line(header), "| " + " | ".join("---" for _ in header) + " |", *(line(row) for row in rows)])


def _markdown(header: list[str], rows: list[list[str]], confidence: float) -> str:
    return _markdown_table(header, rows) + f"\n\nmean [{confidence:.0%} Student-t CI of the mean] (n = runs)\n"


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


_FT_STATS = ("mean", "ci_low", "ci_high", "n", "auc", "auc_baseline")


def _forward_transfer_cell(
    *,
    metric: str,
    group: str,
    runs: list[Run],
    baseline: str,
    baseline_runs: list[Run],
    histories: _Histories,
    confidence: float,
    where: str,
    notes: list[str],
) -> dict[str, float]:
    """FT of one method on one metric: mean, CI and n over its runs, plus mean AUC and AUC_b."""
    empty = {f"{metric}:{stat}": (0 if stat == "n" else np.nan) for stat in _FT_STATS}
    curves = [curve for run in runs if (curve := histories.get(run.info.run_id, metric)) is not None]
    baseline_curves = [c for run in baseline_runs if (c := histories.get(run.info.run_id, metric)) is not None]
    if not baseline_curves:
        notes.append(f"{metric}{where}: the runs of baseline {baseline!r} logged no values; "
                     "forward transfer not computed")
        return empty
    if not curves:
        return empty
    # one step range for the method's runs and the baseline's, so AUC and AUC_b share T
    grid = _common_grid(curves + baseline_curves)
    if len(grid) == 0:
        notes.append(f"{metric}{where}: runs of {_label(group)} and of the baseline cover disjoint step ranges; "
                     "forward transfer not computed")
        return empty
    longest = max(curve.steps[-1] for curve in curves + baseline_curves)
    if grid[-1] < longest:
        notes.append(f"{metric}{where}: FT of {_label(group)} over steps {grid[0]:g} to {grid[-1]:g}, the range "
                     f"all its and the baseline's runs cover (the longest reaches {longest:g})")
    auc = np.array([area_under_curve(grid, np.interp(grid, c.steps, c.values)) for c in curves])
    auc_b = float(np.mean([area_under_curve(grid, np.interp(grid, c.steps, c.values)) for c in baseline_curves]))
    ft = forward_transfer(auc, auc_b)
    if np.isnan(ft).all():
        notes.append(f"{metric}{where}: the baseline is already perfect (AUC_b = {auc_b:.3g}, 1 − AUC_b ≈ 0); "
                     f"forward transfer of {_label(group)} undefined (NaN)")
    mean, low, high = mean_confidence_interval(ft, confidence)
    return {f"{metric}:mean": float(mean), f"{metric}:ci_low": float(low), f"{metric}:ci_high": float(high),
            f"{metric}:n": len(ft), f"{metric}:auc": float(auc.mean()), f"{metric}:auc_baseline": auc_b}


def _forward_transfer_table(
    *,
    metrics: list[str],
    layout: DashboardLayout,
    stage: str,
    facets: list[str],
    groups: list[str],
    cells: dict[tuple[str, str], list[Run]],
    histories: _Histories,
) -> tuple[pd.DataFrame, list[str]]:
    """One row per (facet, non-baseline group) with runs; per metric: FT mean, ci_low, ci_high, n,
    and the mean AUC of the method and of the baseline. Also the notes on what was not computed."""
    assert layout.forward_transfer is not None
    baseline = layout.forward_transfer.baseline
    keys = ([layout.facet_by] if layout.facet_by is not None else []) + [layout.group_by]
    columns = keys + [f"{metric}:{stat}" for metric in metrics for stat in _FT_STATS]
    if stage != FORWARD_TRANSFER_STAGE:
        return pd.DataFrame(columns=columns), [
            f"forward transfer compares {FORWARD_TRANSFER_STAGE} runs; this report is of stage {stage!r}; not computed"
        ]
    if not any(cells.get((facet, baseline)) for facet in facets):
        return pd.DataFrame(columns=columns), [
            f"no runs of baseline method {baseline!r} in this selection; forward transfer not computed"
        ]
    notes: list[str] = []
    records: list[dict[str, object]] = []
    for facet in facets:
        others = [group for group in groups if group != baseline and cells.get((facet, group))]
        where = f" in {layout.facet_by}={_label(facet)}" if layout.facet_by is not None else ""
        baseline_runs = cells.get((facet, baseline), [])
        if others and not baseline_runs:
            notes.append(f"no runs of baseline method {baseline!r}{where}; forward transfer not computed there")
            continue
        for group in others:
            record: dict[str, object] = {}
            if layout.facet_by is not None:
                record[layout.facet_by] = facet
            record[layout.group_by] = group
            for metric in metrics:
                record.update(_forward_transfer_cell(
                    metric=metric, group=group, runs=cells[(facet, group)], baseline=baseline,
                    baseline_runs=baseline_runs, histories=histories, confidence=layout.confidence,
                    where=where, notes=notes,
                ))
            records.append(record)
    return pd.DataFrame.from_records(records, columns=columns), list(dict.fromkeys(notes))


def _display_forward_transfer(
    table: pd.DataFrame, metrics: list[str], layout: DashboardLayout
) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the human-readable forward-transfer table (`mean [CI] (n=…)` per metric)."""
    keys = ([layout.facet_by] if layout.facet_by is not None else []) + [layout.group_by]
    header = keys + [f"{metric} FT" for metric in metrics]

    def cell(row: pd.Series, metric: str) -> str:
        n = int(row[f"{metric}:n"])
        if n > 0 and math.isnan(row[f"{metric}:mean"]):
            return f"NaN (n={n})"
        return _format_cell(row, metric)

    rows = [[_label(str(row[key])) for key in keys] + [cell(row, metric) for metric in metrics]
            for _, row in table.iterrows()]
    return header, rows


def _forward_transfer_text(layout: DashboardLayout) -> str:
    assert layout.forward_transfer is not None
    return (f"FT = (AUC − AUC_b) / (1 − AUC_b) per run, AUC = (1/T) ∫₀ᵀ p(t) dt of its success curve, AUC_b "
            f"the mean AUC of the runs of {layout.forward_transfer.baseline!r} over the same steps; "
            f"mean [{layout.confidence:.0%} Student-t CI of the mean] over runs (n = runs)")


def _forward_transfer_markdown(
    layout: DashboardLayout, header: list[str], rows: list[list[str]], notes: list[str]
) -> str:
    assert layout.forward_transfer is not None
    parts = [f"# Forward transfer vs {layout.forward_transfer.baseline!r}", ""]
    if rows:
        parts.extend([_markdown_table(header, rows), ""])
    parts.append(_forward_transfer_text(layout))
    if notes:
        parts.append("")
        parts.extend(f"- note: {note}" for note in notes)
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------------------------
# HTML


_AT_WORDS = {"final": "last logged value", "max": "maximum", "min": "minimum", "mean": "mean of logged values"}

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1400px; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }
th { background: #f3f3f3; }
.meta td:first-child { font-weight: bold; }
.warning { color: #8a5300; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0 1.5em; }
"""


def _html_table(header: list[str], rows: list[list[str]], css_class: str = "") -> str:
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    attribute = f' class="{css_class}"' if css_class else ""
    return f"<table{attribute}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html_page(
    *,
    layout: DashboardLayout,
    meta: list[tuple[str, str]],
    warnings: list[str],
    figures: list[PanelFigure],
    table_header: list[str],
    table_rows: list[list[str]],
    runs: list[Run],
    forward_transfer: tuple[list[str], list[list[str]], list[str]] | None = None,
) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(layout.title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(layout.title)}</h1>",
        "<table class=\"meta\"><tbody>"
        + "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in meta)
        + "</tbody></table>",
    ]
    if warnings:
        parts.append("<h2>Warnings</h2><ul>")
        parts.extend(f'<li class="warning">warning: {html.escape(text)}</li>' for text in warnings)
        parts.append("</ul>")
    parts.append(f"<h2>Per-run {html.escape(_AT_WORDS[layout.table.at])}, averaged over runs</h2>")
    parts.append(_html_table(table_header, table_rows))
    parts.append(
        f"<p>mean [{layout.confidence:.0%} Student-t confidence interval of the mean] (n = runs)</p>"
    )
    if forward_transfer is not None and layout.forward_transfer is not None:
        ft_header, ft_rows, ft_notes = forward_transfer
        parts.append(f"<h2>Forward transfer vs {html.escape(layout.forward_transfer.baseline)}</h2>")
        if ft_rows:
            parts.append(_html_table(ft_header, ft_rows))
        parts.append(f"<p>{html.escape(_forward_transfer_text(layout))}</p>")
        parts.extend(f'<p class="warning">{html.escape(note)}</p>' for note in ft_notes)
    parts.append("<h2>Curves</h2>")
    for figure in figures:
        encoded = base64.b64encode(figure.path.read_bytes()).decode("ascii")
        parts.append(f"<h3>{html.escape(figure.metric)}</h3>")
        parts.append(f'<img src="data:image/png;base64,{encoded}" alt="{html.escape(figure.metric)}">')
    run_rows = [
        [
            run.data.tags.get("mlflow.runName", ""),
            _attribute(run, layout.group_by),
            run.data.tags.get("seed", ""),
            _attribute(run, layout.facet_by) if layout.facet_by else "",
            run.data.tags.get(GROUP_TAG, ""),
            run.info.status,
            run.info.run_id,
        ]
        for run in runs
    ]
    parts.append("<details><summary>Runs</summary>")
    parts.append(_html_table(
        ["run", layout.group_by, "seed", layout.facet_by or "facet", GROUP_TAG, "status", "run id"], run_rows
    ))
    parts.append("</details></body></html>")
    return "\n".join(parts)


# --------------------------------------------------------------------------------------------
# entry point


def build_report(
    experiment: str,
    *,
    tracking_uri: str | None,
    out_dir: Path,
    layout: str | Path = "default",
    group: str | None = None,
    stage: str = "finetune",
    log_to_mlflow: bool = True,
) -> ReportFiles:
    """Build the report of one experiment's runs into `out_dir` and log it as an MLflow run.

    `group`: `None` reports the latest `ftcl.group` (the group of the most recently started
    run), `"all"` every group, otherwise that group. Nothing is written when the experiment,
    layout, group or stage is wrong (`ReportError`). Metrics absent from every run are skipped
    with a warning in the HTML.
    """
    try:
        dashboard = load_layout(layout)
    except LayoutError as error:
        raise ReportError(str(error)) from None
    uri = resolve_tracking_uri(tracking_uri)
    _check_store_exists(uri)
    client = MlflowClient(tracking_uri=uri)
    experiment_id, runs, group_label = _select_runs(client, experiment, stage, group)
    runs = sorted(runs, key=lambda run: (run.info.start_time or 0, run.info.run_id))

    available: set[str] = set()
    for run in runs:
        available.update(run.data.metrics)
    warnings: list[str] = []

    def expand(pattern: str, where: str) -> list[str]:
        keys = expand_metric(pattern, available)
        if not keys:
            if is_glob(pattern):
                warnings.append(f"no metric logged by the selected runs matches {pattern!r}; {where} skipped")
            else:
                warnings.append(f"metric {pattern!r} is not logged by any selected run; {where} skipped")
        return keys

    facets = sorted({_attribute(run, dashboard.facet_by) for run in runs} if dashboard.facet_by else {""},
                    key=_natural_key)
    groups = sorted({_attribute(run, dashboard.group_by) for run in runs}, key=_natural_key)
    cells: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        facet = _attribute(run, dashboard.facet_by) if dashboard.facet_by else ""
        cells.setdefault((facet, _attribute(run, dashboard.group_by)), []).append(run)
    palette = [tuple(color) for color in matplotlib.colormaps["tab10"].colors]
    colors = {name: palette[index % len(palette)] for index, name in enumerate(groups)}
    histories = _Histories(client)

    panel_jobs: list[tuple[str, str, str, tuple[float, float] | None, str]] = []
    for panel in dashboard.panels:
        for key in expand(panel.metric, "panel"):
            title = panel.title or key
            if panel.is_glob and panel.title:
                title = f"{panel.title} — {key}"
            panel_jobs.append((key, title, panel.ylabel or key, panel.ylim, panel.yscale))
    table_metrics: list[str] = []
    for entry in dashboard.table_metrics:
        pattern, _, at = entry.partition("@")
        for key in expand(pattern, "table column"):
            column = f"{key}@{at}" if at else key
            if column not in table_metrics:
                table_metrics.append(column)
    table = _final_table(metrics=table_metrics, layout=dashboard, facets=facets, groups=groups,
                         cells=cells, histories=histories)
    ft_table, ft_notes, ft_metrics = pd.DataFrame(), [], []
    if dashboard.forward_transfer is not None:
        skipped: list[str] = []
        for pattern in dashboard.forward_transfer.metrics:
            keys = expand(pattern, "forward-transfer column")
            ft_metrics.extend(key for key in keys if key not in ft_metrics)
            if not keys:
                skipped.append(f"{pattern!r} is not logged by any selected run; its column is skipped")
        ft_table, ft_notes = _forward_transfer_table(metrics=ft_metrics, layout=dashboard, stage=stage,
                                                     facets=facets, groups=groups, cells=cells, histories=histories)
        ft_notes = ft_notes + skipped

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures: list[PanelFigure] = []
    used_slugs: set[str] = set()
    for key, title, ylabel, ylim, yscale in panel_jobs:
        slug = metric_slug(key)
        while slug in used_slugs:
            slug += "_"
        used_slugs.add(slug)
        path = out_dir / f"{slug}.png"
        drawn = _draw_panel(metric=key, title=title, ylabel=ylabel, ylim=ylim, yscale=yscale, layout=dashboard,
                            facets=facets, groups=groups, cells=cells, histories=histories,
                            colors=colors, path=path, warnings=warnings)
        figures.append(PanelFigure(metric=key, path=path, facets=[_label(f) for f in facets], groups=drawn))

    table_csv = out_dir / "final_table.csv"
    table_md = out_dir / "final_table.md"
    table.to_csv(table_csv, index=False)
    header, rows = _display_table(table, table_metrics, dashboard)
    table_md.write_text(_markdown(header, rows, dashboard.confidence))
    ft_csv: Path | None = None
    ft_md: Path | None = None
    ft_display: tuple[list[str], list[list[str]], list[str]] | None = None
    if dashboard.forward_transfer is not None:
        ft_csv, ft_md = out_dir / "forward_transfer.csv", out_dir / "forward_transfer.md"
        ft_table.to_csv(ft_csv, index=False)
        ft_header, ft_rows = _display_forward_transfer(ft_table, ft_metrics, dashboard)
        ft_md.write_text(_forward_transfer_markdown(dashboard, ft_header, ft_rows, ft_notes))
        ft_display = (ft_header, ft_rows, ft_notes)

    generated = dt.datetime.now(dt.timezone.utc).astimezone().isoformat(timespec="seconds")
    meta = [
        ("experiment", experiment),
        ("group", group_label or _NO_VALUE),
        ("stage", stage),
        ("layout", dashboard.name),
        ("runs", str(len(runs))),
        ("grouped by", dashboard.group_by),
        ("faceted by", dashboard.facet_by or "—"),
        ("generated", generated),
        ("tracking URI", uri),
    ]
    html_path = out_dir / "report.html"
    html_path.write_text(_html_page(layout=dashboard, meta=meta, warnings=warnings, figures=figures,
                                    table_header=header, table_rows=rows, runs=runs, forward_transfer=ft_display))

    report_run_id: str | None = None
    if log_to_mlflow:
        report_run_id = _log_report_run(client, experiment_id, out_dir, dashboard, group_label, stage, len(runs))
    return ReportFiles(out_dir=out_dir, html=html_path, table_csv=table_csv, table_md=table_md,
                       figures=figures, warnings=warnings, run_count=len(runs), group=group_label,
                       report_run_id=report_run_id, table=table, forward_transfer_csv=ft_csv,
                       forward_transfer_md=ft_md, forward_transfer=ft_table, forward_transfer_notes=ft_notes)


def _log_report_run(
    client: MlflowClient,
    experiment_id: str,
    out_dir: Path,
    layout: DashboardLayout,
    group: str,
    stage: str,
    run_count: int,
) -> str:
    """Create the `report` run (tagged `ftcl.kind=report`) holding `out_dir` as artifacts."""
    run = client.create_run(
        experiment_id,
        run_name="report",
        tags={
            REPORT_KIND_TAG: REPORT_KIND,
            "ftcl.report.layout": layout.name,
            "ftcl.report.group": group,
            "ftcl.report.stage": stage,
            "ftcl.report.run_count": str(run_count),
        },
    )
    run_id = run.info.run_id
    try:
        client.log_artifacts(run_id, str(out_dir))
    except (MlflowException, OSError) as error:
        client.set_terminated(run_id, status="FAILED")
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ReportError(f"report written to {out_dir} but logging it to MLflow failed: {first}") from None
    client.set_terminated(run_id, status="FINISHED")
    return run_id
