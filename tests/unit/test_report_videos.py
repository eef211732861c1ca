"""The report's videos: clips logged as runs' artifacts (`videos/<env step>/<suite>_ep0.mp4`) in a
real MLflow SQLite store, chosen as the layout's `videos` section asks (π* at env step 0, each
group's last clip from its lowest seed, suites by glob and role), embedded in the HTML; without
clips, or with a bad section, one clear line."""
from __future__ import annotations

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from ftcl.evaluation.video import write_video
from ftcl.spec import REPO_ROOT, SpecError, load_spec
from ftcl.tracking.dashboard import DashboardLayout, LayoutError, load_layout
from ftcl.tracking.report.render import _clip_html
from ftcl.tracking.report.videos import collect_clips, run_snapshots

SUITES = ("stage_0_hammer", "stage_3_push-wall")
ROLES = {"stage_0_hammer": "CLOSE", "stage_3_push-wall": "FAR"}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("store")
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("rs", artifact_location=(tmp_path / "artifacts").as_uri())
    frames = [np.full((18, 24, 3), shade, dtype=np.uint8) for shade in range(0, 250, 25)]
    runs = {}
    for method, seed, steps, pretrained in (("finetune", 1, (0, 300), "abc"), ("finetune", 0, (0, 200, 400), "abc"),
                                            ("bc", 0, (0, 400), "abc"), ("scratch", 0, (0, 400), "none"),
                                            ("ewc", 0, (), "abc")):
        run = client.create_run(experiment, tags={"method": method, "seed": str(seed), "ftcl.stage": "finetune",
                                                  "pretrained_sha256": pretrained})
        for step in steps:
            for suite in SUITES:
                path = write_video(frames, tmp_path / "clips" / f"{method}{seed}" / str(step) / f"{suite}_ep0")
                client.log_artifact(run.info.run_id, str(path), f"videos/{step}")
        runs[(method, seed)] = client.get_run(run.info.run_id)
    return client, runs


def layout(**videos) -> DashboardLayout:
    return DashboardLayout.model_validate({"name": "v", "title": "v", "panels": [{"metric": "m"}], "videos": videos})


def test_pi_star_then_each_groups_last_clip_from_its_lowest_seed(store, tmp_path):
    client, runs = store
    warnings: list[str] = []
    clips = collect_clips(client, list(runs.values()), layout(suites=["stage_*"], role="FAR"), ROLES, tmp_path, warnings)
    assert warnings == []
    assert [clip.suite for clip in clips] == ["stage_3_push-wall"] * 4  # hammer is CLOSE; ewc logged none
    assert [clip.caption for clip in clips] == [
        "π* (env step 0)", "bc, env step 400 (seed 0)", "finetune, env step 400 (seed 0)",
        "scratch, env step 400 (seed 0)"]
    assert all(clip.path.is_file() and clip.path.parent == tmp_path / "videos" / "stage_3_push-wall" for clip in clips)
    figure = _clip_html(clips[0])
    assert figure.startswith("<figure><video controls loop muted") and 'src="data:video/mp4;base64,' in figure


def test_groups_and_start_select_what_is_shown(store, tmp_path):
    client, runs = store
    warnings: list[str] = []
    clips = collect_clips(client, list(runs.values()), layout(suites=["stage_0_*"], groups=["scratch", "sac"],
                                                              start=False), ROLES, tmp_path, warnings)
    assert [clip.caption for clip in clips] == ["scratch, env step 400 (seed 0)"]
    assert warnings == ["videos: no selected run has method 'sac'; left out"]
    only_scratch = collect_clips(client, [runs[("scratch", 0)]], layout(suites=["*"]), ROLES, tmp_path, [])
    assert "π* (env step 0)" not in [clip.caption for clip in only_scratch], "scratch starts from a random init"


def test_without_clips_the_videos_are_skipped_with_one_warning(store, tmp_path):
    client, runs = store
    assert run_snapshots(client, runs[("ewc", 0)]) == {}
    warnings: list[str] = []
    (tmp_path / "videos" / "old").mkdir(parents=True)
    assert collect_clips(client, [runs[("ewc", 0)]], layout(suites=["*"]), ROLES, tmp_path, warnings) == []
    assert len(warnings) == 1 and "evaluation.video_every_env_steps" in warnings[0]
    assert not (tmp_path / "videos").exists(), "an earlier report's clips are not left behind"
    assert collect_clips(client, list(runs.values()), load_layout("default"), ROLES, tmp_path, warnings) == []


def test_bad_video_sections_and_specs_are_one_line(tmp_path):
    for videos, message in [({"suites": []}, "videos.suites"), ({"suites": ["*"], "role": "NEAR"}, "videos.role"),
                            ({"suites": ["*"], "every": 3}, "videos.every: unknown field")]:
        path = tmp_path / "layout.yaml"
        path.write_text(f"name: v\ntitle: v\npanels: [{{metric: m}}]\nvideos: {videos}\n")
        with pytest.raises(LayoutError, match=message):
            load_layout(path)
    quickstart = REPO_ROOT / "tune_configs/robotic_sequence/quickstart.yaml"
    for value, message in [("7000", "must be a multiple of every_env_steps"), ("0", "greater than 0")]:
        with pytest.raises(SpecError, match=message):
            load_spec(quickstart, overrides=[f"evaluation.video_every_env_steps={value}"])
    with pytest.raises(SpecError, match="env 'apple_retrieval' draws no frames"):
        load_spec(REPO_ROOT / "tune_configs/toys/apple_retrieval.yaml",
                  overrides=["evaluation.video_every_env_steps=10000"])
