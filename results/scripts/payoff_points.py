"""Every evaluation point (success per suite, every 5k env steps) of the payoff grid's runs in an
MLflow store, as a Markdown table on stdout and a CSV: results/robotic_sequence.md §4.

    python results/scripts/payoff_points.py <FTCL_HOME>/mlflow.db results/robotic_sequence_payoff_seed1.csv
"""
import csv
import shutil
import sys
import tempfile

from mlflow.tracking import MlflowClient

SUITES = ["full", "stage_0_drawer-close", "stage_1_window-close", "stage_2_peg-unplug-side", "stage_3_push-wall"]
STEPS = list(range(0, 60001, 5000))

db, out = sys.argv[1], sys.argv[2]
copy = tempfile.mkdtemp() + "/mlflow.db"
shutil.copy(db, copy)  # a copy: a running grid keeps writing to the store
client = MlflowClient(f"sqlite:///{copy}")
experiment = client.get_experiment_by_name("robotic_sequence_payoff")
rows = []
for run in sorted(client.search_runs([experiment.experiment_id]), key=lambda r: r.data.tags.get("mlflow.runName", "")):
    name = run.data.tags.get("mlflow.runName", run.info.run_id)
    for suite in SUITES:
        history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, f"evaluation/{suite}/success")}
        for step in STEPS:
            near = [k for k in history if abs(k - step) <= 100]
            if near:
                rows.append({"run": name, "suite": suite, "env_steps": near[0], "success": history[near[0]]})
with open(out, "w", newline="") as handle:
    writer = csv.DictWriter(handle, ["run", "suite", "env_steps", "success"])
    writer.writeheader()
    writer.writerows(rows)
runs = sorted({row["run"] for row in rows})
print("| run | suite | " + " | ".join(f"{s // 1000}k" for s in STEPS) + " |")
print("|---|---|" + "---|" * len(STEPS))
for name in runs:
    for suite in SUITES:
        values = {round(r["env_steps"], -3): r["success"] for r in rows if r["run"] == name and r["suite"] == suite}
        print(f"| {name} | {suite} | " + " | ".join(f"{values[s]:.1f}" if s in values else "–" for s in STEPS) + " |")
