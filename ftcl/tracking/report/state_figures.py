"""The paper's Fig. 8 as it draws it: π*'s states of a suite in 2-D, coloured by log π_θ(a*|s).

Reads each fine-tuning run's per-state record (`ftcl.evaluation.state_records`, the run artifact
`analysis/state_log_likelihood.npz`) and draws, per facet and suite, one grid: a row per group
(normally the method; its run of the lowest seed that has the record), a column per checkpoint
(`CHECKPOINT_FRACTIONS` of the longest run's last evaluation step; each panel shows its run's
evaluation nearest to that step, and says which). The states' 2-D coordinates are the PCA of π*'s
stored observations of the suite (fitted once, so the same in every panel). One colour scale
serves the whole grid: log-likelihoods reach −1e12 where π_θ forgot, so the scale is clipped to
the `COLOUR_QUANTILES` of the values shown and is logarithmic beyond ±`SYMLOG_LINTHRESH` when the
range spans decades; values outside are drawn in the end colours (the colour bar's arrows).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from matplotlib.colors import Normalize, SymLogNorm
from matplotlib.figure import Figure
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ftcl.evaluation.state_records import ARTIFACT_DIR, ARTIFACT_PATH, StateRecord, read_state_record
from ftcl.tracking.dashboard import DashboardLayout
from ftcl.tracking.report.figures import PanelFigure, metric_slug
from ftcl.tracking.report.runs import attribute, seed_of
from ftcl.tracking.report.stats import label

CHECKPOINT_FRACTIONS = (0.0, 0.25, 0.5, 0.75, 1.0)
"""Columns: these fractions of the longest run's last evaluation step (first, middle, last)."""
COLOUR_QUANTILES = (0.02, 0.98)
"""The colour scale spans these quantiles of all values shown in a grid."""
SYMLOG_LINTHRESH = 10.0
"""Linear in [−10, 10], logarithmic beyond (as the report's symlog curves)."""


def _record_of(client: MlflowClient, run: Run, folder: Path, warnings: list[str]) -> StateRecord | None:
    """The run's state record, or None when it has none (a warning when it is unreadable)."""
    try:
        listed = {info.path for info in client.list_artifacts(run.info.run_id, ARTIFACT_DIR)}
        if ARTIFACT_PATH not in listed:
            return None
        local = client.download_artifacts(run.info.run_id, ARTIFACT_PATH, str(folder / run.info.run_id))
        return read_state_record(local)
    except (MlflowException, OSError, ValueError) as error:
        warnings.append(f"run {run.info.run_id}: its {ARTIFACT_PATH} could not be read ({error}); left out")
        return None


def collect_records(
    client: MlflowClient, runs: list[Run], layout: DashboardLayout, folder: Path, warnings: list[str]
) -> dict[str, dict[str, tuple[Run, StateRecord]]]:
    """Facet -> group -> (run, record): per cell the run of the lowest seed that has a record."""
    cells: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        facet = attribute(run, layout.facet_by) if layout.facet_by else ""
        cells.setdefault((facet, attribute(run, layout.group_by)), []).append(run)
    chosen: dict[str, dict[str, tuple[Run, StateRecord]]] = {}
    for (facet, group), cell_runs in cells.items():
        for run in sorted(cell_runs, key=seed_of):
            record = _record_of(client, run, folder, warnings)
            if record is not None and record.env_steps:
                chosen.setdefault(facet, {})[group] = (run, record)
                break
    return chosen


def checkpoint_columns(records: list[StateRecord], fractions: tuple[float, ...] = CHECKPOINT_FRACTIONS) -> list[int]:
    """The target env steps of the columns (distinct, increasing), from the longest record."""
    last = max(record.env_steps[-1] for record in records)
    most = max(len(record.env_steps) for record in records)
    targets = sorted({int(round(fraction * last)) for fraction in fractions})
    if len(targets) > most:  # fewer evaluations than columns: as many columns as evaluations
        targets = sorted({int(round(i * last / max(most - 1, 1))) for i in range(most)})
    return targets


def colour_norm(values: np.ndarray, quantiles: tuple[float, float] = COLOUR_QUANTILES) -> Normalize:
    """The grid's colour scale (module doc): clipped to `quantiles`, symlog when it spans decades."""
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return Normalize(-1.0, 1.0)
    low, high = (float(v) for v in np.quantile(finite, quantiles))
    if high <= low:
        low, high = low - 1.0, high + 1.0
    if max(abs(low), abs(high)) > 10 * SYMLOG_LINTHRESH:
        return SymLogNorm(linthresh=SYMLOG_LINTHRESH, vmin=low, vmax=high, base=10)
    return Normalize(low, high)


def draw_state_grid(
    cells: dict[str, tuple[Run, StateRecord]], suite: str, groups: list[str], path: Path, *,
    group_by: str, facet: str | None = None,
) -> PanelFigure:
    """One suite's grid (rows: `groups` that have the suite, columns: checkpoints) written to `path`."""
    rows = [group for group in groups if group in cells and suite in cells[group][1].suites]
    targets = checkpoint_columns([cells[group][1] for group in rows])
    shown: dict[tuple[str, int], tuple[int, np.ndarray]] = {}
    for group in rows:
        record = cells[group][1]
        steps = np.asarray(record.env_steps)
        matrix = record.matrix(suite)
        for column, target in enumerate(targets):
            index = int(np.abs(steps - target).argmin())
            shown[(group, column)] = (int(steps[index]), matrix[index])
    norm = colour_norm(np.concatenate([values for _, values in shown.values()]))
    figure = Figure(figsize=(2.9 * len(targets) + 1.2, 2.6 * len(rows) + 0.9), layout="constrained")
    axes = figure.subplots(len(rows), len(targets), squeeze=False, sharex=True, sharey=True)
    scatter = None
    for row, group in enumerate(rows):
        run, record = cells[group]
        states = record.suites[suite]
        for column in range(len(targets)):
            ax = axes[row][column]
            step, values = shown[(group, column)]
            scatter = ax.scatter(states.xy[:, 0], states.xy[:, 1], c=np.nan_to_num(values, nan=norm.vmin),
                                 cmap="viridis", norm=norm, s=6, linewidths=0, rasterized=True)
            ax.set_title(f"env step {step:,}", fontsize="small")
            if column == 0:
                ax.set_ylabel(f"{label(group)} (seed {run.data.tags.get('seed', '?')})\n"
                              f"PC2 ({states.explained_variance[1]:.0%})", fontsize="small")
            if row == len(rows) - 1:
                ax.set_xlabel(f"PC1 ({states.explained_variance[0]:.0%})", fontsize="small")
            ax.tick_params(labelsize="x-small")
    if scatter is not None:
        bar = figure.colorbar(scatter, ax=axes, extend="both", shrink=0.9)
        bar.set_label("log π_θ(a*|s*)")
    where = f" — {label(facet)}" if facet is not None else ""
    figure.suptitle(f"log π_θ(a*|s*) on π*'s {suite} states{where} (PCA; one run per {group_by}; "
                    f"colours clipped to the {COLOUR_QUANTILES[0]:.0%}–{COLOUR_QUANTILES[1]:.0%} quantiles)",
                    fontsize="medium")
    figure.savefig(path, dpi=100)
    return PanelFigure(metric=f"state log-likelihood: {suite}{where}", path=path,
                       facets=[label(facet if facet is not None else "")], groups=rows)


def draw_state_figures(
    client: MlflowClient, runs: list[Run], layout: DashboardLayout, out_dir: Path, warnings: list[str]
) -> list[PanelFigure]:
    """Fig. 8 grids of the runs that have a state record, one PNG per facet and suite in `out_dir`;
    none (and a warning) when no run has one."""
    with tempfile.TemporaryDirectory(prefix="ftcl-state-records-") as folder:
        chosen = collect_records(client, runs, layout, Path(folder), warnings)
    if not chosen:
        warnings.append(f"no state figure (paper Fig. 8) drawn: no selected run has {ARTIFACT_PATH}, the per-state "
                        "log-likelihoods of π*'s actions that fine-tuning runs with evaluation.log_likelihood_suites "
                        "write")
        return []
    figures = []
    faceted = layout.facet_by is not None and len(chosen) > 1
    for facet in sorted(chosen):
        cells = chosen[facet]
        groups = sorted(cells)
        suites = list(dict.fromkeys(suite for group in groups for suite in cells[group][1].suites))
        for suite in suites:
            slug = metric_slug(f"state_log_likelihood_{suite}" + (f"_{facet}" if faceted else ""))
            figures.append(draw_state_grid(cells, suite, groups, out_dir / f"{slug}.png",
                                           group_by=layout.group_by, facet=facet if faceted else None))
    return figures
