"""The report's statistics on hand-made curves: IQM and bootstrap confidence intervals, step grids,
per-run values, AUC, forward transfer and the two tables, without MLflow or plotting."""
from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest
from rliable import metrics as rliable_metrics
from scipy import stats as scipy_stats

from ftcl.tracking.report import stats
from ftcl.tracking.report.stats import (
    BOOTSTRAP_REPS,
    BOOTSTRAP_SEED,
    MAX_GRID_POINTS,
    Curve,
    Grouping,
    area_under_curve,
    common_grid,
    final_table,
    forward_transfer,
    forward_transfer_table,
    interpolate,
    interval_estimate,
    interval_text,
    iqm,
    label,
    per_run_value,
)

SUCCESS = "evaluation/success"


def _curve(steps: list[float], values: list[float]) -> Curve:
    return Curve(np.array(steps, dtype=float), np.array(values, dtype=float))


def _constant(level: float) -> Curve:
    return _curve([0.0, 50.0, 100.0], [level] * 3)


def _grouping(cells: dict[tuple[str, str], dict[str, list[Curve]]], facet_by: str | None = "variant") -> Grouping:
    """Cells given as {(facet, group): {metric: curves}}; facets and groups in sorted order."""
    return Grouping(
        facet_by=facet_by,
        group_by="method",
        facets=sorted({facet for facet, _ in cells}),
        groups=sorted({group for _, group in cells}),
        cells={cell: (lambda metric, by=by: list(by.get(metric, []))) for cell, by in cells.items()},
    )


# --------------------------------------------------------------------------------------------- CI


def test_ci_of_constant_values_has_zero_width_and_contains_the_iqm() -> None:
    point, low, high = interval_estimate(np.full(5, 0.7), 0.9)
    assert float(point) == pytest.approx(0.7)
    assert float(low) == pytest.approx(float(high))
    assert float(low) <= float(point) <= float(high)


def test_iqm_is_rliables_and_the_mean_for_up_to_three_runs() -> None:
    for values in ([0.3], [0.2, 0.9], [1.0, 1.0, 0.2], [0.0, 0.1, 0.2, 10.0], [5.0, 0.1, 0.3, 0.2, 0.4, 0.0, 9.0]):
        values = np.array(values)
        assert float(iqm(values)) == pytest.approx(rliable_metrics.aggregate_iqm(values[:, None]))
    assert float(iqm(np.array([1.0, 1.0, 0.2]))) == pytest.approx(0.7333333333)  # n <= 3: the mean
    assert float(iqm(np.array([0.0, 0.1, 0.2, 10.0]))) == pytest.approx(0.15)  # n = 4: the middle two
    # along an axis: rows are runs, one IQM per column, each rliable's
    np.testing.assert_allclose(iqm(np.array([[0.0, 1.0], [0.0, 1.0], [3.0, 1.0], [9.0, 4.0]]), axis=0), [1.5, 1.0])
    for runs in (2, 3, 4, 5, 8, 13):
        curves = np.random.default_rng(runs).random((runs, 40))
        expected = [rliable_metrics.aggregate_iqm(curves[:, [step]]) for step in range(40)]
        np.testing.assert_allclose(iqm(curves, axis=0), expected, rtol=0, atol=1e-12)
        np.testing.assert_allclose(iqm(curves.T, axis=1), expected, rtol=0, atol=1e-12)


def test_bootstrap_ci_of_success_rates_stays_in_the_unit_interval_where_student_t_does_not() -> None:
    values = np.array([1.0, 1.0, 0.2])
    half = scipy_stats.t.ppf(0.95, df=2) * values.std(ddof=1) / math.sqrt(3)
    assert values.mean() + half > 1.0 and values.mean() - half < 0.0  # Student-t leaves [0, 1] on both sides
    for confidence in (0.9, 0.95, 0.99):
        point, low, high = interval_estimate(values, confidence)
        assert 0.2 <= float(low) <= float(point) <= float(high) <= 1.0
    # and at every step of curves: rows are runs, columns steps
    runs = np.array([[1.0, 1.0, 0.0, 0.5], [1.0, 0.0, 0.0, 0.5], [0.2, 0.0, 0.0, 1.0]])
    point, low, high = interval_estimate(runs, 0.9, axis=0)
    assert np.all(low >= runs.min(axis=0)) and np.all(high <= runs.max(axis=0))
    assert np.all((low <= point + 1e-12) & (point <= high + 1e-12))


def test_bootstrap_ci_is_deterministic_whatever_the_global_random_state() -> None:
    values = np.random.default_rng(3).random((6, 50))
    np.random.seed(1)
    first = interval_estimate(values, 0.9)
    np.random.seed(2)
    np.random.random(100)
    second = interval_estimate(values, 0.9)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    # one column alone gets the interval it gets among others
    alone = interval_estimate(values[:, 7], 0.9)
    assert float(alone[1]) == first[1][7] and float(alone[2]) == first[2][7]


def test_bootstrap_ci_matches_a_plain_resampling_of_the_runs() -> None:
    """The rank trick gives the distribution of resampling the runs and taking rliable's IQM."""
    values = np.array([0.05, 0.1, 0.3, 0.35, 0.5, 0.8, 0.9, 0.95])
    rng = np.random.default_rng(11)
    resampled = values[rng.integers(0, len(values), size=(20_000, len(values)))]
    plain = np.quantile(scipy_stats.trim_mean(resampled, 0.25, axis=1), [0.05, 0.95])
    _, low, high = interval_estimate(values, 0.9)
    assert float(low) == pytest.approx(plain[0], abs=0.03) and float(high) == pytest.approx(plain[1], abs=0.03)


def test_ci_shrinks_with_more_seeds_and_widens_with_confidence() -> None:
    widths = []
    for seeds in (4, 8, 16, 32):  # runs spread evenly over [0, 1]
        _, low, high = interval_estimate(np.linspace(0.0, 1.0, seeds), 0.9)
        widths.append(float(high - low))
    assert widths[0] > widths[1] > widths[2] > widths[3] > 0
    pattern = np.array([0.1, 0.3, 0.5])
    _, low_90, high_90 = interval_estimate(pattern, 0.9)
    _, low_99, high_99 = interval_estimate(pattern, 0.99)
    assert high_99 - low_99 > high_90 - low_90


def test_ci_over_one_seed_has_no_ends_and_axis_picks_the_seeds() -> None:
    point, low, high = interval_estimate(np.array([0.3]), 0.9)
    assert float(point) == pytest.approx(0.3) and np.isnan(low) and np.isnan(high)
    # rows are seeds, columns grid steps: one IQM and one interval per step
    samples = np.array([[0.0, 1.0, 2.0], [2.0, 1.0, 0.0]])
    point, low, high = interval_estimate(samples, 0.9, axis=0)
    np.testing.assert_allclose(point, [1.0, 1.0, 1.0])
    assert high[1] - low[1] == pytest.approx(0.0) and high[0] - low[0] > 0
    _, low_t, _ = interval_estimate(samples.T, 0.9, axis=1)
    np.testing.assert_array_equal(low_t, low)


def test_interval_text_names_the_method() -> None:
    text = interval_text(0.9)
    assert text.startswith("IQM over runs, 90 % stratified-bootstrap CI (rliable 1.2.0, ")
    assert f"{BOOTSTRAP_REPS} repetitions" in text and f"seed {BOOTSTRAP_SEED}" in text


# ------------------------------------------------------------------------------ grid and curves


def test_common_grid_spans_only_the_shared_range_with_the_union_of_steps() -> None:
    short = _curve([0, 300, 800], [1.0, 0.5, 0.2])
    late = _curve([100, 500, 1000], [1.0, 0.5, 0.0])
    np.testing.assert_array_equal(common_grid([short, late]), [100.0, 300.0, 500.0, 800.0])
    np.testing.assert_array_equal(common_grid([short]), [0.0, 300.0, 800.0])
    assert len(common_grid([short, _curve([900, 1000], [0.0, 0.0])])) == 0
    # touching ranges share exactly one step
    np.testing.assert_array_equal(common_grid([short, _curve([800, 900], [0.0, 0.0])]), [800.0])


def test_common_grid_is_thinned_to_a_fixed_size_over_the_shared_range() -> None:
    dense = _curve(list(range(0, 2 * MAX_GRID_POINTS)), [0.0] * (2 * MAX_GRID_POINTS))
    grid = common_grid([dense, _curve([10, 500], [0.0, 0.0])])
    assert len(grid) == MAX_GRID_POINTS
    assert grid[0] == 10.0 and grid[-1] == 500.0
    assert np.all(np.diff(grid) > 0)


def test_interpolate_is_linear_between_logged_steps() -> None:
    rising = _curve([0, 10], [0.0, 1.0])
    stepped = _curve([0, 4, 10], [2.0, 2.0, 8.0])
    values = interpolate([rising, stepped], np.array([0.0, 2.5, 4.0, 7.0, 10.0]))
    assert values.shape == (2, 5)
    np.testing.assert_allclose(values[0], [0.0, 0.25, 0.4, 0.7, 1.0])
    np.testing.assert_allclose(values[1], [2.0, 2.0, 2.0, 5.0, 8.0])


def test_per_run_value_final_max_min_and_mean() -> None:
    curve = _curve([0, 1, 2, 3], [0.5, 0.9, 0.1, 0.3])
    assert per_run_value(curve, "final") == pytest.approx(0.3)
    assert per_run_value(curve, "max") == pytest.approx(0.9)
    assert per_run_value(curve, "min") == pytest.approx(0.1)
    assert per_run_value(curve, "mean") == pytest.approx(0.45)


def test_label_names_empty_values() -> None:
    assert label("") == "(none)" and label("bc") == "bc"


# --------------------------------------------------------------------------------- AUC and FT


def test_auc_of_a_piecewise_linear_curve() -> None:
    # ramp 0 -> 1 over [0, 2], then flat 1 over [2, 6]: area 1 + 4 over T = 6
    assert area_under_curve(np.array([0.0, 2.0, 6.0]), np.array([0.0, 1.0, 1.0])) == pytest.approx(5 / 6)
    # the range starts at the first step, not at 0
    assert area_under_curve(np.array([10.0, 20.0]), np.array([0.2, 0.6])) == pytest.approx(0.4)
    assert area_under_curve(np.array([3.0]), np.array([0.8])) == pytest.approx(0.8)


def test_forward_transfer_sign_and_value() -> None:
    assert float(forward_transfer(0.75, 0.5)) == pytest.approx(0.5)
    assert float(forward_transfer(0.25, 0.5)) == pytest.approx(-0.5)
    assert float(forward_transfer(0.5, 0.5)) == pytest.approx(0.0)
    assert float(forward_transfer(1.0, 0.2)) == pytest.approx(1.0)
    np.testing.assert_allclose(forward_transfer(np.array([0.6, 0.8]), 0.6), [0.0, 0.5])


def test_forward_transfer_against_a_perfect_baseline_is_undefined() -> None:
    assert np.isnan(forward_transfer(0.9, 1.0))
    assert np.isnan(forward_transfer(np.array([0.5, 1.0]), 1.0 - 1e-9)).all()
    assert not np.isnan(forward_transfer(0.5, 0.99))


# ------------------------------------------------------------------------------------- tables


def test_final_table_rows_per_cell_with_runs() -> None:
    grouping = _grouping({
        ("a", "bc"): {SUCCESS: [_curve([0, 10], [1.0, 0.8]), _curve([0, 10], [1.0, 0.6])]},
        ("a", "finetune"): {SUCCESS: [_curve([0, 5, 10], [1.0, 0.1, 0.2])]},
        ("b", "bc"): {},  # runs, but none logged the metric
    })
    table = final_table(grouping, [SUCCESS, f"{SUCCESS}@min"], at="final", confidence=0.9)
    assert list(table["variant"]) == ["a", "a", "b"] and list(table["method"]) == ["bc", "finetune", "bc"]
    assert list(table.columns[:2]) == ["variant", "method"]
    bc, finetune, empty = (table.iloc[i] for i in range(3))
    assert bc[f"{SUCCESS}:iqm"] == pytest.approx(0.7) and bc[f"{SUCCESS}:n"] == 2
    # two runs: the resamples' IQMs are 0.6, 0.7 or 0.8, so the 90 % interval spans the runs
    assert bc[f"{SUCCESS}:ci_low"] == pytest.approx(0.6) and bc[f"{SUCCESS}:ci_high"] == pytest.approx(0.8)
    assert finetune[f"{SUCCESS}:iqm"] == pytest.approx(0.2) and np.isnan(finetune[f"{SUCCESS}:ci_low"])
    assert finetune[f"{SUCCESS}@min:iqm"] == pytest.approx(0.1)  # `@min` overrides `at`
    assert empty[f"{SUCCESS}:n"] == 0 and np.isnan(empty[f"{SUCCESS}:iqm"])


def test_final_table_without_facets_has_only_the_group_column() -> None:
    grouping = _grouping({("", "bc"): {SUCCESS: [_constant(0.4)]}}, facet_by=None)
    table = final_table(grouping, [SUCCESS], at="mean", confidence=0.9)
    assert list(table.columns) == ["method", f"{SUCCESS}:iqm", f"{SUCCESS}:ci_low", f"{SUCCESS}:ci_high",
                                   f"{SUCCESS}:n"]


def test_forward_transfer_table_values_against_a_constant_baseline() -> None:
    levels = [0.6, 0.7, 0.8]
    grouping = _grouping({
        ("", "scratch"): {SUCCESS: [_constant(0.4), _constant(0.6)]},  # AUC_b = 0.5
        ("", "finetune"): {SUCCESS: [_constant(level) for level in levels]},
    }, facet_by=None)
    table, notes = forward_transfer_table(grouping, [SUCCESS], baseline="scratch", confidence=0.9)
    assert notes == []
    assert list(table["method"]) == ["finetune"]  # the baseline gets no row
    row = table.iloc[0]
    ft = (np.array(levels) - 0.5) / 0.5
    _, low, high = interval_estimate(ft, 0.9)
    assert row[f"{SUCCESS}:iqm"] == pytest.approx(ft.mean()) and row[f"{SUCCESS}:n"] == 3  # n = 3: IQM = mean
    assert row[f"{SUCCESS}:ci_low"] == pytest.approx(float(low))
    assert row[f"{SUCCESS}:ci_high"] == pytest.approx(float(high))
    assert row[f"{SUCCESS}:auc"] == pytest.approx(0.7) and row[f"{SUCCESS}:auc_baseline"] == pytest.approx(0.5)


def test_forward_transfer_uses_the_range_method_and_baseline_share() -> None:
    grouping = _grouping({
        ("", "scratch"): {SUCCESS: [_curve([0, 100], [0.0, 1.0])]},
        ("", "bc"): {SUCCESS: [_curve([0, 50], [0.0, 1.0])]},  # stops half-way
    }, facet_by=None)
    table, notes = forward_transfer_table(grouping, [SUCCESS], baseline="scratch", confidence=0.9)
    # over [0, 50]: AUC = 0.5, AUC_b = 0.25, FT = 0.25 / 0.75
    assert table.iloc[0][f"{SUCCESS}:auc_baseline"] == pytest.approx(0.25)
    assert table.iloc[0][f"{SUCCESS}:iqm"] == pytest.approx(1 / 3)
    assert len(notes) == 1 and "over steps 0 to 50" in notes[0]


def test_forward_transfer_table_against_a_perfect_baseline_notes_nan() -> None:
    grouping = _grouping({
        ("", "scratch"): {SUCCESS: [_constant(1.0)]},
        ("", "bc"): {SUCCESS: [_constant(0.9), _constant(1.0)]},
    }, facet_by=None)
    table, notes = forward_transfer_table(grouping, [SUCCESS], baseline="scratch", confidence=0.9)
    assert np.isnan(table.iloc[0][f"{SUCCESS}:iqm"]) and table.iloc[0][f"{SUCCESS}:n"] == 2
    assert any("already perfect" in note for note in notes)


def test_forward_transfer_table_without_a_baseline() -> None:
    nowhere = _grouping({("a", "bc"): {SUCCESS: [_constant(0.5)]}})
    table, notes = forward_transfer_table(nowhere, [SUCCESS], baseline="scratch", confidence=0.9)
    assert table.empty and list(table.columns[:2]) == ["variant", "method"]
    assert notes == ["no runs of baseline method 'scratch' in this selection; forward transfer not computed"]

    one_facet = _grouping({
        ("a", "scratch"): {SUCCESS: [_constant(0.5)]},
        ("a", "bc"): {SUCCESS: [_constant(0.75)]},
        ("b", "bc"): {SUCCESS: [_constant(0.75)]},
    })
    table, notes = forward_transfer_table(one_facet, [SUCCESS], baseline="scratch", confidence=0.9)
    assert list(table["variant"]) == ["a"] and table.iloc[0][f"{SUCCESS}:iqm"] == pytest.approx(0.5)
    assert notes == ["no runs of baseline method 'scratch' in variant=b; forward transfer not computed there"]


def test_stats_depends_on_neither_mlflow_nor_plotting_nor_the_other_report_modules() -> None:
    tree = ast.parse(Path(stats.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    roots = {name.split(".")[0] for name in imported}
    assert roots <= {"__future__", "collections", "dataclasses", "importlib", "numpy", "pandas", "rliable", "scipy"}, roots
