"""`ftcl evaluate` on a finished experiment: with a trial's own defaults its numbers equal the ones
the trial logged at that checkpoint, and they land in the trial's MLflow run; bad targets and suites
are one line and exit 2."""
from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from ftcl.spec import REPO_ROOT
from ftcl_cli import mlflow_client, run_ftcl

pytestmark = pytest.mark.slow

SPEC = {
    "name": "apple_evaluate",
    "env": {"name": "apple_retrieval", "options": {"apple_distance": 5}},
    "algorithm": {"name": "ppo", "model": "linear_policy",
                  "options": {"lr": 0.01, "train_batch_size_per_learner": 500, "minibatch_size": 100, "num_epochs": 2}},
    "methods": [{"name": "scratch"}],
    "seeds": [3],
    "budget": {"env_steps": 1000},
    "evaluation": {"suites": ["far", "full"], "every_env_steps": 500, "episodes": 3},
    "resources": {"checkpoint_every_iterations": 1},
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    spec = home / "apple_evaluate.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    result = run_ftcl(home, "run", str(spec))
    assert result.returncode == 0, result.stderr[-3000:]
    (experiment_dir,) = (home / "ray_results").glob("apple_evaluate_*")
    return home, experiment_dir


def test_evaluating_a_trials_checkpoint_gives_the_numbers_it_logged(finished):
    home, experiment_dir = finished
    result = run_ftcl(home, "evaluate", str(experiment_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "scratch__seed3" in result.stdout and "seed 10003" in result.stdout
    client = mlflow_client(home)
    (run,) = client.search_runs([client.get_experiment_by_name("apple_evaluate").experiment_id])
    for suite in ("far", "full"):
        for metric in ("success", "episode_return_mean", "episode_len_mean"):
            logged = {m.step: m.value for m in client.get_metric_history(run.info.run_id, f"evaluation/{suite}/{metric}")}
            (evaluated,) = client.get_metric_history(run.info.run_id, f"evaluate/{suite}/{metric}")
            assert evaluated.step == max(logged), "at the checkpoint's env step"
            assert evaluated.value == pytest.approx(logged[evaluated.step]), (suite, metric)


def test_bad_targets_and_suites_are_one_line_and_exit_2(finished, tmp_path):
    home, experiment_dir = finished
    trial = next((experiment_dir / "finetune").glob("scratch__seed3"))
    for args, message in [
        ([str(trial), "--suite", "near"], "unknown suite 'near' for env 'apple_retrieval'; allowed: far, full"),
        ([str(REPO_ROOT / "tune_configs")], "is none of: a π* folder"),
        ([str(tmp_path / "missing")], "no such file or folder"),
        ([str(trial), "--spec", "tune_configs/toys/apple_retrieval.yaml"], "--spec names the env of a π*"),
        ([str(trial), "--episodes", "0"], "--episodes 0: must be >= 1"),
    ]:
        result = subprocess.run([sys.executable, "-m", "ftcl.cli", "evaluate", *args, "--no-mlflow"], cwd=REPO_ROOT,
                                capture_output=True, text=True, env={"FTCL_HOME": str(home), "PATH": "/usr/bin:/bin"})
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 2 and len(lines) == 1 and message in lines[0], (args, result.stderr[-2000:])
