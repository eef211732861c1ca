"""L2: anchor the actor to the pre-trained weights, λ·Σ_i (θ_i − θ*_i)² (and λ_critic over the critic).

An ftcl baseline next to EWC: EWC with every Fisher weight F_i = 1.
"""
from __future__ import annotations

from typing import Literal

from pydantic import NonNegativeFloat

from ftcl.retention.anchoring import AnchoredParameterTerm
from ftcl.retention.method import RetentionMethod
from ftcl.retention.term import RetentionTerm


class L2Term(AnchoredParameterTerm):
    """λ·Σ(θ−θ*)² over the actor's parameters (critic with `critic_coeff`, default 0)."""

    name = "l2"


class L2Method(RetentionMethod):
    """λ·Σ(θ−θ*)² over the actor's parameters; λ_critic·Σ over the critics' with `critic_coeff`."""

    name: Literal["l2"] = "l2"
    coeff: NonNegativeFloat = 1.0
    critic_coeff: NonNegativeFloat = 0.0

    def build_term(self, seed: int = 0) -> RetentionTerm:
        return L2Term(self.coeff, critic_coeff=self.critic_coeff)
