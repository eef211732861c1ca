"""Forgetting-curve reports from MLflow runs: figures with confidence bands, a final-value table,
an optional forward-transfer table, one self-contained HTML page, all logged back to MLflow as a
`report` run.

Each selected run (see `runs`) is one sample (normally one seed) of its `group_by` value
(normally `method`) within its `facet_by` value (normally `ftcl.variant`). The MLflow step is the
x axis (environment steps; gradient steps for analytic toys).

Table: per run, the metric's last logged value by step (`at: final`), its maximum (`max`),
minimum (`min`) or the unweighted mean of its logged values (`mean`); then, over runs, the IQM
and its stratified-bootstrap confidence interval (rliable's IQM and resampling, seeded; curves
likewise at every step). Forward transfer (the layout's optional `forward_transfer` section) is
computed for finetune-stage runs only; see `stats` for both. Globs in a layout expand to the keys
the runs logged, so per-stage panels and columns follow each experiment's own stages; their roles
(FAR/CLOSE) come from the runs' recorded spec (`runs.stage_roles`).

Modules: `runs` (MLflow), `stats` (the numbers), `figures` (PNGs), `render` (Markdown, HTML).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

from ftcl.tracking.dashboard import DashboardLayout, LayoutError, Panel, expand_metric, is_glob, load_layout
from ftcl.tracking.report.figures import PanelFigure, draw_panels, metric_slug
from ftcl.tracking.report.render import (
    final_table_cells,
    final_table_markdown,
    forward_transfer_cells,
    forward_transfer_markdown,
    html_page,
)
from ftcl.tracking.report.runs import (
    ALL_GROUPS,
    GROUP_TAG,
    REPORT_KIND,
    REPORT_KIND_TAG,
    STAGE_TAG,
    MetricHistories,
    ReportError,
    check_store_exists,
    far_suites_text,
    group_runs,
    log_report_run,
    logged_metrics,
    resolve_tracking_uri,
    runs_overview,
    select_runs,
    stage_roles,
)
from ftcl.tracking.report.state_figures import draw_state_figures
from ftcl.tracking.report.videos import Clip, collect_clips
from ftcl.tracking.store import REPORTS_SUFFIX, ensure_experiment
from ftcl.tracking.report.stats import (
    MAX_GRID_POINTS,
    NO_VALUE,
    PERFECT_TOLERANCE,
    Curve,
    Grouping,
    area_under_curve,
    common_grid,
    final_table,
    forward_transfer,
    forward_transfer_columns,
    forward_transfer_table,
    interval_estimate,
)

__all__ = [
    "ALL_GROUPS", "FORWARD_TRANSFER_STAGE", "GROUP_TAG", "MAX_GRID_POINTS", "PERFECT_TOLERANCE", "REPORT_KIND",
    "REPORT_KIND_TAG", "STAGE_TAG", "Curve", "PanelFigure", "ReportError", "ReportFiles", "area_under_curve",
    "build_report", "common_grid", "forward_transfer", "interval_estimate", "metric_slug",
    "resolve_tracking_uri",
]

FORWARD_TRANSFER_STAGE = "finetune"
"""The only stage whose runs get a forward-transfer table."""


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
    clips: list[Clip] = field(default_factory=list)
    """The videos embedded in the HTML (copies under `videos/`), when the layout asks for them."""

    def all_paths(self) -> list[Path]:
        """All files written, HTML first."""
        forward = [path for path in (self.forward_transfer_csv, self.forward_transfer_md) if path is not None]
        return [self.html, self.table_csv, self.table_md, *forward, *(figure.path for figure in self.figures),
                *(clip.path for clip in self.clips)]


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
    check_store_exists(uri)
    client = MlflowClient(tracking_uri=uri)
    experiment_id, runs, group_label = select_runs(client, experiment, stage, group)
    grouping = group_runs(runs, dashboard, MetricHistories(client))
    roles = stage_roles(client, runs)

    available = logged_metrics(runs)
    warnings: list[str] = []

    def expand(pattern: str, where: str) -> list[str]:
        keys = expand_metric(pattern, available)
        if not keys:
            if is_glob(pattern):
                warnings.append(f"no metric logged by the selected runs matches {pattern!r}; {where} skipped")
            else:
                warnings.append(f"metric {pattern!r} is not logged by any selected run; {where} skipped")
        return keys

    panel_jobs: list[tuple[Panel, str]] = [
        (panel, key) for panel in dashboard.panels for key in expand(panel.metric, "panel")
    ]
    table_metrics: list[str] = []
    for entry in dashboard.table_metrics:
        pattern, _, at = entry.partition("@")
        for key in expand(pattern, "table column"):
            column = f"{key}@{at}" if at else key
            if column not in table_metrics:
                table_metrics.append(column)
    table = final_table(grouping, table_metrics, at=dashboard.table.at, confidence=dashboard.confidence)
    ft_table, ft_notes, ft_metrics = pd.DataFrame(), [], []
    if dashboard.forward_transfer is not None:
        skipped: list[str] = []
        for pattern in dashboard.forward_transfer.metrics:
            keys = expand(pattern, "forward-transfer column")
            ft_metrics.extend(key for key in keys if key not in ft_metrics)
            if not keys:
                skipped.append(f"{pattern!r} is not logged by any selected run; its column is skipped")
        ft_table, ft_notes = _forward_transfer(grouping, ft_metrics, dashboard, stage)
        ft_notes = ft_notes + skipped

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = draw_panels(panel_jobs, layout=dashboard, grouping=grouping, out_dir=out_dir, warnings=warnings,
                          roles=roles)
    figures += draw_state_figures(client, runs, dashboard, out_dir, warnings)  # paper Fig. 8, from run artifacts
    clips = collect_clips(client, runs, dashboard, roles, out_dir, warnings)  # the runs' video snapshots

    table_csv = out_dir / "final_table.csv"
    table_md = out_dir / "final_table.md"
    table.to_csv(table_csv, index=False)
    header, rows = final_table_cells(table, table_metrics, dashboard, roles)
    table_md.write_text(final_table_markdown(header, rows, dashboard.confidence))
    ft_csv: Path | None = None
    ft_md: Path | None = None
    ft_display: tuple[list[str], list[list[str]], list[str]] | None = None
    if dashboard.forward_transfer is not None:
        ft_csv, ft_md = out_dir / "forward_transfer.csv", out_dir / "forward_transfer.md"
        ft_table.to_csv(ft_csv, index=False)
        ft_header, ft_rows = forward_transfer_cells(ft_table, ft_metrics, dashboard, roles)
        ft_md.write_text(forward_transfer_markdown(dashboard, ft_header, ft_rows, ft_notes))
        ft_display = (ft_header, ft_rows, ft_notes)

    generated = dt.datetime.now(dt.timezone.utc).astimezone().isoformat(timespec="seconds")
    meta = [
        ("experiment", experiment),
        ("group", group_label or NO_VALUE),
        ("stage", stage),
        ("layout", dashboard.name),
        ("runs", str(len(runs))),
        ("grouped by", dashboard.group_by),
        ("faceted by", dashboard.facet_by or "—"),
        *([("FAR suites", far_suites_text(roles))] if roles else []),
        ("generated", generated),
        ("tracking URI", uri),
    ]
    html_path = out_dir / "report.html"
    html_path.write_text(html_page(layout=dashboard, meta=meta, warnings=warnings, figures=figures,
                                   final_table=(header, rows), runs=runs_overview(runs, dashboard),
                                   forward_transfer=ft_display, clips=clips, roles=roles))

    report_run_id: str | None = None
    if log_to_mlflow:
        reports = ensure_experiment(uri, experiment + REPORTS_SUFFIX)  # out of the trials' runs table
        report_run_id = log_report_run(client, reports, out_dir, dashboard, group_label, stage, len(runs))
    return ReportFiles(out_dir=out_dir, html=html_path, table_csv=table_csv, table_md=table_md,
                       figures=figures, warnings=warnings, run_count=len(runs), group=group_label,
                       report_run_id=report_run_id, table=table, forward_transfer_csv=ft_csv,
                       forward_transfer_md=ft_md, forward_transfer=ft_table, forward_transfer_notes=ft_notes,
                       clips=clips)


def _forward_transfer(
    grouping: Grouping, metrics: list[str], layout: DashboardLayout, stage: str
) -> tuple[pd.DataFrame, list[str]]:
    """The forward-transfer table and its notes; an empty table for runs of another stage."""
    assert layout.forward_transfer is not None
    if stage != FORWARD_TRANSFER_STAGE:
        return pd.DataFrame(columns=forward_transfer_columns(grouping, metrics)), [
            f"forward transfer compares {FORWARD_TRANSFER_STAGE} runs; this report is of stage {stage!r}; not computed"
        ]
    return forward_transfer_table(grouping, metrics, baseline=layout.forward_transfer.baseline,
                                  confidence=layout.confidence)
