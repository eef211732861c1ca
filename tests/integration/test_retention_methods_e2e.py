"""Every retention method trains through the real `ftcl run` (Ray Tune, RLlib, MLflow) and its term
shows up in MLflow against environment steps."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from ftcl_cli import mlflow_client, run_ftcl

pytestmark = pytest.mark.slow

PPO_METHODS = {
    "spec": {
        "name": "retention_ppo_tiny",
        "env": {"name": "apple_retrieval", "options": {"apple_distance": 5, "observation_scale": 1.0}},
        "algorithm": {
            "name": "ppo",
            "model": "linear_policy",
            "options": {"lr": 0.01, "train_batch_size_per_learner": 500, "minibatch_size": 100, "num_epochs": 2},
        },
        "pretrained": {"train": {"env_options": {"start_phase": 2}, "env_steps": 500, "data_transitions": 600}},
        "methods": [
            {"name": "l2", "coeff": 1.0},
            {"name": "ewc", "coeff": 10.0, "fisher_batches": 2, "fisher_batch_size": 128},
            {"name": "bc", "coeff": 1.0, "buffer_size": 500, "batch_size": 64},
            {"name": "ks", "coeff": 0.8, "decay": 0.9, "floor": 0.5},
        ],
        "seeds": [0],
        "budget": {"env_steps": 1500},
        "resources": {"checkpoint_every_iterations": 10},
    },
    "terms": {"l2": "l2", "ewc": "ewc", "bc": "bc", "ks": "ks"},
}

APPO_METHODS = {  # APPO's learner is a remote actor: the trial must ask Tune for its CPU too
    "spec": {
        "name": "retention_appo_tiny",
        "env": {"name": "apple_retrieval", "options": {"apple_distance": 5, "observation_scale": 1.0}},
        "algorithm": {"name": "appo", "options": {"lr": 0.001, "train_batch_size_per_learner": 500}},
        "pretrained": {"train": {"env_options": {"start_phase": 2}, "env_steps": 500, "data_transitions": 300}},
        "methods": [{"name": "l2", "coeff": 1.0}, {"name": "ks", "coeff": 0.5}],
        "seeds": [0],
        "budget": {"env_steps": 1000},
        "resources": {"checkpoint_every_iterations": 10},
    },
    "terms": {"l2": "l2", "ks": "ks"},
}

SAC_EM = {  # also the tiny end-to-end RoboticSequence run: multi-head SAC, pre-training on the last stage
    "spec": {
        "name": "retention_sac_tiny",
        "env": {"name": "robotic_sequence",
                "options": {"stages": ["reach-v3", "button-press-topdown-v3"], "stage_time_limit": 40,
                            "pretrained_stages": ["button-press-topdown-v3"]}},
        "algorithm": {
            "name": "sac",
            "model": "multihead_sac",
            "model_options": {"hidden_layers": 2, "hidden_size": 32},
            "options": {
                "train_batch_size_per_learner": 32,
                "num_steps_sampled_before_learning_starts": 50,
                "replay_buffer_config": {"type": "EpisodeReplayBuffer", "capacity": 2000},
            },
        },
        "pretrained": {"train": {"env_options": {"start_stage": 1}, "env_steps": 100, "data_transitions": 200}},
        "methods": [{"name": "em", "memory_size": 150}, {"name": "bc", "buffer_size": 150, "batch_size": 32}],
        "seeds": [0],
        "budget": {"env_steps": 150},
        "evaluation": {"suites": ["full", "stage_1_button-press-topdown"], "every_env_steps": 1000, "episodes": 1},
        "resources": {"checkpoint_every_iterations": 50},
    },
    "terms": {"bc": "bc"},
}


def run_spec(tmp_path: Path, spec: dict) -> MlflowClient:
    path = tmp_path / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = run_ftcl(tmp_path / "home", "run", str(path))
    assert result.returncode == 0, result.stderr[-5000:]
    return mlflow_client(tmp_path / "home")


@pytest.mark.parametrize("case", [PPO_METHODS, APPO_METHODS, SAC_EM], ids=["ppo", "appo", "sac"])
def test_each_method_logs_its_term_against_env_steps(tmp_path, case):
    client = run_spec(tmp_path, case["spec"])
    experiment = client.get_experiment_by_name(case["spec"]["name"])
    runs = {run.data.tags["method"]: run for run in client.search_runs([experiment.experiment_id])
            if run.data.tags["ftcl.stage"] == "finetune"}
    assert set(runs) == {m["name"] for m in case["spec"]["methods"]}
    for method, run in runs.items():
        assert run.info.status == "FINISHED", method
        sampled = {p.step: p.value for p in client.get_metric_history(run.info.run_id, "num_env_steps_sampled_lifetime")}
        assert sampled and all(step == int(value) for step, value in sampled.items())
        term = case["terms"].get(method)
        if term is None:
            continue
        loss = client.get_metric_history(run.info.run_id, f"learners/default_policy/retention_{term}_loss")
        coeff = client.get_metric_history(run.info.run_id, f"learners/default_policy/retention_{term}_coeff")
        assert loss and coeff, f"{method}: retention metrics missing; have {sorted(run.data.metrics)}"
        assert {p.step for p in loss} <= set(sampled), "term metrics must be stepped by environment steps"
        assert all(p.value >= 0 for p in loss)
    if "em" in runs:  # FAR suite of the pre-trained stage evaluated from env step 0
        far = client.get_metric_history(runs["em"].info.run_id, "evaluation/stage_1_button-press-topdown/success")
        assert min(p.step for p in far) == 0
    if "ks" in runs:  # λ_t decays per optimizer step and stops at the floor
        ks = next(m for m in case["spec"]["methods"] if m["name"] == "ks")
        coeff = sorted(client.get_metric_history(runs["ks"].info.run_id, "learners/default_policy/retention_ks_coeff"),
                       key=lambda p: p.step)
        assert coeff[-1].value < ks["coeff"] and coeff[-1].value >= ks.get("floor", 0.0) - 1e-9


MONTEZUMA_RND = {
    "name": "montezuma_rnd_tiny",
    "presets": ["ppo_rnd_montezuma"],
    "env": {"options": {"max_episode_steps": 150}},
    "algorithm": {"num_envs_per_env_runner": 2, "rollout_fragment_length": 64,
                  "model_options": {"trunk_width": 64, "head_width": 64, "rnd_width": 64},
                  "options": {"train_batch_size_per_learner": 128, "minibatch_size": 64, "num_epochs": 1,
                              "rnd_obs_norm_steps": 128}},
    "methods": [{"name": "scratch"}],
    "seeds": [0],
    "budget": {"env_steps": 256},
    "evaluation": {"suites": ["start_room7"], "every_env_steps": 256, "episodes": 1},
    "resources": {"checkpoint_every_iterations": 1},
}


def test_ppo_rnd_on_montezuma_logs_rnd_and_room_metrics_against_env_steps(tmp_path):
    """A tiny `ftcl run` of PPO + RND on the real ALE env: the RND losses and the Room-7 suite reach
    MLflow on the env-step axis."""
    spec_path = tmp_path / "montezuma_rnd_tiny.yaml"
    spec_path.write_text(yaml.safe_dump(MONTEZUMA_RND))
    result = run_ftcl(tmp_path, "run", str(spec_path))
    assert result.returncode == 0, result.stderr[-4000:]
    client = mlflow_client(tmp_path)
    experiment = client.get_experiment_by_name("montezuma_rnd_tiny")
    (run,) = [r for r in client.search_runs([experiment.experiment_id]) if r.data.tags.get("ftcl.stage") == "finetune"]
    keys = set(run.data.metrics)
    for key in ("learners/default_policy/rnd_loss", "learners/default_policy/vf_loss_intrinsic",
                "evaluation/start_room7/success"):
        assert key in keys, sorted(keys)
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "learners/default_policy/rnd_loss")]
    assert steps and max(steps) >= 256 and all(step > 0 for step in steps), steps
