"""Retention terms in plain PyTorch: KL closed forms, Fisher, anchors, BC, KS, the method configs
and their declarations, EM's mixing rule, gates. Policies are tiny modules implementing
`RetentionPolicyAPI` (the RLlib modules' API is tested in test_policy_api.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch import nn

from ftcl.retention.bc import BCMethod, BCTerm
from ftcl.retention.distributions import kl_divergence, retention_kl
from ftcl.retention.em import EMMethod, split_sample_counts
from ftcl.retention.ewc import EWCMethod, EWCTerm, categorical_policy_fisher, gaussian_policy_fisher
from ftcl.retention.freezing import FreezeWindowRule, TrainingGate
from ftcl.retention.ks import KSMethod, KSTerm
from ftcl.retention.l2 import L2Method, L2Term
from ftcl.retention.method import ProtectedReplay, RetentionMethod
from ftcl.retention.policy_api import RetentionPolicyAPI, named_subset
from ftcl.retention.registry import METHOD_NAMES, METHODS, parse_method
from ftcl.retention.term import TermInputs


class TinyActorCritic(nn.Module, RetentionPolicyAPI):
    """Actor `pi_encoder` + `pi`, critic `vf`; `pi` outputs logits or [μ, log σ] (by `kind`)."""

    def __init__(self, obs_dim: int, out_dim: int, seed: int = 0, kind: str = "categorical") -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.pi_encoder = nn.Sequential(nn.Linear(obs_dim, 8), nn.Tanh())
        self.pi = nn.Linear(8, out_dim)
        self.vf = nn.Linear(obs_dim, 1)
        self.kind = kind

    @property
    def policy_distribution_kind(self):  # type: ignore[override]
        return self.kind

    def actor_parameters(self) -> dict[str, nn.Parameter]:
        return named_subset(self, ("pi_encoder", "pi"))

    def critic_parameters(self) -> dict[str, nn.Parameter]:
        return named_subset(self, ("vf",))

    def policy_distribution_inputs(self, observations: torch.Tensor, state=None) -> torch.Tensor:
        return self.pi(self.pi_encoder(observations))


ACTOR_NAMES = ["pi_encoder.0.weight", "pi_encoder.0.bias", "pi.weight", "pi.bias"]
CRITIC_NAMES = ["vf.weight", "vf.bias"]


def perturb_(module: nn.Module, names: list[str], scale: float = 0.3, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if name in names:
                parameter.add_(scale * torch.randn(parameter.shape, generator=generator))


def test_tiny_policy_names_its_actor_and_critic():
    module = TinyActorCritic(3, 2)
    assert list(module.actor_parameters()) == ACTOR_NAMES  # "pi" does not swallow "pi_encoder"
    assert list(module.critic_parameters()) == CRITIC_NAMES


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


def test_kl_refuses_odd_gaussian_inputs_and_unknown_names():
    with pytest.raises(ValueError, match="even last dimension"):
        kl_divergence(torch.zeros(1, 3), torch.zeros(1, 3), "diag_gaussian")
    with pytest.raises(ValueError, match="unknown distribution kind"):
        kl_divergence(torch.zeros(1, 2), torch.zeros(1, 2), "beta")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown KL direction"):
        retention_kl(torch.zeros(1, 2), torch.zeros(1, 2), "categorical", "both")  # type: ignore[arg-type]


# ---------------------------------------------------------------- Fisher
def test_gaussian_closed_form_fisher_matches_monte_carlo_score_fisher():
    """diag E_a[(∂ log π(a|s)/∂θ)²] by autograd on sampled actions ≈ the closed form."""
    module = TinyActorCritic(obs_dim=3, out_dim=4, seed=3, kind="diag_gaussian")  # A = 2 action dims
    observations = torch.randn(3, 3, generator=torch.Generator().manual_seed(0))
    closed = gaussian_policy_fisher(module, ACTOR_NAMES, observations, floor=0.0)
    assert set(closed) == set(ACTOR_NAMES)

    params = {n: p.detach() for n, p in module.actor_parameters().items()}

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
            out = module.policy_distribution_inputs(obs.unsqueeze(0)).squeeze(0)
        actions = out[:2] + out[2:].exp() * torch.randn(num_samples, 2, generator=generator)
        grads = torch.func.vmap(torch.func.grad(log_prob), in_dims=(None, None, 0))(params, obs, actions)
        for name in estimate:
            estimate[name] += (grads[name] ** 2).mean(0) / len(observations)
    for name in estimate:
        torch.testing.assert_close(closed[name], estimate[name], rtol=0.08, atol=1e-3)


def test_gaussian_fisher_floor_is_applied():
    module = TinyActorCritic(obs_dim=3, out_dim=4, kind="diag_gaussian")
    with torch.no_grad():
        module.pi_encoder[0].weight[0].zero_()  # a row with zero gradient on obs = 0
    fisher = gaussian_policy_fisher(module, ACTOR_NAMES, torch.zeros(4, 3), floor=1e-5)
    assert fisher["pi_encoder.0.weight"].min().item() == pytest.approx(1e-5)


def test_categorical_per_sample_fisher_matches_a_loop_of_autograd_calls():
    module = TinyActorCritic(obs_dim=3, out_dim=4)
    observations = torch.randn(6, 3, generator=torch.Generator().manual_seed(2))
    actions = torch.tensor([0, 1, 2, 3, 1, 0])
    fisher = categorical_policy_fisher(module, ACTOR_NAMES, observations, actions, chunk_size=4)
    expected = {n: torch.zeros_like(p) for n, p in module.actor_parameters().items()}
    for obs, action in zip(observations, actions):
        module.zero_grad()
        torch.log_softmax(module.policy_distribution_inputs(obs.unsqueeze(0)), -1)[0, action].backward()
        for name, parameter in module.named_parameters():
            if name in expected:
                expected[name] += parameter.grad**2 / len(observations)
    for name in expected:
        torch.testing.assert_close(fisher[name], expected[name])


@pytest.mark.parametrize("labels", ["argmax", "dataset"])
def test_ewc_categorical_fisher_uses_the_configured_labels(labels):
    module = TinyActorCritic(obs_dim=3, out_dim=3)
    rng = np.random.default_rng(4)
    data = {"obs": rng.normal(size=(8, 3)).astype(np.float32), "actions": rng.integers(3, size=8)}
    term = EWCTerm(1.0, fisher_labels=labels, fisher_batches=1, fisher_batch_size=8, seed=0)
    term.prepare(module, data)
    observations = torch.as_tensor(data["obs"])  # all 8 rows (in some order: the mean does not care)
    with torch.no_grad():
        argmax = module.policy_distribution_inputs(observations).argmax(-1)
    actions = argmax if labels == "argmax" else torch.as_tensor(data["actions"])
    expected = categorical_policy_fisher(module, ACTOR_NAMES, observations, actions)
    assert set(term.importance) == set(ACTOR_NAMES)
    for name in ACTOR_NAMES:
        torch.testing.assert_close(term.importance[name], expected[name])
    assert term.metrics()["ewc_fisher_mean"] == pytest.approx(
        float(torch.cat([f.flatten() for f in expected.values()]).mean()), rel=1e-5
    )


# ---------------------------------------------------------------- anchors (L2, EWC)
@pytest.mark.parametrize("kind", ["categorical", "diag_gaussian"])
@pytest.mark.parametrize("term_name", ["l2", "ewc"])
def test_anchor_terms_are_zero_at_theta_star_and_pull_towards_it(term_name, kind):
    module = TinyActorCritic(obs_dim=3, out_dim=4, kind=kind)
    data = {"obs": np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)}
    term = L2Term(2.0) if term_name == "l2" else EWCTerm(2.0, fisher_batches=2, fisher_batch_size=16)
    term.prepare(module, data)
    assert term.loss(TermInputs()).item() == 0.0
    assert term.critic_loss() is None  # critic coefficient 0
    assert set(term.anchor) == set(ACTOR_NAMES)
    theta_star = {n: p.detach().clone() for n, p in module.named_parameters()}
    perturb_(module, ACTOR_NAMES + CRITIC_NAMES)
    loss = term.loss(TermInputs())
    assert loss.item() > 0
    module.zero_grad()
    loss.backward()
    for name, parameter in module.named_parameters():
        if name in CRITIC_NAMES:
            assert parameter.grad is None  # critic coefficient 0: critic untouched
            continue
        displacement = parameter.detach() - theta_star[name]
        # ∂/∂θ λ·Σ w(θ−θ*)² = 2λ·w·(θ−θ*): a descent step moves θ towards θ*
        assert (parameter.grad * displacement).sum().item() > 0
        if term_name == "l2":
            torch.testing.assert_close(parameter.grad, 2 * 2.0 * displacement)
        else:
            torch.testing.assert_close(parameter.grad, 2 * 2.0 * term.importance[name] * displacement)


def test_l2_critic_coefficient_reaches_the_critic_per_parameter_subset():
    module = TinyActorCritic(obs_dim=3, out_dim=2)
    term = L2Term(1.0, critic_coeff=0.5)
    term.prepare(module)
    perturb_(module, CRITIC_NAMES)
    assert term.loss(TermInputs()).item() == 0.0  # the actor did not move
    critic_loss = term.critic_loss()
    expected = 0.5 * sum(((module.get_parameter(n) - term.anchor[n]) ** 2).sum() for n in CRITIC_NAMES)
    torch.testing.assert_close(critic_loss, expected)
    critic_loss.backward()
    assert module.vf.weight.grad is not None and module.vf.weight.grad.abs().sum() > 0
    assert module.pi.weight.grad is None
    module.zero_grad(set_to_none=True)
    # SAC: each critic's loss gets only its own parameters' part
    only_weight = term.critic_loss(["vf.weight", "pi.weight"])
    only_weight.backward()
    assert module.vf.weight.grad is not None and module.vf.bias.grad is None and module.pi.weight.grad is None
    assert term.critic_loss(["pi.weight"]) is None  # names that are no critic parameter
    metrics = term.metrics()
    assert metrics["l2_critic_coeff"] == 0.5 and metrics["l2_critic_penalty"] > 0


def test_l2_refuses_critic_coeff_without_critic_parameters():
    class ActorOnly(TinyActorCritic):
        def critic_parameters(self):
            return {}

    with pytest.raises(ValueError, match="no critic parameters"):
        L2Term(1.0, critic_coeff=0.5).prepare(ActorOnly(3, 2))


def test_terms_refuse_to_run_before_prepare():
    with pytest.raises(RuntimeError, match="before prepare"):
        L2Term(1.0).loss(TermInputs())


# ---------------------------------------------------------------- BC
@pytest.mark.parametrize("kind", ["categorical", "diag_gaussian"])
def test_bc_is_zero_at_theta_star_and_moves_only_the_actor(kind):
    module = TinyActorCritic(obs_dim=3, out_dim=4, kind=kind)
    data = {"obs": np.random.default_rng(0).normal(size=(100, 3)).astype(np.float32)}
    term = BCTerm(1.5, buffer_size=50, batch_size=32)
    term.prepare(module, data)
    assert len(term.buffer_observations) == 50
    # the buffer holds distinct rows of the data, labelled with π*'s outputs on them
    rows = {tuple(row) for row in data["obs"].tolist()}
    assert len({tuple(row) for row in term.buffer_observations.tolist()}) == 50
    assert all(tuple(row) in rows for row in term.buffer_observations.tolist())
    with torch.no_grad():
        torch.testing.assert_close(term.buffer_teacher_inputs, module.policy_distribution_inputs(term.buffer_observations))
    assert not term.buffer_teacher_inputs.requires_grad
    assert term.loss(TermInputs()).item() == pytest.approx(0.0, abs=1e-7)
    perturb_(module, ACTOR_NAMES)
    loss = term.loss(TermInputs())
    assert loss.item() > 0
    loss.backward()
    assert module.pi.weight.grad.abs().sum() > 0 and module.vf.weight.grad is None
    metrics = term.metrics()
    assert metrics["bc_coeff"] == 1.5 and metrics["bc_loss"] == pytest.approx(1.5 * metrics["bc_penalty"])


def test_bc_labels_are_computed_in_chunks_equal_to_one_pass():
    module = TinyActorCritic(obs_dim=3, out_dim=3)
    data = {"obs": np.random.default_rng(2).normal(size=(30, 3)).astype(np.float32)}
    chunked = BCTerm(1.0, buffer_size=30, labelling_chunk_size=7)
    whole = BCTerm(1.0, buffer_size=30, labelling_chunk_size=4096)
    chunked.prepare(module, data)
    whole.prepare(module, data)
    torch.testing.assert_close(chunked.buffer_teacher_inputs, whole.buffer_teacher_inputs)


def test_bc_loss_equals_mean_kl_on_its_own_minibatch_in_both_directions():
    module = TinyActorCritic(obs_dim=3, out_dim=3)
    data = {"obs": np.random.default_rng(1).normal(size=(20, 3)).astype(np.float32)}
    for direction in ("teacher_student", "student_teacher"):
        term = BCTerm(1.0, buffer_size=20, batch_size=8, kl_direction=direction, seed=5)
        term.prepare(module, data)
        teacher = term.buffer_teacher_inputs.clone()
        with torch.no_grad():
            module.pi.bias.add_(torch.tensor([1.0, -1.0, 0.0]))
        # BCTerm draws its minibatch from a torch.Generator seeded with `seed`
        expected_idx = torch.randint(20, (8,), generator=torch.Generator().manual_seed(5))
        student = module.policy_distribution_inputs(term.buffer_observations[expected_idx])
        p, q = (teacher[expected_idx], student) if direction == "teacher_student" else (student, teacher[expected_idx])
        expected = (p.softmax(-1) * (p.log_softmax(-1) - q.log_softmax(-1))).sum(-1).mean()
        assert term.loss(TermInputs()).item() == pytest.approx(expected.item(), rel=1e-5)
        with torch.no_grad():
            module.pi.bias.sub_(torch.tensor([1.0, -1.0, 0.0]))


def test_bc_sampling_state_round_trips():
    module = TinyActorCritic(obs_dim=3, out_dim=3)
    data = {"obs": np.random.default_rng(1).normal(size=(40, 3)).astype(np.float32)}
    term = BCTerm(0.5, buffer_size=40, batch_size=4, seed=2)
    term.prepare(module, data)
    term.sample_indices()
    state = term.get_state()
    expected = [term.sample_indices() for _ in range(3)]
    resumed = BCTerm(0.5, buffer_size=40, batch_size=4, seed=99)
    resumed.prepare(module, data)
    resumed.set_state(state)
    for indices in expected:
        assert torch.equal(resumed.sample_indices(), indices)


def test_bc_needs_states():
    term = BCTerm(1.0)
    with pytest.raises(ValueError, match="obs"):
        term.prepare(TinyActorCritic(3, 2), {"actions": np.zeros(3)})
    with pytest.raises(ValueError, match="obs"):
        term.prepare(TinyActorCritic(3, 2))


# ---------------------------------------------------------------- KS
def test_ks_uses_the_frozen_teacher_on_the_online_batch_with_mask():
    student = TinyActorCritic(obs_dim=3, out_dim=2, seed=0)
    teacher = TinyActorCritic(obs_dim=3, out_dim=2, seed=7)
    term = KSTerm(0.5, decay=0.9, floor=0.2)
    term.prepare(student, teacher=teacher)
    obs = torch.randn(5, 3)
    mask = torch.tensor([True, True, False, True, False])
    loss = term.loss(TermInputs(observations=obs, mask=mask))
    kl = kl_divergence(teacher.policy_distribution_inputs(obs), student.policy_distribution_inputs(obs), "categorical")
    assert loss.item() == pytest.approx(0.5 * kl[mask].mean().item(), rel=1e-5)
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert student.pi.weight.grad is not None and student.vf.weight.grad is None


def test_ks_takes_the_student_outputs_from_the_rl_loss_when_given():
    student = TinyActorCritic(obs_dim=3, out_dim=2, seed=0)
    teacher = TinyActorCritic(obs_dim=3, out_dim=2, seed=7)
    term = KSTerm(1.0)
    term.prepare(student, teacher=teacher)
    obs = torch.randn(4, 3)
    given = torch.zeros(4, 2, requires_grad=True)  # uniform logits, unlike the student's own
    loss = term.loss(TermInputs(observations=obs, student_distribution_inputs=given))
    expected = kl_divergence(teacher.policy_distribution_inputs(obs), given, "categorical").mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert given.grad is not None and student.pi.weight.grad is None


def test_ks_needs_a_teacher_and_observations():
    with pytest.raises(ValueError, match="teacher"):
        KSTerm(1.0).prepare(TinyActorCritic(3, 2))
    term = KSTerm(1.0)
    term.prepare(TinyActorCritic(3, 2), teacher=TinyActorCritic(3, 2, seed=1))
    with pytest.raises(ValueError, match="observations"):
        term.loss(TermInputs())


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


def test_ks_schedule_resumes_from_its_state():
    term = KSTerm(1.0, decay=0.5, floor=0.0)
    term.after_optimizer_steps(3)
    resumed = KSTerm(1.0, decay=0.5, floor=0.0)
    resumed.set_state(term.get_state())
    assert resumed.coeff == pytest.approx(0.125) and resumed.num_optimizer_steps == 3
    resumed.after_optimizer_steps(1)
    assert resumed.coeff == pytest.approx(0.0625)


# ---------------------------------------------------------------- method configs and the registry
def test_registry_holds_every_method_file():
    assert set(METHOD_NAMES) >= {"scratch", "finetune", "l2", "ewc", "bc", "ks", "em"}
    assert all(issubclass(cls, RetentionMethod) for cls in METHODS.values())
    assert isinstance(parse_method({"name": "l2", "coeff": 3.0}), L2Method)
    typed = EMMethod(memory_size=5)
    assert parse_method(typed) is typed
    with pytest.raises(ValidationError):
        parse_method({"name": "no-such-method"})
    with pytest.raises(ValidationError):
        parse_method({"name": "l2", "coef": 1.0})  # a misspelt key is refused, not ignored


def test_build_term_from_method_dicts():
    assert parse_method({"name": "finetune"}).build_term(0) is None
    assert parse_method({"name": "scratch"}).build_term(0) is None
    assert parse_method({"name": "em", "memory_size": 10}).build_term(0) is None
    ks = parse_method({"name": "ks", "coeff": 0.75, "decay": 0.5, "floor": 0.1}).build_term(0)
    assert isinstance(ks, KSTerm) and ks.coeff == 0.75 and ks.floor == 0.1 and ks.decay == 0.5
    ewc = parse_method({"name": "ewc", "fisher_labels": "argmax"}).build_term(3)
    assert isinstance(ewc, EWCTerm) and ewc.fisher_labels == "argmax" and ewc.seed == 3
    l2 = parse_method({"name": "l2", "coeff": 2.0, "critic_coeff": 0.5}).build_term(0)
    assert isinstance(l2, L2Term) and l2.coeff == 2.0 and l2.critic_coeff == 0.5
    bc = parse_method({"name": "bc", "buffer_size": 7, "batch_size": 3, "teacher_labels": "dataset"}).build_term(0)
    assert isinstance(bc, BCTerm) and (bc.buffer_size, bc.batch_size, bc.teacher_labels) == (7, 3, "dataset")
    for name in ("bc", "ewc"):
        with pytest.raises(ValidationError, match="critic"):
            parse_method({"name": name, "critic_coeff": 1.0})
    with pytest.raises(ValueError, match="critic"):
        EWCTerm(1.0, critic_coeff=1.0)


def test_methods_declare_what_they_need():
    scratch, finetune = parse_method({"name": "scratch"}), parse_method({"name": "finetune"})
    assert not scratch.starts_from_pretrained and finetune.starts_from_pretrained
    assert BCMethod().starts_from_pretrained and not BCMethod(teacher_labels="dataset").starts_from_pretrained
    assert BCMethod(buffer_size=50).data_needs().keys == ("obs",) and BCMethod(buffer_size=50).data_needs().min_rows == 50
    assert BCMethod(teacher_labels="dataset").data_needs().keys == ("obs", "action_dist_inputs")
    assert EWCMethod(fisher_batches=2, fisher_batch_size=8).data_needs().min_rows == 16
    assert EWCMethod(fisher_labels="dataset").data_needs().keys == ("obs", "actions")
    assert L2Method().data_needs().keys == () and KSMethod().data_needs().keys == ()
    assert KSMethod.needs_teacher and not BCMethod.needs_teacher and not L2Method.needs_teacher
    em = EMMethod(memory_size=123, sample_fraction=0.25)
    assert em.off_policy_only and not BCMethod.off_policy_only
    assert em.protected_replay() == ProtectedReplay(capacity=123, share=0.25)
    assert EMMethod().protected_replay().share is None
    assert {"obs", "actions", "rewards", "next_obs", "terminateds"} <= set(em.data_needs().keys)
    assert em.data_needs().min_rows == 123
    assert all(parse_method({"name": n}).protected_replay() is None for n in ("l2", "ewc", "bc", "ks", "finetune"))
    assert parse_method({"name": "l2", "label": "L2 big"}).display_name == "L2 big"
    assert parse_method({"name": "l2"}).display_name == "l2"
    with pytest.raises(ValidationError):
        EMMethod(sample_fraction=1.5)


# ---------------------------------------------------------------- EM: the minibatch mixing rule
def test_split_sample_counts_is_binomial_with_the_protected_share():
    rng = np.random.default_rng(3)
    n = 20_000
    for num_protected, num_online, fraction, expected in [(10, 90, None, 0.1), (10, 90, 0.5, 0.5), (30, 10, None, 0.75)]:
        from_protected, from_online = split_sample_counts(n, num_protected, num_online, rng, fraction)
        assert from_protected + from_online == n
        tolerance = 5 * math.sqrt(expected * (1 - expected) / n)  # 5 standard errors
        assert abs(from_protected / n - expected) < tolerance
    # the count varies from minibatch to minibatch (Binomial, not a fixed split)
    counts = {split_sample_counts(64, 10, 10, rng)[0] for _ in range(50)}
    assert len(counts) > 3


def test_split_sample_counts_edge_cases():
    rng = np.random.default_rng(0)
    assert split_sample_counts(32, 0, 100, rng) == (0, 32)
    assert split_sample_counts(32, 100, 0, rng) == (32, 0)
    assert split_sample_counts(32, 100, 0, rng, protected_share=0.0) == (32, 0)  # nothing else to draw
    assert split_sample_counts(32, 10, 10, rng, protected_share=1.0) == (32, 0)
    assert split_sample_counts(32, 10, 10, rng, protected_share=0.0) == (0, 32)
    with pytest.raises(ValueError, match="empty"):
        split_sample_counts(4, 0, 0, rng)
    with pytest.raises(ValueError, match="protected share"):
        split_sample_counts(4, 1, 1, rng, protected_share=1.5)


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


def test_training_gate_from_a_method_config():
    method = parse_method({
        "name": "finetune", "critic_warmup_env_steps": 10, "skip_train_env_steps": 5,
        "freeze": [{"modules": ["pi"], "from_env_step": 20, "until_env_step": 30}],
    })
    gate = TrainingGate.from_method(method)
    names, critic = ["pi.w", "pi_encoder.w", "vf.w"], ["vf.w"]
    assert not gate.is_trivial and TrainingGate.from_method(parse_method({"name": "l2"})).is_trivial
    assert [gate.phase(step) for step in (4, 5, 14, 15)] == ["skip", "critic_warmup", "critic_warmup", "train"]
    assert gate.frozen_names(19, names, critic) == set()
    assert gate.frozen_names(20, names, critic) == {"pi.w"} and gate.frozen_names(30, names, critic) == set()
