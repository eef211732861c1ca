"""The report's videos, from the runs' training-time snapshots (`evaluation.video_every_env_steps`:
run artifacts `videos/<env step>/<suite>_ep0.mp4`), as the layout's `videos` section asks: per
matching suite, π* (the env-step-0 clip of a run that starts from it: tag `pretrained_sha256`) and
then each group's last clip, each from the group's run of the lowest seed that logged clips. The
files are copied into the report folder (`videos/<suite>/`) and embedded in report.html."""
from __future__ import annotations

import fnmatch
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ftcl.evaluation.video import VIDEO_DIR
from ftcl.tracking.dashboard import DashboardLayout, natural_key
from ftcl.tracking.report.runs import attribute, seed_of
from ftcl.tracking.report.stats import label

CLIP_SUFFIXES = (".mp4", ".gif")


@dataclass(frozen=True)
class Clip:
    """One video in the report: its suite, its caption and the copy in the report folder."""

    suite: str
    caption: str
    path: Path


Snapshots = dict[int, dict[str, str]]
"""env step -> suite -> artifact path of a run's first recorded episode."""


def run_snapshots(client: MlflowClient, run: Run) -> Snapshots:
    """The clips a run logged, by env step and suite (empty when none)."""
    snapshots: Snapshots = {}
    for folder in client.list_artifacts(run.info.run_id, VIDEO_DIR):
        step = folder.path.rsplit("/", 1)[-1]
        if not (folder.is_dir and step.isdigit()):
            continue
        for item in client.list_artifacts(run.info.run_id, folder.path):
            name = item.path.rsplit("/", 1)[-1]
            stem, _, suffix = name.rpartition(".")
            if f".{suffix}" in CLIP_SUFFIXES and stem.endswith("_ep0"):
                snapshots.setdefault(int(step), {})[stem.removesuffix("_ep0")] = item.path
    return snapshots


def _starts_from_pi_star(run: Run) -> bool:
    return run.data.tags.get("pretrained_sha256", "none") != "none"


def collect_clips(client: MlflowClient, runs: list[Run], layout: DashboardLayout, roles: dict[str, str],
                  out_dir: Path, warnings: list[str]) -> list[Clip]:
    """The clips the layout's `videos` section asks for, copied under `out_dir/videos/` (module doc)."""
    spec = layout.videos
    shutil.rmtree(out_dir / VIDEO_DIR, ignore_errors=True)  # an earlier report's clips in this folder
    if spec is None:
        return []
    by_group: dict[str, list[Run]] = {}
    for run in runs:
        by_group.setdefault(attribute(run, layout.group_by), []).append(run)
    for missing in (group for group in spec.groups if group not in by_group):
        warnings.append(f"videos: no selected run has {layout.group_by} {missing!r}; left out")
    groups = [group for group in (spec.groups or sorted(by_group, key=natural_key)) if group in by_group]
    chosen: dict[str, tuple[Run, Snapshots]] = {}
    try:
        for group in groups:
            for run in sorted(by_group[group], key=seed_of):
                if snapshots := run_snapshots(client, run):
                    chosen[group] = (run, snapshots)
                    break
    except MlflowException as error:
        warnings.append(f"videos: the runs' artifacts could not be listed ({error}); videos skipped")
        return []
    if not chosen:
        warnings.append("the layout asks for videos but no selected run logged any "
                        "(evaluation.video_every_env_steps); videos skipped")
        return []
    logged = {suite for _, snapshots in chosen.values() for clips in snapshots.values() for suite in clips}
    suites = sorted((suite for suite in logged if any(fnmatch.fnmatchcase(suite, p) for p in spec.suites)
                     and (spec.role is None or roles.get(suite) == spec.role)), key=natural_key)
    if not suites:
        warnings.append(f"videos: no logged clip's suite matches {spec.suites}"
                        + (f" with role {spec.role}" if spec.role else "") + "; videos skipped")
        return []
    start = next(((run, snapshots) for run, snapshots in chosen.values()
                  if _starts_from_pi_star(run) and 0 in snapshots), None) if spec.start else None
    clips: list[Clip] = []
    with tempfile.TemporaryDirectory() as scratch:
        def copy(run: Run, artifact: str, suite: str, caption: str) -> None:
            try:
                local = Path(client.download_artifacts(run.info.run_id, artifact, scratch))
            except (MlflowException, OSError) as error:
                warnings.append(f"videos: run {run.info.run_id}: {artifact} could not be read ({error}); left out")
                return
            target = out_dir / VIDEO_DIR / suite / f"{len(clips):02d}_{local.name}"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local, target)
            clips.append(Clip(suite, caption, target))

        for suite in suites:
            if start is not None and suite in start[1][0]:
                copy(start[0], start[1][0][suite], suite, "π* (env step 0)")
            for group, (run, snapshots) in chosen.items():
                steps = [step for step, recorded in snapshots.items() if suite in recorded]
                if steps:
                    last = max(steps)
                    copy(run, snapshots[last][suite], suite,
                         f"{label(group)}, env step {last:,} (seed {run.data.tags.get('seed', '?')})")
    return clips
