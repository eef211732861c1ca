"""The common interface of retention terms (plain PyTorch; no RLlib).

A term is built from its method config, *prepared* once with the pre-trained policy π* (whose
parameters are θ*) and its pre-training data, then asked for its loss on every update and told
after every optimizer step, so that scheduled coefficients (λ_t) can move.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np
import torch
from torch import nn

from ftcl.retention.distributions import DistributionKind

DistributionFn = Callable[[torch.Tensor], torch.Tensor]
"""Maps a batch of observations to the policy's action-distribution inputs."""


@dataclass
class PolicyHandle:
    """What a retention term needs to know about a policy.

    `module` owns the parameters; `distribution_inputs(obs)` runs the actor with the module's
    *current* parameters (gradients flow); `actor_parameter_names` / `critic_parameter_names`
    are names from `module.named_parameters()`.
    """

    module: nn.Module
    distribution_inputs: DistributionFn
    distribution_kind: DistributionKind
    actor_parameter_names: list[str]
    critic_parameter_names: list[str] = field(default_factory=list)

    def named_parameters(self, names: list[str]) -> dict[str, nn.Parameter]:
        """The live parameters of `module` with these names (KeyError names a missing one)."""
        available = dict(self.module.named_parameters())
        missing = [name for name in names if name not in available]
        if missing:
            raise KeyError(f"parameters not found in the policy module: {missing}")
        return {name: available[name] for name in names}


@dataclass
class TermInputs:
    """Per-update inputs from the RL loss: online observations and π_θ's outputs on them.

    `mask` (bool, same batch shape) marks valid samples; padding steps are excluded.
    """

    observations: torch.Tensor | None = None
    student_distribution_inputs: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    extra_student_distribution_inputs: torch.Tensor | None = None
    """π_θ's outputs on the states the term asked for via `extra_actor_observations()`, when the
    learner ran them in the same actor forward as the RL batch (fused path); else None."""


RetentionData = Mapping[str, np.ndarray]
"""Pre-training data as written by `ftcl.pretrain.data` (keys obs, actions, ...)."""


class RetentionTerm(abc.ABC):
    """One knowledge-retention term λ·R(θ) added to the RL loss."""

    name: str = "term"
    needs_data: frozenset[str] = frozenset()
    """Keys of the pre-training data the term needs at prepare time."""

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

    def prepare(self, student: PolicyHandle, data: RetentionData | None = None) -> None:
        """Capture what the term needs from π* (θ*, teacher copy, Fisher, buffer).

        Must be called when `student.module` holds the pre-trained weights θ*.
        """
        missing = sorted(self.needs_data - set(data or {}))
        if missing:
            raise ValueError(
                f"retention term '{self.name}' needs pre-training data with keys {missing}; "
                "pass retention_data_path to an .npz written by ftcl.pretrain.data"
            )
        self._prepare(student, data)
        self._prepared = True

    @abc.abstractmethod
    def _prepare(self, student: PolicyHandle, data: RetentionData | None) -> None:
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

    def losses(self, inputs: TermInputs) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(actor-side λ·R(θ), critic-side term or None).

        Learners with one optimizer add both; learners with separate actor and critic
        optimizers (SAC) add each to the loss that its optimizer backpropagates.
        """
        return self.loss(inputs), None

    @abc.abstractmethod
    def _penalty(self, inputs: TermInputs) -> torch.Tensor:
        """R(θ) without the coefficient."""

    def extra_actor_observations(self) -> torch.Tensor | None:
        """States on which the term needs π_θ's outputs in the next `loss` call, or None.

        A learner whose module can run these in the same actor forward as the RL batch passes
        the outputs back as `TermInputs.extra_student_distribution_inputs`; otherwise the term
        runs the actor itself. Terms without such states return None (the default).
        """
        return None

    def after_optimizer_steps(self, num_steps: int = 1) -> None:
        """Advance the coefficient schedule by `num_steps` optimizer steps (default: constant λ)."""

    def metrics(self) -> dict[str, float]:
        """{"<name>_loss": λ·R, "<name>_penalty": R, "<name>_coeff": λ} from the last loss call."""
        return {
            f"{self.name}_loss": self.coeff * self._last_penalty,
            f"{self.name}_penalty": self._last_penalty,
            f"{self.name}_coeff": self.coeff,
        }


def as_float_tensor(array: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """A float32 tensor on `device` from a numpy array."""
    return torch.as_tensor(np.asarray(array), dtype=torch.float32, device=device)


def module_device(module: nn.Module) -> torch.device:
    """The device of the module's first parameter (cpu for a parameter-less module)."""
    for parameter in module.parameters():
        return parameter.device
    return torch.device("cpu")
