"""Fig. 8 as the paper draws it: per-state records of runs in a real MLflow SQLite store, drawn as
a methods × checkpoints grid with one clipped colour scale; skipped with a warning without records."""
from __future__ import annotations

import matplotlib.image
import numpy as np
import pytest
from matplotlib.colors import SymLogNorm
from mlflow.tracking import MlflowClient

from ftcl.evaluation.state_records import ARTIFACT_DIR, StateRecord
from ftcl.tracking.dashboard import load_layout
from ftcl.tracking.report.state_figures import checkpoint_columns, colour_norm, draw_state_figures

SUITES = ("stage_2_peg-unplug-side", "stage_3_push-wall")
STEPS = list(range(0, 10_001, 1_000))


def record(collapse_from: int | None, seed: int = 0) -> StateRecord:
    rng = np.random.default_rng(seed)
    rows = {suite: np.arange(40) * 2 + k for k, suite in enumerate(SUITES)}
    record = StateRecord.start(rows, {suite: rng.normal(size=(40, 6)) for suite in SUITES})
    for step in STEPS:
        values = rng.uniform(2.0, 12.0, size=40)
        if collapse_from is not None and step >= collapse_from:
            values[: 10 + step // 500] = -10.0 ** rng.uniform(2, 12, size=10 + step // 500)
        record.add(step, {suite: values for suite in SUITES})
    return record


@pytest.fixture()
def store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("rs", artifact_location=(tmp_path / "artifacts").as_uri())
    runs = {}
    for method, seed, collapse in (("finetune", 1, 1000), ("finetune", 0, 1000), ("bc", 0, None), ("scratch", 0, "none")):
        run = client.create_run(experiment, tags={"method": method, "seed": str(seed), "ftcl.stage": "finetune",
                                                  "ftcl.variant": ""})
        if collapse != "none":
            path = record(collapse, seed).save(tmp_path / f"{method}{seed}" / "state_log_likelihood.npz")
            client.log_artifact(run.info.run_id, str(path), ARTIFACT_DIR)
        runs[(method, seed)] = run.info.run_id
    return client, experiment, runs


def test_grid_has_a_row_per_method_with_a_record_and_one_figure_per_suite(store, tmp_path):
    client, experiment, run_ids = store
    runs = [client.get_run(run_id) for run_id in run_ids.values()]
    warnings: list[str] = []
    out = tmp_path / "report"
    out.mkdir()
    figures = draw_state_figures(client, runs, load_layout("robotic_sequence"), out, warnings)
    assert warnings == []
    assert [figure.path.name for figure in figures] == [
        "state_log_likelihood_stage_2_peg-unplug-side.png", "state_log_likelihood_stage_3_push-wall.png"]
    assert all(figure.groups == ["bc", "finetune"] for figure in figures)  # scratch has no record
    image = matplotlib.image.imread(figures[1].path)
    assert image.shape[1] > image.shape[0]  # 5 checkpoint columns, 2 method rows


def test_without_records_the_figures_are_skipped_with_a_warning(store, tmp_path):
    client, _, run_ids = store
    warnings: list[str] = []
    figures = draw_state_figures(client, [client.get_run(run_ids[("scratch", 0)])], load_layout("default"),
                                 tmp_path, warnings)
    assert figures == [] and len(warnings) == 1 and "analysis/state_log_likelihood.npz" in warnings[0]


def test_colour_scale_is_clipped_to_quantiles_not_the_collapsed_extremes():
    values = np.concatenate([np.linspace(0.0, 12.0, 980), np.full(20, -1e12)])
    norm = colour_norm(values)
    assert norm.vmin > -1e12 and norm.vmax <= 12.0
    collapsed = np.concatenate([np.linspace(0.0, 12.0, 500), -np.logspace(2, 12, 500)])
    norm = colour_norm(collapsed)
    assert isinstance(norm, SymLogNorm) and -1e12 < norm.vmin < -1e10
    assert colour_norm(np.linspace(-3.0, 5.0, 50)).vmin == pytest.approx(np.quantile(np.linspace(-3, 5, 50), 0.02))


def test_checkpoints_are_first_middle_and_last():
    assert checkpoint_columns([record(None)]) == [0, 2500, 5000, 7500, 10_000]
    short = StateRecord.start({"far": np.arange(3)}, {"far": np.zeros((3, 2))})
    short.add(0, {"far": np.zeros(3)})
    short.add(400, {"far": np.zeros(3)})
    assert checkpoint_columns([short]) == [0, 400]
