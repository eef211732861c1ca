"""RoboticSequence end to end: the shipped π* artifact (sha256 against its provenance, loads as the
multi-head SAC module, FAR success measured at export), the quickstart spec at a tiny budget with
real Meta-World, Ray, RLlib and MLflow, and demonstration-guided pre-training at a tiny budget."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from ftcl.data.retention_data import ALL_KEYS, load_retention_data
from ftcl.spec import REPO_ROOT, load_spec
from ftcl.tracking.store import sha256_of
from ftcl_cli import mlflow_client
from ftcl_cli import run_ftcl as ftcl

ARTIFACT = REPO_ROOT / "artifacts" / "robotic_sequence"
QUICKSTART = REPO_ROOT / "tune_configs" / "robotic_sequence" / "quickstart.yaml"
FAR_SUITES = ("stage_2_peg-unplug-side", "stage_3_push-wall")


def test_shipped_artifact_matches_its_provenance():
    provenance = json.loads((ARTIFACT / "provenance.json").read_text())
    assert provenance["sha256"]["module"] == sha256_of(ARTIFACT / "module")
    assert provenance["sha256"]["data.npz"] == sha256_of(ARTIFACT / "data.npz")
    assert provenance["env"] == "robotic_sequence" and provenance["env_options"]["start_stage"] == 2
    for suite in FAR_SUITES:  # measured at export, 20 episodes each: a π* worth fine-tuning
        assert provenance["success_per_evaluation_suite"][suite]["success"] >= 0.8


def test_shipped_artifact_loads_as_the_multihead_module():
    import torch
    from ray.rllib.core.columns import Columns
    from ray.rllib.core.rl_module.rl_module import RLModule

    from ftcl.models.multihead_sac import MultiHeadSACModule

    module = RLModule.from_checkpoint(str(ARTIFACT / "module"))
    assert isinstance(module, MultiHeadSACModule) and module.num_heads == 4
    data = load_retention_data(ARTIFACT / "data.npz")
    assert set(ALL_KEYS) <= set(data) and len(data["obs"]) == 10_000
    # π* collected its data on the FAR stages only: stage one-hots 2 and 3
    assert set(np.unique(np.argmax(data["obs"][:, 39:43], axis=1))) == {2, 3}
    with torch.no_grad():
        inputs = module.forward_inference({Columns.OBS: torch.as_tensor(data["obs"][:256])})[Columns.ACTION_DIST_INPUTS]
    assert np.allclose(inputs.numpy(), data["action_dist_inputs"][:256], atol=1e-4)


def test_quickstart_spec_validates_and_points_at_the_artifact():
    spec = load_spec(QUICKSTART)
    assert Path(spec.pretrained.module).resolve() == (ARTIFACT / "module").resolve()
    assert [m.display_name for m in spec.methods] == ["finetune", "bc"]
    assert set(FAR_SUITES) <= set(spec.evaluation.suites)


@pytest.mark.slow
def test_quickstart_runs_end_to_end_at_a_tiny_budget(tmp_path):
    home = tmp_path / "home"
    result = ftcl(
        home, "run", str(QUICKSTART),
        "--set", "budget.env_steps=400",
        "--set", "algorithm.options.num_steps_sampled_before_learning_starts=200",
        "--set", "evaluation.every_env_steps=200",
        "--set", "evaluation.episodes=1",
        "--set", "evaluation.video_every_env_steps=400",
        "--set", "evaluation.suites=[full, stage_2_peg-unplug-side, stage_3_push-wall]",
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    client = mlflow_client(home)
    experiment = client.get_experiment_by_name("robotic_sequence_quickstart")
    runs = [r for r in client.search_runs([experiment.experiment_id]) if r.data.tags.get("ftcl.stage") == "finetune"]
    assert sorted(r.data.tags["method"] for r in runs) == ["bc", "finetune"]
    provenance = json.loads((ARTIFACT / "provenance.json").read_text())
    for run in runs:
        assert run.data.tags["pretrained_sha256"] == provenance["sha256"]["module"]
        history = client.get_metric_history(run.info.run_id, "evaluation/stage_3_push-wall/success")
        assert [m.step for m in history][0] == 0 and max(m.step for m in history) >= 400
        likelihood = client.get_metric_history(run.info.run_id, "analysis/log_likelihood/stage_3_push-wall")
        assert likelihood and all(np.isfinite(m.value) for m in likelihood)
    bc_run = next(r for r in runs if r.data.tags["method"] == "bc")
    assert any(key.startswith("learners/default_policy/retention_bc") for key in bc_run.data.metrics)
    # training-time videos: one episode per suite at env step 0 (π*) and at the end
    for run in runs:
        steps = sorted(int(folder.path.split("/")[-1]) for folder in client.list_artifacts(run.info.run_id, "videos"))
        assert steps[0] == 0 and steps[-1] >= 400 and len(steps) == 2, steps
        last = [item.path.split("/")[-1] for item in client.list_artifacts(run.info.run_id, f"videos/{steps[-1]}")]
        assert "stage_3_push-wall_ep0.mp4" in last and "full_ep0.mp4" in last
    # `make run`'s report shows π*, finetune and bc on each FAR stage beside the curves
    report = ftcl(home, "report", str(QUICKSTART), "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr[-3000:]
    page = (tmp_path / "report" / "report.html").read_text()
    assert page.count("<video") == 6 and page.count('src="data:video/mp4;base64,') == 6
    videos = page[page.index("<h2>Videos</h2>"):]
    for stage in ("stage 2: peg-unplug-side (FAR)", "stage 3: push-wall (FAR)"):
        section = videos[videos.index(stage):]
        captions = [part.split("</figcaption>")[0] for part in section.split("<figcaption>")[1:4]]
        assert captions[0] == "π* (env step 0)" and captions[1].startswith("bc, env step ") and \
            captions[2].startswith("finetune, env step "), captions
    assert len(list((tmp_path / "report" / "videos" / "stage_3_push-wall").glob("*.mp4"))) == 3


@pytest.mark.slow
def test_pretraining_with_demonstrations_at_a_tiny_budget(tmp_path):
    home = tmp_path / "home"
    spec = {
        "name": "rs_demo_pretrain_tiny",
        "presets": ["sac_robotic_sequence"],
        "pretrained": {"train": {"env_options": {"start_stage": 2}, "env_steps": 600, "data_transitions": 200,
                                 "demonstrations": {"transitions": 500, "bc_coeff": 2.0}}},
        "algorithm": {"options": {"num_steps_sampled_before_learning_starts": 300}},
        "methods": [{"name": "finetune"}],
        "seeds": [0],
        "budget": {"env_steps": 1},
        "evaluation": {"suites": list(FAR_SUITES), "every_env_steps": 300, "episodes": 1},
    }
    spec_path = tmp_path / "pretrain.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "pi_star"
    result = ftcl(home, "pretrain", str(spec_path), "--out", str(out), timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    provenance = json.loads((out / "provenance.json").read_text())
    demonstrations = provenance["demonstrations"]
    assert demonstrations["transitions"] == 500 and demonstrations["method"]["coeff"] == 2.0
    (demo_file,) = home.glob("ray_results/rs_demo_pretrain_tiny_*/demonstrations/v0.npz")
    assert demonstrations["sha256"] == sha256_of(demo_file)
    assert len(load_retention_data(demo_file)["obs"]) == 500
    assert not (out / "demonstrations.npz").exists()  # the shipped folder holds π*'s own data only
    assert set(provenance["success_per_evaluation_suite"]) == set(FAR_SUITES)
    client = mlflow_client(home)
    experiment = client.get_experiment_by_name("rs_demo_pretrain_tiny")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.metrics["learners/default_policy/retention_bc_coeff"] == 2.0
