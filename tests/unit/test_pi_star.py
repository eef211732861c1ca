"""π* is the whole agent: the shipped checkpoint holds actor, critics and α; a fine-tuning trial
starts from all of them (targets follow the critics); a checkpoint that lacks a part, is truncated
or bare is refused with a message naming what is wrong — by the loader and by `ftcl validate`."""
from __future__ import annotations

import json
import math
import os
import pickle
import shutil

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import gymnasium as gym
import numpy as np
import pytest
import ray
import torch
import yaml

from ray.rllib.core import DEFAULT_MODULE_ID

from ftcl.algorithms.pi_star import AGENT_FILE, STATE_FILE, load_pi_star_into, read_pi_star, save_pi_star
from ftcl.algorithms.sac import RetentionSACConfig
from ftcl.plan import TrialPlan
from ftcl.spec import REPO_ROOT, SpecError, load_spec
from ftcl.trial_config import build_algorithm_config, register_envs

ARTIFACT = REPO_ROOT / "artifacts" / "robotic_sequence"
QUICKSTART = REPO_ROOT / "tune_configs" / "robotic_sequence" / "quickstart.yaml"


@pytest.fixture(scope="module")
def ray_session():
    ray.init(address="local", num_cpus=1, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    yield
    ray.shutdown()


def pendulum_module():
    env = gym.make("Pendulum-v1")
    config = RetentionSACConfig().environment("Pendulum-v1").rl_module(model_config={"fcnet_hiddens": [8]})
    spec = config.get_rl_module_spec(env=env)
    spec.observation_space, spec.action_space = env.observation_space, env.action_space
    return spec.build()


@pytest.fixture()
def small_pi_star(tmp_path):
    torch.manual_seed(0)
    return save_pi_star(pendulum_module(), tmp_path / "pi_star", log_alpha=-2.0)


# ---------------------------------------------------------------- the shipped π*
def test_shipped_pi_star_holds_actor_critics_and_alpha():
    pi_star = read_pi_star(ARTIFACT / "module", needs_critics=True, needs_alpha=True)
    actor, critics = pi_star.parts["actor"], pi_star.parts["critics"]
    assert any(n.startswith("pi.") for n in actor) and any(n.startswith("pi_encoder.") for n in actor)
    for network in ("qf.", "qf_encoder.", "qf_twin.", "qf_twin_encoder."):
        assert any(n.startswith(network) for n in critics), network
    assert not any(n.startswith("target_") for n in pi_star.state)  # targets follow their networks
    assert 0.0 < math.exp(pi_star.log_alpha) < 1.0  # pre-training lowered α from RLlib's 1.0
    provenance = json.loads((ARTIFACT / "provenance.json").read_text())
    assert provenance["contents"] == pi_star.contents()


def test_finetuning_starts_from_the_whole_pi_star(ray_session):
    """At env step 0 the learner's actor, critics (and targets) and α equal π*'s; the EnvRunner's actor too."""
    register_envs()
    spec = load_spec(QUICKSTART)
    pi_star = read_pi_star(spec.pretrained.module)
    plan = TrialPlan(key="finetune_s0", stage="finetune", method="finetune", seed=0, variant_index=0, variant={})
    for initial_alpha, expected_alpha in (("from_pretrained", math.exp(pi_star.log_alpha)), (0.5, 0.5)):
        trial = spec.with_overrides({"pretrained.initial_alpha": initial_alpha,
                                     "algorithm.num_env_runners": 0})
        algo = build_algorithm_config(trial, plan, spec.pretrained.module, spec.pretrained.data).build_algo()
        try:
            learner = algo.learner_group._learner
            state = learner.module[DEFAULT_MODULE_ID].unwrapped().state_dict()
            for name, value in pi_star.state.items():
                np.testing.assert_array_equal(state[name].cpu().numpy(), value, err_msg=name)
            for name in state:
                if name.startswith("target_"):
                    np.testing.assert_array_equal(state[name].cpu().numpy(), pi_star.state[name[len("target_"):]])
            alpha = float(torch.exp(learner.curr_log_alpha[DEFAULT_MODULE_ID]).item())
            assert alpha == pytest.approx(expected_alpha, rel=1e-6)
            runner_state = algo.get_module().state_dict()
            for name in pi_star.parts["actor"]:
                np.testing.assert_array_equal(runner_state[name].cpu().numpy(), pi_star.state[name])
        finally:
            algo.stop()


# ---------------------------------------------------------------- refused checkpoints
def test_bare_rlmodule_checkpoint_is_refused(tmp_path):
    pendulum_module().save_to_path(tmp_path / "bare")  # what export wrote before: no agent.json
    with pytest.raises(ValueError, match="bare RLModule checkpoint"):
        read_pi_star(tmp_path / "bare")


def test_truncated_checkpoints_are_refused(small_pi_star, tmp_path):
    # the state file cut short
    cut = tmp_path / "cut"
    shutil.copytree(small_pi_star, cut)
    data = (cut / STATE_FILE).read_bytes()
    (cut / STATE_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="module_state.pkl is unreadable"):
        read_pi_star(cut)
    # the critics' tensors removed from the state file: agent.json still lists them
    no_critics = tmp_path / "no_critics"
    shutil.copytree(small_pi_star, no_critics)
    state = pickle.loads((no_critics / STATE_FILE).read_bytes())
    critics = read_pi_star(small_pi_star).parts["critics"]
    (no_critics / STATE_FILE).write_bytes(pickle.dumps({k: v for k, v in state.items() if k not in critics}))
    with pytest.raises(ValueError, match=r"truncated: .*critics: qf"):
        read_pi_star(no_critics)
    # consistently actor-only (state and agent.json): refused where critics are needed, and by the module
    manifest = json.loads((no_critics / AGENT_FILE).read_text())
    manifest["parts"]["critics"] = []
    (no_critics / AGENT_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="holds no critic tensors"):
        read_pi_star(no_critics, needs_critics=True)
    with pytest.raises(ValueError, match=r"lacks critics: qf"):
        load_pi_star_into(pendulum_module(), read_pi_star(no_critics))
    # no α where SAC takes π*'s
    manifest["log_alpha"] = None
    (no_critics / AGENT_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="no SAC temperature"):
        read_pi_star(no_critics, needs_alpha=True)


def test_another_architecture_is_refused(small_pi_star):
    env = gym.make("Pendulum-v1")
    config = RetentionSACConfig().environment("Pendulum-v1").rl_module(model_config={"fcnet_hiddens": [16]})
    spec = config.get_rl_module_spec(env=env)
    spec.observation_space, spec.action_space = env.observation_space, env.action_space
    with pytest.raises(ValueError, match="shapes differ"):
        load_pi_star_into(spec.build(), read_pi_star(small_pi_star))


def test_load_sets_targets_to_their_networks(small_pi_star):
    module = pendulum_module()
    module.make_target_networks()
    load_pi_star_into(module, read_pi_star(small_pi_star))
    for network, target in module.get_target_network_pairs():
        for (_, p), (_, q) in zip(network.state_dict().items(), target.state_dict().items()):
            assert torch.equal(p, q)


def test_validate_refuses_a_spec_whose_pi_star_lacks_critics(tmp_path):
    bare = tmp_path / "bare"
    pendulum_module().save_to_path(bare)
    raw = yaml.safe_load(QUICKSTART.read_text())
    raw["pretrained"] = {"module": str(bare), "data": str(ARTIFACT / "data.npz")}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError, match="pretrained.module: .*bare RLModule checkpoint"):
        load_spec(path)
    raw["pretrained"]["initial_alpha"] = 0
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError, match="initial_alpha"):
        load_spec(path)


def test_ppo_pi_star_carries_its_value_head(tmp_path):
    """The same rule for PPO/APPO: the value head is π*'s critic part, and a π* without it is refused."""
    from ftcl.algorithms.ppo import RetentionPPOConfig

    env = gym.make("CartPole-v1")
    config = RetentionPPOConfig().environment("CartPole-v1").rl_module(model_config={"fcnet_hiddens": [8]})
    spec = config.get_rl_module_spec(env=env)
    spec.observation_space, spec.action_space = env.observation_space, env.action_space
    module = spec.build()
    pi_star = read_pi_star(save_pi_star(module, tmp_path / "ppo"), needs_critics=True)
    assert pi_star.log_alpha is None and pi_star.parts["critics"]
    critics = pi_star.parts["critics"]  # the value head and, in RLlib's default PPO module, its encoder
    assert any(n.startswith("vf.") for n in critics)
    assert all(n.startswith(("vf.", "encoder.critic_encoder.")) for n in critics), critics
    manifest = json.loads((tmp_path / "ppo" / AGENT_FILE).read_text())
    state = pickle.loads((tmp_path / "ppo" / STATE_FILE).read_bytes())
    for name in manifest["parts"]["critics"]:
        del state[name]
    manifest["parts"]["critics"] = []
    (tmp_path / "ppo" / STATE_FILE).write_bytes(pickle.dumps(state))
    (tmp_path / "ppo" / AGENT_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="holds no critic tensors"):
        read_pi_star(tmp_path / "ppo", needs_critics=True)
    with pytest.raises(ValueError, match="lacks critics: "):
        load_pi_star_into(spec.build(), read_pi_star(tmp_path / "ppo"))


# ---------------------------------------------------------------- integrity (issue 11, item 4)
def test_a_save_that_dies_midway_leaves_no_pi_star(tmp_path, monkeypatch):
    module = pendulum_module()
    original = type(module).save_to_path

    def dies_after_the_state(self, path, state=None, **kwargs):
        original(self, path, state=state, **kwargs)
        raise KeyboardInterrupt  # the process is stopped before agent.json is written

    monkeypatch.setattr(type(module), "save_to_path", dies_after_the_state)
    with pytest.raises(KeyboardInterrupt):
        save_pi_star(module, tmp_path / "pi_star", log_alpha=-1.0)
    assert not (tmp_path / "pi_star").exists()
    with pytest.raises(ValueError, match="is not a directory"):
        read_pi_star(tmp_path / "pi_star")
    monkeypatch.undo()
    save_pi_star(module, tmp_path / "pi_star", log_alpha=-1.0)  # the next save replaces the leftover
    assert read_pi_star(tmp_path / "pi_star").log_alpha == -1.0
    assert not (tmp_path / "pi_star.partial").exists()


def test_tampered_or_truncated_artifact_files_are_refused(tmp_path):
    from ftcl.data.integrity import verify_artifact_files

    copy = tmp_path / "artifact"
    shutil.copytree(ARTIFACT, copy)
    assert verify_artifact_files(copy / "module", copy / "data.npz") == [copy / "module", copy / "data.npz"]
    state = bytearray((copy / "module" / STATE_FILE).read_bytes())
    state[len(state) // 2] ^= 0x01  # one bit of one weight: still a readable pickle
    (copy / "module" / STATE_FILE).write_bytes(bytes(state))
    read_pi_star(copy / "module")  # unpickles fine: only the checksum sees it
    with pytest.raises(ValueError, match=r"module does not match its provenance"):
        verify_artifact_files(copy / "module", copy / "data.npz")
    data = (copy / "data.npz").read_bytes()
    (copy / "data.npz").write_bytes(data[:-10])
    with pytest.raises(ValueError, match=r"data\.npz does not match its provenance"):
        verify_artifact_files(copy / "data.npz")
    # a π* saved by hand (no provenance.json beside it) has nothing to be checked against
    assert verify_artifact_files(save_pi_star(pendulum_module(), tmp_path / "by_hand")) == []
