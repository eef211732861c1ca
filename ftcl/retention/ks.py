"""Kickstarting: λ_t·E_{s∼online batch} KL(π*(·|s) ‖ π_θ(·|s)) against a frozen teacher π*.

λ_t ← max(floor, λ_t·decay) after every optimizer step that moves the actor; λ_t is part of the
learner's checkpointed state, so a resumed trial continues the schedule where it stopped.

A recurrent policy carries its teacher (`RetentionPolicyAPI.carries_teacher`): the teacher ran
along the rollouts with its own LSTM state and its outputs on the batch's steps arrive with the
student's (`TermInputs.teacher_distribution_inputs`); a feed-forward teacher is run here, on the
batch's observations.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Mapping

import torch
from pydantic import Field, NonNegativeFloat

from ftcl.retention.distributions import KLDirection, retention_kl
from ftcl.retention.method import RetentionMethod
from ftcl.retention.policy_api import RetentionPolicyAPI
from ftcl.retention.term import RetentionData, RetentionTerm, TermInputs


class KSTerm(RetentionTerm):
    """Kickstarting on the RL minibatch; the frozen teacher π* is given at prepare time."""

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
        self._teacher: RetentionPolicyAPI | None = None
        self._policy: RetentionPolicyAPI | None = None

    def _prepare(self, policy: RetentionPolicyAPI, data: RetentionData | None, teacher: RetentionPolicyAPI | None) -> None:
        if teacher is None and not policy.carries_teacher:
            raise ValueError("kickstarting needs a frozen teacher π*: pass teacher= to prepare(), or a policy "
                             "that carries one")
        self._policy, self._teacher = policy, teacher

    def _penalty(self, inputs: TermInputs) -> torch.Tensor:
        assert self._policy is not None
        if self._teacher is None:  # carried: the teacher's outputs come with the batch
            if inputs.teacher_distribution_inputs is None or inputs.student_distribution_inputs is None:
                raise ValueError("kickstarting with a carried teacher needs the forward pass's student and "
                                 "teacher outputs")
            student_inputs = self._policy.sampled_distribution_inputs(inputs.student_distribution_inputs)
            return self._masked_mean(retention_kl(inputs.teacher_distribution_inputs, student_inputs,
                                                  self._policy.policy_distribution_kind, self.kl_direction), inputs)
        if inputs.observations is None:
            raise ValueError("kickstarting needs the online batch's observations")
        if inputs.student_distribution_inputs is None:
            student_inputs = self._policy.policy_distribution_inputs(inputs.observations)
        else:  # the RL forward's raw outputs, as the policy samples from them (e.g. log σ clamped)
            student_inputs = self._policy.sampled_distribution_inputs(inputs.student_distribution_inputs)
        with torch.no_grad():
            teacher_inputs = self._teacher.policy_distribution_inputs(inputs.observations)
        kl = retention_kl(teacher_inputs, student_inputs, self._policy.policy_distribution_kind, self.kl_direction)
        return self._masked_mean(kl, inputs)

    @staticmethod
    def _masked_mean(kl: torch.Tensor, inputs: TermInputs) -> torch.Tensor:
        """The mean over valid steps (`inputs.mask`; padding excluded)."""
        if inputs.mask is not None:
            mask = inputs.mask.bool()
            return kl[mask].sum() / mask.sum().clamp_min(1)
        return kl.mean()

    def after_optimizer_steps(self, num_steps: int = 1) -> None:
        """λ_t ← max(floor, λ_t·decay), applied once per optimizer step."""
        for _ in range(num_steps):
            self.coeff = max(self.floor, self.coeff * self.decay)
        self.num_optimizer_steps += num_steps

    def get_state(self) -> dict[str, Any]:
        return {**super().get_state(), "num_optimizer_steps": self.num_optimizer_steps}

    def set_state(self, state: Mapping[str, Any]) -> None:
        super().set_state(state)
        self.num_optimizer_steps = int(state.get("num_optimizer_steps", 0))


class KSMethod(RetentionMethod):
    """Kickstarting: λ_t·E_{s∼online} KL(π* ‖ π_θ), λ_t decays per optimizer step to a floor."""

    name: Literal["ks"] = "ks"
    coeff: NonNegativeFloat = 0.5
    decay: Annotated[float, Field(gt=0.0, le=1.0)] = 0.99998
    floor: NonNegativeFloat = 0.0
    kl_direction: KLDirection = "teacher_student"

    needs_teacher = True

    def build_term(self, seed: int = 0) -> RetentionTerm:
        return KSTerm(self.coeff, decay=self.decay, floor=self.floor, kl_direction=self.kl_direction)
