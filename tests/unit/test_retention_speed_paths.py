"""The faster retention paths compute what the straightforward computation computes.

* `anchored_squared_distance` (one fused autograd node, L2/EWC) vs the per-parameter loop:
  value to 1e-6, gradients equal;
* the actor-only distribution function for RLlib's PPO module vs `module._forward`: equal
  outputs and gradients (the critic encoder is skipped);
* BC with its minibatch run in the PPO actor forward of the RL batch
  (`RetentionPPOTorchRLModule._forward_train` + `BCTerm.extra_actor_observations`) vs a
  separate actor forward: equal module outputs, equal BC loss and gradients, and equal learner
  parameters and logged metrics after updates;
* term metrics logged once per `update()` equal the per-minibatch values of the last minibatch.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import DefaultPPOTorchRLModule
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from ftcl.algorithms.retention_learner import actor_distribution_function
from ftcl.algorithms.retention_learner import EXTRA_ACTOR_DIST_INPUTS, EXTRA_ACTOR_OBS
from ftcl.models.mlp_sac import MLPSACTorchRLModule
from ftcl.retention import PolicyHandle, TermInputs
from ftcl.retention.bc import BCTerm
from ftcl.retention.distributions import retention_kl
from ftcl.retention.l2 import (
    L2Term,
    anchored_squared_distance,
    anchored_squared_distance_reference,
)

TOLERANCE = {"rtol": 1e-6, "atol": 1e-6}


def random_parameters(seed: int) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    shapes = [(7, 5), (7,), (3, 7), (3,), (1,)]
    parameters = [torch.randn(shape, generator=generator).requires_grad_(True) for shape in shapes]
    anchors = [torch.randn(shape, generator=generator) for shape in shapes]
    weights = [torch.rand(shape, generator=generator) + 0.1 for shape in shapes]
    return parameters, anchors, weights


@pytest.mark.parametrize("weighted", [False, True])
def test_anchored_squared_distance_equals_the_parameter_loop(weighted: bool) -> None:
    parameters, anchors, weights = random_parameters(0)
    weights_or_none = weights if weighted else None
    reference = 3.0 * anchored_squared_distance_reference(parameters, anchors, weights_or_none)
    reference_grads = torch.autograd.grad(reference, parameters)
    fused = 3.0 * anchored_squared_distance(parameters, anchors, weights_or_none)
    fused_grads = torch.autograd.grad(fused, parameters)
    torch.testing.assert_close(fused, reference, **TOLERANCE)
    for fast, slow in zip(fused_grads, reference_grads):
        torch.testing.assert_close(fast, slow, rtol=0, atol=0)


def test_anchored_squared_distance_skips_parameters_without_grad() -> None:
    parameters, anchors, weights = random_parameters(1)
    parameters[1].requires_grad_(False)
    loss = anchored_squared_distance(parameters, anchors, weights)
    loss.backward()
    assert parameters[1].grad is None
    assert parameters[0].grad is not None


class _Policy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pi = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
        self.vf = nn.Linear(4, 1)


def _handle(policy: _Policy) -> PolicyHandle:
    return PolicyHandle(
        module=policy,
        distribution_inputs=policy.pi,
        distribution_kind="categorical",
        actor_parameter_names=[n for n, _ in policy.named_parameters() if n.startswith("pi.")],
        critic_parameter_names=[n for n, _ in policy.named_parameters() if n.startswith("vf.")],
    )


class _WeightedTerm(L2Term):
    """An anchored term with non-unit weights (the EWC path: w = Fisher)."""

    name = "weighted"

    def _importance_weights(self, student, data):  # type: ignore[override]
        generator = torch.Generator().manual_seed(3)
        return {n: torch.rand(v.shape, generator=generator) + 0.5 for n, v in self.anchor.items()}


@pytest.mark.parametrize("term_class", [L2Term, _WeightedTerm])
def test_l2_and_weighted_terms_equal_the_straightforward_penalty(term_class: type) -> None:
    torch.manual_seed(0)
    policy = _Policy()
    term = term_class(coeff=2.5, critic_coeff=0.5)
    term.prepare(_handle(policy))
    with torch.no_grad():
        for parameter in policy.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    actor_loss, critic_loss = term.losses(TermInputs())
    (actor_loss + critic_loss).backward()
    fused_grads = {n: p.grad.clone() for n, p in policy.named_parameters()}
    policy.zero_grad(set_to_none=True)

    def straightforward(names: list[str], coeff: float) -> torch.Tensor:
        named = dict(policy.named_parameters())
        total = None
        for name in names:
            value = (term.importance[name] * (named[name] - term.anchor[name]) ** 2).sum()
            total = value if total is None else total + value
        return coeff * total

    handle = _handle(policy)
    reference_actor = straightforward(handle.actor_parameter_names, 2.5)
    reference_critic = straightforward(handle.critic_parameter_names, 0.5)
    (reference_actor + reference_critic).backward()
    torch.testing.assert_close(actor_loss, reference_actor, **TOLERANCE)
    torch.testing.assert_close(critic_loss, reference_critic, **TOLERANCE)
    for name, parameter in policy.named_parameters():
        torch.testing.assert_close(fused_grads[name], parameter.grad, rtol=0, atol=0)
    assert term.metrics()[f"{term.name}_penalty"] == pytest.approx(float(reference_actor.detach()) / 2.5, rel=1e-6)


# ---------------------------------------------------------------- PPO actor-only forward
def test_ppo_actor_only_function_equals_module_forward() -> None:
    torch.manual_seed(0)
    env = gym.make("CartPole-v1")
    module = RLModuleSpec(
        module_class=DefaultPPOTorchRLModule,
        observation_space=env.observation_space,
        action_space=env.action_space,
        model_config={"fcnet_hiddens": [16, 16], "vf_share_layers": False},
    ).build()
    observations = torch.randn(9, 4)
    fast = actor_distribution_function(module)(observations)
    slow = module._forward({Columns.OBS: observations})[Columns.ACTION_DIST_INPUTS]
    assert torch.equal(fast, slow)
    fast_grads = torch.autograd.grad(fast.square().sum(), list(module.pi.parameters()) + list(module.encoder.actor_encoder.parameters()))
    slow_grads = torch.autograd.grad(slow.square().sum(), list(module.pi.parameters()) + list(module.encoder.actor_encoder.parameters()))
    for a, b in zip(fast_grads, slow_grads):
        assert torch.equal(a, b)


# ---------------------------------------------------------------- BC: states drawn before the forward
def _sac_module(seed: int = 0) -> MLPSACTorchRLModule:
    torch.manual_seed(seed)
    env = gym.make("Pendulum-v1")
    module = RLModuleSpec(
        module_class=MLPSACTorchRLModule,
        observation_space=env.observation_space,
        action_space=env.action_space,
        model_config={"fcnet_hiddens": [32, 32]},
    ).build()
    module.make_target_networks()
    return module


def _bc_term(module: MLPSACTorchRLModule) -> tuple[BCTerm, PolicyHandle]:
    handle = PolicyHandle(
        module=module,
        distribution_inputs=actor_distribution_function(module),
        distribution_kind="diag_gaussian",
        actor_parameter_names=[n for n, _ in module.named_parameters() if n.startswith("pi")],
    )
    term = BCTerm(coeff=1.5, buffer_size=64, batch_size=16, seed=3)
    term.prepare(handle, {"obs": np.random.default_rng(0).normal(size=(100, 3)).astype(np.float32)})
    with torch.no_grad():  # move θ away from θ* so the KL and its gradients are not zero
        for parameter in module.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return term, handle


def test_bc_loss_with_outputs_from_the_learner_equals_its_own_forward() -> None:
    module = _sac_module()
    term, handle = _bc_term(module)
    twin = BCTerm(coeff=1.5, buffer_size=64, batch_size=16, seed=3)
    twin.prepare(handle, {"obs": np.zeros((1, 3), dtype=np.float32)})
    twin.buffer_observations, twin.buffer_teacher_inputs = term.buffer_observations, term.buffer_teacher_inputs
    actor = [p for n, p in module.named_parameters() if n.startswith("pi")]
    for _ in range(3):  # the same draws in both: one randint per loss call
        extra = term.extra_actor_observations()
        given = term.loss(TermInputs(extra_student_distribution_inputs=handle.distribution_inputs(extra)))
        own = twin.loss(TermInputs())
        assert float(own.detach()) > 0 and torch.equal(given, own)
        for a, b in zip(torch.autograd.grad(given, actor), torch.autograd.grad(own, actor)):
            assert torch.equal(a, b)


def test_bc_penalty_is_the_kl_on_the_drawn_states() -> None:
    module = _sac_module()
    term, handle = _bc_term(module)
    extra = term.extra_actor_observations()
    indices = torch.randint(64, (16,), generator=torch.Generator().manual_seed(3))
    assert torch.equal(extra, term.buffer_observations[indices])
    penalty = term._penalty(TermInputs(extra_student_distribution_inputs=handle.distribution_inputs(extra)))
    expected = retention_kl(term.buffer_teacher_inputs[indices], handle.distribution_inputs(extra), "diag_gaussian").mean()
    torch.testing.assert_close(penalty, expected, rtol=0, atol=0)


# ---------------------------------------------------------------- PPO: BC in the actor forward
def _ppo_module(vf_share_layers: bool = False):
    from ftcl.algorithms.ppo import RetentionPPOTorchRLModule

    torch.manual_seed(0)
    env = gym.make("CartPole-v1")
    return RLModuleSpec(
        module_class=RetentionPPOTorchRLModule,
        observation_space=env.observation_space,
        action_space=env.action_space,
        model_config={"fcnet_hiddens": [16, 16], "fcnet_activation": "tanh", "vf_share_layers": vf_share_layers},
    ).build()


@pytest.mark.parametrize("vf_share_layers", [False, True])
def test_ppo_forward_with_extra_actor_states_equals_rllib_forward(vf_share_layers: bool) -> None:
    module = _ppo_module(vf_share_layers)
    observations, extra = torch.randn(12, 4), torch.randn(5, 4)
    plain = DefaultPPOTorchRLModule._forward_train(module, {Columns.OBS: observations})
    fused = module._forward_train({Columns.OBS: observations, EXTRA_ACTOR_OBS: extra})
    for key, value in plain.items():
        torch.testing.assert_close(fused[key], value, **TOLERANCE)
    if vf_share_layers:  # falls back to RLlib's forward; the term then runs the actor itself
        assert EXTRA_ACTOR_DIST_INPUTS not in fused
        return
    separate = actor_distribution_function(module)(extra)
    torch.testing.assert_close(fused[EXTRA_ACTOR_DIST_INPUTS], separate, **TOLERANCE)
    actor = list(module.pi.parameters()) + list(module.encoder.actor_encoder.parameters())
    fused_loss = fused[Columns.ACTION_DIST_INPUTS].square().sum() + fused[EXTRA_ACTOR_DIST_INPUTS].exp().sum()
    plain_loss = plain[Columns.ACTION_DIST_INPUTS].square().sum() + separate.exp().sum()
    for a, b in zip(torch.autograd.grad(fused_loss, actor), torch.autograd.grad(plain_loss, actor)):
        torch.testing.assert_close(a, b, **TOLERANCE)


def test_ppo_learner_updates_with_fused_bc_equal_unfused_updates(tmp_path) -> None:
    import ray
    from ray.rllib.core.learner.training_data import TrainingData

    from ftcl.algorithms import RetentionPPOConfig
    from ftcl.bench import make_pretrained_artifacts

    ray.init(address="local", num_cpus=1, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)

    def config():
        return (
            RetentionPPOConfig()
            .environment("CartPole-v1")
            .env_runners(num_env_runners=0)
            .learners(num_learners=0)
            .rl_module(model_config={"fcnet_hiddens": [16, 16], "fcnet_activation": "tanh", "vf_share_layers": False})
            .training(train_batch_size_per_learner=128, minibatch_size=32, num_epochs=1)
            .debugging(seed=0)
        )

    module_dir, data_path = make_pretrained_artifacts(config(), lambda: gym.make("CartPole-v1"), tmp_path, 200)
    method = {"name": "bc", "coeff": 1.0, "buffer_size": 128, "batch_size": 32}
    algorithms = [
        config().retention(method=method, pretrained_module_path=module_dir, retention_data_path=data_path).build_algo()
        for _ in range(2)
    ]
    try:
        fused, plain = (algorithm.learner_group._learner for algorithm in algorithms)
        assert type(fused._retention_module()).__name__ == "RetentionPPOTorchRLModule"
        plain._retention_module().supports_extra_actor_observations = False
        episodes = algorithms[0].env_runner.sample(num_timesteps=128, random_actions=False)
        batch = fused._make_batch_if_necessary(TrainingData(episodes=episodes))
        results = {}
        for name, learner in (("fused", fused), ("plain", plain)):
            torch.manual_seed(0)
            np.random.seed(0)
            results[name] = learner.update(batch=batch, minibatch_size=32, num_epochs=2,
                                           timesteps={"num_env_steps_sampled_lifetime": 100})
        a = dict(fused._retention_module().named_parameters())
        b = dict(plain._retention_module().named_parameters())
        for name in a:
            torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6)
        for key in ("retention_bc_loss", "retention_bc_penalty", "retention_bc_coeff"):
            assert float(results["fused"][DEFAULT_MODULE_ID][key]) == pytest.approx(
                float(results["plain"][DEFAULT_MODULE_ID][key]), rel=1e-5
            )
    finally:
        for algorithm in algorithms:
            algorithm.stop()


# ---------------------------------------------------------------- PPO env runner / learner bookkeeping
def _small_ppo_config():
    from ftcl.algorithms import RetentionPPOConfig

    return (
        RetentionPPOConfig()
        .environment("CartPole-v1")
        .env_runners(num_env_runners=0, num_envs_per_env_runner=2)
        .learners(num_learners=0)
        .rl_module(model_config={"fcnet_hiddens": [16, 16], "fcnet_activation": "tanh", "vf_share_layers": False})
        .training(train_batch_size_per_learner=128, minibatch_size=32, num_epochs=2)
        .debugging(seed=0)
    )


def test_ppo_forward_exploration_equals_rllib_and_stays_in_eval_mode() -> None:
    from ray.rllib.core.rl_module.torch.torch_rl_module import TorchRLModule

    module = _ppo_module()
    observations = torch.randn(6, 4)
    with torch.no_grad():
        reference = TorchRLModule.forward_exploration(module, {Columns.OBS: observations})
        assert module.training  # RLlib switches back to train mode
        fast = module.forward_exploration({Columns.OBS: observations})
    assert not module.training and not any(m.training for m in module.modules())
    for key, value in reference.items():
        assert torch.equal(fast[key], value)
    module.forward_train({Columns.OBS: observations})
    assert module.training and all(m.training for m in module.modules())


def test_timer_only_connector_pipelines_sample_the_same_episodes() -> None:
    import ray

    from ftcl.algorithms.fast_connectors import EnvToModulePipelineTimerOnly, ModuleToEnvPipelineTimerOnly

    ray.init(address="local", num_cpus=1, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    reference_algo = _small_ppo_config().build_algo()
    fast_algo = _small_ppo_config().throughput(per_connector_timers=False).build_algo()
    try:
        assert isinstance(fast_algo.env_runner._env_to_module, EnvToModulePipelineTimerOnly)
        assert isinstance(fast_algo.env_runner._module_to_env, ModuleToEnvPipelineTimerOnly)
        assert type(reference_algo.env_runner._env_to_module).__name__ == "EnvToModulePipeline"
        episodes = {}
        for name, algorithm in (("reference", reference_algo), ("fast", fast_algo)):
            torch.manual_seed(0)
            episodes[name] = algorithm.env_runner.sample(num_timesteps=200, random_actions=False)
        assert len(episodes["reference"]) == len(episodes["fast"])
        for a, b in zip(episodes["reference"], episodes["fast"]):
            np.testing.assert_array_equal(np.asarray(a.get_observations()), np.asarray(b.get_observations()))
            np.testing.assert_array_equal(np.asarray(a.get_actions()), np.asarray(b.get_actions()))
        def key_paths(tree, prefix=()):
            for key, value in tree.items():
                yield from key_paths(value, prefix + (key,)) if isinstance(value, dict) else [prefix + (key,)]

        fast_keys = set(key_paths(fast_algo.env_runner.get_metrics()))
        reference_keys = set(key_paths(reference_algo.env_runner.get_metrics()))
        dropped = reference_keys - fast_keys
        assert dropped and all(path[-3:-1] == ("timers", "connectors") for path in dropped), dropped
        assert fast_keys <= reference_keys
        assert any("connector_pipeline_timer" in path for path in fast_keys)
    finally:
        reference_algo.stop()
        fast_algo.stop()


def test_ppo_learner_fused_gradient_check_equals_rllib_apply_gradients_bitwise() -> None:
    import functools

    import ray
    from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
    from ray.rllib.core.learner.training_data import TrainingData

    ray.init(address="local", num_cpus=1, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    algorithms = [_small_ppo_config().build_algo() for _ in range(2)]
    try:
        fused, reference = (algorithm.learner_group._learner for algorithm in algorithms)
        reference.apply_gradients = functools.partial(PPOTorchLearner.apply_gradients, reference)
        torch.manual_seed(0)
        episodes = algorithms[0].env_runner.sample(num_timesteps=128, random_actions=False)
        batch = fused._make_batch_if_necessary(TrainingData(episodes=episodes))
        for learner in (fused, reference):
            torch.manual_seed(1)
            np.random.seed(1)
            learner.update(batch=batch, minibatch_size=32, num_epochs=2, timesteps={"num_env_steps_sampled_lifetime": 128})
        a = dict(fused._retention_module().named_parameters())
        b = dict(reference._retention_module().named_parameters())
        for name in a:
            assert torch.equal(a[name], b[name]), name
    finally:
        for algorithm in algorithms:
            algorithm.stop()
