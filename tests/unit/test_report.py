"""Report builder against a real MLflow SQLite store filled with synthetic runs of known curves."""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from ftcl.tracking.dashboard import DASHBOARDS_DIR, available_layouts, expand_metric, load_layout
from ftcl.tracking.report import ReportError, build_report
from ftcl.tracking.report.stats import Curve, common_grid, interval_estimate, interval_text

EXPERIMENT = "apple_retrieval"
OLD_GROUP = "apple_retrieval_20260101-000000"
NEW_GROUP = "apple_retrieval_20260102-000000"
VARIANTS = ["apple_distance=10", "apple_distance=30"]
SEEDS = [0, 1, 2]
STEPS = list(range(0, 10_001, 1_000))
# final FAR success per (method, variant), one value per seed
FAR_FINAL = {
    ("finetune", "apple_distance=10"): [0.2, 0.3, 0.4],
    ("finetune", "apple_distance=30"): [0.0, 0.05, 0.1],
    ("bc", "apple_distance=10"): [1.0, 0.98, 0.96],
    ("bc", "apple_distance=30"): [1.0, 0.95, 0.9],
}


@dataclass(frozen=True)
class Store:
    uri: str
    root: Path


def _log_run(
    client: MlflowClient,
    experiment_id: str,
    *,
    start_time: int,
    tags: dict[str, str],
    curves: dict[str, list[tuple[int, float]]],
) -> str:
    run = client.create_run(experiment_id, start_time=start_time, tags=tags, run_name=tags.get("mlflow.runName"))
    metrics = [
        Metric(key=key, value=value, timestamp=start_time + step, step=step)
        for key, points in curves.items()
        for step, value in points
    ]
    client.log_batch(run.info.run_id, metrics=metrics)
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def _tags(method: str, seed: int, group: str, variant: str, stage: str = "finetune") -> dict[str, str]:
    return {
        "method": method,
        "seed": str(seed),
        "env": "apple_retrieval",
        "ftcl.spec": EXPERIMENT,
        "ftcl.group": group,
        "ftcl.stage": stage,
        "ftcl.variant": variant,
        "algorithm": "PPO",
        "git_sha": "0" * 40,
        "pretrained_sha256": "f" * 64,
        "mlflow.runName": f"{method}_seed{seed}_{variant}",
    }


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """12 runs in the latest group (2 methods x 2 variants x 3 seeds), 1 older-group run, a
    pretrain run and a foreign report run that both start later than everything else."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment(EXPERIMENT, artifact_location=(root / "mlartifacts").as_uri())
    client.create_experiment("empty_experiment", artifact_location=(root / "empty").as_uri())
    base = int(time.time() * 1000) - 10_000_000

    # older group: one ewc run that must not show in a default (latest-group) report
    _log_run(client, experiment_id, start_time=base, tags=_tags("ewc", 0, OLD_GROUP, VARIANTS[0]), curves={
        "evaluation/far/success": [(s, 0.5) for s in STEPS],
        "learners/default_policy/retention_ewc_loss": [(s, 0.1) for s in STEPS],
    })
    offset = 1
    for (method, variant), finals in FAR_FINAL.items():
        for seed, final in zip(SEEDS, finals):
            # seed 2 stops early: its last logged step (and final value) is at 8000
            steps = [s for s in STEPS if seed != 2 or s <= 8_000]
            last = steps[-1]
            far = [(s, 1.0 + (final - 1.0) * s / last) for s in steps]
            curves = {
                "evaluation/far/success": far,
                "evaluation/full/success": [(s, s / last) for s in steps],
                "env_runners/episode_return_mean": [(s, 10.0 * s / last + seed) for s in steps],
            }
            if method == "bc":
                curves["learners/default_policy/retention_bc_loss"] = [(s, 1.0 / (1 + s)) for s in steps]
                curves["learners/default_policy/retention_total_loss"] = [(s, 2.0 / (1 + s)) for s in steps]
            _log_run(client, experiment_id, start_time=base + 3_600_000 + offset,
                     tags=_tags(method, seed, NEW_GROUP, variant), curves=curves)
            offset += 1
    # started last, but another stage / a report: neither may decide the latest group
    _log_run(client, experiment_id, start_time=base + 7_200_000,
             tags=_tags("pretrain", 0, "pretrain_group", "", stage="pretrain"),
             curves={"env_runners/episode_return_mean": [(s, 5.0) for s in STEPS]})
    _log_run(client, experiment_id, start_time=base + 7_300_000,
             tags={"ftcl.kind": "report", "ftcl.stage": "finetune", "ftcl.group": "bogus", "method": "bogus",
                   "mlflow.runName": "report"},
             curves={"evaluation/far/success": [(0, 123.0)]})
    return Store(uri=uri, root=root)


def _write_layout(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------------------------


def test_latest_group_report_table_html_and_mlflow_run(store: Store, tmp_path: Path) -> None:
    files = build_report(EXPERIMENT, tracking_uri=store.uri, out_dir=tmp_path / "out", layout="apple_retrieval")

    assert files.group == NEW_GROUP
    assert files.run_count == 12
    for path in files.all_paths():
        assert path.is_file() and path.stat().st_size > 0, path
    assert {p.name for p in files.out_dir.iterdir()} == {
        "report.html", "final_table.csv", "final_table.md",
        "evaluation_far_success.png", "evaluation_full_success.png", "env_runners_episode_return_mean.png",
    }

    # seed 2 stops at 8000 steps: each line's mean stops there too, and the report says so
    assert any(
        warning.startswith("evaluation/far/success: a line ends where its shortest run ends")
        and "bc in apple_distance=10 at step 8000 of 10000" in warning
        for warning in files.warnings
    ), files.warnings

    table = pd.read_csv(files.table_csv)
    assert set(table["method"]) == {"bc", "finetune"}
    assert len(table) == 4
    confidence = load_layout("apple_retrieval").confidence
    for (method, variant), finals in FAR_FINAL.items():
        row = table[(table["method"] == method) & (table["ftcl.variant"] == variant)].iloc[0]
        expected, low, high = interval_estimate(np.array(finals), confidence)
        assert row["evaluation/far/success:iqm"] == pytest.approx(np.mean(finals), abs=1e-9)  # 3 runs: the mean
        assert row["evaluation/far/success:iqm"] == pytest.approx(float(expected), abs=1e-12)
        assert row["evaluation/far/success:ci_low"] == pytest.approx(float(low), abs=1e-12)
        assert row["evaluation/far/success:ci_high"] == pytest.approx(float(high), abs=1e-12)
        assert row["evaluation/far/success:ci_low"] < row["evaluation/far/success:iqm"] < row["evaluation/far/success:ci_high"]
        assert min(finals) <= row["evaluation/far/success:ci_low"] and row["evaluation/far/success:ci_high"] <= max(finals)
        assert row["evaluation/far/success:n"] == 3
        assert row["evaluation/full/success:iqm"] == pytest.approx(1.0)
    bc = table[table["method"] == "bc"]["evaluation/far/success:iqm"]
    finetune = table[table["method"] == "finetune"]["evaluation/far/success:iqm"]
    assert (bc > 0.9).all() and (finetune < 0.4).all()

    markdown = files.table_md.read_text()
    assert markdown.splitlines()[0].startswith(
        "| ftcl.variant | method | evaluation/far/success (min) | evaluation/far/success (final)"
    )
    # `key@min` columns: the per-run minimum over the curve, never above the per-run final value
    assert (table["evaluation/far/success@min:iqm"] <= table["evaluation/far/success:iqm"] + 1e-12).all()
    assert "0.95 [" in markdown and "(n=3)" in markdown
    method = interval_text(confidence)  # the method, stated under the table
    assert method.startswith("IQM over runs, 90 % stratified-bootstrap CI (rliable 1.2.0, 2000 repetitions")
    assert method in markdown

    page = files.html.read_text()
    assert page.count('<img src="data:image/png;base64,') == 3
    text = re.sub(r'src="data:image/png;base64,[A-Za-z0-9+/=]+"', "", page)  # the page without images
    assert "<td>bc</td>" in text and "<td>finetune</td>" in text
    assert "ewc" not in text and "bogus" not in page and "pretrain_group" not in page
    assert NEW_GROUP in page and EXPERIMENT in page
    assert "src=" not in text and "href=" not in text  # self-contained: no external files
    assert method in text and "Student-t" not in text

    client = MlflowClient(tracking_uri=store.uri)
    report_run = client.get_run(files.report_run_id)
    assert report_run.data.tags["ftcl.kind"] == "report"
    assert report_run.data.tags["mlflow.runName"] == "report"
    reports = client.get_experiment_by_name(EXPERIMENT + ".reports")  # out of the trials' runs table
    assert report_run.info.experiment_id == reports.experiment_id
    assert not [run for run in client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
                if run.data.tags.get("ftcl.kind") == "report" and run.data.tags.get("ftcl.group") != "bogus"]
    assert reports.tags["mlflow.experimentKind"] == "custom_model_development"
    assert report_run.info.status == "FINISHED"
    artifacts = {item.path for item in client.list_artifacts(files.report_run_id)}
    assert {"report.html", "final_table.csv", "final_table.md", "evaluation_far_success.png"} <= artifacts

    # a second report ignores the first one's run (and the foreign report run) and agrees with it
    again = build_report(EXPERIMENT, tracking_uri=store.uri, out_dir=tmp_path / "again",
                         layout="apple_retrieval", log_to_mlflow=False)
    assert again.run_count == 12 and again.report_run_id is None
    pd.testing.assert_frame_equal(pd.read_csv(again.table_csv), table)


def test_facets_give_one_subplot_per_variant(store: Store, tmp_path: Path) -> None:
    faceted = build_report(EXPERIMENT, tracking_uri=store.uri, out_dir=tmp_path / "faceted",
                           layout="apple_retrieval", log_to_mlflow=False)
    far = next(figure for figure in faceted.figures if figure.metric == "evaluation/far/success")
    assert far.facets == VARIANTS
    assert far.groups == ["bc", "finetune"]

    flat_layout = _write_layout(tmp_path / "flat.yaml", (
        "name: flat\ntitle: Flat\nfacet_by: null\n"
        "panels:\n  - {metric: evaluation/far/success, title: FAR, ylabel: success}\n"
    ))
    flat = build_report(EXPERIMENT, tracking_uri=store.uri, out_dir=tmp_path / "flat",
                        layout=flat_layout, log_to_mlflow=False)
    assert flat.figures[0].facets == ["(none)"]
    faceted_width = matplotlib.image.imread(far.path).shape[1]
    flat_width = matplotlib.image.imread(flat.figures[0].path).shape[1]
    assert faceted_width == pytest.approx(2 * flat_width, rel=0.02)
    # without facets, the two variants pool into one row per method with 6 runs each
    table = pd.read_csv(flat.table_csv)
    assert list(table.columns[:1]) == ["method"]
    assert dict(zip(table["method"], table["evaluation/far/success:n"])) == {"bc": 6, "finetune": 6}


def test_glob_metrics_expand_to_present_keys(store: Store, tmp_path: Path) -> None:
    files = build_report(EXPERIMENT, tracking_uri=store.uri, out_dir=tmp_path / "retention",
                         layout="retention", log_to_mlflow=False)
    metrics = [figure.metric for figure in files.figures]
    assert metrics == [
        "evaluation/far/success",
        "evaluation/full/success",
        "learners/default_policy/retention_bc_loss",
        "learners/default_policy/retention_total_loss",
    ]
    assert (files.out_dir / "learners_default_policy_retention_bc_loss.png").is_file()
    bc_loss = files.figures[2]
    assert bc_loss.groups == ["bc"]  # finetune logs no retention loss: no line, no error
    table = pd.read_csv(files.table_csv)
    assert "learners/default_policy/retention_bc_loss:iqm" in table.columns
    finetune_rows = table[table["method"] == "finetune"]
    assert (finetune_rows["learners/default_policy/retention_bc_loss:n"] == 0).all()

    # the default layout's evaluation/*/success finds both suites
    default = build_report(EXPERIMENT, tracking_uri=store.uri, out_dir=tmp_path / "default", log_to_mlflow=False)
    assert {f.metric for f in default.figures} >= {"evaluation/far/success", "evaluation/full/success"}

    # every group: the old group's ewc loss now matches the glob too
    everything = build_report(EXPERIMENT, tracking_uri=store.uri, out_dir=tmp_path / "all",
                              layout="retention", group="all", log_to_mlflow=False)
    assert everything.run_count == 13
    assert "learners/default_policy/retention_ewc_loss" in [f.metric for f in everything.figures]
    assert set(pd.read_csv(everything.table_csv)["method"]) == {"bc", "finetune", "ewc"}


def test_group_and_stage_selection(store: Store, tmp_path: Path) -> None:
    old = build_report(EXPERIMENT, tracking_uri=store.uri, out_dir=tmp_path / "old", layout="retention",
                       group=OLD_GROUP, log_to_mlflow=False)
    assert old.run_count == 1
    row = pd.read_csv(old.table_csv).iloc[0]
    assert row["method"] == "ewc" and row["evaluation/far/success:iqm"] == pytest.approx(0.5)
    assert np.isnan(row["evaluation/far/success:ci_low"])  # one run: no interval

    pretrain = build_report(EXPERIMENT, tracking_uri=store.uri, out_dir=tmp_path / "pre", stage="pretrain",
                            log_to_mlflow=False)
    assert pretrain.run_count == 1 and pretrain.group == "pretrain_group"

    with pytest.raises(ReportError, match=f"groups: {OLD_GROUP}, {NEW_GROUP}"):
        build_report(EXPERIMENT, tracking_uri=store.uri, out_dir=tmp_path / "x", group="nope")
    with pytest.raises(ReportError, match="stages present: finetune, pretrain"):
        build_report(EXPERIMENT, tracking_uri=store.uri, out_dir=tmp_path / "x", stage="distill")
    assert not (tmp_path / "x").exists()


def test_missing_metric_is_a_warning_not_an_error(store: Store, tmp_path: Path) -> None:
    layout = _write_layout(tmp_path / "partial.yaml", (
        "name: partial\ntitle: Partial\nfacet_by: ftcl.variant\n"
        "panels:\n"
        "  - {metric: evaluation/far/success, title: FAR, ylabel: success}\n"
        "  - {metric: does/not/exist, title: Ghost, ylabel: boo}\n"
        "  - {metric: 'ghost/*', title: Ghosts, ylabel: boo}\n"
        "table: {metrics: [evaluation/far/success, does/not/exist], at: max}\n"
    ))
    files = build_report(EXPERIMENT, tracking_uri=store.uri, out_dir=tmp_path / "partial", layout=layout,
                         log_to_mlflow=False)
    assert [f.metric for f in files.figures] == ["evaluation/far/success"]
    assert not (files.out_dir / "does_not_exist.png").exists()
    page = files.html.read_text()
    assert "warning: metric &#x27;does/not/exist&#x27; is not logged by any selected run" in page
    assert "ghost/*" in page
    table = pd.read_csv(files.table_csv)
    assert not any(column.startswith("does/not/exist") for column in table.columns)
    np.testing.assert_allclose(table["evaluation/far/success:iqm"], 1.0)  # max of a curve starting at 1


def test_clear_errors_name_the_allowed_values(store: Store, tmp_path: Path) -> None:
    out = tmp_path / "never"
    with pytest.raises(ReportError, match=r"'no_such_experiment' does not exist; experiments: .*apple_retrieval"):
        build_report("no_such_experiment", tracking_uri=store.uri, out_dir=out)
    with pytest.raises(ReportError, match="available: apple_retrieval, default, montezuma, retention, robotic_sequence, two_state_mdp"):
        build_report(EXPERIMENT, tracking_uri=store.uri, out_dir=out, layout="nope")
    with pytest.raises(ReportError, match="'empty_experiment' has no runs"):
        build_report("empty_experiment", tracking_uri=store.uri, out_dir=out)
    missing_db = tmp_path / "missing.db"
    with pytest.raises(ReportError, match="no MLflow store"):
        build_report(EXPERIMENT, tracking_uri=f"sqlite:///{missing_db}", out_dir=out)
    assert not missing_db.exists()
    bad = _write_layout(tmp_path / "bad.yaml", (
        "name: bad\ntitle: Bad\ncolour: red\npanels:\n  - {metric: x, ylim: [1, 0]}\n"
    ))
    with pytest.raises(ReportError) as caught:
        build_report(EXPERIMENT, tracking_uri=store.uri, out_dir=out, layout=bad)
    message = str(caught.value)
    assert "\n" not in message
    assert "colour: unknown field" in message and "panels.0.ylim" in message
    assert not out.exists()


# --------------------------------------------------------------------------------------------- units


def test_shipped_layouts_validate() -> None:
    names = available_layouts()
    assert names == ["apple_retrieval", "default", "montezuma", "retention", "robotic_sequence", "two_state_mdp"]
    for name in names:
        layout = load_layout(name)
        assert layout.name == name
        assert layout.confidence == pytest.approx(0.90)
    assert load_layout(DASHBOARDS_DIR / "two_state_mdp.yaml").xlabel == "gradient steps"
    assert load_layout("apple_retrieval").facet_by == "ftcl.variant"


def test_glob_expansion_andcommon_grid() -> None:
    keys = {"learners/default_policy/retention_bc_loss", "learners/default_policy/policy_loss", "theta"}
    assert expand_metric("learners/default_policy/retention_*", keys) == ["learners/default_policy/retention_bc_loss"]
    assert expand_metric("theta", keys) == ["theta"]
    assert expand_metric("missing", keys) == []

    short = Curve(np.array([0.0, 500.0, 800.0]), np.array([1.0, 0.5, 0.2]))
    long = Curve(np.array([100.0, 1000.0]), np.array([1.0, 0.0]))
    grid = common_grid([short, long])
    assert grid[0] == 100.0 and grid[-1] == 800.0  # only where both runs have data
    assert list(grid) == [100.0, 500.0, 800.0]
    assert len(common_grid([short, Curve(np.array([900.0, 1000.0]), np.array([0.0, 0.0]))])) == 0


def test_curve_bands_are_bootstrap_intervals_per_step() -> None:
    values = np.array([[0.0, 1.0], [0.1, 1.0], [0.2, 1.0]])  # rows runs, columns steps
    point, low, high = interval_estimate(values, 0.9)
    np.testing.assert_allclose(point, [0.1, 1.0])  # 3 runs: the IQM is the mean
    assert 0.0 <= low[0] < 0.1 < high[0] <= 0.2
    assert low[1] == high[1] == 1.0  # all runs agree: no width, and no band above 1
    single_point, single_low, _ = interval_estimate(np.array([[0.3]]), 0.9)
    assert single_point[0] == pytest.approx(0.3) and np.isnan(single_low[0])


def test_two_state_mdp_layout_on_gradient_steps(store: Store, tmp_path: Path) -> None:
    """Toy runs log θ and V(s0) per gradient step and carry no ftcl.variant tag at all."""
    client = MlflowClient(tracking_uri=store.uri)
    experiment_id = client.create_experiment("two_state_mdp", artifact_location=(store.root / "toy").as_uri())
    start = int(time.time() * 1000)
    for method, target in [("finetune", -1.0), ("ks", 1.0)]:
        for seed in SEEDS:
            tags = {k: v for k, v in _tags(method, seed, "toy_group", "").items() if k != "ftcl.variant"}
            theta = [(step, target * step / 50 + 0.01 * seed) for step in range(51)]
            _log_run(client, experiment_id, start_time=start + seed, tags=tags,
                     curves={"theta": theta, "value_s0": [(s, v / 2) for s, v in theta]})
    files = build_report("two_state_mdp", tracking_uri=store.uri, out_dir=tmp_path / "toy",
                         layout="two_state_mdp", log_to_mlflow=False)
    assert [f.metric for f in files.figures] == ["theta", "value_s0"]
    assert files.figures[0].facets == ["(none)"]
    table = pd.read_csv(files.table_csv, keep_default_na=False)
    assert list(table["method"]) == ["finetune", "ks"]
    theta = dict(zip(table["method"], table["theta:iqm"]))
    assert theta["finetune"] == pytest.approx(-0.99) and theta["ks"] == pytest.approx(1.01)
