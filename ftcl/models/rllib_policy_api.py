"""`RetentionPolicyAPI` for modules with RLlib's PPO-family and SAC layouts.

RLlib's default modules and ftcl's modules that keep RLlib's attribute names mix these in (the
Retention*Config classes use RLlib's defaults with them, so that `model: default` still gives the
retention learners a module that says what its actor and critics are):
  * PPO/APPO (`encoder` = RLlib's actor-critic encoder): actor = `pi` + the actor encoder, or
    the whole shared `encoder` with `vf_share_layers`; critic = `vf` + the critic encoder.
    APPO's `_old_*` target copies are in neither.
  * SAC: actor = `pi_encoder` + `pi`; critics = `qf*` and `qf_twin*` (targets excluded). RLlib's
    squashed Gaussian clamps log σ to [−5, 2] before sampling, so the API's distribution inputs
    are clamped the same way.
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch
from torch import nn

from ray.rllib.core.columns import Columns
from ray.rllib.core.models.base import ENCODER_OUT
from ray.rllib.utils.numpy import MAX_LOG_NN_OUTPUT, MIN_LOG_NN_OUTPUT

from ftcl.retention.policy_api import RetentionPolicyAPI, clamp_log_std, named_subset

SAC_ACTOR_PATHS = ("pi_encoder", "pi")
SAC_CRITIC_PATHS = ("qf_encoder", "qf", "qf_twin_encoder", "qf_twin")


class ActorCriticEncoderPolicyAPI(RetentionPolicyAPI):
    """`RetentionPolicyAPI` for RLlib's PPO-family modules (an actor-critic `encoder`, `pi`, `vf`)."""

    def _separate_actor_encoder(self) -> nn.Module | None:
        encoder = getattr(self, "encoder", None)
        actor_encoder = getattr(encoder, "actor_encoder", None)
        return actor_encoder if isinstance(actor_encoder, nn.Module) else None

    def actor_parameters(self) -> dict[str, nn.Parameter]:
        if self._separate_actor_encoder() is None:  # a shared trunk feeds π: it is the actor's
            return named_subset(self, ("pi", "encoder"))  # type: ignore[arg-type]
        return named_subset(self, ("pi", "encoder.actor_encoder"))  # type: ignore[arg-type]

    def critic_parameters(self) -> dict[str, nn.Parameter]:
        if self._separate_actor_encoder() is None:
            return named_subset(self, ("vf",))  # type: ignore[arg-type]
        return named_subset(self, ("vf", "encoder.critic_encoder"))  # type: ignore[arg-type]

    def policy_distribution_inputs(self, observations: torch.Tensor, state: Any = None) -> torch.Tensor:
        actor_encoder = self._separate_actor_encoder()
        if state is None and actor_encoder is not None and not self.is_stateful():  # type: ignore[attr-defined]
            # π's logits alone: `_forward` without the critic encoder it would also run
            return self.pi(actor_encoder({Columns.OBS: observations})[ENCODER_OUT])  # type: ignore[attr-defined]
        batch: dict[str, Any] = {Columns.OBS: observations}
        if state is not None:
            batch[Columns.STATE_IN] = state
        return self._forward(batch)[Columns.ACTION_DIST_INPUTS]  # type: ignore[attr-defined]


class SACPolicyAPI(RetentionPolicyAPI):
    """`RetentionPolicyAPI` for modules with RLlib's SAC layout (`pi_encoder`/`pi`, `qf*`, targets)."""

    def actor_parameters(self) -> dict[str, nn.Parameter]:
        return named_subset(self, SAC_ACTOR_PATHS)  # type: ignore[arg-type]

    def critic_parameters(self) -> dict[str, nn.Parameter]:
        return named_subset(self, SAC_CRITIC_PATHS)  # type: ignore[arg-type]

    def policy_distribution_inputs(self, observations: torch.Tensor, state: Any = None) -> torch.Tensor:
        raw = self.pi(self.pi_encoder({Columns.OBS: observations})[ENCODER_OUT])  # type: ignore[attr-defined]
        return self.sampled_distribution_inputs(raw)

    def sampled_distribution_inputs(self, action_dist_inputs: torch.Tensor) -> torch.Tensor:
        """Box actions: log σ clamped to [−5, 2] as RLlib's `TorchSquashedGaussian.from_logits` does."""
        if isinstance(self.action_space, gym.spaces.Box):  # type: ignore[attr-defined]
            return clamp_log_std(action_dist_inputs, MIN_LOG_NN_OUTPUT, MAX_LOG_NN_OUTPUT)
        return action_dist_inputs
