"""The runner end to end with real Ray, RLlib, MLflow (SQLite) and the real `ftcl` command:
pre-training stage, fine-tuning grid, MLflow runs/tags/metrics on the env-step axis, report files,
and `--resume` after an interruption."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ftcl.spec import REPO_ROOT
from ftcl.tracking.store import sha256_of
from ftcl_cli import mlflow_client as client_of
from ftcl_cli import run_ftcl as ftcl

pytestmark = pytest.mark.slow

TINY_APPLE = {
    "name": "apple_tiny",
    "env": {"name": "apple_retrieval", "options": {"apple_distance": 5, "observation_scale": 1.0}},
    "algorithm": {
        "name": "ppo",
        "model": "linear_policy",
        "options": {"lr": 0.01, "train_batch_size_per_learner": 500, "minibatch_size": 100, "num_epochs": 2},
    },
    "pretrained": {"train": {"env_options": {"start_phase": 2}, "env_steps": 1000, "data_transitions": 300}},
    "methods": [{"name": "finetune"}, {"name": "scratch"}],
    "seeds": [0],
    "budget": {"env_steps": 1500},
    "evaluation": {"suites": ["far"], "every_env_steps": 500, "episodes": 2},
    "tracking": {"dashboard": "apple_retrieval"},
    "resources": {"checkpoint_every_iterations": 1},
}


def runs_of(home: Path, experiment: str) -> pd.DataFrame:
    """One row per MLflow run: run_id, status and `tags.<name>` columns (explicit client, no globals)."""
    client = client_of(home)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment {experiment!r}; have {[e.name for e in client.search_experiments()]}"
    rows = []
    for run in client.search_runs([found.experiment_id], max_results=1000):
        rows.append({"run_id": run.info.run_id, "status": run.info.status,
                     **{f"tags.{k}": v for k, v in run.data.tags.items()}})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    spec_path = home / "apple_tiny.yaml"
    spec_path.write_text(yaml.safe_dump(TINY_APPLE))
    result = ftcl(home, "run", str(spec_path))
    assert result.returncode == 0, result.stderr[-4000:]
    return home, spec_path, result


def test_run_writes_resolved_spec_and_pretrained_artifact(finished):
    home, _, result = finished
    (experiment_dir,) = (home / "ray_results").glob("apple_tiny_*")
    resolved = yaml.safe_load((experiment_dir / "spec.resolved.yaml").read_text())
    assert resolved["budget"]["env_steps"] == 1500
    assert "Trial status" not in result.stdout + result.stderr, "Tune's tables only with --verbose"
    assert "[ftcl] finetune: 2/2 trials done" in result.stderr, "ftcl's own progress line"
    pretrained = experiment_dir / "pretrained" / "v0"
    provenance = json.loads((pretrained / "provenance.json").read_text())
    assert provenance["sha256"]["module"] == sha256_of(pretrained / "module")
    assert provenance["sha256"]["data.npz"] == sha256_of(pretrained / "data.npz")
    assert provenance["env_options"]["start_phase"] == 2 and provenance["env_steps"] >= 1000
    assert provenance["command"].startswith("ftcl run ")
    assert "env steps" in result.stderr and "ETA" in result.stderr  # progress lines


def test_mlflow_has_one_run_per_trial_with_tags(finished):
    home, _, _ = finished
    runs = runs_of(home, "apple_tiny")
    finetune = runs[runs["tags.ftcl.stage"] == "finetune"]
    assert sorted(finetune["tags.method"]) == ["finetune", "scratch"]
    assert (runs["status"] == "FINISHED").all()
    assert len(runs[runs["tags.ftcl.stage"] == "pretrain"]) == 1
    (experiment_dir,) = (home / "ray_results").glob("apple_tiny_*")
    module_sha = json.loads((experiment_dir / "pretrained/v0/provenance.json").read_text())["sha256"]["module"]
    by_method = finetune.set_index("tags.method")
    assert by_method.loc["finetune", "tags.pretrained_sha256"] == module_sha
    assert by_method.loc["scratch", "tags.pretrained_sha256"] == "none"
    for tag in ("env", "seed", "ftcl.spec", "ftcl.group", "git_sha", "versions.ray", "versions.torch", "algorithm"):
        assert finetune[f"tags.{tag}"].notna().all(), tag
    assert (finetune["tags.env"] == "apple_retrieval").all()
    assert (finetune["tags.ftcl.group"] == experiment_dir.name).all()


def test_metrics_are_indexed_by_env_steps(finished):
    home, _, _ = finished
    runs = runs_of(home, "apple_tiny")
    client = client_of(home)
    run_id = runs[(runs["tags.method"] == "finetune") & (runs["tags.ftcl.stage"] == "finetune")].run_id.iloc[0]
    sampled = client.get_metric_history(run_id, "num_env_steps_sampled_lifetime")
    assert sampled and all(point.step == int(point.value) for point in sampled)
    far = client.get_metric_history(run_id, "evaluation/far/success")
    steps = sorted(point.step for point in far)
    assert steps[0] == 0 and steps[-1] >= 1500  # π* measured before the first update, then to the budget
    assert len(client.get_metric_history(run_id, "learners/default_policy/policy_loss")) >= 3


def test_report_files_contain_the_methods(finished):
    home, spec_path, _ = finished
    out = home / "report"
    result = ftcl(home, "report", str(spec_path), "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(out / "final_table.csv")
    assert set(table["method"]) == {"finetune", "scratch"}
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "finetune" in html and "scratch" in html
    assert list(out.glob("*.png"))


def test_resume_after_interruption(tmp_path):
    home = tmp_path / "home"
    spec = {**TINY_APPLE, "name": "apple_resume", "methods": [{"name": "finetune"}], "budget": {"env_steps": 6000}}
    spec_path = tmp_path / "apple_resume.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    env = {**os.environ, "FTCL_HOME": str(home)}
    process = subprocess.Popen([sys.executable, "-m", "ftcl.cli", "run", str(spec_path)], cwd=REPO_ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    checkpoints: list[Path] = []
    while time.time() < deadline and process.poll() is None:
        checkpoints = list(home.glob("ray_results/apple_resume_*/finetune/*/checkpoint_00000[1-9]"))
        if checkpoints:
            break
        time.sleep(1)
    assert checkpoints, "no fine-tuning checkpoint appeared before the deadline"
    process.send_signal(signal.SIGINT)  # what Ctrl-C does
    _, stderr = process.communicate(timeout=180)
    assert process.returncode != 0, "the interrupted run should not report success"

    resumed = ftcl(home, "run", str(spec_path), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "resuming" in resumed.stderr
    runs = runs_of(home, "apple_resume")
    finetune = runs[runs["tags.ftcl.stage"] == "finetune"]
    assert len(finetune) == 1, "the resumed trial must continue its MLflow run, not start a new one"
    assert finetune["status"].iloc[0] == "FINISHED"
    history = client_of(home).get_metric_history(finetune.run_id.iloc[0], "num_env_steps_sampled_lifetime")
    assert max(point.step for point in history) >= 6000
    assert len(list(home.glob("ray_results/apple_resume_*"))) == 1


def test_pretrain_command_then_finetune_from_the_artifact(tmp_path):
    home = tmp_path / "home"
    spec = {**TINY_APPLE, "name": "apple_pretrain_only", "methods": [{"name": "finetune"}]}
    spec_path = tmp_path / "pretrain.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    artifact = tmp_path / "artifact"
    result = ftcl(home, "pretrain", str(spec_path), "--out", str(artifact))
    assert result.returncode == 0, result.stderr[-4000:]
    provenance = json.loads((artifact / "provenance.json").read_text())
    assert provenance["sha256"]["module"] == sha256_of(artifact / "module")
    assert provenance["sha256"]["data.npz"] == sha256_of(artifact / "data.npz")
    assert not list(home.glob("ray_results/*/finetune")), "pretrain must not start the fine-tuning stage"

    finetune = {**TINY_APPLE, "name": "apple_from_artifact", "budget": {"env_steps": 500},
                "pretrained": {"module": str(artifact / "module"), "data": str(artifact / "data.npz")},
                "methods": [{"name": "bc", "buffer_size": 200, "batch_size": 50}]}
    finetune_path = tmp_path / "finetune.yaml"
    finetune_path.write_text(yaml.safe_dump(finetune))
    result = ftcl(home, "run", str(finetune_path))
    assert result.returncode == 0, result.stderr[-4000:]
    (run,) = runs_of(home, "apple_from_artifact").to_dict("records")
    assert run["tags.pretrained_sha256"] == provenance["sha256"]["module"]
