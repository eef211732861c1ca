"""Tests of the linear-logistic policy RLModule (the paper's 2-parameter AppleRetrieval policy)."""
from __future__ import annotations

import os

import gymnasium as gym
import numpy as np
import pytest
import torch

from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from ftcl.models.linear_policy import (
    LinearPolicyModule,
    action_probabilities,
    logistic_parameters,
)

ONE_D = gym.spaces.Box(low=-1.0, high=1.0, shape=(1,), dtype=np.float32)
TWO_ACTIONS = gym.spaces.Discrete(2)


def build(model_config: dict | None = None, observation_space=ONE_D, action_space=TWO_ACTIONS):
    spec = RLModuleSpec(
        module_class=LinearPolicyModule,
        observation_space=observation_space,
        action_space=action_space,
        model_config=model_config or {},
    )
    return spec.build()


def test_actor_has_exactly_w_and_b_per_action() -> None:
    module = build()
    actor_parameters = sum(p.numel() for p in module.pi.parameters())
    assert actor_parameters == 2 * (1 + 1)
    # default init: the uniform policy
    assert action_probabilities(module, np.array([[-1.0], [1.0]])) == pytest.approx(0.5)
    critic_sizes = [tuple(p.shape) for p in module.vf.parameters()]
    assert critic_sizes == [(32, 1), (32,), (1, 32), (1,)]


def test_critic_hiddens_and_init_options_apply() -> None:
    module = build({"vf_hiddens": [8, 4], "init_std": None, "init_bias": [0.0, 3.0]})
    assert [tuple(p.shape) for p in module.vf.parameters()] == [(8, 1), (8,), (4, 8), (4,), (1, 4), (1,)]
    assert module.pi.bias.tolist() == [0.0, 3.0]
    assert module.pi.weight.abs().sum() > 0  # torch's default init, not zeros
    with pytest.raises(ValueError, match="init_bias needs 2 values"):
        build({"init_bias": [1.0]})


def test_softmax_of_logits_equals_the_papers_logistic_policy() -> None:
    torch.manual_seed(0)
    module = build({"init_std": 1.0, "init_bias": [0.3, -0.7]})
    w, b = logistic_parameters(module)
    observations = np.array([[-2.0], [-0.1], [0.0], [0.1], [2.0]], dtype=np.float32)
    p_right = action_probabilities(module, observations)[:, 1]
    expected = 1.0 / (1.0 + np.exp(-(observations[:, 0] * w[0] + b)))
    assert p_right == pytest.approx(expected, rel=1e-5)
    assert b == pytest.approx(-1.0)


def test_forward_passes_and_values_have_rllib_shapes() -> None:
    module = build({"init_std": 0.5})
    batch = {Columns.OBS: torch.tensor([[0.5], [-0.5], [1.0]])}
    for forward in (module.forward_inference, module.forward_exploration, module.forward_train):
        logits = forward(batch)[Columns.ACTION_DIST_INPUTS]
        assert logits.shape == (3, 2)
    assert module.compute_values(batch).shape == (3,)


def test_actor_and_critic_share_no_parameters() -> None:
    module = build({"init_std": 0.5})
    batch = {Columns.OBS: torch.tensor([[0.5], [-0.5]])}
    module.compute_values(batch).sum().backward()
    assert all(p.grad is None for p in module.pi.parameters())
    assert all(p.grad is not None for p in module.vf.parameters())
    actor_ids = {id(p) for p in module.pi.parameters()}
    assert actor_ids.isdisjoint(id(p) for p in module.vf.parameters())


def test_rejects_spaces_it_cannot_handle() -> None:
    with pytest.raises(ValueError, match="1-D Box"):
        build(observation_space=gym.spaces.Box(-1.0, 1.0, shape=(2, 2)))
    with pytest.raises(ValueError, match="Discrete"):
        build(action_space=gym.spaces.Box(-1.0, 1.0, shape=(1,)))


@pytest.mark.slow
def test_ppo_learns_to_go_home_on_phase_two() -> None:
    """PPO with this module on AppleRetrieval(start_phase=2, M=5, c=1) learns 'left' at +c."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    from ray import tune
    from ray.rllib.algorithms.ppo import PPOConfig

    from ftcl.envs.registry import get_env_entry

    ray.init(address="local", num_cpus=1, include_dashboard=False, ignore_reinit_error=True)
    tune.register_env("apple_retrieval", get_env_entry("apple_retrieval").creator())
    config = (
        PPOConfig()
        .environment(
            "apple_retrieval",
            env_config={"apple_distance": 5, "observation_scale": 1.0, "start_phase": 2},
        )
        .env_runners(num_env_runners=0)
        .training(
            train_batch_size_per_learner=400,
            minibatch_size=100,
            num_epochs=10,
            lr=0.03,
            gamma=0.9,
        )
        .rl_module(rl_module_spec=RLModuleSpec(module_class=LinearPolicyModule, model_config={}))
        .debugging(seed=0)
    )
    algo = config.build_algo()
    try:
        first_length = None
        for _ in range(6):
            result = algo.train()
            if first_length is None:
                first_length = result["env_runners"]["episode_len_mean"]
        p_left_far = action_probabilities(algo.get_module(), np.array([[1.0]]))[0, 0]
        last_length = result["env_runners"]["episode_len_mean"]
        # the env runner's copy (used for sampling) got the trained weights too
        runner_module = algo.env_runner.module
        runner_p_left = action_probabilities(runner_module, np.array([[1.0]]))[0, 0]
    finally:
        algo.stop()
        ray.shutdown()
    print(f"P(left|+c)={p_left_far:.3f} episode_len_mean {first_length:.1f} -> {last_length:.1f}")
    assert result["num_env_steps_sampled_lifetime"] == 2400
    assert p_left_far > 0.9
    assert runner_p_left == pytest.approx(p_left_far, abs=1e-5)
    assert last_length < first_length
    assert last_length < 8.0  # 5 steps is optimal from x = M = 5; a random walk takes ~60
