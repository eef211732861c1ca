"""BC on dataset sequences, for recurrent policies: λ·E KL(π*(·|h_t) ‖ π_θ(·|h_t)) over a stream of games.

The paper's NetHack "BC" (authors' code, anchors §1.5): every update draws a minibatch of B rows ×
T steps (T = 32) from the dataset — NLD-AA there, ttyrecs ftcl recorded here — whose rows are
streams of whole games continuing from one minibatch to the next. Student and frozen teacher π*
each keep one LSTM state per row, carried across consecutive minibatches (truncated
back-propagation: the carried state is detached) and reset where a game starts (`is_first`).
The KL is averaged over valid steps (a frame of a game with a known key).

Labels: `pretrained` — the teacher π* (a frozen copy of the policy taken at prepare time, when it
holds θ*) run over the same sequences with its own state, as the paper; `dataset` — the recorded
keys (−log π_θ(a_t|h_t), the KL to a one-hot target up to a constant), which needs no π*.

The stream comes from the learner as `data["sequences"]`: a factory (batch_size, sequence_length)
-> iterator of dicts with obs (B, T, 3, 24, 80), prev_actions, actions, is_first and valid
(`ftcl.data.ttyrecs.TtyrecBatches`). A resumed trial restarts the stream (with fresh states); λ is
constant. Plain PyTorch.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Iterator

import torch
from torch.nn import functional as F

from ftcl.retention.distributions import KLDirection, retention_kl
from ftcl.retention.policy_api import RetentionPolicyAPI, module_device
from ftcl.retention.term import RetentionData, RetentionTerm, TermInputs, require_data

SequenceStream = Callable[[int, int], Iterator[dict[str, Any]]]


def sequence_tensors(batch: dict[str, Any], device: torch.device | str) -> dict[str, Any]:
    """A dataset minibatch (`TtyrecBatches` keys) as the policy's inputs: `observations` (the env's
    dict: tty, prev_action), `actions`, `is_first` and `valid`, tensors on `device`."""
    return {
        "observations": {"tty": torch.as_tensor(batch["obs"], device=device),
                         "prev_action": torch.as_tensor(batch["prev_actions"], device=device)},
        "actions": torch.as_tensor(batch["actions"], device=device),
        "is_first": torch.as_tensor(batch["is_first"], device=device),
        "valid": torch.as_tensor(batch["valid"], device=device),
    }


def _detached(state: Any) -> Any:
    return {key: value.detach() for key, value in state.items()}


class SequenceBCTerm(RetentionTerm):
    """λ·KL(π* ‖ π_θ) (or −log π_θ(a_t) with dataset labels) on dataset sequences (module doc)."""

    name = "bc"

    def __init__(self, coeff: float, batch_size: int = 32, sequence_length: int = 32,
                 kl_direction: KLDirection = "teacher_student", teacher_labels: str = "pretrained") -> None:
        super().__init__(coeff)
        if teacher_labels not in ("pretrained", "dataset"):
            raise ValueError(f"teacher_labels must be 'pretrained' or 'dataset'; got {teacher_labels!r}")
        self.batch_size, self.sequence_length = batch_size, sequence_length
        self.kl_direction: KLDirection = kl_direction
        self.teacher_labels = teacher_labels
        self._policy: RetentionPolicyAPI | None = None
        self._teacher: RetentionPolicyAPI | None = None
        self._stream: Iterator[dict[str, Any]] | None = None
        self._student_state: Any = None
        self._teacher_state: Any = None

    def _prepare(self, policy: RetentionPolicyAPI, data: RetentionData | None, teacher: RetentionPolicyAPI | None) -> None:
        data = require_data(data, ("sequences",), "bc (sequences)")
        self._stream = iter(data["sequences"](self.batch_size, self.sequence_length))  # type: ignore[operator]
        self._policy = policy
        if self.teacher_labels == "pretrained":  # π*: the policy still holds θ* here
            self._teacher = copy.deepcopy(policy)
            self._teacher.eval()  # type: ignore[attr-defined]
            self._teacher.requires_grad_(False)  # type: ignore[attr-defined]
        self._student_state = self._teacher_state = None

    def next_batch(self) -> dict[str, Any]:
        """The stream's next minibatch as tensors on the policy's device."""
        assert self._stream is not None and self._policy is not None
        return sequence_tensors(next(self._stream), module_device(self._policy))  # type: ignore[arg-type]

    def _penalty(self, inputs: TermInputs) -> torch.Tensor:
        assert self._policy is not None
        batch = self.next_batch()
        student, state = self._policy.recurrent_distribution_inputs(batch["observations"], batch["is_first"],
                                                                   self._student_state)
        self._student_state = _detached(state)
        valid = batch["valid"]
        if self._teacher is None:  # the recorded keys
            log_probabilities = F.log_softmax(student, dim=-1)
            per_step = -log_probabilities.gather(-1, batch["actions"].clamp(min=0)[..., None])[..., 0]
        else:
            with torch.no_grad():
                teacher, teacher_state = self._teacher.recurrent_distribution_inputs(
                    batch["observations"], batch["is_first"], self._teacher_state)
            self._teacher_state = teacher_state
            per_step = retention_kl(teacher, student, self._policy.policy_distribution_kind, self.kl_direction)
        return (per_step * valid).sum() / valid.sum().clamp_min(1)
