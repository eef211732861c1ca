"""The fused anchor penalty of L2/EWC (`ftcl.retention.anchoring`) computes what the plain loop does.

* `anchored_squared_distance` (one autograd node) vs `anchored_squared_distance_reference`:
  value to 1e-6, gradients bitwise equal, with and without weights;
* `AnchoredParameterTerm` (L2 and a weighted subclass, the EWC path): actor `loss` and
  `critic_loss` equal the straightforward Σ w(θ − θ*)² and its gradients.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from ftcl.retention.anchoring import anchored_squared_distance, anchored_squared_distance_reference
from ftcl.retention.l2 import L2Term
from ftcl.retention.policy_api import RetentionPolicyAPI, named_subset
from ftcl.retention.term import TermInputs

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
    # and the loop is what it says: Σ w(θ − θ*)²
    by_hand = sum(
        ((w if weighted else 1.0) * (p - a) ** 2).sum() for p, a, w in zip(parameters, anchors, weights)
    )
    torch.testing.assert_close(reference, 3.0 * by_hand, **TOLERANCE)


def test_anchored_squared_distance_skips_parameters_without_grad() -> None:
    parameters, anchors, weights = random_parameters(1)
    parameters[1].requires_grad_(False)
    loss = anchored_squared_distance(parameters, anchors, weights)
    loss.backward()
    assert parameters[1].grad is None
    assert parameters[0].grad is not None


class _Policy(nn.Module, RetentionPolicyAPI):
    def __init__(self) -> None:
        super().__init__()
        self.pi = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
        self.vf = nn.Linear(4, 1)

    @property
    def policy_distribution_kind(self):  # type: ignore[override]
        return "categorical"

    def actor_parameters(self) -> dict[str, nn.Parameter]:
        return named_subset(self, ("pi",))

    def critic_parameters(self) -> dict[str, nn.Parameter]:
        return named_subset(self, ("vf",))

    def policy_distribution_inputs(self, observations: torch.Tensor, state=None) -> torch.Tensor:
        return self.pi(observations)


class _WeightedTerm(L2Term):
    """An anchored term with non-unit weights (the EWC path: w = Fisher)."""

    name = "weighted"

    def _importance_weights(self, policy, data):  # type: ignore[override]
        generator = torch.Generator().manual_seed(3)
        return {n: torch.rand(v.shape, generator=generator) + 0.5 for n, v in self.anchor.items()}


@pytest.mark.parametrize("term_class", [L2Term, _WeightedTerm])
def test_l2_and_weighted_terms_equal_the_straightforward_penalty(term_class: type) -> None:
    torch.manual_seed(0)
    policy = _Policy()
    term = term_class(coeff=2.5, critic_coeff=0.5)
    term.prepare(policy)
    assert term._unit_importance == (term_class is L2Term)
    with torch.no_grad():
        for parameter in policy.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    actor_loss, critic_loss = term.loss(TermInputs()), term.critic_loss()
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

    reference_actor = straightforward(list(policy.actor_parameters()), 2.5)
    reference_critic = straightforward(list(policy.critic_parameters()), 0.5)
    (reference_actor + reference_critic).backward()
    torch.testing.assert_close(actor_loss, reference_actor, **TOLERANCE)
    torch.testing.assert_close(critic_loss, reference_critic, **TOLERANCE)
    for name, parameter in policy.named_parameters():
        torch.testing.assert_close(fused_grads[name], parameter.grad, rtol=0, atol=0)
    metrics = term.metrics()
    assert metrics[f"{term.name}_penalty"] == pytest.approx(float(reference_actor.detach()) / 2.5, rel=1e-6)
    assert metrics[f"{term.name}_critic_penalty"] == pytest.approx(float(reference_critic.detach()) / 0.5, rel=1e-6)


def test_anchor_is_a_snapshot_not_a_view() -> None:
    policy = _Policy()
    term = L2Term(1.0)
    term.prepare(policy)
    with torch.no_grad():
        policy.pi[0].weight.add_(1.0)  # an in-place optimizer step must not move θ*
    expected = float(policy.pi[0].weight.numel())  # Σ (θ* + 1 − θ*)²
    assert term.loss(TermInputs()).item() == pytest.approx(expected, rel=1e-6)
