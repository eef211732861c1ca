"""The report's figures: one PNG per panel metric, one subplot per facet, one line per group with
its confidence band over runs (the IQM and its stratified-bootstrap CI, see `stats`).

A line is the IQM of its runs' curves on their common step grid, so it ends where its shortest
run ends; a line with one run has no band, and runs that share no step range are drawn one by one.

Lines that coincide stay visible: each group has its own marker (markers of different groups sit
at staggered steps), and a line equal to an earlier line of the same subplot at every step both
cover (e.g. two methods at success 1.0 throughout) is drawn shifted by k × 1 % of the y range
(its band with it) for the k-th such line, towards the middle of the axes (a line at 1.0 moves
down); its legend entry says by how much, and so does the figure's note in the HTML.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ftcl.tracking.dashboard import DashboardLayout, Panel, metric_title
from ftcl.tracking.report.stats import Grouping, common_grid, interpolate, interval_estimate, interval_text, label

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
MARKS_PER_LINE = 8
"""About this many markers on a long line."""
OFFSET_SHARE = 0.01
"""The shift of a coinciding line, as a share of the y range (panel `ylim`, else the data's)."""


@dataclass(frozen=True)
class PanelFigure:
    """One figure written: which metric, where, and which facets (subplots) it has."""

    metric: str
    path: Path
    facets: list[str]
    groups: list[str]
    title: str = ""
    notes: list[str] = field(default_factory=list)
    """What a reader must know to read it (lines drawn shifted)."""


@dataclass(frozen=True)
class Line:
    """One group's line in one subplot: the IQM over its runs at each step, and its CI (None for one run)."""

    group: str
    steps: np.ndarray
    center: np.ndarray
    low: np.ndarray | None
    high: np.ndarray | None
    runs: int


def metric_slug(metric: str) -> str:
    """A file-name-safe form of a metric key (`evaluation/far/success` -> `evaluation_far_success`)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", metric).strip("_") or "metric"


def group_colors(groups: list[str]) -> dict[str, tuple[float, ...]]:
    """A color per group, the same in every figure of a report."""
    palette = [tuple(color) for color in matplotlib.colormaps["tab10"].colors]
    return {name: palette[index % len(palette)] for index, name in enumerate(groups)}


def group_markers(groups: list[str]) -> dict[str, str]:
    """A marker per group, the same in every figure of a report."""
    return {name: MARKERS[index % len(MARKERS)] for index, name in enumerate(groups)}


def mark_every(points: int, index: int, count: int) -> tuple[int, int]:
    """Matplotlib `markevery` (first point, stride) of the `index`-th of `count` groups: about
    `MARKS_PER_LINE` markers, started at a different step per group so that coinciding lines show
    every group's markers."""
    stride = max(1, points // MARKS_PER_LINE)
    return (index * max(stride // max(count, 1), 1)) % stride, stride


def _coincide(a: Line, b: Line, tolerance: float) -> bool:
    """Whether two lines have the same values at every step both cover (a range, or one shared step)."""
    low, high = max(a.steps[0], b.steps[0]), min(a.steps[-1], b.steps[-1])
    if low > high or (low == high and not (len(a.steps) == len(b.steps) == 1)):
        return False
    steps = np.union1d(a.steps, b.steps)
    steps = steps[(steps >= low) & (steps <= high)]
    return bool(np.allclose(np.interp(steps, a.steps, a.center), np.interp(steps, b.steps, b.center),
                            rtol=0.0, atol=tolerance))


def coincidence_offsets(lines: list[Line], span: float, middle: float = 0.0) -> list[float]:
    """Per line, its vertical shift: 0, or k × `OFFSET_SHARE` × `span` for the k-th line that
    coincides with an earlier one, towards `middle` (the middle of the y range: a line at the top
    is shifted down, so that it stays inside the axes)."""
    unit = OFFSET_SHARE * (span if span > 0 else 1.0)
    offsets: list[float] = []
    shifted = 0
    for index, line in enumerate(lines):
        if any(_coincide(line, earlier, 1e-9 * max(1.0, span)) for earlier in lines[:index]):
            shifted += 1
            offsets.append(shifted * unit * (-1.0 if float(np.mean(line.center)) > middle else 1.0))
        else:
            offsets.append(0.0)
    return offsets


def _y_range(lines: list[Line], panel: Panel) -> tuple[float, float]:
    """(span, middle) of the y axis: the panel's `ylim`, else the lines' values."""
    if panel.ylim is not None:
        return panel.ylim[1] - panel.ylim[0], (panel.ylim[0] + panel.ylim[1]) / 2
    values = np.concatenate([line.center for line in lines])
    span = float(np.ptp(values)) or float(np.max(np.abs(values))) or 1.0
    return span, (float(values.min()) + float(values.max())) / 2


def facet_lines(
    *, metric: str, facet: str, grouping: Grouping, layout: DashboardLayout, colors: dict[str, tuple[float, ...]],
    ax: Axes, warnings: list[str], truncated: list[str],
) -> tuple[list[str], list[Line]]:
    """The groups with data in one facet, and their lines; runs that share no step range are drawn
    on `ax` one by one (no line)."""
    drawn: list[str] = []
    lines: list[Line] = []
    for group in grouping.groups:
        curves = grouping.curves(facet, group, metric)
        if not curves:
            continue
        drawn.append(group)
        grid = common_grid(curves)
        if len(grid) == 0:
            warnings.append(
                f"{metric}: runs of {label(group)} in facet {label(facet)} cover disjoint step "
                "ranges; drawn individually without a mean"
            )
            for number, curve in enumerate(curves):
                ax.plot(curve.steps, curve.values, color=colors[group], alpha=0.6, linewidth=1,
                        label=f"{label(group)} (runs, n={len(curves)})" if number == 0 else None)
            continue
        longest = max(curve.steps[-1] for curve in curves)
        if grid[-1] < longest:
            truncated.append(f"{label(group)} in {label(facet)} at step {grid[-1]:g} of {longest:g}")
        center, low, high = interval_estimate(interpolate(curves, grid), layout.confidence)
        bands = len(curves) >= 2
        lines.append(Line(group, grid, center, low if bands else None, high if bands else None, len(curves)))
    return drawn, lines


def draw_lines(
    ax: Axes, lines: list[Line], *, panel: Panel, groups: list[str], colors: dict[str, tuple[float, ...]],
    markers: dict[str, str],
) -> list[tuple[str, float]]:
    """Draw the lines of one facet on `ax`, coinciding ones shifted; returns (group, shift) of those shifted."""
    if not lines:
        return []
    offsets = coincidence_offsets(lines, *_y_range(lines, panel))
    shifted: list[tuple[str, float]] = []
    for line, offset in zip(lines, offsets):
        color, marker = colors[line.group], markers[line.group]
        text = f"{label(line.group)} (n={line.runs}"
        if offset:
            text += f"; drawn {offset:+.3g}: coincides"
            shifted.append((line.group, offset))
        text += ")"
        y = line.center + offset
        if len(line.steps) == 1:
            error = None if line.low is None else [[line.center[0] - line.low[0]], [line.high[0] - line.center[0]]]
            ax.errorbar(line.steps, y, yerr=error, color=color, marker=marker, capsize=4, label=text)
            continue
        index = groups.index(line.group)
        ax.plot(line.steps, y, color=color, linewidth=1.8, marker=marker, markersize=5,
                markevery=mark_every(len(line.steps), index, len(groups)), label=text)
        if line.low is not None:
            ax.fill_between(line.steps, line.low + offset, line.high + offset, color=color, alpha=0.2, linewidth=0)
    return shifted


def panel_title(panel: Panel, metric: str, roles: Mapping[str, str]) -> str:
    """The panel's title for one of its metric keys: a glob panel adds the key as a title
    (`Fig. 7 — stage 2: peg-unplug-side (FAR)`); without a title, the key as a title."""
    if panel.is_glob and panel.title:
        return f"{panel.title} — {metric_title(metric, roles)}"
    return panel.title or metric_title(metric, roles)


def panel_figure(
    *,
    panel: Panel,
    metric: str,
    layout: DashboardLayout,
    grouping: Grouping,
    colors: dict[str, tuple[float, ...]],
    markers: dict[str, str],
    roles: Mapping[str, str],
    warnings: list[str],
) -> tuple[Figure, str, list[str], list[str]]:
    """One metric of a panel, one subplot per facet: (figure, title, groups drawn, notes), adding to
    `warnings` what could not be drawn as asked."""
    title = panel_title(panel, metric, roles)
    facets = grouping.facets
    columns = min(len(facets), 3)
    rows = math.ceil(len(facets) / columns)
    figure = Figure(figsize=(5.2 * columns, 3.8 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False, sharey=True)
    drawn_groups: set[str] = set()
    truncated: list[str] = []
    notes: list[str] = []
    for index, facet in enumerate(facets):
        ax = axes[index // columns][index % columns]
        drawn, lines = facet_lines(metric=metric, facet=facet, grouping=grouping, layout=layout, colors=colors,
                                   ax=ax, warnings=warnings, truncated=truncated)
        shifted = draw_lines(ax, lines, panel=panel, groups=grouping.groups, colors=colors, markers=markers)
        if shifted:
            where = f" in {label(facet)}" if len(facets) > 1 else ""
            notes.append(f"lines drawn shifted to stay visible{where} (each coincides with an earlier line): "
                         + ", ".join(f"{label(group)} {offset:+.3g}" for group, offset in shifted))
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
    figure.suptitle(f"{title}\n{interval_text(layout.confidence, short=True)}", fontsize="medium")
    return figure, title, [group for group in grouping.groups if group in drawn_groups], notes


def draw_panels(
    jobs: list[tuple[Panel, str]], *, layout: DashboardLayout, grouping: Grouping, out_dir: Path,
    warnings: list[str], roles: Mapping[str, str] | None = None,
) -> list[PanelFigure]:
    """Draw each (panel, metric key) to `<out_dir>/<metric slug>.png`, slugs made unique. `roles`:
    suite -> `FAR`/`CLOSE`, for the titles of per-stage metrics."""
    colors, markers = group_colors(grouping.groups), group_markers(grouping.groups)
    figures: list[PanelFigure] = []
    used_slugs: set[str] = set()
    for panel, metric in jobs:
        slug = metric_slug(metric)
        while slug in used_slugs:
            slug += "_"
        used_slugs.add(slug)
        figure, title, groups, notes = panel_figure(panel=panel, metric=metric, layout=layout, grouping=grouping,
                                                    colors=colors, markers=markers, roles=roles or {},
                                                    warnings=warnings)
        path = out_dir / f"{slug}.png"
        figure.savefig(path, dpi=100)
        figures.append(PanelFigure(metric=metric, path=path, facets=[label(facet) for facet in grouping.facets],
                                   groups=groups, title=title, notes=notes))
    return figures
