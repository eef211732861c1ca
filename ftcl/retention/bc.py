"""BC (replay by behavioural cloning): λ·E_{s∼B} KL(π*(·|s) ‖ π_θ(·|s)) on a stored buffer B.

B holds up to `buffer_size` of π*'s pre-training states drawn at prepare time, each labelled with
π*'s distribution inputs computed there (the policy still holds θ*), or — with
`teacher_labels: dataset` — with the `action_dist_inputs` stored next to the states (e.g. a
scripted expert's actions as a narrow Gaussian, `ftcl.pretrain.demonstrations`), so that no π* is
needed. For tanh-squashed SAC policies the labels and the KL are those of the pre-squash Gaussian.
"""
from __future__ import annotations

from typing import Any, Literal, Mapping

import numpy as np
import torch
from pydantic import NonNegativeFloat, PositiveInt

from ftcl.retention.distributions import KLDirection, retention_kl
from ftcl.retention.method import TTYREC_GAMES, DataNeeds, RetentionMethod, ZeroCriticCoeff
from ftcl.retention.policy_api import RetentionPolicyAPI, module_device
from ftcl.retention.term import (RetentionData, RetentionTerm, TermInputs, as_float_tensor, as_observation_tensor,
                                 float_observations, require_data)

TeacherLabels = Literal["pretrained", "dataset"]


class BCTerm(RetentionTerm):
    """λ·mean over a minibatch of B of KL(π* ‖ π_θ) (or KL(π_θ ‖ π*), see `kl_direction`)."""

    name = "bc"

    def __init__(
        self,
        coeff: float,
        kl_direction: KLDirection = "teacher_student",
        buffer_size: int = 10_000,
        batch_size: int = 128,
        seed: int = 0,
        teacher_labels: TeacherLabels = "pretrained",
        labelling_chunk_size: int = 4096,
    ) -> None:
        super().__init__(coeff)
        if teacher_labels not in ("pretrained", "dataset"):
            raise ValueError(f"teacher_labels must be 'pretrained' or 'dataset'; got {teacher_labels!r}")
        self.kl_direction: KLDirection = kl_direction
        self.buffer_size = buffer_size
        self.batch_size = batch_size
        self.teacher_labels = teacher_labels
        self.labelling_chunk_size = labelling_chunk_size
        self.buffer_observations: torch.Tensor | None = None
        self.buffer_teacher_inputs: torch.Tensor | None = None
        self._policy: RetentionPolicyAPI | None = None
        self._generator = torch.Generator(device="cpu").manual_seed(seed)
        self._seed = seed

    def _prepare(self, policy: RetentionPolicyAPI, data: RetentionData | None, teacher: RetentionPolicyAPI | None) -> None:
        keys = ("obs", "action_dist_inputs") if self.teacher_labels == "dataset" else ("obs",)
        data = require_data(data, keys, self.name)
        num_states = len(data["obs"])
        rng = np.random.default_rng(self._seed)
        indices = np.sort(rng.choice(num_states, size=min(self.buffer_size, num_states), replace=False))
        device = module_device(policy)  # type: ignore[arg-type]
        observations = as_observation_tensor(np.asarray(data["obs"])[indices], device)
        if self.teacher_labels == "dataset":
            teacher_inputs = as_float_tensor(np.asarray(data["action_dist_inputs"])[indices], device)
        else:
            with torch.no_grad():  # π*(s): the policy still holds θ* here
                teacher_inputs = torch.cat([
                    policy.policy_distribution_inputs(float_observations(observations[i : i + self.labelling_chunk_size])).detach()
                    for i in range(0, len(observations), self.labelling_chunk_size)
                ])
        self.buffer_observations = observations
        self.buffer_teacher_inputs = teacher_inputs
        self._policy = policy

    def sample_indices(self) -> torch.Tensor:
        """Indices of one BC minibatch, uniform with replacement over B."""
        assert self.buffer_observations is not None
        return torch.randint(
            len(self.buffer_observations), (self.batch_size,), generator=self._generator
        ).to(self.buffer_observations.device)

    def _penalty(self, inputs: TermInputs) -> torch.Tensor:
        assert self._policy is not None and self.buffer_observations is not None
        assert self.buffer_teacher_inputs is not None
        indices = self.sample_indices()
        # KL(π*(·|s) ‖ π_θ(·|s)), s ∼ B; π_θ through the policy API (what the policy samples from)
        student_inputs = self._policy.policy_distribution_inputs(float_observations(self.buffer_observations[indices]))
        kl = retention_kl(
            self.buffer_teacher_inputs[indices], student_inputs, self._policy.policy_distribution_kind,
            self.kl_direction,
        )
        return kl.mean()

    def get_state(self) -> dict[str, Any]:
        return {**super().get_state(), "generator": self._generator.get_state()}

    def set_state(self, state: Mapping[str, Any]) -> None:
        super().set_state(state)
        if "generator" in state:
            self._generator.set_state(torch.as_tensor(state["generator"], dtype=torch.uint8))


class BCMethod(RetentionMethod):
    """λ·E_{s∼B} KL(π*(·|s) ‖ π_θ(·|s)) on a stored buffer B of π*'s states (paper §3.1)."""

    name: Literal["bc"] = "bc"
    coeff: NonNegativeFloat = 1.0
    critic_coeff: ZeroCriticCoeff = 0.0
    kl_direction: KLDirection = "teacher_student"
    buffer_size: PositiveInt = 10_000
    batch_size: PositiveInt = 128
    teacher_labels: TeacherLabels = "pretrained"
    """pretrained: label B with π*'s outputs when the trial starts (the paper); dataset: use the
    data file's stored `action_dist_inputs` (e.g. scripted demonstrations), so no π* is needed."""
    sequence_length: PositiveInt | None = None
    """Recurrent policies (NetHack): BC on dataset sequences of this many steps, `batch_size` rows,
    LSTM states carried across consecutive minibatches (`ftcl.retention.bc_sequences`); π*'s data
    is then a ttyrec database. None: a buffer of stored states (`buffer_size`)."""

    @property
    def starts_from_pretrained(self) -> bool:
        return self.teacher_labels == "pretrained"

    def data_needs(self) -> DataNeeds:
        if self.sequence_length is not None:  # a ttyrec database with a game per batch row
            return DataNeeds((TTYREC_GAMES,), self.batch_size)
        keys = ("obs", "action_dist_inputs") if self.teacher_labels == "dataset" else ("obs",)
        return DataNeeds(keys, self.buffer_size)

    def build_term(self, seed: int = 0) -> RetentionTerm:
        if self.sequence_length is not None:
            from ftcl.retention.bc_sequences import SequenceBCTerm

            return SequenceBCTerm(self.coeff, batch_size=self.batch_size, sequence_length=self.sequence_length,
                                  kl_direction=self.kl_direction, teacher_labels=self.teacher_labels)
        return BCTerm(
            self.coeff, kl_direction=self.kl_direction, buffer_size=self.buffer_size,
            batch_size=self.batch_size, seed=seed, teacher_labels=self.teacher_labels,
        )
