"""Action distributions as retention terms see them: plain tensors of distribution inputs.

RLlib (and most policies) emit *distribution inputs*: logits for a categorical policy, or the
concatenation [μ, log σ] for a diagonal Gaussian. SAC's tanh-squashed policy emits the inputs of
the Gaussian *before* the tanh; every function here then works on that pre-squash Gaussian (the
tanh is a fixed bijection, so the KL between the squashed distributions equals the KL between
the pre-squash Gaussians).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

DistributionKind = Literal["categorical", "diag_gaussian"]
KLDirection = Literal["teacher_student", "student_teacher"]


def split_gaussian_inputs(distribution_inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split [μ, log σ] (last dim) into (μ, log σ)."""
    if distribution_inputs.shape[-1] % 2:
        raise ValueError(
            "diagonal-Gaussian distribution inputs must have an even last dimension "
            f"([mean, log_std]); got shape {tuple(distribution_inputs.shape)}"
        )
    mean, log_std = distribution_inputs.chunk(2, dim=-1)
    return mean, log_std


def kl_divergence(
    p_inputs: torch.Tensor, q_inputs: torch.Tensor, kind: DistributionKind
) -> torch.Tensor:
    """Per-sample KL(p ‖ q), summed over action dimensions; shape = batch shape."""
    if kind == "categorical":
        log_p = F.log_softmax(p_inputs, dim=-1)
        log_q = F.log_softmax(q_inputs, dim=-1)
        # KL(p‖q) = Σ_a p(a)·(log p(a) − log q(a))
        return (log_p.exp() * (log_p - log_q)).sum(-1)
    if kind == "diag_gaussian":
        mean_p, log_std_p = split_gaussian_inputs(p_inputs)
        mean_q, log_std_q = split_gaussian_inputs(q_inputs)
        # KL(N(μp,σp²)‖N(μq,σq²)) = log σq − log σp + (σp² + (μp−μq)²)/(2σq²) − ½, per dim
        variance_ratio = torch.exp(2.0 * (log_std_p - log_std_q))
        mean_term = (mean_p - mean_q) ** 2 * torch.exp(-2.0 * log_std_q)
        per_dim = (log_std_q - log_std_p) + 0.5 * (variance_ratio + mean_term) - 0.5
        return per_dim.sum(-1)
    raise ValueError(f"unknown distribution kind {kind!r}; allowed: categorical, diag_gaussian")


def retention_kl(
    teacher_inputs: torch.Tensor,
    student_inputs: torch.Tensor,
    kind: DistributionKind,
    direction: KLDirection = "teacher_student",
) -> torch.Tensor:
    """Per-sample KL between π* (teacher) and π_θ (student) in the configured direction.

    teacher_student: KL(π* ‖ π_θ) (the paper's code); student_teacher: KL(π_θ ‖ π*).
    """
    if direction == "teacher_student":
        return kl_divergence(teacher_inputs, student_inputs, kind)
    if direction == "student_teacher":
        return kl_divergence(student_inputs, teacher_inputs, kind)
    raise ValueError(f"unknown KL direction {direction!r}; allowed: teacher_student, student_teacher")


def categorical_log_prob(logits: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """log π(a|s) for integer actions under a categorical distribution with these logits."""
    log_probs = F.log_softmax(logits, dim=-1)
    return log_probs.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)


def distribution_kind_for_action_space(action_space: object) -> DistributionKind:
    """categorical for a Discrete space, diag_gaussian for a Box space (duck-typed, no gym import)."""
    if hasattr(action_space, "n") and not hasattr(action_space, "low"):
        return "categorical"
    if hasattr(action_space, "low") and hasattr(action_space, "high"):
        return "diag_gaussian"
    raise ValueError(
        f"retention terms support Discrete and Box action spaces; got {action_space!r}"
    )
