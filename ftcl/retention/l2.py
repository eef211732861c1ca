"""L2 anchor: λ·Σ_i (θ_i − θ*_i)² over the actor (and λ_critic over the critic)."""
from __future__ import annotations

import torch

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
        self._last_critic_penalty = float("nan")

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

    def _importance_weights(
        self, student: PolicyHandle, data: RetentionData | None
    ) -> dict[str, torch.Tensor]:
        """w_i for every anchored parameter (L2: ones)."""
        return {name: torch.ones_like(value) for name, value in self.anchor.items()}

    def _anchored_sum(self, parameters: dict[str, torch.nn.Parameter]) -> torch.Tensor:
        # Σ_i w_i (θ_i − θ*_i)²
        total = None
        for name, parameter in parameters.items():
            term = (self.importance[name] * (parameter - self.anchor[name]) ** 2).sum()
            total = term if total is None else total + term
        assert total is not None
        return total

    def _penalty(self, inputs: TermInputs) -> torch.Tensor:
        return self._anchored_sum(self._actor_parameters)

    def losses(self, inputs: TermInputs) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(λ·Σ_actor w(θ−θ*)², λ_critic·Σ_critic w(θ−θ*)² or None when λ_critic = 0)."""
        actor_loss = self.loss(inputs)
        if not self._critic_parameters:
            return actor_loss, None
        critic_penalty = self._anchored_sum(self._critic_parameters)
        self._last_critic_penalty = float(critic_penalty.detach())
        return actor_loss, self.critic_coeff * critic_penalty

    def metrics(self) -> dict[str, float]:
        values = super().metrics()
        if self._critic_parameters:
            values[f"{self.name}_critic_penalty"] = self._last_critic_penalty
            values[f"{self.name}_critic_coeff"] = self.critic_coeff
        return values


class L2Term(AnchoredParameterTerm):
    """λ·Σ(θ−θ*)² over the actor's parameters (critic with `critic_coeff`, default 0)."""

    name = "l2"
