"""The PPO + RND networks of the paper's Montezuma's Revenge agent (jcwleo's, paper B.2), as one RLModule.

Policy and values (input: the 4-frame stack, pixels / 255):
    trunk  = Conv 32·8×8/4 → Conv 64·4×4/2 → Conv 64·3×3/1 → FC 256 → FC 448   (ReLU after each)
    π      = FC 448 → |A| logits, after FC 448 (ReLU)
    V_ext, V_int = FC 448 → 1 each, on h + extra(h) with extra = FC 448 (ReLU)
RND (input: the last frame, normalised by running per-pixel mean and std, clipped to [−5, 5]):
    target f    = Conv 32·8×8/4 → Conv 64·4×4/2 → Conv 64·3×3/1 (LeakyReLU) → FC 512, frozen at init
    predictor f̂ = the same convolutions → FC 512 → ReLU → FC 512 → ReLU → FC 512
    novelty e(s) = ½ ‖f̂(s) − f(s)‖²  (the intrinsic reward before normalisation)
Initialisation as jcwleo: orthogonal with gain √2 and zero biases, gain 0.01 for the policy's and
values' last layers, 0.1 for `extra`.

The running statistics (per-pixel mean/var of RND's input, mean/var of the intrinsic return
r_int is divided by) are buffers of the module, so checkpoints and π* carry them; the learner's
`RNDAdvantages` connector updates them. EnvRunners hold the inference-only module: trunk and π.

`RetentionPolicyAPI`: the actor is the trunk and π (the policy's output depends on the trunk);
the critics are `extra`, V_ext and V_int; RND is neither, so no retention term reaches it.
model_config: `trunk_width` (256), `head_width` (448), `rnd_width` (512).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis import InferenceOnlyAPI, ValueFunctionAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.utils.typing import TensorType

from ftcl.retention.policy_api import RetentionPolicyAPI, named_subset

RND_INPUT_CLIP = 5.0
INTRINSIC_VALUES = "vf_preds_intrinsic"
"""fwd_out key of V_int in training forward passes."""


def _convolutions(in_channels: int, activation: type[nn.Module]) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, 32, 8, stride=4), activation(), nn.Conv2d(32, 64, 4, stride=2), activation(),
            nn.Conv2d(64, 64, 3, stride=1), activation(), nn.Flatten()]


def _flat_size(layers: nn.Sequential, channels: int, size: int) -> int:
    with torch.no_grad():
        return int(layers(torch.zeros(1, channels, size, size)).shape[1])


def _orthogonal(module: nn.Module, gain: float) -> None:
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.orthogonal_(layer.weight, gain)
            nn.init.zeros_(layer.bias)


class RNDPolicyModule(TorchRLModule, ValueFunctionAPI, InferenceOnlyAPI, RetentionPolicyAPI):
    """Policy, two value heads and RND (module doc). Observations: (H, W, stack) uint8, H = W."""

    def setup(self) -> None:
        config = self.model_config or {}
        shape = tuple(self.observation_space.shape)
        if len(shape) != 3 or shape[0] != shape[1]:
            raise ValueError(f"RNDPolicyModule needs square (H, W, frames) observations, got {self.observation_space}")
        if not hasattr(self.action_space, "n"):
            raise ValueError(f"RNDPolicyModule needs a Discrete action space, got {self.action_space}")
        size, frames = int(shape[0]), int(shape[2])
        trunk_width, head_width = int(config.get("trunk_width", 256)), int(config.get("head_width", 448))
        rnd_width = int(config.get("rnd_width", 512))
        convolutions = nn.Sequential(*_convolutions(frames, nn.ReLU))
        flat = _flat_size(convolutions, frames, size)
        self.trunk = nn.Sequential(*convolutions, nn.Linear(flat, trunk_width), nn.ReLU(),
                                   nn.Linear(trunk_width, head_width), nn.ReLU())
        self.pi = nn.Sequential(nn.Linear(head_width, head_width), nn.ReLU(), nn.Linear(head_width, int(self.action_space.n)))
        _orthogonal(self.trunk, math.sqrt(2))
        _orthogonal(self.pi, 0.01)
        if not self.inference_only:
            self.extra = nn.Sequential(nn.Linear(head_width, head_width), nn.ReLU())
            self.vf_ext, self.vf_int = nn.Linear(head_width, 1), nn.Linear(head_width, 1)
            _orthogonal(self.extra, 0.1)
            _orthogonal(self.vf_ext, 0.01)
            _orthogonal(self.vf_int, 0.01)
            self.rnd_target = nn.Sequential(*_convolutions(1, nn.LeakyReLU), nn.Linear(flat, rnd_width))
            self.rnd_predictor = nn.Sequential(*_convolutions(1, nn.LeakyReLU), nn.Linear(flat, rnd_width), nn.ReLU(),
                                               nn.Linear(rnd_width, rnd_width), nn.ReLU(), nn.Linear(rnd_width, rnd_width))
            _orthogonal(self.rnd_target, math.sqrt(2))
            _orthogonal(self.rnd_predictor, math.sqrt(2))
            self.rnd_target.requires_grad_(False)
            # running statistics (module doc); var starts at 1 so an uninitialised module is usable
            self.register_buffer("rnd_obs_mean", torch.zeros(size, size))
            self.register_buffer("rnd_obs_var", torch.ones(size, size))
            self.register_buffer("rnd_obs_count", torch.zeros((), dtype=torch.float64))
            self.register_buffer("int_return_var", torch.ones((), dtype=torch.float64))
            self.register_buffer("int_return_mean", torch.zeros((), dtype=torch.float64))
            self.register_buffer("int_return_count", torch.zeros((), dtype=torch.float64))

    def get_non_inference_attributes(self) -> list[str]:
        return ["extra", "vf_ext", "vf_int", "rnd_target", "rnd_predictor", "rnd_obs_mean", "rnd_obs_var",
                "rnd_obs_count", "int_return_var", "int_return_mean", "int_return_count"]

    # ---------------------------------------------------------------- policy and values
    def _features(self, observations: torch.Tensor) -> torch.Tensor:
        """h = trunk(pixels / 255) for (B, H, W, frames) observations."""
        return self.trunk(observations.permute(0, 3, 1, 2).float() / 255.0)

    def _forward(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        return {Columns.ACTION_DIST_INPUTS: self.pi(self._features(batch[Columns.OBS]))}

    def _forward_train(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        features = self._features(batch[Columns.OBS])
        value_features = features + self.extra(features)
        return {Columns.ACTION_DIST_INPUTS: self.pi(features), Columns.EMBEDDINGS: value_features,
                INTRINSIC_VALUES: self.vf_int(value_features).squeeze(-1)}

    def compute_values(self, batch: dict[str, Any], embeddings: Any | None = None) -> TensorType:
        """V_ext(s), shape (B,)."""
        if embeddings is None:
            features = self._features(batch[Columns.OBS])
            embeddings = features + self.extra(features)
        return self.vf_ext(embeddings).squeeze(-1)

    def compute_both_values(self, observations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(V_ext(s), V_int(s)), each (B,)."""
        features = self._features(observations)
        value_features = features + self.extra(features)
        return self.vf_ext(value_features).squeeze(-1), self.vf_int(value_features).squeeze(-1)

    # ---------------------------------------------------------------- RND
    def rnd_input(self, observations: torch.Tensor) -> torch.Tensor:
        """The last frame, normalised by the running per-pixel statistics and clipped, (B, 1, H, W)."""
        last = observations[..., -1].float()
        normalised = (last - self.rnd_obs_mean) / torch.sqrt(self.rnd_obs_var + 1e-8)
        return normalised.clamp(-RND_INPUT_CLIP, RND_INPUT_CLIP).unsqueeze(1)

    def novelty(self, observations: torch.Tensor) -> torch.Tensor:
        """e(s) = ½‖f̂(s) − f(s)‖² per observation, (B,); differentiable in the predictor."""
        inputs = self.rnd_input(observations)
        with torch.no_grad():
            target = self.rnd_target(inputs)
        return 0.5 * (self.rnd_predictor(inputs) - target).pow(2).sum(-1)

    def update_observation_statistics(self, last_frames: np.ndarray) -> None:
        """Fold a batch of last frames (N, H, W) into the per-pixel running mean and variance."""
        frames = torch.as_tensor(np.asarray(last_frames, np.float64))
        mean, var, count = _merge_moments(self.rnd_obs_mean.double(), self.rnd_obs_var.double(), self.rnd_obs_count,
                                          frames.mean(0), frames.var(0, unbiased=False), frames.shape[0])
        self.rnd_obs_mean.copy_(mean.float())
        self.rnd_obs_var.copy_(var.float())
        self.rnd_obs_count.copy_(count)

    def set_observation_statistics(self, last_frames: np.ndarray) -> None:
        """Reset the statistics to those of `last_frames` (N, H, W) (random-action initialisation)."""
        self.rnd_obs_count.zero_()
        self.rnd_obs_mean.zero_()
        self.rnd_obs_var.fill_(1.0)
        self.update_observation_statistics(last_frames)

    def update_intrinsic_return_statistics(self, returns: np.ndarray) -> float:
        """Fold discounted intrinsic returns into their running moments; the new std."""
        values = torch.as_tensor(np.asarray(returns, np.float64).ravel())
        mean, var, count = _merge_moments(self.int_return_mean, self.int_return_var, self.int_return_count,
                                          values.mean(), values.var(unbiased=False), values.numel())
        self.int_return_mean.copy_(mean)
        self.int_return_var.copy_(var)
        self.int_return_count.copy_(count)
        return float(torch.sqrt(var))

    # ---------------------------------------------------------------- RetentionPolicyAPI
    def actor_parameters(self) -> dict[str, nn.Parameter]:
        return named_subset(self, ("trunk", "pi"))

    def critic_parameters(self) -> dict[str, nn.Parameter]:
        return named_subset(self, ("extra", "vf_ext", "vf_int"))

    def policy_distribution_inputs(self, observations: torch.Tensor, state: Any = None) -> torch.Tensor:
        return self.pi(self._features(observations))


def _merge_moments(mean: torch.Tensor, var: torch.Tensor, count: torch.Tensor, batch_mean: torch.Tensor,
                   batch_var: torch.Tensor, batch_count: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Parallel merge of (mean, var, count) with a batch's moments (Chan et al.), as jcwleo's RunningMeanStd."""
    total = count + batch_count
    delta = batch_mean - mean
    new_mean = mean + delta * batch_count / total
    m2 = var * count + batch_var * batch_count + delta.pow(2) * count * batch_count / total
    return new_mean, m2 / total, total
