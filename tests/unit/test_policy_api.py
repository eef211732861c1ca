"""`RetentionPolicyAPI` on the real RLModules, and the RLlib overrides that touch them.

For each module ftcl fine-tunes (RLlib's default PPO/APPO/SAC modules with the API, the paper's
SAC MLPs, the multi-head SAC module, the linear toy policy):
  * `policy_distribution_inputs(obs)` equals the module's own forward (`ACTION_DIST_INPUTS`,
    after `sampled_distribution_inputs` for SAC), with gradients;
  * actor and critic parameters are disjoint, exclude target/old copies, and with the targets
    cover every parameter of the module;
  * SAC: the inputs are what the action distribution samples from (RLlib's squashed Gaussian
    clamps log σ to [−5, 2]), so KL (BC, KS) and Fisher (EWC) are taken on that distribution.
Also: the PPO module's exploration forward stays in eval mode, and the fused gradient check of
the learners updates exactly as RLlib's `apply_gradients` does.
"""
from __future__ import annotations

import copy
import math
import os

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import gymnasium as gym
import numpy as np
import pytest
import torch

from ray.rllib.core.columns import Columns
from ray.rllib.core.distribution.torch.torch_distribution import TorchSquashedGaussian
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from ftcl.algorithms.appo import RetentionAPPOTorchRLModule
from ftcl.algorithms.ppo import RetentionPPOTorchRLModule
from ftcl.algorithms.sac import RetentionSACTorchRLModule
from ftcl.models.linear_policy import LinearPolicyModule
from ftcl.models.mlp_sac import MLPSACTorchRLModule
from ftcl.models.multihead_sac import MultiHeadSACModule, SquashedGaussian
from ftcl.retention.bc import BCMethod
from ftcl.retention.distributions import kl_divergence
from ftcl.retention.ewc import gaussian_policy_fisher
from ftcl.retention.ks import KSMethod
from ftcl.retention.policy_api import RetentionPolicyAPI
from ftcl.retention.term import TermInputs

OBS_SPACE = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
DISCRETE = gym.spaces.Discrete(3)
BOX_ACTIONS = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
NUM_HEADS = 3
MULTIHEAD_OBS_SPACE = gym.spaces.Box(
    low=np.array([-np.inf] * 5 + [0.0] * NUM_HEADS + [0.0], np.float32),
    high=np.array([np.inf] * 5 + [1.0] * NUM_HEADS + [1.0], np.float32),
)
"""[base obs (5) | stage one-hot (3) | t/T], the layout `MultiHeadSACModule` reads."""


def build(module_class: type, observation_space: gym.Space, action_space: gym.Space, **model_config):
    torch.manual_seed(0)
    module = RLModuleSpec(
        module_class=module_class, observation_space=observation_space, action_space=action_space,
        model_config=model_config,
    ).build()
    if hasattr(module, "make_target_networks"):
        module.make_target_networks()  # what the learner does: the copies exist next to the API's sets
    return module


def multihead_observations(count: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    base = torch.randn(count, 5, generator=generator)
    one_hot = torch.nn.functional.one_hot(torch.arange(count) % NUM_HEADS, NUM_HEADS).float()
    return torch.cat([base, one_hot, torch.rand(count, 1, generator=generator)], dim=-1)


MODULES = {
    "ppo": lambda: build(RetentionPPOTorchRLModule, OBS_SPACE, DISCRETE, fcnet_hiddens=[16, 16], vf_share_layers=False),
    "ppo_shared": lambda: build(RetentionPPOTorchRLModule, OBS_SPACE, DISCRETE, fcnet_hiddens=[16, 16], vf_share_layers=True),
    "ppo_box": lambda: build(RetentionPPOTorchRLModule, OBS_SPACE, BOX_ACTIONS, fcnet_hiddens=[16], vf_share_layers=False),
    "appo": lambda: build(RetentionAPPOTorchRLModule, OBS_SPACE, DISCRETE, fcnet_hiddens=[16], vf_share_layers=False),
    "appo_shared": lambda: build(RetentionAPPOTorchRLModule, OBS_SPACE, DISCRETE, fcnet_hiddens=[16], vf_share_layers=True),
    "sac": lambda: build(RetentionSACTorchRLModule, OBS_SPACE, BOX_ACTIONS, fcnet_hiddens=[16], twin_q=True),
    "sac_discrete": lambda: build(RetentionSACTorchRLModule, OBS_SPACE, DISCRETE, fcnet_hiddens=[16], twin_q=True),
    "mlp_sac": lambda: build(MLPSACTorchRLModule, OBS_SPACE, BOX_ACTIONS, fcnet_hiddens=[16, 16]),
    "multihead_sac": lambda: build(MultiHeadSACModule, MULTIHEAD_OBS_SPACE, BOX_ACTIONS, hidden_layers=2, hidden_size=16, base_obs_dim=5),
    "linear": lambda: build(LinearPolicyModule, OBS_SPACE, DISCRETE, init_std=0.5, vf_hiddens=[8]),
}

COPY_PREFIXES = {
    "appo": ("_old_encoder", "_old_pi"), "appo_shared": ("_old_encoder", "_old_pi"),
    "sac": ("target_",), "sac_discrete": ("target_",), "mlp_sac": ("target_",), "multihead_sac": ("target_",),
}
"""Target / old copies of each module (in neither the actor's nor the critics' parameters)."""

EXPECTED_KIND = {"ppo_box": "diag_gaussian", "sac": "diag_gaussian", "mlp_sac": "diag_gaussian",
                 "multihead_sac": "diag_gaussian"}


def observations_for(name: str, count: int = 7) -> torch.Tensor:
    if name == "multihead_sac":
        return multihead_observations(count)
    return torch.randn(count, 4, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", list(MODULES))
def test_policy_distribution_inputs_equal_the_modules_own_forward(name: str) -> None:
    module = MODULES[name]()
    assert isinstance(module, RetentionPolicyAPI)
    assert module.policy_distribution_kind == EXPECTED_KIND.get(name, "categorical")
    observations = observations_for(name)
    inputs = module.policy_distribution_inputs(observations)
    assert inputs.requires_grad  # terms backpropagate through it
    with torch.no_grad():
        for forward in (module.forward_inference, module.forward_exploration):
            raw = forward({Columns.OBS: observations})[Columns.ACTION_DIST_INPUTS]
            torch.testing.assert_close(inputs.detach(), module.sampled_distribution_inputs(raw), rtol=0, atol=1e-6)
    if name.startswith(("ppo", "appo", "linear")):  # no transform between the forward and the distribution
        assert torch.equal(module.sampled_distribution_inputs(raw), raw)


@pytest.mark.parametrize("vf_share_layers", [False, True])
def test_ppo_actor_forward_equals_rllib_forward_with_equal_gradients(vf_share_layers: bool) -> None:
    module = build(RetentionPPOTorchRLModule, OBS_SPACE, DISCRETE, fcnet_hiddens=[16, 16], vf_share_layers=vf_share_layers)
    observations = torch.randn(9, 4)
    fast = module.policy_distribution_inputs(observations)
    slow = module._forward({Columns.OBS: observations})[Columns.ACTION_DIST_INPUTS]
    assert torch.equal(fast, slow)
    actor = list(module.actor_parameters().values())
    fast_grads = torch.autograd.grad(fast.square().sum(), actor, allow_unused=True)
    slow_grads = torch.autograd.grad(slow.square().sum(), actor, allow_unused=True)
    for a, b in zip(fast_grads, slow_grads):
        assert a is not None and torch.equal(a, b)


@pytest.mark.parametrize("name", list(MODULES))
def test_actor_and_critic_parameters_are_disjoint_and_cover_the_module(name: str) -> None:
    module = MODULES[name]()
    actor, critic = module.actor_parameters(), module.critic_parameters()
    named = dict(module.named_parameters())
    assert actor and critic
    assert not set(actor) & set(critic)
    assert not {id(p) for p in actor.values()} & {id(p) for p in critic.values()}
    for part in (actor, critic):  # names are the module's own, mapping to its own tensors
        assert all(named[n] is p for n, p in part.items())
    copies = {n for n in named if n.startswith(COPY_PREFIXES.get(name, ("\0",)))}
    assert not copies & (set(actor) | set(critic))
    if name in COPY_PREFIXES:
        assert copies, "the module should hold target/old copies after make_target_networks"
    assert set(actor) | set(critic) | copies == set(named)
    # the actor is what the policy output depends on: every actor parameter gets a gradient,
    # no critic parameter does
    module.zero_grad(set_to_none=True)
    module.policy_distribution_inputs(observations_for(name)).square().sum().backward()
    assert all(p.grad is not None for p in actor.values()), [n for n, p in actor.items() if p.grad is None]
    assert all(p.grad is None for p in critic.values())


def test_ppo_actor_and_critic_follow_vf_share_layers() -> None:
    separate, shared = MODULES["ppo"](), MODULES["ppo_shared"]()
    assert {n.split(".")[0] for n in separate.actor_parameters()} == {"pi", "encoder"}
    assert all(n.startswith(("pi.", "encoder.actor_encoder.")) for n in separate.actor_parameters())
    assert all(n.startswith(("vf.", "encoder.critic_encoder.")) for n in separate.critic_parameters())
    # a shared trunk feeds π: it is the actor's, the critic keeps only its head
    assert any(n.startswith("encoder.") for n in shared.actor_parameters())
    assert all(n.startswith("vf.") for n in shared.critic_parameters())


def test_sac_modules_name_the_rllib_layout() -> None:
    for name in ("sac", "mlp_sac", "multihead_sac"):
        module = MODULES[name]()
        assert {n.split(".")[0] for n in module.actor_parameters()} == {"pi_encoder", "pi"}
        assert {n.split(".")[0] for n in module.critic_parameters()} == {"qf_encoder", "qf", "qf_twin_encoder", "qf_twin"}
    multihead = MODULES["multihead_sac"]()
    assert {f"pi.heads.{k}.weight" for k in range(NUM_HEADS)} <= set(multihead.actor_parameters())
    assert {f"qf_twin.heads.{k}.weight" for k in range(NUM_HEADS)} <= set(multihead.critic_parameters())


# ---------------------------------------------------------------- SAC: what the policy samples from
def _sac_with_log_std(module_class: type, raw_log_std: float, **model_config):
    """A SAC module whose `pi` head emits log σ = raw_log_std exactly (weights of those rows 0)."""
    module = build(module_class, OBS_SPACE, BOX_ACTIONS, **model_config)
    head = [layer for layer in module.pi.modules() if isinstance(layer, torch.nn.Linear)][-1]
    action_dim = BOX_ACTIONS.shape[0]
    with torch.no_grad():
        head.weight[action_dim:] = 0.0
        head.bias[action_dim:] = raw_log_std
    return module


@pytest.mark.parametrize("module_class, config", [
    (MLPSACTorchRLModule, {"fcnet_hiddens": [16, 16]}),
    (RetentionSACTorchRLModule, {"fcnet_hiddens": [16], "twin_q": True}),
])
@pytest.mark.parametrize("raw_log_std, sampled", [(-10.0, -5.0), (3.5, 2.0), (-1.25, -1.25)])
def test_sac_inputs_are_those_rllibs_squashed_gaussian_samples_from(module_class, config, raw_log_std, sampled) -> None:
    module = _sac_with_log_std(module_class, raw_log_std, **config)
    observations = torch.randn(5, 4)
    raw = module.forward_inference({Columns.OBS: observations})[Columns.ACTION_DIST_INPUTS]
    assert torch.all(raw[:, 2:] == raw_log_std)
    inputs = module.policy_distribution_inputs(observations)
    assert torch.all(inputs[:, 2:] == sampled)
    assert torch.equal(inputs[:, :2], raw[:, :2])  # μ untouched
    distribution = module.get_train_action_dist_cls().from_logits(raw)
    assert isinstance(distribution, TorchSquashedGaussian)
    torch.testing.assert_close(distribution._dist.scale.log(), inputs[:, 2:].detach())
    torch.testing.assert_close(distribution._dist.loc, inputs[:, :2].detach())


def test_multihead_sac_clamps_in_the_module_and_its_distribution_takes_it_as_is() -> None:
    module = build(MultiHeadSACModule, MULTIHEAD_OBS_SPACE, BOX_ACTIONS, hidden_layers=2, hidden_size=16, base_obs_dim=5,
                   log_std_bounds=[-7.0, 1.5])
    with torch.no_grad():
        for head in module.pi.heads:
            head.weight[2:] = 0.0
            head.bias[2:] = torch.tensor([-10.0, 4.0])
    inputs = module.policy_distribution_inputs(multihead_observations(4))
    assert torch.all(inputs[:, 2] == -7.0) and torch.all(inputs[:, 3] == 1.5)
    assert torch.equal(module.sampled_distribution_inputs(inputs), inputs)  # no second clamp (not to −5)
    assert module.get_train_action_dist_cls() is SquashedGaussian
    torch.testing.assert_close(SquashedGaussian.from_logits(inputs)._dist.scale.log(), inputs[:, 2:].detach())


def _gaussian_kl_by_hand(mean_p, log_std_p, mean_q, log_std_q) -> float:
    return (log_std_q - log_std_p) + (math.exp(2 * log_std_p) + (mean_p - mean_q) ** 2) / (2 * math.exp(2 * log_std_q)) - 0.5


def test_bc_and_ks_kl_are_taken_on_the_clamped_sac_distribution() -> None:
    """Issue item: KL on what the policy samples. π* emits log σ = −8, π_θ emits −10: RLlib's
    squashed Gaussian samples both with log σ = −5, so the σ part of the KL is 0; taken on the
    raw outputs it would be 2·(−2 + e⁴/2 − ½) ≈ 50."""
    student = _sac_with_log_std(MLPSACTorchRLModule, -8.0, fcnet_hiddens=[16, 16])  # holds θ* first
    teacher = copy.deepcopy(student).requires_grad_(False)  # KS's frozen π*
    observations = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
    bc = BCMethod(coeff=1.0, buffer_size=32, batch_size=16).build_term(0)
    bc.prepare(student, {"obs": observations.numpy()})  # labels π*(s): log σ −8, sampled as −5
    assert torch.all(bc.buffer_teacher_inputs[:, 2:] == -5.0)
    ks = KSMethod(coeff=1.0).build_term(0)
    ks.prepare(student, teacher=teacher)
    with torch.no_grad():  # fine-tuning moves π_θ's log σ to −10
        student.pi.bias[2:] = -10.0
    assert torch.all(student.policy_distribution_inputs(observations)[:, 2:] == -5.0)
    raw_kl = kl_divergence(
        teacher.forward_inference({Columns.OBS: observations})[Columns.ACTION_DIST_INPUTS],
        student.forward_inference({Columns.OBS: observations})[Columns.ACTION_DIST_INPUTS],
        "diag_gaussian",
    )
    torch.testing.assert_close(raw_kl, torch.full((32,), 2 * _gaussian_kl_by_hand(0, -8, 0, -10)))
    assert float(raw_kl.mean().detach()) > 40  # what a KL on the raw outputs would penalise

    assert bc.loss(TermInputs()).item() == 0.0
    # KS on the online batch: its own forward and the learner's (forward_train → sampled inputs)
    assert ks.loss(TermInputs(observations=observations)).item() == 0.0
    batch = {Columns.OBS: observations, Columns.ACTIONS: torch.zeros(32, 2), Columns.NEXT_OBS: observations}
    from_learner = student.sampled_distribution_inputs(student.forward_train(batch)[Columns.ACTION_DIST_INPUTS])
    assert ks.loss(TermInputs(observations=observations, student_distribution_inputs=from_learner)).item() == 0.0

    # with the means apart too, the KL is that of the clamped Gaussians: Σ_j Δμ²/(2σ²), σ = e⁻⁵
    with torch.no_grad():
        student.pi.bias[:2] += 0.01
    expected = 2 * _gaussian_kl_by_hand(0.0, -5.0, 0.01, -5.0)
    assert ks.loss(TermInputs(observations=observations)).item() == pytest.approx(expected, rel=1e-3)
    assert bc.loss(TermInputs()).item() == pytest.approx(expected, rel=1e-3)


def test_ewc_fisher_is_taken_on_the_clamped_sac_distribution() -> None:
    """F of a log σ clamped at −5 is 0 (floored); F of μ uses σ² = e⁻¹⁰, not the raw e⁻²⁰."""
    module = _sac_with_log_std(MLPSACTorchRLModule, -10.0, fcnet_hiddens=[16, 16])
    fisher = gaussian_policy_fisher(module, ["pi.weight", "pi.bias"], torch.randn(6, 4), floor=1e-5)
    torch.testing.assert_close(fisher["pi.bias"][2:], torch.full((2,), 1e-5))
    torch.testing.assert_close(fisher["pi.weight"][2:], torch.full_like(fisher["pi.weight"][2:], 1e-5))
    # ∂μ_j/∂b_j = 1: F(b_j) = 1/σ_j² with the clamped σ
    torch.testing.assert_close(fisher["pi.bias"][:2], torch.full((2,), math.exp(10.0)), rtol=1e-4, atol=0)


# ---------------------------------------------------------------- PPO env runner / learner bookkeeping
def test_ppo_forward_exploration_equals_rllib_and_stays_in_eval_mode() -> None:
    from ray.rllib.core.rl_module.torch.torch_rl_module import TorchRLModule

    module = MODULES["ppo"]()
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


def _small_ppo_config():
    from ftcl.algorithms.ppo import RetentionPPOConfig

    return (
        RetentionPPOConfig()
        .environment("CartPole-v1")
        .env_runners(num_env_runners=0, num_envs_per_env_runner=2)
        .learners(num_learners=0)
        .rl_module(model_config={"fcnet_hiddens": [16, 16], "fcnet_activation": "tanh", "vf_share_layers": False})
        .training(train_batch_size_per_learner=128, minibatch_size=32, num_epochs=2)
        .debugging(seed=0)
    )


def test_ppo_learner_fused_gradient_check_equals_rllib_apply_gradients_bitwise() -> None:
    import functools

    import ray
    from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
    from ray.rllib.core.learner.training_data import TrainingData

    from ftcl.algorithms.rllib_overrides import FusedGradientCheckMixin

    ray.init(address="local", num_cpus=1, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    algorithms = [_small_ppo_config().build_algo() for _ in range(2)]
    try:
        fused, reference = (algorithm.learner_group._learner for algorithm in algorithms)
        assert isinstance(fused, FusedGradientCheckMixin)
        assert type(fused._retention_module()) is RetentionPPOTorchRLModule
        reference.apply_gradients = functools.partial(PPOTorchLearner.apply_gradients, reference)
        before = {n: p.detach().clone() for n, p in fused._retention_module().named_parameters()}
        torch.manual_seed(0)
        episodes = algorithms[0].env_runner.sample(num_timesteps=128, random_actions=False)
        batch = fused._make_batch_if_necessary(TrainingData(episodes=episodes))
        for learner in (fused, reference):
            torch.manual_seed(1)
            np.random.seed(1)
            learner.update(batch=batch, minibatch_size=32, num_epochs=2, timesteps={"num_env_steps_sampled_lifetime": 128})
        a = dict(fused._retention_module().named_parameters())
        b = dict(reference._retention_module().named_parameters())
        assert any(not torch.equal(a[n], before[n]) for n in a)  # the updates did move the module
        for name in a:
            assert torch.equal(a[name], b[name]), name
    finally:
        for algorithm in algorithms:
            algorithm.stop()


def test_collected_data_stores_the_distribution_the_policy_samples_from() -> None:
    """π*'s data file keeps log σ as sampled (clamped), so BC toward stored labels is 0 at θ*."""
    from ftcl.pretrain.data import collect_policy_data

    env = gym.make("Pendulum-v1")
    module = RLModuleSpec(module_class=MLPSACTorchRLModule, observation_space=env.observation_space,
                          action_space=env.action_space, model_config={"fcnet_hiddens": [16, 16]}).build()
    with torch.no_grad():  # raw log σ = −10 everywhere; RLlib's squashed Gaussian samples with −5
        module.pi.weight[1:] = 0.0
        module.pi.bias[1:] = -10.0
    data = collect_policy_data(module, env, 50, seed=0)
    np.testing.assert_allclose(data["action_dist_inputs"][:, 1], -5.0)
    term = BCMethod(teacher_labels="dataset", buffer_size=50, batch_size=16).build_term(0)
    term.prepare(module, data)
    assert term.loss(TermInputs()).item() == pytest.approx(0.0, abs=1e-6)
