"""`RetentionPolicyAPI`: what a retention term needs of a policy module, declared as an RLModule API.

In RLlib's idiom (next to `ValueFunctionAPI`, `TargetNetworkAPI`): an RLModule that can be
fine-tuned with retention inherits this class and says, in its own terms,
  * which of its parameters are the actor's (θ: what L2/EWC anchor, what BC/KS move) and which
    the critics' (what L2's `critic_coeff` anchors, what critic warm-up trains) — a CNN trunk
    shared by a policy head and value heads, or an LSTM core shared by policy and baseline, is
    the actor's, since the policy output depends on it;
  * the inputs of the action distribution the policy *samples from* for a batch of
    observations (with gradients, and with the recurrent state where the module has one);
  * for recurrent modules, whether it *carries* a frozen teacher π* that runs beside it along the
    rollouts with its own recurrent state (`carries_teacher`; its outputs come with the training
    forward pass as `fwd_out[TEACHER_ACTION_DIST_INPUTS]`) and which sub-modules are such copies
    that follow their network when π* is loaded (`teacher_copies`).
Retention learners require it through `rl_module_required_apis`. Plain PyTorch: no RLlib import.
"""
from __future__ import annotations

import abc
from typing import Any

import torch
from torch import nn

from ftcl.retention.distributions import DistributionKind, distribution_kind_for_action_space
from ftcl.retention.freezing import parameter_in_module


TEACHER_ACTION_DIST_INPUTS = "teacher_action_dist_inputs"
"""fwd_out key of a carried teacher's distribution inputs (training forward passes)."""


class RetentionPolicyAPI(abc.ABC):
    """An RLModule API for retention terms (module docstring); mix it into an `nn.Module`."""

    @abc.abstractmethod
    def actor_parameters(self) -> dict[str, nn.Parameter]:
        """The actor's parameters θ by their `named_parameters()` names (shared trunks included)."""

    @abc.abstractmethod
    def critic_parameters(self) -> dict[str, nn.Parameter]:
        """The critics' own parameters by name (targets and frozen copies excluded); may be empty."""

    @abc.abstractmethod
    def policy_distribution_inputs(self, observations: torch.Tensor, state: Any = None) -> torch.Tensor:
        """Inputs of the distribution π_θ(·|s) the policy samples from, with gradients.

        Categorical: logits. Diagonal Gaussian (pre-squash for SAC): [μ, log σ] with log σ as the
        distribution class uses it (clamped where it clamps). `state`: the recurrent state for
        stateful modules (observations then carry a time axis); None for feed-forward modules.
        """

    def recurrent_distribution_inputs(self, observations: Any, is_first: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        """Recurrent modules: (distribution inputs (B, T, …), state after the last step) for sequences
        of observations (B, T, …) that may cross episode starts (`is_first` (B, T): the state is reset
        before such a step), from `state` (None: the initial state). Sequence BC and EWC read dataset
        streams with it (ttyrecs); feed-forward modules do not implement it."""
        raise NotImplementedError(f"{type(self).__name__} is not a recurrent policy: it reads stored states, not sequences")

    def sampled_distribution_inputs(self, action_dist_inputs: torch.Tensor) -> torch.Tensor:
        """The module's raw `action_dist_inputs` as the distribution class uses them (identity here).

        Override where the distribution class transforms them (RLlib's squashed Gaussian clamps
        log σ to [−5, 2]), so that a KL or a Fisher is taken on what the policy samples from.
        """
        return action_dist_inputs

    @property
    def carries_teacher(self) -> bool:
        """True if the module runs a frozen teacher π* beside itself (see the module doc)."""
        return False

    def teacher_copies(self) -> dict[str, str]:
        """{teacher sub-module: the network it copies}, set from that network's π* tensors on load and
        not written to π* (like target networks); {} for modules without a carried teacher."""
        return {}

    @property
    def policy_distribution_kind(self) -> DistributionKind:
        """categorical (Discrete actions) or diag_gaussian (Box actions)."""
        return distribution_kind_for_action_space(self.action_space)  # type: ignore[attr-defined]


def clamp_log_std(distribution_inputs: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """[μ, log σ] with log σ clamped to [low, high] (the last dim holds μ then log σ)."""
    mean, log_std = distribution_inputs.chunk(2, dim=-1)
    return torch.cat([mean, log_std.clamp(low, high)], dim=-1)


def named_subset(module: nn.Module, prefixes: tuple[str, ...]) -> dict[str, nn.Parameter]:
    """Parameters of `module` under any of these attribute paths (dot-boundary prefixes), in order."""
    return {
        name: parameter
        for name, parameter in module.named_parameters()
        if any(parameter_in_module(name, prefix) for prefix in prefixes)
    }


def module_device(module: nn.Module) -> torch.device:
    """The device of the module's first parameter (cpu for a parameter-less module)."""
    for parameter in module.parameters():
        return parameter.device
    return torch.device("cpu")
