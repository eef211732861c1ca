"""The common interface of retention terms (plain PyTorch; no RLlib).

A term is built from its method config, *prepared* once with the policy while it still holds the
pre-trained weights θ* (π*) and with the pre-training data, then asked for its loss on every
update and told after every optimizer step, so that scheduled coefficients (λ_t) can move. The
policy is any module implementing `RetentionPolicyAPI`.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np
import torch

from ftcl.retention.policy_api import RetentionPolicyAPI


@dataclass
class TermInputs:
    """Per-update inputs from the RL loss: online observations and π_θ's outputs on them.

    `student_distribution_inputs` are the module's raw `action_dist_inputs` from the RL forward; a
    term that uses them maps them through `RetentionPolicyAPI.sampled_distribution_inputs` (what
    the policy samples from). `mask` (bool, batch shape) marks valid samples; padding steps are
    excluded.
    """

    observations: Any = None
    student_distribution_inputs: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    teacher_distribution_inputs: torch.Tensor | None = None
    """A carried teacher's outputs on the same steps (`RetentionPolicyAPI.carries_teacher`), else None."""


RetentionData = Mapping[str, np.ndarray]
"""Pre-training data as written by `ftcl.data.retention_data` (keys obs, actions, ...)."""


def require_data(data: RetentionData | None, keys: tuple[str, ...], term: str) -> RetentionData:
    """`data` if it holds these keys; else a ValueError naming the missing ones."""
    missing = [key for key in keys if data is None or key not in data]
    if missing:
        present = sorted(data) if data is not None else "no data"
        raise ValueError(f"retention term '{term}' needs π*'s data with key(s) {missing}; got {present}")
    assert data is not None
    return data


class RetentionTerm(abc.ABC):
    """One knowledge-retention term λ·R(θ) added to the RL loss."""

    name: str = "term"

    def __init__(self, coeff: float) -> None:
        self.coeff = float(coeff)
        self._last_penalty_tensor: torch.Tensor | None = None
        self._prepared = False

    @property
    def _last_penalty(self) -> float:
        """R(θ) of the last `loss` call as a float (converted lazily: no sync per update)."""
        if self._last_penalty_tensor is None:
            return float("nan")
        return float(self._last_penalty_tensor)

    @property
    def is_prepared(self) -> bool:
        return self._prepared

    def prepare(
        self,
        policy: RetentionPolicyAPI,
        data: RetentionData | None = None,
        teacher: RetentionPolicyAPI | None = None,
    ) -> None:
        """Capture what the term needs from π* (θ*, Fisher, buffer labels; `teacher`: a frozen π*).

        Must be called while `policy` holds the pre-trained weights θ*.
        """
        self._prepare(policy, data, teacher)
        self._prepared = True

    @abc.abstractmethod
    def _prepare(self, policy: RetentionPolicyAPI, data: RetentionData | None, teacher: RetentionPolicyAPI | None) -> None:
        """Term-specific preparation (see `prepare`)."""

    def loss(self, inputs: TermInputs) -> torch.Tensor:
        """λ·R(θ) on this update (a scalar tensor in the graph of the student's parameters)."""
        if not self._prepared:
            raise RuntimeError(
                f"retention term '{self.name}' used before prepare(): θ*/teacher must be captured "
                "after the pre-trained weights are loaded"
            )
        penalty = self._penalty(inputs)
        self._last_penalty_tensor = penalty.detach()
        return self.coeff * penalty

    @abc.abstractmethod
    def _penalty(self, inputs: TermInputs) -> torch.Tensor:
        """R(θ) without the coefficient."""

    def critic_loss(self, parameter_names: Iterable[str] | None = None) -> torch.Tensor | None:
        """The critic-side term over these critic parameters (None: all of them), or None if none.

        Learners with one optimizer add it once; SAC adds to each Q-network's loss the part over
        that network's own parameters (its optimizer steps only those).
        """
        return None

    def after_optimizer_steps(self, num_steps: int = 1) -> None:
        """Advance the coefficient schedule by `num_steps` optimizer steps (default: constant λ)."""

    def get_state(self) -> dict[str, Any]:
        """What must survive a checkpoint besides θ* and data (scheduled λ_t, sampling RNG)."""
        return {"coeff": self.coeff}

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restore `get_state()`'s values (called after `prepare` when a trial resumes)."""
        self.coeff = float(state["coeff"])

    def metrics(self) -> dict[str, float]:
        """{"<name>_loss": λ·R, "<name>_penalty": R, "<name>_coeff": λ} from the last loss call."""
        return {
            f"{self.name}_loss": self.coeff * self._last_penalty,
            f"{self.name}_penalty": self._last_penalty,
            f"{self.name}_coeff": self.coeff,
        }


def as_observation_tensor(array: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """Stored observations as a tensor: integer images (Atari frames, uint8) keep their dtype, 4× smaller
    than float32 — `float_observations` converts a minibatch at use — and everything else is float32."""
    array = np.asarray(array)
    if np.issubdtype(array.dtype, np.integer):
        return torch.as_tensor(array, device=device)
    return as_float_tensor(array, device)


def float_observations(observations: torch.Tensor) -> torch.Tensor:
    return observations if observations.is_floating_point() else observations.float()


def as_float_tensor(array: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """A float32 tensor on `device` from a numpy array."""
    return torch.as_tensor(np.asarray(array), dtype=torch.float32, device=device)
