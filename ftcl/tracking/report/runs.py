"""The MLflow side of a report: which store and runs to read, their attributes and metric
histories, and the `report` run that holds the result.

What is read: the runs of one MLflow experiment (one per Tune trial) with `ftcl.stage == stage`,
by default only those of the latest `ftcl.group` (one `ftcl run` invocation). Runs tagged
`ftcl.kind=report` are never read.

Stage roles (`stage_roles`): neither tags nor params name the FAR stages, but every run holds the
spec that made it as the artifact `spec.resolved.yaml`; its `env` with the run's `env.options.*`
params (a grid over env options) applied gives the env module's `far_suites` (RoboticSequence:
the stages in `pretrained_stages`, by default the last two); the env's other suites but `full`
are CLOSE.
"""
from __future__ import annotations

import ast
import importlib
import math
import tempfile
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np
import yaml
from mlflow.entities import Run, ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ftcl.tracking.dashboard import DashboardLayout, natural_key
from ftcl.tracking.report.stats import NO_VALUE, Curve, Grouping

REPORT_KIND_TAG = "ftcl.kind"
REPORT_KIND = "report"
GROUP_TAG = "ftcl.group"
STAGE_TAG = "ftcl.stage"
ALL_GROUPS = "all"
SPEC_ARTIFACT = "spec.resolved.yaml"
FULL_SUITE = "full"
"""The suite of the whole task: neither FAR nor CLOSE."""


class ReportError(ValueError):
    """The report cannot be built: unknown experiment, layout, group or stage, or no runs."""


def resolve_tracking_uri(tracking_uri: str | None) -> str:
    """The tracking URI to read: the argument, else `MLFLOW_TRACKING_URI`, else ftcl's store
    (`sqlite:///<ftcl home>/mlflow.db`, see `ftcl.tracking.store`)."""
    from ftcl.tracking.store import tracking_uri as default_tracking_uri

    return default_tracking_uri(tracking_uri)


def check_store_exists(tracking_uri: str) -> None:
    """Refuse a URI that is no usable store, and a SQLite store that does not exist (MLflow would
    silently create it)."""
    from ftcl.tracking.store import check_tracking_uri

    try:
        check_tracking_uri(tracking_uri)
    except ValueError as error:
        raise ReportError(str(error)) from None
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


def _start_order(run: Run) -> tuple[int, str]:
    return run.info.start_time or 0, run.info.run_id


def select_runs(
    client: MlflowClient, experiment: str, stage: str, group: str | None
) -> tuple[str, list[Run], str]:
    """(experiment id, runs to report on in start order, group label) — or a `ReportError` saying
    why there are none. `group`: `None` the latest group, `all` every group, else that group."""
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
        stages = sorted({run.data.tags.get(STAGE_TAG, NO_VALUE) for run in everything})
        raise ReportError(
            f"experiment {experiment!r} has no runs with {STAGE_TAG}={stage!r}; stages present: {', '.join(stages)}"
        )
    if group == ALL_GROUPS:
        return experiment_id, sorted(staged, key=_start_order), ALL_GROUPS
    groups = {run.data.tags.get(GROUP_TAG, "") for run in staged}
    if group is None:
        group = max(staged, key=_start_order).data.tags.get(GROUP_TAG, "")
    elif group not in groups:
        raise ReportError(
            f"experiment {experiment!r} has no {stage} runs in group {group!r}; groups: "
            f"{', '.join(sorted(groups))} (or 'all')"
        )
    selected = [run for run in staged if run.data.tags.get(GROUP_TAG, "") == group]
    return experiment_id, sorted(selected, key=_start_order), group


def attribute(run: Run, name: str) -> str:
    """A run's value of a tag (`method`, `tags.method`) or param (`params.lr`); '' when absent."""
    if name.startswith("params."):
        return run.data.params.get(name[len("params."):], "")
    if name.startswith("tags."):
        name = name[len("tags."):]
    return run.data.tags.get(name, "")


def seed_of(run: Run) -> float:
    """A run's `seed` tag as a number (infinity when absent: such runs sort last)."""
    try:
        return float(run.data.tags.get("seed", "inf"))
    except ValueError:
        return math.inf


def logged_metrics(runs: list[Run]) -> set[str]:
    """Every metric key any of the runs logged."""
    keys: set[str] = set()
    for run in runs:
        keys.update(run.data.metrics)
    return keys


class MetricHistories:
    """Metric histories fetched once per (run, key), sorted by step, one value per step (the
    latest logged), non-finite values dropped."""

    def __init__(self, client: MlflowClient) -> None:
        self._client = client
        self._cache: dict[tuple[str, str], Curve | None] = {}

    def get(self, run_id: str, key: str) -> Curve | None:
        """The run's curve of `key`, or None when it logged no finite value of it."""
        if (run_id, key) not in self._cache:
            by_step: dict[int, tuple[int, float]] = {}
            for point in self._client.get_metric_history(run_id, key):
                if point.value is None or not math.isfinite(point.value):
                    continue
                previous = by_step.get(point.step)
                if previous is None or point.timestamp >= previous[0]:
                    by_step[point.step] = (point.timestamp, float(point.value))
            curve = None
            if by_step:
                steps = np.array(sorted(by_step), dtype=float)
                values = np.array([by_step[int(step)][1] for step in steps], dtype=float)
                curve = Curve(steps, values)
            self._cache[(run_id, key)] = curve
        return self._cache[(run_id, key)]

    def curves(self, runs: list[Run], key: str) -> list[Curve]:
        """The curves of `key` of those runs that logged it, in the runs' order."""
        return [curve for run in runs if (curve := self.get(run.info.run_id, key)) is not None]


def group_runs(runs: list[Run], layout: DashboardLayout, histories: MetricHistories) -> Grouping:
    """The runs arranged by the layout's facet and group attributes (values in natural order),
    each cell reading its curves from `histories`."""
    def facet_of(run: Run) -> str:
        return attribute(run, layout.facet_by) if layout.facet_by else ""

    facets = sorted({facet_of(run) for run in runs} if layout.facet_by else {""}, key=natural_key)
    groups = sorted({attribute(run, layout.group_by) for run in runs}, key=natural_key)
    cells: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        cells.setdefault((facet_of(run), attribute(run, layout.group_by)), []).append(run)
    return Grouping(
        facet_by=layout.facet_by,
        group_by=layout.group_by,
        facets=facets,
        groups=groups,
        cells={cell: partial(histories.curves, cell_runs) for cell, cell_runs in cells.items()},
    )


def _run_spec(client: MlflowClient, run: Run) -> dict[str, Any] | None:
    """The run's `spec.resolved.yaml` artifact as a mapping, or None when it has none (or it is unreadable)."""
    try:
        if not any(item.path == SPEC_ARTIFACT for item in client.list_artifacts(run.info.run_id)):
            return None
        with tempfile.TemporaryDirectory() as folder:
            spec = yaml.safe_load(Path(client.download_artifacts(run.info.run_id, SPEC_ARTIFACT, folder)).read_text())
    except (MlflowException, OSError, yaml.YAMLError):
        return None
    return spec if isinstance(spec, dict) else None


def _param_value(text: str) -> Any:
    """A param as logged (`str(value)`) back to the value: a list, number, ... or the text itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _roles_of(spec: dict[str, Any], params: dict[str, str]) -> dict[str, str] | None:
    """Suite -> role for one run (its spec with its `env.options.*` params applied), or None
    when its env has no notion of FAR stages or its options do not validate."""
    from ftcl.envs.registry import ENVS

    env = spec.get("env") if isinstance(spec.get("env"), dict) else {}
    entry = ENVS.get(str(params.get("env.name", env.get("name", ""))))
    options = dict(env.get("options") or {})
    if "env.options" in params and isinstance(_param_value(params["env.options"]), dict):
        options = dict(_param_value(params["env.options"]))
    prefix = "env.options."
    options.update({key[len(prefix):]: _param_value(value) for key, value in params.items() if key.startswith(prefix)})
    if entry is None:
        return None
    try:
        far_suites = getattr(importlib.import_module(entry.module), "far_suites", None)
        if far_suites is None:
            return None
        validated = entry.validate_options(options)
        far = set(far_suites(validated))
        suites = entry.suites_for(validated)
    except (ImportError, ValueError, TypeError):
        return None
    return {suite: "FAR" if suite in far else "CLOSE" for suite in suites if suite != FULL_SUITE}


def stage_roles(client: MlflowClient, runs: list[Run]) -> dict[str, str]:
    """Suite -> `FAR` or `CLOSE`, for the suites whose role every run that records one agrees on
    (empty when no run records its spec). The spec is read once per `ftcl.group`."""
    specs: dict[str, dict[str, Any] | None] = {}
    seen: dict[str, set[str]] = {}
    for run in runs:
        group = run.data.tags.get(GROUP_TAG, "")
        if group not in specs:
            specs[group] = _run_spec(client, run)
        spec = specs[group]
        roles = _roles_of(spec, run.data.params) if spec is not None else None
        for suite, role in (roles or {}).items():
            seen.setdefault(suite, set()).add(role)
    return {suite: next(iter(found)) for suite, found in seen.items() if len(found) == 1}


def far_suites_text(roles: dict[str, str]) -> str:
    """The FAR suites of `stage_roles`, in stage order, for the report's header."""
    return ", ".join(sorted((suite for suite, role in roles.items() if role == "FAR"), key=natural_key)) or "none"


def runs_overview(runs: list[Run], layout: DashboardLayout) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the list of runs reported on (name, group, seed, facet, status, id)."""
    header = ["run", layout.group_by, "seed", layout.facet_by or "facet", GROUP_TAG, "status", "run id"]
    rows = [
        [
            run.data.tags.get("mlflow.runName", ""),
            attribute(run, layout.group_by),
            run.data.tags.get("seed", ""),
            attribute(run, layout.facet_by) if layout.facet_by else "",
            run.data.tags.get(GROUP_TAG, ""),
            run.info.status,
            run.info.run_id,
        ]
        for run in runs
    ]
    return header, rows


def log_report_run(
    client: MlflowClient,
    experiment_id: str,
    out_dir: Path,
    layout: DashboardLayout,
    group: str,
    stage: str,
    run_count: int,
) -> str:
    """Create the `report` run (tagged `ftcl.kind=report`) holding `out_dir` as artifacts, in
    `experiment_id` (the trials' experiment's `.reports` companion); its id."""
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
