"""Paper Fig. 26 here (results/robotic_sequence.md §3): success on the FAR stages of plain
fine-tuning and of BC with 100, 1k and 10k of π*'s stored states, every 5k env steps, the mean
over seeds with the smallest and largest seed (n ≤ 3), and one figure. BC 10k is the reduced grid's
`bc` (the same spec: its 10k states are the whole data file), finetune the reduced grid's.

    python results/scripts/bc_memory_summary.py results/robotic_sequence_bc_memory.csv \
        results/robotic_sequence.csv results/robotic_sequence_seed1.csv results/robotic_sequence_seed2.csv \
        --figure results/robotic_sequence/bc_memory.png
"""
import argparse
import csv
from collections import defaultdict
from pathlib import Path

import numpy as np

FAR = ["stage_2_peg-unplug-side", "stage_3_push-wall"]
METHODS = {"finetune": "finetune", "bc_100": "bc_100", "bc_1k": "bc_1k", "bc": "bc_10k", "bc_10k": "bc_10k"}
STEPS = list(range(0, 25001, 5000))


def load(paths: list[Path]) -> dict[tuple[str, str], dict[int, list[float]]]:
    """(method, FAR suite) → step bin → one success per seed."""
    seen: dict[tuple[str, int, str, int], float] = {}
    for path in paths:
        with open(path) as handle:
            for row in csv.DictReader(handle):
                method = METHODS.get(row["method"])
                if method is None:
                    continue
                for suite in FAR:
                    key = (method, int(row["seed"]), suite, int(row["step_bin"]))
                    if key in seen:
                        raise SystemExit(f"{key} appears twice (in {path} and before); keep one")
                    seen[key] = float(row[f"{suite}_success"])
    points: dict[tuple[str, str], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for (method, _, suite, step), value in sorted(seen.items()):
        points[(method, suite)][step].append(value)
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("points", nargs="+", type=Path)
    parser.add_argument("--figure", type=Path)
    args = parser.parse_args()
    points = load(args.points)
    methods = [m for m in dict.fromkeys(METHODS.values()) if any((m, s) in points for s in FAR)]
    for suite in FAR:
        print(f"\n{suite.split('_', 2)[-1]}: success, mean over seeds [min, max] (n = seeds)\n")
        print("| method | n | " + " | ".join(f"{s // 1000}k" for s in STEPS) + " |")
        print("|---|---|" + "---|" * len(STEPS))
        for method in methods:
            by_step = points[(method, suite)]
            n = min(len(by_step.get(step, [])) for step in STEPS)
            cells = [f"{np.mean(v):.2f} [{min(v):.1f}, {max(v):.1f}]" if (v := by_step.get(step)) else "—"
                     for step in STEPS]
            print(f"| {method} | {n} | " + " | ".join(cells) + " |")
    if args.figure:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axes = plt.subplots(1, len(FAR), figsize=(10, 3.6), sharey=True)
        for axis, suite in zip(axes, FAR):
            for offset, method in enumerate(methods):
                by_step = points[(method, suite)]
                steps = [s for s in STEPS if by_step.get(s)]
                mean = [np.mean(by_step[s]) for s in steps]
                low = [min(by_step[s]) for s in steps]
                high = [max(by_step[s]) for s in steps]
                shift = (offset - len(methods) / 2) * 0.01  # coinciding lines stay visible
                line, = axis.plot(steps, np.array(mean) + shift, marker="o", label=method)
                axis.fill_between(steps, low, high, color=line.get_color(), alpha=0.12)
            axis.set(title=f"{suite.split('_', 2)[-1]} (FAR)", xlabel="environment steps", ylim=(-0.05, 1.05))
        axes[0].set_ylabel("success (mean over seeds; band: min–max)")
        axes[-1].legend(fontsize=8)
        figure.suptitle("BC memory size (paper Fig. 26), fine-tuning from the whole π*")
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(args.figure, dpi=110, bbox_inches="tight")
        print(f"\nfigure: {args.figure}")


if __name__ == "__main__":
    main()
