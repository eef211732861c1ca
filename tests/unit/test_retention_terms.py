"""Retention terms in plain PyTorch: KL closed forms, Fisher, anchors, BC, KS, EM memory, gates."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from ftcl.retention import (
    BCTerm,
    EWCTerm,
    KSTerm,
    L2Term,
    PolicyHandle,
    ProtectedReplayMemory,
    TermInputs,
    TrainingGate,
    build_term,
    categorical_policy_fisher,
    gaussian_policy_fisher,
    kl_divergence,
    retention_kl,
)
from ftcl.retention.freezing import FreezeWindowRule


class TinyActorCritic(nn.Module):
    """Actor `pi_encoder` + `pi`, critic `vf`; `pi` outputs logits or [μ, log σ]."""

    def __init__(self, obs_dim: int, out_dim: int, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.pi_encoder = nn.Sequential(nn.Linear(obs_dim, 8), nn.Tanh())
        self.pi = nn.Linear(8, out_dim)
        self.vf = nn.Linear(obs_dim, 1)

    def distribution_inputs(self, obs: torch.Tensor) -> torch.Tensor:
        return self.pi(self.pi_encoder(obs))


def handle_for(module: TinyActorCritic, kind: str) -> PolicyHandle:
    names = [n for n, _ in module.named_parameters()]
    return PolicyHandle(
        module=module,
        distribution_inputs=module.distribution_inputs,
        distribution_kind=kind,  # type: ignore[arg-type]
        actor_parameter_names=[n for n in names if n.startswith("pi")],
        critic_parameter_names=[n for n in names if n.startswith("vf")],
    )


def perturb_(module: nn.Module, names: list[str], scale: float = 0.3, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if name in names:
                parameter.add_(scale * torch.randn(parameter.shape, generator=generator))


# ---------------------------------------------------------------- KL closed forms
def test_categorical_kl_matches_hand_computed_value_and_direction():
    p = torch.tensor([[0.5, 0.5]])
    q = torch.tensor([[0.9, 0.1]])
    kl_p_q = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    kl_q_p = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    # logits are defined up to a constant: shift them to make sure softmax is applied
    teacher_logits, student_logits = p.log() + 3.0, q.log() - 1.0
    assert kl_divergence(teacher_logits, student_logits, "categorical").item() == pytest.approx(kl_p_q, rel=1e-6)
    assert retention_kl(teacher_logits, student_logits, "categorical", "teacher_student").item() == pytest.approx(kl_p_q, rel=1e-6)
    assert retention_kl(teacher_logits, student_logits, "categorical", "student_teacher").item() == pytest.approx(kl_q_p, rel=1e-6)
    assert abs(kl_p_q - kl_q_p) > 0.1


def test_gaussian_kl_matches_hand_computed_value_and_direction():
    # two action dims: dim 0 N(0,1) vs N(1,2²); dim 1 N(0.5, 0.5²) vs N(0.5, 0.5²) (KL 0)
    teacher = torch.tensor([[0.0, 0.5, math.log(1.0), math.log(0.5)]])
    student = torch.tensor([[1.0, 0.5, math.log(2.0), math.log(0.5)]])
    kl_t_s = math.log(2.0 / 1.0) + (1.0**2 + (0.0 - 1.0) ** 2) / (2 * 2.0**2) - 0.5
    kl_s_t = math.log(1.0 / 2.0) + (2.0**2 + (1.0 - 0.0) ** 2) / (2 * 1.0**2) - 0.5
    assert retention_kl(teacher, student, "diag_gaussian").item() == pytest.approx(kl_t_s, rel=1e-6)
    assert retention_kl(teacher, student, "diag_gaussian", "student_teacher").item() == pytest.approx(kl_s_t, rel=1e-6)
    torch_kl = torch.distributions.kl_divergence(
        torch.distributions.Normal(teacher[:, :2], teacher[:, 2:].exp()),
        torch.distributions.Normal(student[:, :2], student[:, 2:].exp()),
    ).sum(-1)
    assert retention_kl(teacher, student, "diag_gaussian").item() == pytest.approx(torch_kl.item(), rel=1e-6)


# ---------------------------------------------------------------- Fisher
def test_gaussian_closed_form_fisher_matches_monte_carlo_score_fisher():
    """diag E_a[(∂ log π(a|s)/∂θ)²] by autograd on sampled actions ≈ the closed form."""
    module = TinyActorCritic(obs_dim=3, out_dim=4, seed=3)  # A = 2 action dims
    handle = handle_for(module, "diag_gaussian")
    observations = torch.randn(3, 3, generator=torch.Generator().manual_seed(0))
    closed = gaussian_policy_fisher(handle, handle.actor_parameter_names, observations, floor=0.0)

    params = {n: p.detach() for n, p in module.named_parameters() if n in handle.actor_parameter_names}

    def log_prob(parameters, obs, action):
        hidden = torch.tanh(obs @ parameters["pi_encoder.0.weight"].T + parameters["pi_encoder.0.bias"])
        out = hidden @ parameters["pi.weight"].T + parameters["pi.bias"]
        mean, log_std = out[:2], out[2:]
        return torch.distributions.Normal(mean, log_std.exp()).log_prob(action).sum()

    num_samples = 40_000
    estimate = {n: torch.zeros_like(p) for n, p in params.items()}
    generator = torch.Generator().manual_seed(1)
    for obs in observations:
        with torch.no_grad():
            out = module.distribution_inputs(obs.unsqueeze(0)).squeeze(0)
        actions = out[:2] + out[2:].exp() * torch.randn(num_samples, 2, generator=generator)
        grads = torch.func.vmap(torch.func.grad(log_prob), in_dims=(None, None, 0))(params, obs, actions)
        for name in estimate:
            estimate[name] += (grads[name] ** 2).mean(0) / len(observations)
    for name in estimate:
        torch.testing.assert_close(closed[name], estimate[name], rtol=0.08, atol=1e-3)


def test_gaussian_fisher_floor_is_applied():
    module = TinyActorCritic(obs_dim=3, out_dim=4)
    handle = handle_for(module, "diag_gaussian")
    with torch.no_grad():
        module.pi_encoder[0].weight[0].zero_()  # a row with zero gradient on obs = 0
    fisher = gaussian_policy_fisher(handle, handle.actor_parameter_names, torch.zeros(4, 3), floor=1e-5)
    assert fisher["pi_encoder.0.weight"].min().item() == pytest.approx(1e-5)


def test_categorical_per_sample_fisher_matches_a_loop_of_autograd_calls():
    module = TinyActorCritic(obs_dim=3, out_dim=4)
    handle = handle_for(module, "categorical")
    observations = torch.randn(6, 3, generator=torch.Generator().manual_seed(2))
    actions = torch.tensor([0, 1, 2, 3, 1, 0])
    fisher = categorical_policy_fisher(handle, handle.actor_parameter_names, observations, actions, chunk_size=4)
    expected = {n: torch.zeros_like(p) for n, p in module.named_parameters() if n.startswith("pi")}
    for obs, action in zip(observations, actions):
        module.zero_grad()
        torch.log_softmax(module.distribution_inputs(obs.unsqueeze(0)), -1)[0, action].backward()
        for name, parameter in module.named_parameters():
            if name in expected:
                expected[name] += parameter.grad**2 / len(observations)
    for name in expected:
        torch.testing.assert_close(fisher[name], expected[name])


# ---------------------------------------------------------------- anchors (L2, EWC)
@pytest.mark.parametrize("kind", ["categorical", "diag_gaussian"])
@pytest.mark.parametrize("term_name", ["l2", "ewc"])
def test_anchor_terms_are_zero_at_theta_star_and_pull_towards_it(term_name, kind):
    module = TinyActorCritic(obs_dim=3, out_dim=4)
    handle = handle_for(module, kind)
    data = {"obs": np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)}
    term = L2Term(2.0) if term_name == "l2" else EWCTerm(2.0, fisher_batches=2, fisher_batch_size=16)
    term.prepare(handle, data)
    assert term.loss(TermInputs()).item() == 0.0
    assert term.losses(TermInputs())[1] is None  # critic coefficient 0
    theta_star = {n: p.detach().clone() for n, p in module.named_parameters()}
    perturb_(module, handle.actor_parameter_names + handle.critic_parameter_names)
    loss = term.loss(TermInputs())
    assert loss.item() > 0
    module.zero_grad()
    loss.backward()
    for name, parameter in module.named_parameters():
        if name in handle.critic_parameter_names:
            assert parameter.grad is None  # critic coefficient 0: critic untouched
            continue
        displacement = parameter.detach() - theta_star[name]
        # ∂/∂θ λ·Σ w(θ−θ*)² = 2λ·w·(θ−θ*): a descent step moves θ towards θ*
        assert (parameter.grad * displacement).sum().item() > 0
        if term_name == "l2":
            torch.testing.assert_close(parameter.grad, 2 * 2.0 * displacement)
        else:
            torch.testing.assert_close(parameter.grad, 2 * 2.0 * term.importance[name] * displacement)


def test_l2_critic_coefficient_reaches_the_critic():
    module = TinyActorCritic(obs_dim=3, out_dim=2)
    handle = handle_for(module, "categorical")
    term = L2Term(1.0, critic_coeff=0.5)
    term.prepare(handle)
    perturb_(module, handle.critic_parameter_names)
    actor_loss, critic_loss = term.losses(TermInputs())
    assert actor_loss.item() == 0.0 and critic_loss is not None
    critic_loss.backward()
    assert module.vf.weight.grad is not None and module.vf.weight.grad.abs().sum() > 0
    assert term.metrics()["l2_critic_coeff"] == 0.5


# ---------------------------------------------------------------- BC
@pytest.mark.parametrize("kind", ["categorical", "diag_gaussian"])
def test_bc_is_zero_at_theta_star_and_moves_only_the_actor(kind):
    module = TinyActorCritic(obs_dim=3, out_dim=4)
    handle = handle_for(module, kind)
    data = {"obs": np.random.default_rng(0).normal(size=(100, 3)).astype(np.float32)}
    term = BCTerm(1.5, buffer_size=50, batch_size=32)
    term.prepare(handle, data)
    assert len(term.buffer_observations) == 50
    assert term.loss(TermInputs()).item() == pytest.approx(0.0, abs=1e-7)
    perturb_(module, handle.actor_parameter_names)
    loss = term.loss(TermInputs())
    assert loss.item() > 0
    loss.backward()
    assert module.pi.weight.grad.abs().sum() > 0 and module.vf.weight.grad is None
    metrics = term.metrics()
    assert metrics["bc_coeff"] == 1.5 and metrics["bc_loss"] == pytest.approx(1.5 * metrics["bc_penalty"])


def test_bc_loss_equals_mean_kl_on_its_own_minibatch_in_both_directions():
    module = TinyActorCritic(obs_dim=3, out_dim=3)
    handle = handle_for(module, "categorical")
    data = {"obs": np.random.default_rng(1).normal(size=(20, 3)).astype(np.float32)}
    for direction in ("teacher_student", "student_teacher"):
        term = BCTerm(1.0, buffer_size=20, batch_size=8, kl_direction=direction, seed=5)
        term.prepare(handle, data)
        teacher = term.buffer_teacher_inputs.clone()
        with torch.no_grad():
            module.pi.bias.add_(torch.tensor([1.0, -1.0, 0.0]))
        # BCTerm draws its minibatch from a torch.Generator seeded with `seed`
        expected_idx = torch.randint(20, (8,), generator=torch.Generator().manual_seed(5))
        student = module.distribution_inputs(term.buffer_observations[expected_idx])
        p, q = (teacher[expected_idx], student) if direction == "teacher_student" else (student, teacher[expected_idx])
        expected = (p.softmax(-1) * (p.log_softmax(-1) - q.log_softmax(-1))).sum(-1).mean()
        assert term.loss(TermInputs()).item() == pytest.approx(expected.item(), rel=1e-5)
        with torch.no_grad():
            module.pi.bias.sub_(torch.tensor([1.0, -1.0, 0.0]))


def test_bc_needs_states():
    term = BCTerm(1.0)
    with pytest.raises(ValueError, match="obs"):
        term.prepare(handle_for(TinyActorCritic(3, 2), "categorical"), {"actions": np.zeros(3)})


# ---------------------------------------------------------------- KS
def test_ks_uses_the_frozen_teacher_on_the_online_batch_with_mask():
    student = TinyActorCritic(obs_dim=3, out_dim=2, seed=0)
    teacher = TinyActorCritic(obs_dim=3, out_dim=2, seed=7)
    term = KSTerm(0.5, decay=0.9, floor=0.2)
    term.set_teacher(teacher.distribution_inputs)
    term.prepare(handle_for(student, "categorical"))
    obs = torch.randn(5, 3)
    mask = torch.tensor([True, True, False, True, False])
    loss = term.loss(TermInputs(observations=obs, mask=mask))
    kl = kl_divergence(teacher.distribution_inputs(obs), student.distribution_inputs(obs), "categorical")
    assert loss.item() == pytest.approx(0.5 * kl[mask].mean().item(), rel=1e-5)
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert student.pi.weight.grad is not None


def test_ks_coefficient_decays_per_optimizer_step_down_to_the_floor():
    term = KSTerm(0.75, decay=0.9, floor=0.33)
    expected = 0.75
    for _ in range(5):
        term.after_optimizer_steps(1)
        expected = max(0.33, expected * 0.9)
        assert term.coeff == pytest.approx(expected)
    term.after_optimizer_steps(3)
    assert term.coeff == pytest.approx(max(0.33, 0.75 * 0.9**8))
    term.after_optimizer_steps(100)
    assert term.coeff == pytest.approx(0.33)
    assert term.num_optimizer_steps == 108
    assert term.metrics()["ks_coeff"] == pytest.approx(0.33)


def test_build_term_from_method_dicts():
    assert build_term({"name": "finetune"}) is None
    assert build_term({"name": "em", "memory_size": 10}) is None
    ks = build_term({"name": "ks", "coeff": 0.75, "decay": 0.5, "floor": 0.1})
    assert isinstance(ks, KSTerm) and ks.coeff == 0.75 and ks.floor == 0.1
    assert isinstance(build_term({"name": "ewc", "fisher_labels": "argmax"}), EWCTerm)
    with pytest.raises(ValueError, match="critic"):
        build_term({"name": "bc", "critic_coeff": 1.0})


# ---------------------------------------------------------------- EM memory
def _transitions(start: int, count: int) -> dict[str, np.ndarray]:
    ids = np.arange(start, start + count, dtype=np.float32)
    return {
        "obs": ids[:, None],
        "actions": ids[:, None],
        "rewards": ids,
        "next_obs": ids[:, None] + 0.5,
        "terminateds": np.zeros(count, bool),
        "truncateds": np.zeros(count, bool),
    }


def test_protected_partition_survives_more_than_capacity_insertions():
    memory = ProtectedReplayMemory(capacity=100, protected_capacity=10, seed=0)
    memory.add_protected(_transitions(-10, 10))
    for chunk in range(30):  # 300 online transitions into a 90-slot ring
        memory.add(_transitions(chunk * 10, 10))
    assert memory.num_protected == 10 and memory.num_online == 90 and len(memory) == 100
    np.testing.assert_array_equal(np.sort(memory.protected["rewards"]), np.arange(-10, 0))
    assert set(memory.online["rewards"].astype(int)) == set(range(210, 300))  # FIFO kept the newest
    batch = memory.sample(5000)
    protected_rewards = batch["rewards"][batch["is_protected"]]
    assert np.all(protected_rewards < 0) and np.all(batch["rewards"][~batch["is_protected"]] >= 210)


@pytest.mark.parametrize("fraction, expected", [(None, 0.1), (0.5, 0.5)])
def test_memory_sample_proportions(fraction, expected):
    memory = ProtectedReplayMemory(capacity=100, protected_capacity=10, protected_fraction=fraction, seed=3)
    memory.add_protected(_transitions(-10, 10))
    memory.add(_transitions(0, 200))
    n = 20_000
    share = memory.sample(n)["is_protected"].mean()
    tolerance = 5 * math.sqrt(expected * (1 - expected) / n)  # 5 standard errors
    assert abs(share - expected) < tolerance


def test_memory_refuses_too_many_protected_transitions():
    memory = ProtectedReplayMemory(capacity=20, protected_capacity=5)
    with pytest.raises(ValueError, match="protected partition"):
        memory.add_protected(_transitions(0, 6))


# ---------------------------------------------------------------- training gate
def test_training_gate_phases_and_freeze_windows():
    gate = TrainingGate(
        [FreezeWindowRule(("encoder.actor_encoder",), from_env_step=0, until_env_step=500)],
        critic_warmup_env_steps=100,
        skip_train_env_steps=50,
    )
    names = ["encoder.actor_encoder.w", "encoder.actor_encoderX.w", "pi.w", "vf.w"]
    critic = ["vf.w"]
    assert gate.phase(0) == "skip" and gate.frozen_names(49, names, critic) == set(names)
    assert gate.phase(50) == "critic_warmup" and gate.frozen_names(149, names, critic) == set(names) - {"vf.w"}
    assert gate.frozen_names(150, names, critic) == {"encoder.actor_encoder.w"}
    assert gate.frozen_names(500, names, critic) == set()
    with pytest.raises(ValueError, match="matches no parameter"):
        TrainingGate([FreezeWindowRule(("encoder.nope",))]).check_module_paths(names)
