"""The report's statistics on hand-made curves: confidence intervals, step grids, per-run values,
AUC, forward transfer and the two tables, without MLflow or plotting."""
from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats

from ftcl.tracking.report import stats
from ftcl.tracking.report.stats import (
    MAX_GRID_POINTS,
    Curve,
    Grouping,
    area_under_curve,
    common_grid,
    final_table,
    forward_transfer,
    forward_transfer_table,
    interpolate,
    label,
    mean_confidence_interval,
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


def test_ci_of_constant_values_has_zero_width_and_contains_the_mean() -> None:
    mean, low, high = mean_confidence_interval(np.full(5, 0.7), 0.9)
    assert float(mean) == pytest.approx(0.7)
    assert float(low) == pytest.approx(float(high))
    assert float(low) <= float(mean) <= float(high)


def test_ci_is_the_student_t_interval_and_contains_the_mean() -> None:
    values = np.array([0.2, 0.4, 0.9])
    mean, low, high = mean_confidence_interval(values, 0.95)
    half = scipy_stats.t.ppf(0.975, df=2) * values.std(ddof=1) / math.sqrt(3)
    assert float(mean) == pytest.approx(0.5)
    assert float(low) == pytest.approx(0.5 - half) and float(high) == pytest.approx(0.5 + half)
    assert low < mean < high


def test_ci_shrinks_with_more_seeds_and_widens_with_confidence() -> None:
    pattern = np.array([0.1, 0.3, 0.5])
    widths = []
    for repeats in (1, 2, 4):
        _, low, high = mean_confidence_interval(np.tile(pattern, repeats), 0.9)
        widths.append(float(high - low))
    assert widths[0] > widths[1] > widths[2] > 0
    _, low_90, high_90 = mean_confidence_interval(pattern, 0.9)
    _, low_99, high_99 = mean_confidence_interval(pattern, 0.99)
    assert high_99 - low_99 > high_90 - low_90


def test_ci_over_one_seed_has_no_ends_and_axis_picks_the_seeds() -> None:
    mean, low, high = mean_confidence_interval(np.array([0.3]), 0.9)
    assert float(mean) == pytest.approx(0.3) and np.isnan(low) and np.isnan(high)
    # rows are seeds, columns grid steps: one mean and one interval per step
    samples = np.array([[0.0, 1.0, 2.0], [2.0, 1.0, 0.0]])
    mean, low, high = mean_confidence_interval(samples, 0.9, axis=0)
    np.testing.assert_allclose(mean, [1.0, 1.0, 1.0])
    assert high[1] - low[1] == pytest.approx(0.0) and high[0] - low[0] > 0


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
    assert bc[f"{SUCCESS}:mean"] == pytest.approx(0.7) and bc[f"{SUCCESS}:n"] == 2
    assert bc[f"{SUCCESS}:ci_low"] < 0.7 < bc[f"{SUCCESS}:ci_high"]
    assert finetune[f"{SUCCESS}:mean"] == pytest.approx(0.2) and np.isnan(finetune[f"{SUCCESS}:ci_low"])
    assert finetune[f"{SUCCESS}@min:mean"] == pytest.approx(0.1)  # `@min` overrides `at`
    assert empty[f"{SUCCESS}:n"] == 0 and np.isnan(empty[f"{SUCCESS}:mean"])


def test_final_table_without_facets_has_only_the_group_column() -> None:
    grouping = _grouping({("", "bc"): {SUCCESS: [_constant(0.4)]}}, facet_by=None)
    table = final_table(grouping, [SUCCESS], at="mean", confidence=0.9)
    assert list(table.columns) == ["method", f"{SUCCESS}:mean", f"{SUCCESS}:ci_low", f"{SUCCESS}:ci_high",
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
    _, low, high = mean_confidence_interval(ft, 0.9)
    assert row[f"{SUCCESS}:mean"] == pytest.approx(ft.mean()) and row[f"{SUCCESS}:n"] == 3
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
    assert table.iloc[0][f"{SUCCESS}:mean"] == pytest.approx(1 / 3)
    assert len(notes) == 1 and "over steps 0 to 50" in notes[0]


def test_forward_transfer_table_against_a_perfect_baseline_notes_nan() -> None:
    grouping = _grouping({
        ("", "scratch"): {SUCCESS: [_constant(1.0)]},
        ("", "bc"): {SUCCESS: [_constant(0.9), _constant(1.0)]},
    }, facet_by=None)
    table, notes = forward_transfer_table(grouping, [SUCCESS], baseline="scratch", confidence=0.9)
    assert np.isnan(table.iloc[0][f"{SUCCESS}:mean"]) and table.iloc[0][f"{SUCCESS}:n"] == 2
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
    assert list(table["variant"]) == ["a"] and table.iloc[0][f"{SUCCESS}:mean"] == pytest.approx(0.5)
    assert notes == ["no runs of baseline method 'scratch' in variant=b; forward transfer not computed there"]


def test_stats_depends_on_neither_mlflow_nor_plotting_nor_the_other_report_modules() -> None:
    tree = ast.parse(Path(stats.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    roots = {name.split(".")[0] for name in imported}
    assert roots <= {"__future__", "math", "collections", "dataclasses", "numpy", "pandas", "scipy"}, roots
