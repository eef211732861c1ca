"""Forward transfer (paper §5.6, Table 6): AUC/FT maths on hand-made curves, the layout section, and
the report's forward-transfer table against a real MLflow SQLite store."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from test_report import _log_run

from ftcl.tracking.dashboard import LayoutError, load_layout
from ftcl.tracking.report import area_under_curve, build_report, forward_transfer
from ftcl.tracking.report.stats import interval_estimate

EXPERIMENT = "robotic_sequence"
FULL = "evaluation/full/success"
PEG = "evaluation/stage_2_peg-unplug-side/success"
PUSH_WALL = "evaluation/stage_3_push-wall/success"
LOG_LIKELIHOOD = "analysis/log_likelihood/stage_3_push-wall"
STEPS = list(range(0, 10_001, 2_000))
T = STEPS[-1]
FINETUNE_LEVELS = [0.6, 0.7, 0.8]  # constant push-wall success per seed: AUC = level, FT = (level − 0.5) / 0.5


# --------------------------------------------------------------------------------------------- maths


def test_auc_is_the_time_average_of_the_curve() -> None:
    steps = np.array([0.0, 5.0, 10.0])
    assert area_under_curve(steps, np.ones(3)) == pytest.approx(1.0)
    assert area_under_curve(steps, steps / 10.0) == pytest.approx(0.5)  # p(t) = t/T
    # uneven steps: trapezoid over the steps, T from the first to the last step
    assert area_under_curve(np.array([100.0, 200.0, 500.0]), np.array([0.0, 1.0, 1.0])) == pytest.approx(
        (0.5 * 100 + 300) / 400
    )
    assert area_under_curve(np.array([7.0]), np.array([0.3])) == pytest.approx(0.3)  # one point: p there


def test_forward_transfer_against_a_baseline() -> None:
    steps = np.linspace(0.0, 1.0, 11)
    auc_b = area_under_curve(steps, steps)  # baseline learns linearly 0 → 1: AUC_b = 1/2
    assert forward_transfer(area_under_curve(steps, np.ones(11)), auc_b) == pytest.approx(1.0)  # perfect at once
    assert forward_transfer(auc_b, auc_b) == pytest.approx(0.0)  # identical to the baseline
    assert forward_transfer(0.25, auc_b) == pytest.approx(-0.5)  # worse than the baseline: negative
    np.testing.assert_allclose(forward_transfer(np.array([0.6, 0.8]), 0.5), [0.2, 0.6])
    assert np.isnan(forward_transfer(0.9, 1.0))  # baseline already perfect: 1 − AUC_b = 0, undefined
    assert np.isnan(forward_transfer(np.array([1.0, 0.5]), 1.0 - 1e-9)).all()


# --------------------------------------------------------------------------------------------- layout


def test_layout_section_is_validated(tmp_path: Path) -> None:
    shipped = load_layout("robotic_sequence").forward_transfer
    assert shipped is not None and shipped.baseline == "scratch"
    assert shipped.metrics == ["evaluation/stage_*/success", FULL]  # every stage the runs logged
    assert load_layout("apple_retrieval").forward_transfer is None

    head = "name: x\ntitle: X\npanels:\n  - {metric: a}\n"
    cases = {
        "forward_transfer: {baseline: scratch, metrics: [a], basline: s}\n": "forward_transfer.basline: unknown field",
        "forward_transfer: {metrics: [a]}\n": "forward_transfer.baseline: Field required",
        "forward_transfer: {baseline: scratch, metrics: []}\n": "forward_transfer.metrics",
        "forward_transfer: {baseline: scratch, metrics: ['a@min']}\n": "'@' aggregations do not apply",
    }
    for number, (section, message) in enumerate(cases.items()):
        path = tmp_path / f"bad{number}.yaml"
        path.write_text(head + section)
        with pytest.raises(LayoutError, match=message):
            load_layout(path)


# --------------------------------------------------------------------------------------------- report


def _tags(method: str, seed: int, group: str, variant: str = "", stage: str = "finetune") -> dict[str, str]:
    return {"method": method, "seed": str(seed), "ftcl.group": group, "ftcl.stage": stage,
            "ftcl.variant": variant, "mlflow.runName": f"{method}_seed{seed}_{variant}"}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Group `full`: scratch, finetune, bc (3 seeds each). Group `no_scratch`: finetune only.
    Group `variants`: scratch and finetune in variants a and b, finetune alone in c."""
    root = tmp_path_factory.mktemp("mlflow_ft")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment(EXPERIMENT, artifact_location=(root / "artifacts").as_uri())
    start = int(time.time() * 1000) - 1_000_000
    linear = [(s, s / T) for s in STEPS]
    for seed in range(3):
        # scratch learns push-wall linearly (AUC_b = 1/2), is perfect on the full sequence, never logs peg
        _log_run(client, experiment_id, start_time=start, tags=_tags("scratch", seed, "full"),
                 curves={PUSH_WALL: linear, FULL: [(s, 1.0) for s in STEPS]})
        _log_run(client, experiment_id, start_time=start, tags=_tags("finetune", seed, "full"), curves={
            PUSH_WALL: [(s, FINETUNE_LEVELS[seed]) for s in STEPS],
            FULL: [(s, 0.5) for s in STEPS],
            PEG: [(s, 0.9) for s in STEPS],
            LOG_LIKELIHOOD: [(s, -1.0 - s / T) for s in STEPS],
        })
        # bc learns exactly like scratch (FT = 0); seed 2 stops at 6000 steps
        bc_steps = [s for s in STEPS if seed != 2 or s <= 6_000]
        _log_run(client, experiment_id, start_time=start, tags=_tags("bc", seed, "full"),
                 curves={PUSH_WALL: [(s, s / T) for s in bc_steps], FULL: [(s, 0.2) for s in bc_steps]})
        _log_run(client, experiment_id, start_time=start, tags=_tags("finetune", seed, "no_scratch"),
                 curves={PUSH_WALL: [(s, 0.7) for s in STEPS]})
    # a pre-training run of method scratch: another stage, never a baseline
    _log_run(client, experiment_id, start_time=start, tags=_tags("scratch", 0, "full", stage="pretrain"),
             curves={PUSH_WALL: [(s, 0.0) for s in STEPS]})
    # per variant: AUC_b = 1/2 in a, 3/4 in b; finetune at 7/8 gives FT = 3/4 in a, 1/2 in b
    for seed in range(2):
        for variant, scratch in [("a", linear), ("b", [(s, 0.75) for s in STEPS])]:
            _log_run(client, experiment_id, start_time=start, tags=_tags("scratch", seed, "variants", variant),
                     curves={PUSH_WALL: scratch})
        for variant in ["a", "b", "c"]:
            _log_run(client, experiment_id, start_time=start, tags=_tags("finetune", seed, "variants", variant),
                     curves={PUSH_WALL: [(s, 0.875) for s in STEPS]})
    return uri


def test_forward_transfer_table_in_csv_markdown_and_html(store: str, tmp_path: Path) -> None:
    files = build_report(EXPERIMENT, tracking_uri=store, out_dir=tmp_path / "full", layout="robotic_sequence",
                         group="full", log_to_mlflow=False)
    assert files.run_count == 9
    assert files.forward_transfer_csv == tmp_path / "full" / "forward_transfer.csv"
    assert files.forward_transfer_csv in files.all_paths() and files.forward_transfer_md in files.all_paths()
    for path in files.all_paths():
        assert path.is_file() and path.stat().st_size > 0, path

    table = pd.read_csv(files.forward_transfer_csv)
    assert list(table["method"]) == ["bc", "finetune"]  # every method but the baseline
    finetune = table[table["method"] == "finetune"].iloc[0]
    bc = table[table["method"] == "bc"].iloc[0]
    ft = (np.array(FINETUNE_LEVELS) - 0.5) / 0.5
    _, low, high = interval_estimate(ft, 0.9)
    assert finetune[f"{PUSH_WALL}:iqm"] == pytest.approx(0.4)  # 3 runs: the IQM is the mean
    assert finetune[f"{PUSH_WALL}:ci_low"] == pytest.approx(float(low))
    assert finetune[f"{PUSH_WALL}:ci_high"] == pytest.approx(float(high))
    assert 0.2 <= low < 0.4 < high <= 0.6  # a bootstrap interval stays within the runs' FT
    assert finetune[f"{PUSH_WALL}:n"] == 3
    assert finetune[f"{PUSH_WALL}:auc_baseline"] == pytest.approx(0.5)
    # bc learns like scratch: FT = 0, over the steps its shortest seed covers (AUC_b = 0.3 there)
    assert bc[f"{PUSH_WALL}:iqm"] == pytest.approx(0.0, abs=1e-12)
    assert bc[f"{PUSH_WALL}:auc_baseline"] == pytest.approx(0.3)
    # scratch is perfect on the full sequence: NaN, not a division by zero
    assert np.isnan(finetune[f"{FULL}:iqm"]) and finetune[f"{FULL}:n"] == 3
    # scratch never logged peg-unplug-side: no value
    assert np.isnan(finetune[f"{PEG}:iqm"]) and finetune[f"{PEG}:n"] == 0

    notes = files.forward_transfer_notes
    assert any("already perfect" in note and FULL in note for note in notes), notes
    assert any(PEG in note and "baseline 'scratch' logged no values" in note for note in notes), notes
    assert any("FT of bc over steps 0 to 6000" in note for note in notes), notes

    markdown = files.forward_transfer_md.read_text()
    assert f"| method | {PEG} FT | {PUSH_WALL} FT | {FULL} FT |" in markdown
    row = next(line for line in markdown.splitlines() if line.startswith("| finetune |"))
    assert f"| 0.4 [{float(low):.3g}, {float(high):.3g}] (n=3) |" in row
    assert "| — |" in row and "NaN (n=3)" in row
    assert "FT = (AUC − AUC_b) / (1 − AUC_b)" in markdown

    page = files.html.read_text()
    assert "<h2>Forward transfer vs scratch</h2>" in page
    assert "0.4 [" in page and "already perfect" in page
    assert page.index("Forward transfer vs scratch") > page.index("IQM over runs</h2>")

    # the Fig. 8 panel is drawn from the runs that logged it
    assert LOG_LIKELIHOOD in [figure.metric for figure in files.figures]


def test_selection_without_baseline_builds_with_a_note(store: str, tmp_path: Path) -> None:
    files = build_report(EXPERIMENT, tracking_uri=store, out_dir=tmp_path / "none", layout="robotic_sequence",
                         group="no_scratch", log_to_mlflow=False)
    note = "no runs of baseline method 'scratch' in this selection; forward transfer not computed"
    assert files.forward_transfer_notes == [note, f"{FULL!r} is not logged by any selected run; its column is skipped"]
    assert note in files.forward_transfer_md.read_text()
    assert note.replace("'", "&#x27;") in files.html.read_text()
    table = pd.read_csv(files.forward_transfer_csv)
    assert table.empty and list(table.columns[:2]) == ["method", f"{PUSH_WALL}:iqm"]
    # panels whose metric no selected run logged (Fig. 8 among them) are skipped with a warning
    assert [figure.metric for figure in files.figures] == [PUSH_WALL]
    assert "no metric logged by the selected runs matches 'analysis/log_likelihood/stage_*'; panel skipped" in files.warnings


def test_one_baseline_per_variant(store: str, tmp_path: Path) -> None:
    layout = tmp_path / "faceted.yaml"
    layout.write_text(
        "name: faceted\ntitle: Faceted\nfacet_by: ftcl.variant\n"
        f"panels:\n  - {{metric: {PUSH_WALL}}}\n"
        f"forward_transfer: {{baseline: scratch, metrics: [{PUSH_WALL}]}}\n"
    )
    files = build_report(EXPERIMENT, tracking_uri=store, out_dir=tmp_path / "variants", layout=layout,
                         group="variants", log_to_mlflow=False)
    table = pd.read_csv(files.forward_transfer_csv)
    assert list(table["ftcl.variant"]) == ["a", "b"] and set(table["method"]) == {"finetune"}
    np.testing.assert_allclose(table[f"{PUSH_WALL}:iqm"], [0.75, 0.5])
    np.testing.assert_allclose(table[f"{PUSH_WALL}:auc_baseline"], [0.5, 0.75])
    assert files.forward_transfer_notes == [
        "no runs of baseline method 'scratch' in ftcl.variant=c; forward transfer not computed there"
    ]
    assert "| ftcl.variant | method |" in files.forward_transfer_md.read_text()


def test_other_stages_get_no_forward_transfer(store: str, tmp_path: Path) -> None:
    files = build_report(EXPERIMENT, tracking_uri=store, out_dir=tmp_path / "pre", layout="robotic_sequence",
                         stage="pretrain", group="full", log_to_mlflow=False)
    assert files.run_count == 1
    assert files.forward_transfer_notes[0].startswith("forward transfer compares finetune runs")
    assert pd.read_csv(files.forward_transfer_csv).empty


def test_panel_yscale_is_linear_or_symlog():
    from pydantic import ValidationError

    from ftcl.tracking.dashboard import Panel

    assert Panel(metric="a").yscale == "linear"
    assert Panel(metric="a", yscale="symlog").yscale == "symlog"
    with pytest.raises(ValidationError, match="symlog"):
        Panel(metric="a", yscale="log")
