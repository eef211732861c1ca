"""Every evaluation point of a RoboticSequence grid's finished runs in an MLflow store (by default
the reduced grid's), one row per (method, seed, evaluation), in the layout of
results/robotic_sequence.csv (results/robotic_sequence.md §2, §3). Metrics a run did not log
(e.g. CKA without `evaluation.cka`) are left empty.

    python results/scripts/reduced_points.py <FTCL_HOME>/mlflow.db results/robotic_sequence_seed1.csv --seed 1
    python results/scripts/reduced_points.py <FTCL_HOME>/mlflow.db results/robotic_sequence_bc_memory.csv \
        --experiment robotic_sequence_bc_memory
"""
import argparse
import csv
import shutil
import tempfile

from mlflow.tracking import MlflowClient

parser = argparse.ArgumentParser()
parser.add_argument("db")
parser.add_argument("out")
parser.add_argument("--seed", type=int, help="only this seed (default: every seed)")
parser.add_argument("--experiment", default="robotic_sequence_reduced")
args = parser.parse_args()
with open("results/robotic_sequence.csv") as handle:
    columns = next(csv.reader(handle))
SOURCES = {"full_success": "evaluation/full/success"}
for column in columns:
    if column.endswith("_success") and column.startswith("stage_"):
        SOURCES[column] = f"evaluation/{column.removesuffix('_success')}/success"
    elif column.startswith("log_likelihood_median_"):
        SOURCES[column] = f"analysis/log_likelihood_median/{column.removeprefix('log_likelihood_median_')}"
    elif column.startswith("log_likelihood_"):
        SOURCES[column] = f"analysis/log_likelihood/{column.removeprefix('log_likelihood_')}"
    elif column.startswith("cka_"):
        network, layer = column.removeprefix("cka_").rsplit("_layer_", 1)
        SOURCES[column] = f"analysis/cka/{network}/layer_{layer}"
copy = tempfile.mkdtemp() + "/mlflow.db"
shutil.copy(args.db, copy)  # a copy: a running grid keeps writing to the store
client = MlflowClient(f"sqlite:///{copy}")
experiment = client.get_experiment_by_name(args.experiment)
rows = []
for run in client.search_runs([experiment.experiment_id]):
    if run.info.status != "FINISHED" or (args.seed is not None and run.data.tags.get("seed") != str(args.seed)):
        continue
    seed = int(run.data.tags["seed"])
    method = run.data.tags["method"]
    histories = {column: {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}
                 for column, key in SOURCES.items()}
    for step in sorted(histories["full_success"]):
        row = {"method": method, "seed": seed, "env_steps": step, "step_bin": int(round(step / 5000) * 5000)}
        row.update({column: history.get(step, "") for column, history in histories.items()})
        rows.append(row)
rows.sort(key=lambda r: (r["method"], r["seed"], r["env_steps"]))
with open(args.out, "w", newline="") as handle:
    writer = csv.DictWriter(handle, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
print(f"{len(rows)} rows of {len({r['method'] for r in rows})} methods -> {args.out}")
