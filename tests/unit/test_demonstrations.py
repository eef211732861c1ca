"""Pre-training with scripted-expert demonstrations: the expert on real Meta-World, the labels,
BC toward stored labels (`teacher_labels: dataset`), and the spec checks."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ftcl.envs.robotic_sequence import RoboticSequenceEnv, ScriptedExpert, scripted_policy_class_name
from ftcl.pretrain.demonstrations import SQUASH_EPSILON, collect_demonstrations, expert_distribution_inputs
from ftcl.retention.bc import BCMethod, BCTerm
from ftcl.retention.registry import parse_method
from ftcl.retention.term import TermInputs
from ftcl.spec import REPO_ROOT, SpecError, load_spec
from test_retention_terms import TinyActorCritic


def test_scripted_policy_names_follow_meta_world():
    assert scripted_policy_class_name("push-wall-v3") == "SawyerPushWallV3Policy"
    assert scripted_policy_class_name("peg-unplug-side") == "SawyerPegUnplugSideV3Policy"


def test_scripted_expert_solves_the_far_stages_with_noise():
    env = RoboticSequenceEnv({"start_stage": 2})
    data = collect_demonstrations(ScriptedExpert(env.stage_names), env, 1200, seed=0, action_noise=0.1,
                                  label_log_std=-2.0)
    # every episode ends by solving push-wall (terminated with the success bonus) or a time-out
    ends = np.flatnonzero(data["terminateds"] & (data["obs"][:, 39 + 3] == 1.0))
    assert len(ends) >= 4, "the noisy expert should finish several push-wall stages in 1,200 steps"
    stage_of_row = np.argmax(data["obs"][:, 39:43], axis=1)
    assert set(np.unique(stage_of_row)) == {2, 3}
    # labels are the noise-free expert actions; executed actions differ by the noise
    mean = data["action_dist_inputs"][:, :4]
    assert np.all(np.abs(np.tanh(mean)) <= 1.0 - SQUASH_EPSILON + 1e-6)
    assert np.allclose(data["action_dist_inputs"][:, 4:], -2.0)
    gap = np.abs(np.clip(np.tanh(mean), -1, 1) - data["actions"])
    assert 0.02 < float(gap.mean()) < 0.2


def test_scripted_expert_needs_a_policy_for_every_stage():
    with pytest.raises(ValueError, match="no-such-task"):
        ScriptedExpert(["push-wall-v3", "no-such-task-v3"])


def test_expert_distribution_inputs_clip_before_atanh():
    inputs = expert_distribution_inputs(np.array([1.0, -1.0, 0.0, 0.5], dtype=np.float32), label_log_std=-1.5)
    assert np.all(np.isfinite(inputs))
    assert np.tanh(inputs[0]) == pytest.approx(1.0 - SQUASH_EPSILON, abs=1e-6)
    assert np.tanh(inputs[3]) == pytest.approx(0.5, abs=1e-6)
    assert np.allclose(inputs[4:], -1.5)


def test_bc_with_dataset_labels_pulls_the_student_to_the_stored_labels():
    module = TinyActorCritic(obs_dim=3, out_dim=4, kind="diag_gaussian")  # [μ (2), log σ (2)]
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(64, 3)).astype(np.float32)
    labels = np.concatenate([0.5 * obs[:, :2], np.full((64, 2), -1.0)], axis=1).astype(np.float32)
    data = {"obs": obs, "action_dist_inputs": labels}
    term = BCMethod(coeff=1.0, buffer_size=64, batch_size=64, teacher_labels="dataset").build_term(0)
    term.prepare(module, data)
    assert torch.allclose(term.buffer_teacher_inputs, torch.as_tensor(labels)[torch.as_tensor(
        np.sort(np.random.default_rng(0).choice(64, 64, replace=False)))])
    optimizer = torch.optim.Adam(module.parameters(), lr=0.05)
    first = term.loss(TermInputs()).item()
    for _ in range(200):
        optimizer.zero_grad()
        term.loss(TermInputs()).backward()
        optimizer.step()
    assert first > 0.5  # the random init is far from the labels: the labels are not π*'s outputs
    assert term.loss(TermInputs()).item() < 0.1 * first


def test_bc_with_dataset_labels_needs_the_labels():
    term = BCTerm(1.0, teacher_labels="dataset")
    with pytest.raises((ValueError, KeyError), match="action_dist_inputs"):
        term.prepare(TinyActorCritic(3, 4, kind="diag_gaussian"), {"obs": np.zeros((10, 3), dtype=np.float32)})
    # the config says what it reads, so the data file is checked before a trial starts
    assert "action_dist_inputs" in BCMethod(teacher_labels="dataset").data_needs().keys
    with pytest.raises(ValueError, match="teacher_labels"):
        BCTerm(1.0, teacher_labels="student")  # type: ignore[arg-type]


def test_only_bc_with_dataset_labels_starts_without_pi_star():
    def needs_pretrained(method: dict) -> bool:
        return parse_method(method).starts_from_pretrained

    assert needs_pretrained({"name": "bc"}) and needs_pretrained({"name": "bc", "teacher_labels": "pretrained"})
    assert not needs_pretrained({"name": "bc", "teacher_labels": "dataset"})
    assert not needs_pretrained({"name": "scratch"}) and needs_pretrained({"name": "em"})
    assert all(needs_pretrained({"name": name}) for name in ("finetune", "l2", "ewc", "ks"))


def test_shipped_pretraining_spec_uses_demonstrations():
    spec = load_spec(REPO_ROOT / "tune_configs/robotic_sequence/pretrain.yaml")
    assert spec.pretrained.train.demonstrations is not None
    assert spec.pretrained.train.demonstrations.transitions >= 10_000


def test_demonstrations_need_an_env_with_a_scripted_expert(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: bad\nenv: {name: apple_retrieval}\nalgorithm: {name: ppo, model: linear_policy}\n"
        "pretrained: {train: {env_steps: 100, demonstrations: {transitions: 100}}}\n"
        "methods: [{name: finetune}]\nseeds: [0]\nbudget: {env_steps: 100}\n"
    )
    with pytest.raises(SpecError, match="scripted expert"):
        load_spec(str(path))
