"""A shared tracking server behind MLflow's basic-auth app (issue 14, item 6): without credentials,
or with a wrong password, `ftcl validate` and `ftcl run` stop before anything is written with one
line naming the variables to set; with a user's password the grid runs, the driver's runs and the
artifacts the trial processes log themselves (the per-state record) land on the server."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml
from mlflow.tracking import MlflowClient

from ftcl.spec import REPO_ROOT
from local_cluster import TrackingServer

pytestmark = pytest.mark.slow

SPEC = {
    "name": "apple_auth",
    "env": {"name": "apple_retrieval", "options": {"apple_distance": 5}},
    "algorithm": {"name": "ppo", "model": "linear_policy",
                  "options": {"lr": 0.01, "train_batch_size_per_learner": 500, "minibatch_size": 100, "num_epochs": 2}},
    "pretrained": {"train": {"env_options": {"start_phase": 2}, "env_steps": 500, "data_transitions": 200}},
    "methods": [{"name": "finetune"}],
    "seeds": [0],
    "budget": {"env_steps": 1000},
    "evaluation": {"suites": ["far"], "every_env_steps": 500, "episodes": 2, "log_likelihood_suites": ["far"]},
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = TrackingServer(tmp_path_factory.mktemp("auth_server"), basic_auth=True)
    try:
        server.add_user("researcher", "r-pass-8231-long")
        yield server
    finally:
        server.stop()


def ftcl(tmp_path, server, *args, **credentials):
    spec = tmp_path / "apple_auth.yaml"
    spec.write_text(yaml.safe_dump({**SPEC, "tracking": {"uri": server.uri}}))
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_TRACKING_")}
    env.update(FTCL_HOME=str(tmp_path / "home"), **credentials)
    return subprocess.run([sys.executable, "-m", "ftcl.cli", *args, str(spec)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=900)


def test_missing_or_wrong_credentials_are_one_line_before_anything_is_written(server, tmp_path):
    for credentials, sent in [({}, "without credentials"),
                              ({"MLFLOW_TRACKING_USERNAME": "researcher", "MLFLOW_TRACKING_PASSWORD": "wrong"},
                               "as user 'researcher'")]:
        for command in ("validate", "run"):
            result = ftcl(tmp_path, server, command, **credentials)
            lines = [line for line in result.stderr.splitlines() if line.strip()]
            assert result.returncode == 2 and len(lines) == 1, (command, result.stderr[-2000:])
            assert f"refused the request {sent} (HTTP 401)" in lines[0] and "MLFLOW_TRACKING_PASSWORD" in lines[0]
    assert not (tmp_path / "home" / "ray_results").exists(), "nothing written"


def test_a_users_password_lets_the_grid_log_runs_and_trial_artifacts(server, tmp_path):
    result = ftcl(tmp_path, server, "run", MLFLOW_TRACKING_USERNAME="researcher", MLFLOW_TRACKING_PASSWORD="r-pass-8231-long")
    assert result.returncode == 0, result.stderr[-4000:]
    os.environ.update(MLFLOW_TRACKING_USERNAME="admin", MLFLOW_TRACKING_PASSWORD=server.admin_password)
    try:
        client = MlflowClient(tracking_uri=server.uri)
        experiment = client.get_experiment_by_name("apple_auth")
        runs = {run.data.tags["ftcl.stage"]: run for run in client.search_runs([experiment.experiment_id])}
        assert set(runs) == {"pretrain", "finetune"} and runs["finetune"].info.status == "FINISHED"
        assert runs["finetune"].data.metrics["evaluation/far/success"] >= 0
        logged_by_the_trial = [item.path for item in client.list_artifacts(runs["finetune"].info.run_id, "analysis")]
        assert logged_by_the_trial == ["analysis/state_log_likelihood.npz"]
    finally:
        for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            os.environ.pop(name, None)
