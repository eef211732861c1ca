"""L2 anchor: λ·Σ_i (θ_i − θ*_i)² over the actor (and λ_critic over the critic).

The penalty Σ_i w_i (θ_i − θ*_i)² is one autograd node (`anchored_squared_distance`): fused
`torch._foreach_*` kernels over the parameter list instead of ~5 autograd ops per parameter
tensor, which dominated the cost of L2/EWC on small networks (PPO 2×64: ~10 % of an update).
Value and gradient are the straightforward per-parameter expression's (tests/unit/
test_retention_speed_paths.py).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch


class _AnchoredSquaredDistance(torch.autograd.Function):
    """Σ_i sum(w_i·(θ_i − θ*_i)²) with gradient (g·w_i)·(2·(θ_i − θ*_i)) — autograd's rounding order."""

    @staticmethod
    def forward(ctx: Any, anchors: list[torch.Tensor], weights: list[torch.Tensor] | None, *parameters: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        differences = torch._foreach_sub(list(parameters), anchors)
        squared = torch._foreach_mul(differences, differences)
        weighted = squared if weights is None else torch._foreach_mul(weights, squared)
        total = weighted[0].sum()
        for tensor in weighted[1:]:  # per-tensor sums added in order, as the plain loop does
            total = total + tensor.sum()
        ctx.weights = weights
        ctx.save_for_backward(*differences)
        return total

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        differences = list(ctx.saved_tensors)
        weights = ctx.weights
        scaled = (
            [grad_output.expand_as(d) for d in differences]
            if weights is None
            else torch._foreach_mul(weights, grad_output)
        )
        gradients = torch._foreach_mul(scaled, torch._foreach_mul(differences, 2.0))
        needs = ctx.needs_input_grad[2:]
        return (None, None, *(g if need else None for g, need in zip(gradients, needs)))


def anchored_squared_distance(
    parameters: Sequence[torch.Tensor],
    anchors: Sequence[torch.Tensor],
    weights: Sequence[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Σ_i Σ_elements w_i (θ_i − θ*_i)² as one autograd node (weights None: all ones)."""
    return _AnchoredSquaredDistance.apply(list(anchors), None if weights is None else list(weights), *parameters)


def anchored_squared_distance_reference(
    parameters: Sequence[torch.Tensor],
    anchors: Sequence[torch.Tensor],
    weights: Sequence[torch.Tensor] | None = None,
) -> torch.Tensor:
    """The straightforward per-parameter loop (reference for tests)."""
    total = None
    for index, (parameter, anchor) in enumerate(zip(parameters, anchors)):
        squared = (parameter - anchor) ** 2
        term = (squared if weights is None else weights[index] * squared).sum()
        total = term if total is None else total + term
    assert total is not None
    return total

from ftcl.retention.base import PolicyHandle, RetentionData, RetentionTerm, TermInputs


class AnchoredParameterTerm(RetentionTerm):
    """λ·Σ_i w_i (θ_i − θ*_i)² (+ λ_critic·Σ over critic parameters), with per-parameter weights w.

    θ* is the snapshot of the parameters taken at `prepare`. Subclasses choose w (L2: 1; EWC: F).
    """

    def __init__(self, coeff: float, critic_coeff: float = 0.0) -> None:
        super().__init__(coeff)
        self.critic_coeff = float(critic_coeff)
        self._actor_parameters: dict[str, torch.nn.Parameter] = {}
        self._critic_parameters: dict[str, torch.nn.Parameter] = {}
        self.anchor: dict[str, torch.Tensor] = {}
        """θ*: detached copies of the parameters at prepare time."""
        self.importance: dict[str, torch.Tensor] = {}
        """w_i per parameter (same shapes as θ)."""
        self._last_critic_penalty_tensor: torch.Tensor | None = None
        self._unit_importance = False
        """True when every w_i is 1 (L2): the fused penalty then skips multiplying by w (exact)."""

    def _prepare(self, student: PolicyHandle, data: RetentionData | None) -> None:
        self._actor_parameters = student.named_parameters(student.actor_parameter_names)
        self._critic_parameters = (
            student.named_parameters(student.critic_parameter_names) if self.critic_coeff > 0 else {}
        )
        if not self._actor_parameters:
            raise ValueError(f"retention term '{self.name}': the policy has no actor parameters")
        for name, parameter in {**self._actor_parameters, **self._critic_parameters}.items():
            self.anchor[name] = parameter.detach().clone()
        self.importance = self._importance_weights(student, data)
        self._unit_importance = all(bool((w == 1).all()) for w in self.importance.values())

    def _importance_weights(
        self, student: PolicyHandle, data: RetentionData | None
    ) -> dict[str, torch.Tensor]:
        """w_i for every anchored parameter (L2: ones)."""
        return {name: torch.ones_like(value) for name, value in self.anchor.items()}

    def _anchored_sum(self, parameters: dict[str, torch.nn.Parameter]) -> torch.Tensor:
        """Σ_i w_i (θ_i − θ*_i)² over `parameters` (one fused autograd node)."""
        anchors = [self.anchor[name] for name in parameters]
        weights = None if self._unit_importance else [self.importance[name] for name in parameters]
        return anchored_squared_distance(list(parameters.values()), anchors, weights)

    def _penalty(self, inputs: TermInputs) -> torch.Tensor:
        return self._anchored_sum(self._actor_parameters)

    def losses(self, inputs: TermInputs) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(λ·Σ_actor w(θ−θ*)², λ_critic·Σ_critic w(θ−θ*)² or None when λ_critic = 0)."""
        actor_loss = self.loss(inputs)
        if not self._critic_parameters:
            return actor_loss, None
        critic_penalty = self._anchored_sum(self._critic_parameters)
        self._last_critic_penalty_tensor = critic_penalty.detach()
        return actor_loss, self.critic_coeff * critic_penalty

    def metrics(self) -> dict[str, float]:
        values = super().metrics()
        if self._critic_parameters:
            values[f"{self.name}_critic_penalty"] = (
                float("nan") if self._last_critic_penalty_tensor is None else float(self._last_critic_penalty_tensor)
            )
            values[f"{self.name}_critic_coeff"] = self.critic_coeff
        return values


class L2Term(AnchoredParameterTerm):
    """λ·Σ(θ−θ*)² over the actor's parameters (critic with `critic_coeff`, default 0)."""

    name = "l2"
