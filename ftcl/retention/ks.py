"""Kickstarting: λ_t·E_{s∼online batch} KL(π*(·|s) ‖ π_θ(·|s)) against a frozen teacher π*.

λ_t ← max(floor, λ_t·decay) after every optimizer step.
"""
from __future__ import annotations

import torch

from ftcl.retention.base import DistributionFn, PolicyHandle, RetentionData, RetentionTerm, TermInputs
from ftcl.retention.distributions import KLDirection, retention_kl


class KSTerm(RetentionTerm):
    """Kickstarting on the RL minibatch; the teacher's forward is given at prepare time."""

    name = "ks"

    def __init__(
        self,
        coeff: float,
        decay: float = 0.99998,
        floor: float = 0.0,
        kl_direction: KLDirection = "teacher_student",
    ) -> None:
        super().__init__(coeff)
        self.initial_coeff = float(coeff)
        self.decay = float(decay)
        self.floor = float(floor)
        self.kl_direction: KLDirection = kl_direction
        self.num_optimizer_steps = 0
        self._teacher: DistributionFn | None = None
        self._student: PolicyHandle | None = None

    def _prepare(self, student: PolicyHandle, data: RetentionData | None) -> None:
        if self._teacher is None:
            raise ValueError("KSTerm needs a frozen teacher: call set_teacher(fn) before prepare()")
        self._student = student
        self.distribution_kind = student.distribution_kind

    def set_teacher(self, teacher_distribution_inputs: DistributionFn) -> None:
        """The frozen π*: observations -> distribution inputs (called under no_grad)."""
        self._teacher = teacher_distribution_inputs

    def _penalty(self, inputs: TermInputs) -> torch.Tensor:
        assert self._teacher is not None and self._student is not None
        if inputs.observations is None:
            raise ValueError("kickstarting needs the online batch's observations")
        student_inputs = inputs.student_distribution_inputs
        if student_inputs is None:
            student_inputs = self._student.distribution_inputs(inputs.observations)
        with torch.no_grad():
            teacher_inputs = self._teacher(inputs.observations)
        kl = retention_kl(teacher_inputs, student_inputs, self.distribution_kind, self.kl_direction)
        if inputs.mask is not None:
            mask = inputs.mask.bool()
            return kl[mask].sum() / mask.sum().clamp_min(1)
        return kl.mean()

    def after_optimizer_steps(self, num_steps: int = 1) -> None:
        """λ_t ← max(floor, λ_t·decay), applied once per optimizer step."""
        for _ in range(num_steps):
            self.coeff = max(self.floor, self.coeff * self.decay)
        self.num_optimizer_steps += num_steps
