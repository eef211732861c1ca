"""The report's text: the final-value and forward-transfer tables as `IQM [CI] (n=…)` cells, in
Markdown and in one self-contained HTML page (figures embedded), each saying how the cells were
computed (`stats.interval_text`). Columns of per-stage metrics say `FAR`/`CLOSE` when known."""
from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

import pandas as pd

from ftcl.tracking.dashboard import DashboardLayout, metric_role, metric_title
from ftcl.tracking.report.stats import POINT, interval_text, label

if TYPE_CHECKING:
    from ftcl.tracking.report.figures import PanelFigure
    from ftcl.tracking.report.videos import Clip

Table = tuple[list[str], list[list[str]]]
"""A header and rows of cells, as shown."""

_AT_WORDS = {"final": "last logged value", "max": "maximum", "min": "minimum", "mean": "mean of logged values"}

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1400px; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }
th { background: #f3f3f3; }
.meta td:first-child { font-weight: bold; }
.warning { color: #8a5300; }
.note { color: #555; font-size: 0.9em; margin-top: -1em; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0 1.5em; }
.clips { display: flex; flex-wrap: wrap; gap: 1em; }
.clips figure { margin: 0; } .clips video, .clips img { width: 320px; margin: 0; }
"""


# --------------------------------------------------------------------------------------------
# cells and tables


def _key_columns(layout: DashboardLayout) -> list[str]:
    return ([layout.facet_by] if layout.facet_by is not None else []) + [layout.group_by]


def _format_cell(row: pd.Series, metric: str) -> str:
    n = int(row[f"{metric}:n"])
    if n == 0:
        return "—"
    point = row[f"{metric}:{POINT}"]
    if n == 1:
        return f"{point:.3g} (n=1)"
    return f"{point:.3g} [{row[f'{metric}:ci_low']:.3g}, {row[f'{metric}:ci_high']:.3g}] (n={n})"


def _role(metric: str, roles: Mapping[str, str] | None) -> str:
    role = metric_role(metric, roles or {})
    return f", {role}" if role else ""


def final_table_cells(
    table: pd.DataFrame, metrics: list[str], layout: DashboardLayout, roles: Mapping[str, str] | None = None
) -> Table:
    """The final-value table as shown: one `IQM [CI] (n=…)` column per metric, named `key (at)`
    (`key (at, FAR)` when `roles`, suite -> role, knows the metric's suite)."""
    keys = _key_columns(layout)
    header = keys + [f"{key} ({at or layout.table.at}{_role(key, roles)})"
                     for key, _, at in (metric.partition("@") for metric in metrics)]
    rows = [
        [label(str(row[key])) for key in keys] + [_format_cell(row, metric) for metric in metrics]
        for _, row in table.iterrows()
    ]
    return header, rows


def forward_transfer_cells(
    table: pd.DataFrame, metrics: list[str], layout: DashboardLayout, roles: Mapping[str, str] | None = None
) -> Table:
    """The forward-transfer table as shown: one `IQM [CI] (n=…)` column per metric, `key FT` (`key
    FT (FAR)` when `roles` knows its suite); `NaN (n=…)` when undefined."""
    keys = _key_columns(layout)
    header = keys + [f"{metric} FT" + (f" ({role})" if (role := metric_role(metric, roles or {})) else "")
                     for metric in metrics]

    def cell(row: pd.Series, metric: str) -> str:
        n = int(row[f"{metric}:n"])
        if n > 0 and math.isnan(row[f"{metric}:{POINT}"]):
            return f"NaN (n={n})"
        return _format_cell(row, metric)

    rows = [[label(str(row[key])) for key in keys] + [cell(row, metric) for metric in metrics]
            for _, row in table.iterrows()]
    return header, rows


# --------------------------------------------------------------------------------------------
# Markdown


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table (pipes in cells escaped)."""
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return "\n".join([line(header), "| " + " | ".join("---" for _ in header) + " |", *(line(row) for row in rows)])


def final_table_markdown(header: list[str], rows: list[list[str]], confidence: float) -> str:
    """`final_table.md`: the table and what its cells mean."""
    return markdown_table(header, rows) + f"\n\nIQM [CI] (n = runs): {interval_text(confidence)}\n"


def forward_transfer_text(layout: DashboardLayout) -> str:
    """What the forward-transfer cells mean."""
    assert layout.forward_transfer is not None
    return (f"FT = (AUC − AUC_b) / (1 − AUC_b) per run, AUC = (1/T) ∫₀ᵀ p(t) dt of its success curve, AUC_b "
            f"the mean AUC of the runs of {layout.forward_transfer.baseline!r} over the same steps; "
            f"IQM [CI] (n = runs) of the runs' FT: {interval_text(layout.confidence)}")


def forward_transfer_markdown(
    layout: DashboardLayout, header: list[str], rows: list[list[str]], notes: list[str]
) -> str:
    """`forward_transfer.md`: a title, the table (if any rows), what its cells mean, the notes."""
    assert layout.forward_transfer is not None
    parts = [f"# Forward transfer vs {layout.forward_transfer.baseline!r}", ""]
    if rows:
        parts.extend([markdown_table(header, rows), ""])
    parts.append(forward_transfer_text(layout))
    if notes:
        parts.append("")
        parts.extend(f"- note: {note}" for note in notes)
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------------------------
# HTML


def html_table(header: list[str], rows: list[list[str]], css_class: str = "") -> str:
    """An HTML table, cells escaped."""
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    attribute = f' class="{css_class}"' if css_class else ""
    return f"<table{attribute}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _clip_html(clip: Clip) -> str:
    """A figure with the clip inlined: an MP4 as a looping, muted <video>, a GIF as an <img>."""
    encoded = base64.b64encode(clip.path.read_bytes()).decode("ascii")
    caption = html.escape(clip.caption)
    if clip.path.suffix == ".gif":
        media = f'<img src="data:image/gif;base64,{encoded}" alt="{caption}">'
    else:
        media = f'<video controls loop muted playsinline src="data:video/mp4;base64,{encoded}"></video>'
    return f"<figure>{media}<figcaption>{caption}</figcaption></figure>"


def html_page(
    *,
    layout: DashboardLayout,
    meta: list[tuple[str, str]],
    warnings: list[str],
    figures: list[PanelFigure],
    final_table: Table,
    runs: Table,
    forward_transfer: tuple[list[str], list[list[str]], list[str]] | None = None,
    clips: list[Clip] = (),
    roles: Mapping[str, str] | None = None,
) -> str:
    """`report.html`: metadata, warnings, the tables, the figures (PNG inlined), the videos (inlined)
    and the runs. `forward_transfer`: header, rows and notes of that table, when the layout asks for it."""
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
    parts.append(f"<h2>Per-run {html.escape(_AT_WORDS[layout.table.at])}, IQM over runs</h2>")
    parts.append(html_table(*final_table))
    parts.append(f"<p>IQM [CI] (n = runs): {html.escape(interval_text(layout.confidence))}</p>")
    if forward_transfer is not None and layout.forward_transfer is not None:
        ft_header, ft_rows, ft_notes = forward_transfer
        parts.append(f"<h2>Forward transfer vs {html.escape(layout.forward_transfer.baseline)}</h2>")
        if ft_rows:
            parts.append(html_table(ft_header, ft_rows))
        parts.append(f"<p>{html.escape(forward_transfer_text(layout))}</p>")
        parts.extend(f'<p class="warning">{html.escape(note)}</p>' for note in ft_notes)
    parts.append("<h2>Curves</h2>")
    for figure in figures:
        encoded = base64.b64encode(figure.path.read_bytes()).decode("ascii")
        parts.append(f"<h3>{html.escape(figure.metric)}</h3>")
        parts.append(f'<img src="data:image/png;base64,{encoded}" alt="{html.escape(figure.metric)}">')
        parts.extend(f'<p class="note">{html.escape(note)}</p>' for note in figure.notes)
    if clips:
        parts.append("<h2>Videos</h2>")
    for suite in dict.fromkeys(clip.suite for clip in clips):
        parts.append(f"<h3>{html.escape(metric_title(suite, roles))}</h3><div class=\"clips\">")
        parts.extend(_clip_html(clip) for clip in clips if clip.suite == suite)
        parts.append("</div>")
    parts.append("<details><summary>Runs</summary>")
    parts.append(html_table(*runs))
    parts.append("</details></body></html>")
    return "\n".join(parts)
