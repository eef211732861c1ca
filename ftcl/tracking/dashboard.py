"""Dashboard layouts: which metrics a report plots and tabulates, grouped and faceted by which tags.

A layout is a small YAML file in the repository's `dashboards/` folder (or anywhere, given by
path), validated by `DashboardLayout`. Panel, table and forward-transfer metrics may be glob
patterns (`evaluation/*/success`, `evaluation/stage_*/success@min`,
`learners/default_policy/retention_*`) that the report expands to every matching metric key the
selected runs logged, in natural order (`stage_2_…` before `stage_10_…`): a layout need not know
an experiment's stages. A per-stage key (a path segment `stage_<k>_<task>`, e.g.
`evaluation/stage_2_peg-unplug-side/success`) is titled `stage 2: peg-unplug-side`, with `(FAR)` or
`(CLOSE)` when the runs record which stages π* was pre-trained on (see `report.runs.stage_roles`).

Example::

    name: apple_retrieval
    title: AppleRetrieval — forgetting of FAR states
    group_by: method
    facet_by: ftcl.variant
    confidence: 0.90
    panels:
      - {metric: evaluation/far/success, title: FAR success, ylabel: success rate, ylim: [0, 1]}
    table:
      metrics: [evaluation/far/success]
      at: final
    forward_transfer:              # optional: FT of each method vs a from-scratch baseline
      baseline: scratch
      metrics: [evaluation/far/success]
    videos:                        # optional: π* and each method's last snapshot, per FAR suite
      suites: ["stage_*"]
      role: FAR
"""
from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

import ftcl

DASHBOARDS_DIR: Path = Path(ftcl.__file__).resolve().parent.parent / "dashboards"
"""The folder of shipped layouts (`<repo>/dashboards`)."""

_GLOB_CHARS = re.compile(r"[*?\[]")
_STAGE_SEGMENT = re.compile(r"^stage_(\d+)_(.+)$")


class LayoutError(ValueError):
    """A dashboard layout is unknown, unreadable or invalid (one-line message)."""


class Panel(BaseModel):
    """One figure: a metric (or glob of metrics) against the step axis, one line per group."""

    model_config = ConfigDict(extra="forbid")

    metric: str = Field(min_length=1, description="metric key or glob, e.g. evaluation/*/success")
    title: str | None = Field(default=None, description="figure title; defaults to the metric key")
    ylabel: str | None = Field(default=None, description="y-axis label; defaults to the metric key")
    ylim: tuple[float, float] | None = Field(default=None, description="[low, high] y-axis limits")
    yscale: Literal["linear", "symlog"] = Field(
        default="linear", description="symlog: linear within ±10, logarithmic beyond (values spanning decades)"
    )

    @field_validator("ylim")
    @classmethod
    def _ordered(cls, ylim: tuple[float, float] | None) -> tuple[float, float] | None:
        if ylim is not None and not ylim[0] < ylim[1]:
            raise ValueError(f"ylim must be [low, high] with low < high, got {list(ylim)}")
        return ylim

    @property
    def is_glob(self) -> bool:
        """Whether `metric` is a pattern rather than one key."""
        return is_glob(self.metric)


class TableSpec(BaseModel):
    """The summary table: per-run aggregate of each metric, then mean and CI over runs."""

    model_config = ConfigDict(extra="forbid")

    metrics: list[str] = Field(
        default_factory=list,
        description="metric keys or globs; empty means the panels' metrics",
    )
    at: Literal["final", "max", "min", "mean"] = Field(
        default="final",
        description="per-run value: last logged value (by step), maximum, minimum, or mean of logged "
        "values; a metric written `key@min` (etc.) overrides it for that column",
    )

    @field_validator("metrics")
    @classmethod
    def _known_aggregations(cls, metrics: list[str]) -> list[str]:
        for entry in metrics:
            _, sep, at = entry.partition("@")
            if sep and at not in ("final", "max", "min", "mean"):
                raise ValueError(f"table metric {entry!r}: unknown aggregation {at!r}; allowed: final, max, min, mean")
        return metrics


class ForwardTransferSpec(BaseModel):
    """Forward transfer (Continual World; paper §5.6, Table 6) of each method against a baseline.

    Per run, AUC = (1/T) ∫₀ᵀ p(t) dt of a success curve p(t); FT = (AUC − AUC_b) / (1 − AUC_b)
    with AUC_b the baseline's AUC (mean over its runs) on the same metric and step range.
    """

    model_config = ConfigDict(extra="forbid")

    baseline: str = Field(
        min_length=1, description="the `group_by` value (method label) of the baseline, e.g. scratch"
    )
    metrics: list[str] = Field(min_length=1, description="success-rate metric keys or globs (values in [0, 1])")

    @field_validator("metrics")
    @classmethod
    def _no_aggregation(cls, metrics: list[str]) -> list[str]:
        for entry in metrics:
            if "@" in entry:
                raise ValueError(
                    f"forward-transfer metric {entry!r}: '@' aggregations do not apply (FT uses the whole curve)"
                )
        return metrics


class VideoSpec(BaseModel):
    """Videos beside the curves, from the runs' training-time snapshots (`evaluation.video_every_env_steps`):
    per matching suite, the env-step-0 clip of a run that starts from π* (π* itself), then each group's
    last clip, each from the group's run with the lowest seed."""

    model_config = ConfigDict(extra="forbid")

    suites: list[str] = Field(min_length=1, description="evaluation suites or globs, e.g. stage_*")
    role: Literal["FAR", "CLOSE"] | None = Field(
        default=None, description="only suites of this role in the runs' recorded spec (e.g. the FAR stages)")
    groups: list[str] = Field(default_factory=list, description="`group_by` values to show; empty: all")
    start: bool = Field(default=True, description="also show the env-step-0 clip (π*)")


class DashboardLayout(BaseModel):
    """A report/dashboard definition."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    title: str = Field(min_length=1)
    panels: list[Panel] = Field(min_length=1)
    table: TableSpec = Field(default_factory=TableSpec)
    forward_transfer: ForwardTransferSpec | None = Field(
        default=None, description="optional forward-transfer table against a baseline method"
    )
    videos: VideoSpec | None = Field(default=None, description="optional videos of the runs' snapshots")
    group_by: str = Field(default="method", min_length=1, description="tag whose values are lines")
    facet_by: str | None = Field(
        default=None, description="tag whose values get one subplot each (e.g. ftcl.variant)"
    )
    confidence: float = Field(default=0.90, gt=0.0, lt=1.0, description="level of the CI band")
    xlabel: str = Field(default="environment steps", description="x-axis label (the MLflow step)")

    @model_validator(mode="after")
    def _distinct_axes(self) -> "DashboardLayout":
        if self.facet_by is not None and self.facet_by == self.group_by:
            raise ValueError(f"facet_by and group_by are both {self.group_by!r}; pick different tags")
        return self

    @property
    def table_metrics(self) -> list[str]:
        """Table metrics, falling back to the panels' metrics when none are listed."""
        return list(self.table.metrics) or [panel.metric for panel in self.panels]


def is_glob(pattern: str) -> bool:
    """Whether a metric name contains glob characters (`*`, `?`, `[`)."""
    return bool(_GLOB_CHARS.search(pattern))


def natural_key(text: str) -> list[tuple[int, int | str]]:
    """Sort key that orders digit runs by value: `stage_2_x` before `stage_10_y`."""
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", text)]


def expand_metric(pattern: str, available: set[str] | list[str]) -> list[str]:
    """Metric keys matching `pattern` (exact key or glob), in natural order; empty if none match."""
    if not is_glob(pattern):
        return [pattern] if pattern in available else []
    return sorted((key for key in available if fnmatch.fnmatchcase(key, pattern)), key=natural_key)


def stage_of(metric: str) -> tuple[int, str] | None:
    """(stage index, task) of a per-stage metric key (a path segment `stage_<k>_<task>`), else None."""
    for segment in metric.split("/"):
        match = _STAGE_SEGMENT.match(segment)
        if match:
            return int(match[1]), match[2]
    return None


def metric_role(metric: str, roles: Mapping[str, str]) -> str | None:
    """The role (`FAR`, `CLOSE`) of the first path segment of `metric` that `roles` (suite -> role)
    names, else None."""
    return next((roles[segment] for segment in metric.split("/") if segment in roles), None)


def metric_title(metric: str, roles: Mapping[str, str] | None = None) -> str:
    """A metric as a title: `stage 2: peg-unplug-side` for a per-stage key, else the key; then
    ` (FAR)`/` (CLOSE)` when `roles` knows its suite."""
    stage = stage_of(metric)
    text = f"stage {stage[0]}: {stage[1]}" if stage is not None else metric
    role = metric_role(metric, roles or {})
    return f"{text} ({role})" if role else text


def available_layouts(directory: Path = DASHBOARDS_DIR) -> list[str]:
    """Names of the layouts shipped in `directory` (file stems of `*.yaml`)."""
    if not directory.is_dir():
        return []
    return sorted(path.stem for path in directory.glob("*.yaml"))


def _looks_like_path(layout: str | Path) -> bool:
    if isinstance(layout, Path):
        return True
    return layout.endswith((".yaml", ".yml")) or "/" in layout or "\\" in layout


def _one_line(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(loc) for loc in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def load_layout(layout: str | Path, directory: Path = DASHBOARDS_DIR) -> DashboardLayout:
    """A validated layout, by shipped name (`default`) or by path to a YAML file.

    Raises `LayoutError` naming the available layouts when the name is unknown, or naming the
    offending fields when the file does not validate.
    """
    if _looks_like_path(layout):
        path = Path(layout)
        if not path.is_file():
            raise LayoutError(f"dashboard layout file {str(path)!r} does not exist")
    else:
        path = directory / f"{layout}.yaml"
        if not path.is_file():
            names = ", ".join(available_layouts(directory)) or "(none)"
            raise LayoutError(
                f"unknown dashboard layout {layout!r}; available: {names} (or a path to a .yaml file)"
            )
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise LayoutError(f"dashboard layout {str(path)!r} is not valid YAML: {first}") from None
    if not isinstance(raw, dict):
        raise LayoutError(f"dashboard layout {str(path)!r} must be a YAML mapping")
    try:
        return DashboardLayout.model_validate(raw)
    except ValidationError as error:
        raise LayoutError(f"dashboard layout {str(path)!r} is invalid: {_one_line(error)}") from None
