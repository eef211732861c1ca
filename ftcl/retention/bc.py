"""BC (replay by behavioural cloning): λ·E_{s∼B} KL(π*(·|s) ‖ π_θ(·|s)) on a stored buffer B.

B holds up to `buffer_size` pre-training states drawn at prepare time, each labelled with π*'s
distribution inputs computed there (θ* = the loaded pre-trained weights), or — with
`teacher_labels="dataset"` — with the `action_dist_inputs` stored next to the states (e.g. a
scripted expert's actions as a narrow Gaussian, `ftcl.pretrain.demonstrations`). For
tanh-squashed SAC policies the labels and the KL are those of the pre-squash Gaussian.
"""
from __future__ import annotations

import numpy as np
import torch

from ftcl.retention.base import (
    PolicyHandle,
    RetentionData,
    RetentionTerm,
    TermInputs,
    as_float_tensor,
    module_device,
)
from ftcl.retention.distributions import KLDirection, retention_kl


class BCTerm(RetentionTerm):
    """λ·mean over a minibatch of B of KL(π* ‖ π_θ) (or KL(π_θ ‖ π*), see `kl_direction`)."""

    name = "bc"
    needs_data = frozenset({"obs"})

    def __init__(
        self,
        coeff: float,
        critic_coeff: float = 0.0,
        kl_direction: KLDirection = "teacher_student",
        buffer_size: int = 10_000,
        batch_size: int = 128,
        seed: int = 0,
        labelling_chunk_size: int = 4096,
        teacher_labels: str = "pretrained",
    ) -> None:
        if critic_coeff > 0:
            raise ValueError(
                "BC on the critic (regression to stored values) is not implemented "
                "(the paper uses critic coefficient 0); set critic_coeff: 0"
            )
        super().__init__(coeff)
        self.kl_direction: KLDirection = kl_direction
        self.buffer_size = buffer_size
        self.batch_size = batch_size
        self.seed = seed
        self.labelling_chunk_size = labelling_chunk_size
        if teacher_labels not in ("pretrained", "dataset"):
            raise ValueError(f"teacher_labels must be 'pretrained' or 'dataset'; got {teacher_labels!r}")
        self.teacher_labels = teacher_labels
        if teacher_labels == "dataset":
            self.needs_data = frozenset({"obs", "action_dist_inputs"})
        self.buffer_observations: torch.Tensor | None = None
        self.buffer_teacher_inputs: torch.Tensor | None = None
        self._student: PolicyHandle | None = None
        self._generator = torch.Generator(device="cpu").manual_seed(seed)
        self._pending_indices: torch.Tensor | None = None

    def _prepare(self, student: PolicyHandle, data: RetentionData | None) -> None:
        assert data is not None
        num_states = len(data["obs"])
        rng = np.random.default_rng(self.seed)
        indices = np.sort(rng.choice(num_states, size=min(self.buffer_size, num_states), replace=False))
        device = module_device(student.module)
        observations = as_float_tensor(np.asarray(data["obs"])[indices], device)
        if self.teacher_labels == "dataset":
            teacher_inputs = as_float_tensor(np.asarray(data["action_dist_inputs"])[indices], device)
        else:
            with torch.no_grad():  # π*(s): the student still holds θ* here
                teacher_inputs = torch.cat([
                    student.distribution_inputs(observations[i : i + self.labelling_chunk_size]).detach()
                    for i in range(0, len(observations), self.labelling_chunk_size)
                ])
        self.buffer_observations = observations
        self.buffer_teacher_inputs = teacher_inputs
        self._student = student
        self.distribution_kind = student.distribution_kind

    def sample_indices(self) -> torch.Tensor:
        """Indices of one BC minibatch, uniform with replacement over B."""
        assert self.buffer_observations is not None
        return torch.randint(
            len(self.buffer_observations), (self.batch_size,), generator=self._generator
        ).to(self.buffer_observations.device)

    def extra_actor_observations(self) -> torch.Tensor | None:
        """Draw the next BC minibatch now; the learner may run it in the RL batch's actor forward.

        The following `loss` call uses exactly these states (and π_θ's outputs on them from
        `TermInputs.extra_student_distribution_inputs`, or its own forward when those are None).
        """
        if self.buffer_observations is None:
            return None
        self._pending_indices = self.sample_indices()
        return self.buffer_observations[self._pending_indices]

    def _penalty(self, inputs: TermInputs) -> torch.Tensor:
        assert self._student is not None and self.buffer_teacher_inputs is not None
        indices, self._pending_indices = self._pending_indices, None
        student_inputs = inputs.extra_student_distribution_inputs
        if indices is None:
            if student_inputs is not None:
                raise ValueError("BC got fused student outputs without having drawn its minibatch")
            indices = self.sample_indices()
        if student_inputs is None:
            student_inputs = self._student.distribution_inputs(self.buffer_observations[indices])
        kl = retention_kl(
            self.buffer_teacher_inputs[indices], student_inputs, self.distribution_kind, self.kl_direction
        )
        return kl.mean()
