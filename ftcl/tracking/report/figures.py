"""The report's figures: one PNG per panel metric, one subplot per facet, one line per group with
its confidence band over runs.

A line is the mean of its runs' curves on their common step grid, so it ends where its shortest
run ends; a line with one run has no band, and runs that share no step range are drawn one by one.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ftcl.tracking.dashboard import DashboardLayout, Panel
from ftcl.tracking.report.stats import Grouping, common_grid, interpolate, label, mean_confidence_interval


@dataclass(frozen=True)
class PanelFigure:
    """One figure written: which metric, where, and which facets (subplots) it has."""

    metric: str
    path: Path
    facets: list[str]
    groups: list[str]


def metric_slug(metric: str) -> str:
    """A file-name-safe form of a metric key (`evaluation/far/success` -> `evaluation_far_success`)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", metric).strip("_") or "metric"


def group_colors(groups: list[str]) -> dict[str, tuple[float, ...]]:
    """A color per group, the same in every figure of a report."""
    palette = [tuple(color) for color in matplotlib.colormaps["tab10"].colors]
    return {name: palette[index % len(palette)] for index, name in enumerate(groups)}


def _draw_lines(
    ax: Axes, *, metric: str, facet: str, grouping: Grouping, layout: DashboardLayout,
    colors: dict[str, tuple[float, ...]], warnings: list[str], truncated: list[str],
) -> list[str]:
    """Draw one facet's lines on `ax`; returns the groups that had data there."""
    drawn: list[str] = []
    for group in grouping.groups:
        curves = grouping.curves(facet, group, metric)
        if not curves:
            continue
        color = colors[group]
        drawn.append(group)
        grid = common_grid(curves)
        if len(grid) == 0:
            warnings.append(
                f"{metric}: runs of {label(group)} in facet {label(facet)} cover disjoint step "
                "ranges; drawn individually without a mean"
            )
            for number, curve in enumerate(curves):
                ax.plot(curve.steps, curve.values, color=color, alpha=0.6, linewidth=1,
                        label=f"{label(group)} (runs, n={len(curves)})" if number == 0 else None)
            continue
        longest = max(curve.steps[-1] for curve in curves)
        if grid[-1] < longest:
            truncated.append(f"{label(group)} in {label(facet)} at step {grid[-1]:g} of {longest:g}")
        mean, low, high = mean_confidence_interval(interpolate(curves, grid), layout.confidence)
        line_label = f"{label(group)} (n={len(curves)})"
        if len(grid) == 1:
            error = None if len(curves) < 2 else [[mean[0] - low[0]], [high[0] - mean[0]]]
            ax.errorbar(grid, mean, yerr=error, color=color, marker="o", capsize=4, label=line_label)
        else:
            ax.plot(grid, mean, color=color, linewidth=1.8, label=line_label)
            if len(curves) >= 2:
                ax.fill_between(grid, low, high, color=color, alpha=0.2, linewidth=0)
    return drawn


def draw_panel(
    *,
    panel: Panel,
    metric: str,
    layout: DashboardLayout,
    grouping: Grouping,
    colors: dict[str, tuple[float, ...]],
    path: Path,
    warnings: list[str],
) -> PanelFigure:
    """Draw one metric of a panel (one subplot per facet) to `path`, adding to `warnings` what
    could not be drawn as asked."""
    title = panel.title or metric
    if panel.is_glob and panel.title:
        title = f"{panel.title} — {metric}"
    facets = grouping.facets
    columns = min(len(facets), 3)
    rows = math.ceil(len(facets) / columns)
    figure = Figure(figsize=(5.2 * columns, 3.8 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False, sharey=True)
    drawn_groups: set[str] = set()
    truncated: list[str] = []
    for index, facet in enumerate(facets):
        ax = axes[index // columns][index % columns]
        drawn = _draw_lines(ax, metric=metric, facet=facet, grouping=grouping, layout=layout, colors=colors,
                            warnings=warnings, truncated=truncated)
        drawn_groups.update(drawn)
        if not drawn:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")
        if len(facets) > 1 or (layout.facet_by is not None and facet):
            ax.set_title(label(facet), fontsize="medium")
        ax.set_xlabel(layout.xlabel)
        if index % columns == 0:
            ax.set_ylabel(panel.ylabel or metric)
        if panel.yscale == "symlog":
            ax.set_yscale("symlog", linthresh=10.0)  # linear in [-10, 10], logarithmic beyond
        if panel.ylim is not None:
            ax.set_ylim(*panel.ylim)
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize="small", title=layout.group_by, title_fontsize="small")
    for index in range(len(facets), rows * columns):
        axes[index // columns][index % columns].set_visible(False)
    if truncated:
        warnings.append(f"{metric}: a line ends where its shortest run ends ({'; '.join(truncated)})")
    figure.suptitle(f"{title}\nmean ± {layout.confidence:.0%} CI over runs", fontsize="medium")
    figure.savefig(path, dpi=100)
    return PanelFigure(metric=metric, path=path, facets=[label(facet) for facet in facets],
                       groups=[group for group in grouping.groups if group in drawn_groups])


def draw_panels(
    jobs: list[tuple[Panel, str]], *, layout: DashboardLayout, grouping: Grouping, out_dir: Path,
    warnings: list[str],
) -> list[PanelFigure]:
    """Draw each (panel, metric key) to `<out_dir>/<metric slug>.png`, slugs made unique."""
    colors = group_colors(grouping.groups)
    figures: list[PanelFigure] = []
    used_slugs: set[str] = set()
    for panel, metric in jobs:
        slug = metric_slug(metric)
        while slug in used_slugs:
            slug += "_"
        used_slugs.add(slug)
        figures.append(draw_panel(panel=panel, metric=metric, layout=layout, grouping=grouping, colors=colors,
                                  path=out_dir / f"{slug}.png", warnings=warnings))
    return figures
