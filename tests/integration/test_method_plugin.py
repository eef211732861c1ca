"""Adding a retention method is adding one file: a toy L1 anchor, registered from a file outside the
package (`FTCL_METHOD_FILES`), is listed by `ftcl list`, validated in specs and trained by `ftcl run`."""
from __future__ import annotations

import textwrap

import pytest
import yaml

from ftcl_cli import mlflow_client, run_ftcl

pytestmark = pytest.mark.slow

L1_METHOD = '''
"""A toy method: λ·Σ_i |θ_i − θ*_i| over the actor (one file, nothing else changes)."""
from typing import Literal

import torch
from pydantic import NonNegativeFloat

from ftcl.retention.method import RetentionMethod
from ftcl.retention.term import RetentionTerm


class L1Term(RetentionTerm):
    name = "l1"

    def _prepare(self, policy, data, teacher):
        self.parameters = policy.actor_parameters()
        self.anchor = {name: p.detach().clone() for name, p in self.parameters.items()}

    def _penalty(self, inputs):
        return sum((p - self.anchor[name]).abs().sum() for name, p in self.parameters.items())


class L1Method(RetentionMethod):
    name: Literal["l1"] = "l1"
    coeff: NonNegativeFloat = 1.0

    def build_term(self, seed: int = 0) -> RetentionTerm:
        return L1Term(self.coeff)
'''


def test_a_method_from_one_new_file_runs_through_ftcl_run(tmp_path, monkeypatch):
    method_file = tmp_path / "l1.py"
    method_file.write_text(textwrap.dedent(L1_METHOD))
    monkeypatch.setenv("FTCL_METHOD_FILES", str(method_file))
    listed = run_ftcl(tmp_path / "home", "list")
    assert listed.returncode == 0 and "l1" in listed.stdout.split("methods:")[1].splitlines()[0]
    spec = {
        "name": "l1_plugin",
        "env": {"name": "apple_retrieval", "options": {"apple_distance": 5, "observation_scale": 1.0}},
        "algorithm": {"name": "ppo", "model": "linear_policy",
                      "options": {"lr": 0.01, "train_batch_size_per_learner": 250, "minibatch_size": 125, "num_epochs": 2}},
        "pretrained": {"train": {"env_options": {"start_phase": 2}, "env_steps": 250, "data_transitions": 250}},
        "methods": [{"name": "l1", "coeff": 0.5}],
        "seeds": [0],
        "budget": {"env_steps": 750},
        "resources": {"checkpoint_every_iterations": 10},
    }
    path = tmp_path / "l1_plugin.yaml"
    path.write_text(yaml.safe_dump(spec))
    bad = dict(spec, methods=[{"name": "l1", "coeff": -1}])
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    refused = run_ftcl(tmp_path / "home", "validate", str(tmp_path / "bad.yaml"))
    assert refused.returncode == 2 and "methods.0.coeff" in refused.stderr
    result = run_ftcl(tmp_path / "home", "run", str(path), "--verbose")
    assert result.returncode == 0, result.stderr[-5000:]
    assert "Trial status" in result.stdout + result.stderr, "--verbose shows Tune's trial tables"
    client = mlflow_client(tmp_path / "home")
    experiment = client.get_experiment_by_name("l1_plugin")
    (run,) = [r for r in client.search_runs([experiment.experiment_id]) if r.data.tags["ftcl.stage"] == "finetune"]
    assert run.info.status == "FINISHED" and run.data.tags["method"] == "l1"
    penalty = client.get_metric_history(run.info.run_id, "learners/default_policy/retention_l1_penalty")
    assert penalty and max(p.value for p in penalty) > 0  # θ moved away from θ* and the term saw it
    monkeypatch.delenv("FTCL_METHOD_FILES")
    unknown = run_ftcl(tmp_path / "home", "validate", str(path))
    assert unknown.returncode == 2 and "unknown method 'l1'" in unknown.stderr
