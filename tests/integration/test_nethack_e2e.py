"""`ftcl run` on NetHack with the LSTM APPO and the authors' learner settings (no V-trace, rewards
clipped at ±10, a value head on normalised returns): scratch and kickstarting (its teacher carried
along the rollouts) from a π* the test writes, evaluated from the dlvl4 FAR start, tracked in MLflow."""
from __future__ import annotations

import pytest
import yaml

from ftcl_cli import mlflow_client as client_of
from ftcl_cli import run_ftcl as ftcl

pytestmark = pytest.mark.slow

SMALL = {"h_dim": 32, "msg_hdim": 8, "blstats_hdim": 16, "fc_after_cnn_hdim": 16, "char_edim": 4, "color_edim": 4,
         "max_seq_len": 8, "normalize_returns": True}


def test_lstm_appo_scratch_and_kickstarting_run_end_to_end(tmp_path):
    from ftcl.algorithms.pi_star import save_pi_star
    from ftcl.envs.nethack import NetHackEnv
    from ftcl.models.tty_lstm_module import TtyLSTMModule

    env = NetHackEnv({})
    save_pi_star(TtyLSTMModule(observation_space=env.observation_space, action_space=env.action_space,
                               model_config=SMALL), tmp_path / "pi_star")
    env.close()
    spec = {
        "name": "nethack_tiny",
        "env": {"name": "nethack", "options": {"max_episode_steps": 40}},
        "algorithm": {"name": "appo", "model": "tty_lstm", "model_options": SMALL, "rollout_fragment_length": 8,
                      "options": {"train_batch_size_per_learner": 32, "vtrace": False, "reward_clip": 10,
                                  "standardize_advantages": True}},
        "pretrained": {"module": str(tmp_path / "pi_star")},
        "methods": [{"name": "scratch"}, {"name": "ks", "coeff": 0.5}],
        "seeds": [0],
        "budget": {"env_steps": 300},
        "evaluation": {"suites": ["dlvl4"], "every_env_steps": 300, "episodes": 1},
    }
    spec_path = tmp_path / "nethack_tiny.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    home = tmp_path / "home"
    result = ftcl(home, "run", str(spec_path))
    assert result.returncode == 0, result.stderr[-4000:]
    client = client_of(home)
    experiment = client.get_experiment_by_name("nethack_tiny")
    runs = {run.data.tags["method"]: run for run in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"scratch", "ks"}
    for method, run in runs.items():
        assert run.info.status == "FINISHED", method
        assert run.data.metrics["evaluation/dlvl4/episode_len_mean"] <= 40
        scale = client.get_metric_history(run.info.run_id, "learners/default_policy/returns_std")
        assert scale and scale[-1].value != 1.0, f"{method}: the returns' statistics moved from their prior"
    ks_coeff = client.get_metric_history(runs["ks"].info.run_id, "learners/default_policy/retention_ks_coeff")
    assert ks_coeff and ks_coeff[-1].value < 0.5
