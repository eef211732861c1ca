"""The payoff grid over all its seeds (results/robotic_sequence.md §4): per method and suite the
IQM success and its 90 % stratified-bootstrap CI every 10k env steps, the forward transfer against
scratch (paper Table 6) and one figure, computed with the report's own statistics
(ftcl.tracking.report.stats) from the per-seed point files the runs left:

    python results/scripts/payoff_summary.py results/robotic_sequence_payoff_seed*.csv \
        --figure results/robotic_sequence_payoff/all_seeds.png

Seed 0's points are every 10k steps (its MLflow store was lost; they come from its table), the
later seeds' every 5k; all seeds are therefore compared at 10k steps.
"""
import argparse
import csv
from collections import defaultdict
from pathlib import Path

import numpy as np

from ftcl.tracking.report.stats import area_under_curve, forward_transfer, interval_estimate

SUITES = ["full", "stage_0_drawer-close", "stage_1_window-close", "stage_2_peg-unplug-side", "stage_3_push-wall"]
ROLES = {"full": "", "stage_0_drawer-close": "CLOSE", "stage_1_window-close": "CLOSE",
         "stage_2_peg-unplug-side": "FAR", "stage_3_push-wall": "FAR"}
METHODS = ["scratch", "finetune", "ewc", "bc", "em"]
STEPS = np.arange(0, 60001, 10000)
CONFIDENCE = 0.9
TOLERANCE = 100  # evaluation steps land a few env steps past the nominal 5k grid (5050, …)


def load(paths: list[Path]) -> dict[tuple[str, str], dict[str, np.ndarray]]:
    """(method, suite) → {run: success at STEPS}; a run lacking a step is left out with a note."""
    points: dict[tuple[str, str, str], dict[int, float]] = defaultdict(dict)
    for path in paths:
        with open(path) as handle:
            for row in csv.DictReader(handle):
                points[(row["run"], row["suite"], path.name)][int(float(row["env_steps"]))] = float(row["success"])
    curves: dict[tuple[str, str], dict[str, np.ndarray]] = defaultdict(dict)
    for (run, suite, source), history in points.items():
        values = []
        for step in STEPS:
            near = [value for at, value in history.items() if abs(at - step) <= TOLERANCE]
            values.append(near[0] if near else np.nan)
        if np.isnan(values).any():
            print(f"note: {run} {suite} ({source}) does not reach {STEPS[-1]} steps; left out")
            continue
        if run in curves[(run.split("__")[0], suite)]:
            raise SystemExit(f"{run} {suite} appears in two files; keep one")
        curves[(run.split("__")[0], suite)][run] = np.array(values)
    return curves


def cell(values: np.ndarray) -> str:
    point, low, high = interval_estimate(values, CONFIDENCE)
    if len(values) < 2:
        return f"{float(point):.2f} (n=1)"
    return f"{float(point):.2f} [{float(low):.2f}, {float(high):.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("points", nargs="+", type=Path)
    parser.add_argument("--figure", type=Path)
    args = parser.parse_args()
    curves = load(args.points)
    methods = [m for m in METHODS if any((m, s) in curves for s in SUITES)]

    print(f"Success, IQM over seeds [{CONFIDENCE:.0%} CI] (n = seeds):\n")
    print("| method | suite | n | " + " | ".join(f"{s // 1000}k" for s in STEPS) + " |")
    print("|---|---|---|" + "---|" * len(STEPS))
    for method in methods:
        for suite in SUITES:
            runs = curves.get((method, suite), {})
            if not runs:
                continue
            matrix = np.stack(list(runs.values()))
            point, _, _ = interval_estimate(matrix, CONFIDENCE)
            name = suite.split("_", 2)[-1]
            print(f"| {method} | {name} | {len(runs)} | " + " | ".join(f"{v:.2f}" for v in point) + " |")

    print("\nFull-sequence success per run: its maximum and its mean over 40–60k:\n")
    print("| method | runs | max per run | mean 40–60k per run | IQM of the mean 40–60k [CI] |")
    print("|---|---|---|---|---|")
    late = STEPS >= 40000
    for method in methods:
        runs = curves.get((method, "full"), {})
        if runs:
            means = np.array([curve[late].mean() for curve in runs.values()])
            print(f"| {method} | {len(runs)} | " + " / ".join(f"{c.max():.1f}" for c in runs.values())
                  + " | " + " / ".join(f"{m:.2f}" for m in means) + f" | {cell(means)} |")

    print("\nForward transfer against scratch over 0–60k (paper Table 6), IQM over seeds [CI]:\n")
    print("| method | " + " | ".join(f"{s.split('_', 2)[-1]} ({ROLES[s]})" if ROLES[s] else s for s in SUITES) + " |")
    print("|---|" + "---|" * len(SUITES))
    for method in methods:
        if method == "scratch":
            continue
        cells = []
        for suite in SUITES:
            baseline = curves.get(("scratch", suite), {})
            runs = curves.get((method, suite), {})
            if not baseline or not runs:
                cells.append("–")
                continue
            auc_b = float(np.mean([area_under_curve(STEPS, c) for c in baseline.values()]))
            ft = forward_transfer(np.array([area_under_curve(STEPS, c) for c in runs.values()]), auc_b)
            cells.append("n/a (scratch perfect)" if np.isnan(ft).any() else cell(ft))
        print(f"| {method} | " + " | ".join(cells) + " |")

    if args.figure:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        figure, axes = plt.subplots(1, len(SUITES), figsize=(4 * len(SUITES), 3.4), sharey=True)
        markers = dict(zip(METHODS, "osD^v"))
        for axis, suite in zip(axes, SUITES):
            for index, method in enumerate(methods):
                runs = curves.get((method, suite), {})
                if not runs:
                    continue
                point, low, high = interval_estimate(np.stack(list(runs.values())), CONFIDENCE)
                offset = (index - len(methods) / 2) * 0.012  # coinciding lines stay visible
                line, = axis.plot(STEPS / 1000, point + offset, marker=markers[method], label=f"{method} (n={len(runs)})")
                if len(runs) > 1:
                    axis.fill_between(STEPS / 1000, low, high, color=line.get_color(), alpha=0.15)
            axis.set_title(f"{suite} {ROLES[suite]}".strip())
            axis.set_xlabel("env steps (k)")
            axis.set_ylim(-0.05, 1.05)
        axes[0].set_ylabel(f"success (IQM, {CONFIDENCE:.0%} bootstrap CI)")
        axes[-1].legend(fontsize=8)
        figure.tight_layout()
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(args.figure, dpi=110)
        print(f"\nfigure: {args.figure}")


if __name__ == "__main__":
    main()
