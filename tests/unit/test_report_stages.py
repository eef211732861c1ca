"""Reports follow the runs' own stages: per-stage panels, table and forward-transfer columns come
from the metric keys the runs logged (globs in the layout), titled by stage, with FAR/CLOSE read from
the spec each run records; and lines that coincide stay visible in the figures."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from matplotlib.lines import Line2D
from mlflow.tracking import MlflowClient
from test_report import _log_run

from ftcl.tracking.dashboard import Panel, expand_metric, load_layout, metric_title, stage_of
from ftcl.tracking.report import build_report
from ftcl.tracking.report.figures import (
    OFFSET_SHARE,
    Line,
    coincidence_offsets,
    group_colors,
    group_markers,
    mark_every,
    panel_figure,
)
from ftcl.tracking.report.runs import _roles_of
from ftcl.tracking.report.stats import Curve, Grouping

EXPERIMENT = "user_sequence"
STAGES = ["shelf-place", "push-back", "window-close", "door-close"]
PRETRAINED = ["push-back-v3", "door-close"]  # not the default (the last two): read from the spec
FAR = {"stage_1_push-back", "stage_3_door-close"}
STEPS = list(range(0, 10_001, 2_000))
SUITES = [f"stage_{k}_{name}" for k, name in enumerate(STAGES)]
STAGE_KEYS = [f"evaluation/{suite}/success" for suite in SUITES]
FULL = "evaluation/full/success"


def _spec(path: Path, options: dict) -> Path:
    path.write_text(yaml.safe_dump({"name": EXPERIMENT, "env": {"name": "robotic_sequence", "options": options}}))
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A YAML-only sequence none of whose stages is a paper stage: scratch, finetune and bc, 2 seeds
    each, every run holding its spec as `spec.resolved.yaml` like `ftcl run` logs it."""
    root = tmp_path_factory.mktemp("mlflow_stages")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment(EXPERIMENT, artifact_location=(root / "artifacts").as_uri())
    spec = _spec(root / "spec.resolved.yaml", {"stages": STAGES, "pretrained_stages": PRETRAINED})
    start = int(time.time() * 1000) - 1_000_000
    for method, level in [("scratch", 0.3), ("finetune", 0.6), ("bc", 0.9)]:
        for seed in range(2):
            curves = {key: [(s, level * s / STEPS[-1]) for s in STEPS] for key in STAGE_KEYS + [FULL]}
            for statistic in ("log_likelihood", "log_likelihood_median", "log_likelihood_q10"):
                curves.update({f"analysis/{statistic}/{suite}": [(s, -1.0 - s / 1000) for s in STEPS]
                               for suite in sorted(FAR)})
            curves.update({f"analysis/cka/{network}/layer_{k}": [(s, 1.0 - s / 10 / STEPS[-1]) for s in STEPS]
                           for network in ("actor", "critic") for k in range(2)})
            if method == "bc":
                curves["learners/default_policy/retention_bc_loss"] = [(s, 1.0 / (1 + s)) for s in STEPS]
            tags = {"method": method, "seed": str(seed), "ftcl.group": "g", "ftcl.stage": "finetune",
                    "ftcl.variant": "", "mlflow.runName": f"{method}_seed{seed}"}
            run_id = _log_run(client, experiment_id, start_time=start + seed, tags=tags, curves=curves)
            client.log_artifact(run_id, str(spec))
    return uri


def test_report_over_other_stages_shows_every_stage_with_its_role(store: str, tmp_path: Path) -> None:
    files = build_report(EXPERIMENT, tracking_uri=store, out_dir=tmp_path / "report", layout="robotic_sequence",
                         log_to_mlflow=False)
    # no panel or column skipped (the layout's videos are: these runs recorded none)
    assert [warning for warning in files.warnings if "skipped" in warning] == [
        "the layout asks for videos but no selected run logged any (evaluation.video_every_env_steps); videos skipped"]
    assert not [note for note in files.forward_transfer_notes if "skipped" in note], files.forward_transfer_notes

    # one Fig. 7 panel per stage, in stage order, titled by stage and role
    metrics = [figure.metric for figure in files.figures]
    assert metrics[:5] == [FULL, *STAGE_KEYS]
    titles = {figure.metric: figure.title for figure in files.figures}
    assert [titles[key] for key in STAGE_KEYS] == [
        "Fig. 7 — stage 0: shelf-place (CLOSE)", "Fig. 7 — stage 1: push-back (FAR)",
        "Fig. 7 — stage 2: window-close (CLOSE)", "Fig. 7 — stage 3: door-close (FAR)",
    ]
    assert titles["analysis/log_likelihood/stage_3_door-close"] == "Fig. 8 — stage 3: door-close (FAR)"
    assert titles[FULL] == "Full sequence (Fig. 3c)"

    # table: full, then every stage's minimum, then every stage's final value
    table = pd.read_csv(files.table_csv)
    expected = [FULL] + [f"{key}@min" for key in STAGE_KEYS] + STAGE_KEYS
    assert [column.removesuffix(":iqm") for column in table.columns if column.endswith(":iqm")] == expected
    header = files.table_md.read_text().splitlines()[0]
    assert "evaluation/stage_1_push-back/success (min, FAR)" in header
    assert "evaluation/stage_0_shelf-place/success (final, CLOSE)" in header

    # forward transfer: every stage and the full sequence, against scratch
    ft = pd.read_csv(files.forward_transfer_csv)
    assert list(ft["method"]) == ["bc", "finetune"]
    for key in STAGE_KEYS + [FULL]:
        assert ft[f"{key}:n"].tolist() == [2, 2]
        # AUC = level / 2: FT = (0.45 − 0.15) / 0.85 for bc, (0.3 − 0.15) / 0.85 for finetune
        np.testing.assert_allclose(ft[f"{key}:iqm"], [0.3 / 0.85, 0.15 / 0.85])
    ft_markdown = files.forward_transfer_md.read_text()
    assert "evaluation/stage_3_door-close/success FT (FAR)" in ft_markdown
    assert "evaluation/stage_2_window-close/success FT (CLOSE)" in ft_markdown

    page = files.html.read_text()
    assert "<td>FAR suites</td><td>stage_1_push-back, stage_3_door-close</td>" in page
    assert "hammer" not in page and "push-wall" not in page


def test_without_a_recorded_spec_titles_come_from_the_keys_alone(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment("bare", artifact_location=(tmp_path / "artifacts").as_uri())
    for seed in range(2):
        _log_run(client, experiment_id, start_time=1_000 + seed,
                 tags={"method": "finetune", "seed": str(seed), "ftcl.group": "g", "ftcl.stage": "finetune"},
                 curves={"evaluation/stage_10_reach/success": [(0, 0.5)], "evaluation/stage_2_push/success": [(0, 1.0)]})
    files = build_report("bare", tracking_uri=uri, out_dir=tmp_path / "out", log_to_mlflow=False)
    assert [(figure.metric, figure.title) for figure in files.figures] == [
        ("evaluation/stage_2_push/success", "Evaluation success — stage 2: push"),
        ("evaluation/stage_10_reach/success", "Evaluation success — stage 10: reach"),
    ]
    assert "FAR suites" not in files.html.read_text()


def test_roles_from_spec_options_with_grid_params_applied() -> None:
    spec = {"env": {"name": "robotic_sequence", "options": {"stages": STAGES}}}
    default = _roles_of(spec, {})  # pretrained_stages not given: the last two stages
    assert default == {"stage_0_shelf-place": "CLOSE", "stage_1_push-back": "CLOSE",
                       "stage_2_window-close": "FAR", "stage_3_door-close": "FAR"}
    gridded = _roles_of(spec, {"env.options.pretrained_stages": "['shelf-place-v3']", "seed": "0"})
    assert gridded is not None and [suite for suite, role in gridded.items() if role == "FAR"] == ["stage_0_shelf-place"]
    assert _roles_of({"env": {"name": "apple_retrieval", "options": {}}}, {}) is None  # no FAR stages there
    assert _roles_of({"env": {"name": "robotic_sequence", "options": {"stages": ["no-such-task"]}}}, {}) is None


def test_stage_keys_sort_by_index_and_read_as_titles() -> None:
    keys = ["evaluation/stage_10_a/success", "evaluation/stage_2_b/success", "evaluation/stage_1_c/success",
            "evaluation/full/success"]
    assert expand_metric("evaluation/stage_*/success", keys) == keys[2:0:-1] + keys[:1]
    assert stage_of("analysis/log_likelihood/stage_3_push-wall") == (3, "push-wall")
    assert stage_of("evaluation/far/success") is None
    assert metric_title("evaluation/stage_3_push-wall/success", {"stage_3_push-wall": "FAR"}) == "stage 3: push-wall (FAR)"
    assert metric_title("evaluation/far/success") == "evaluation/far/success"


# ------------------------------------------------------------------------------------ coinciding lines


def _line(group: str, values: list[float]) -> Line:
    return Line(group, np.arange(len(values), dtype=float), np.array(values, dtype=float), None, None, 1)


def test_coinciding_lines_are_shifted_one_step_each() -> None:
    a, b = [1.0, 1.0, 1.0], [0.2, 0.5, 0.9]
    offsets = coincidence_offsets([_line("x", a), _line("y", a), _line("z", b), _line("w", a)], span=2.0, middle=1.5)
    assert offsets == [0.0, OFFSET_SHARE * 2.0, 0.0, 2 * OFFSET_SHARE * 2.0]
    # towards the middle of the axes: lines at the top move down
    assert coincidence_offsets([_line("x", a), _line("y", a)], span=1.0, middle=0.5) == [0.0, -OFFSET_SHARE]
    # equal on the steps both cover counts as coinciding; merely touching at one step does not
    assert coincidence_offsets([_line("x", [1.0, 1.0, 1.0]), _line("y", [1.0, 1.0])], 1.0)[1] != 0
    touching = Line("y", np.array([2.0, 3.0]), np.array([1.0, 0.0]), None, None, 1)
    assert coincidence_offsets([_line("x", a), touching], 1.0) == [0.0, 0.0]
    # markers start at different steps per group
    assert mark_every(400, 0, 2) == (0, 50) and mark_every(400, 1, 2) == (25, 50) and mark_every(5, 1, 2) == (0, 1)
    assert mark_every(21, 1, 4) == (1, 2)  # fewer steps between markers than groups: still staggered


def test_two_identical_curves_are_drawn_distinguishably() -> None:
    perfect = [Curve(np.array([0.0, 500.0, 1000.0]), np.ones(3)) for _ in range(3)]
    grouping = Grouping(facet_by=None, group_by="method", facets=[""], groups=["bc", "ewc"],
                        cells={("", "bc"): lambda metric: perfect, ("", "ewc"): lambda metric: perfect})
    panel = Panel(metric="evaluation/far/success", title="FAR", ylim=(-0.02, 1.02))
    warnings: list[str] = []
    figure, title, groups, notes = panel_figure(
        panel=panel, metric=panel.metric, layout=load_layout("apple_retrieval").model_copy(update={"facet_by": None}),
        grouping=grouping, colors=group_colors(grouping.groups), markers=group_markers(grouping.groups),
        roles={}, warnings=warnings)
    ax = figure.axes[0]
    lines = [line for line in ax.get_lines() if isinstance(line, Line2D) and line.get_label() in ax.get_legend_handles_labels()[1]]
    assert len(lines) == 2 and groups == ["bc", "ewc"] and title == "FAR"
    bc, ewc = lines
    assert bc.get_marker() != ewc.get_marker()
    shift = OFFSET_SHARE * 1.04  # 1 % of the panel's y range
    np.testing.assert_allclose(bc.get_ydata(), 1.0)
    np.testing.assert_allclose(ewc.get_ydata(), 1.0 - shift)  # at the top: shifted down, inside the axes
    assert "coincides" in ewc.get_label() and "coincides" not in bc.get_label()
    assert notes == [f"lines drawn shifted to stay visible (each coincides with an earlier line): ewc {-shift:+.3g}"]
    assert "IQM over runs, 90 % stratified-bootstrap CI" in figure.get_suptitle()
