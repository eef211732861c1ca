"""SAC RLModule with the paper's (Continual World's) networks, for RLlib's SAC learner.

RLlib 2.60's `DefaultSACTorchRLModule` builds each Q-network as a multi-stream encoder (one 4-layer
MLP for the observation, another for the action, plus dense fusion layers): about twice the
matrix multiplications of the paper's critic and a different function class. This module keeps
RLlib's SAC module API (attribute names `pi_encoder`/`pi`, `qf_encoder`/`qf`, `qf_twin_encoder`/
`qf_twin`, target copies, `_qf_forward_train_helper`), so `SACTorchLearner` and the retention
learners use it unchanged, but builds the networks the paper describes:

    actor  π(·|s):  s      -> Linear -> LayerNorm -> tanh -> [Linear -> LeakyReLU] x (L-1) -> Linear(2·|A|)
    critic Q(s, a): [s, a] -> Linear -> LayerNorm -> tanh -> [Linear -> LeakyReLU] x (L-1) -> Linear(1)

with L = len(model_config["fcnet_hiddens"]) hidden layers (paper: 4 × 256). The policy head
outputs [μ, log σ] of RLlib's squashed Gaussian (which clamps log σ to [−5, 2]). One output head (single task); a multi-head
variant selects a head by stage id.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ray.rllib.algorithms.sac.torch.default_sac_torch_rl_module import DefaultSACTorchRLModule
from ray.rllib.core.columns import Columns
from ray.rllib.core.models.base import ENCODER_OUT

from ftcl.models.rllib_policy_api import SACPolicyAPI

DEFAULT_HIDDENS = (256, 256, 256, 256)


def paper_mlp(input_dim: int, hiddens: Sequence[int]) -> nn.Sequential:
    """Linear -> LayerNorm -> tanh, then Linear -> LeakyReLU for every further hidden layer."""
    layers: list[nn.Module] = [nn.Linear(input_dim, hiddens[0]), nn.LayerNorm(hiddens[0]), nn.Tanh()]
    for width_in, width_out in zip(hiddens[:-1], hiddens[1:]):
        layers += [nn.Linear(width_in, width_out), nn.LeakyReLU()]
    return nn.Sequential(*layers)


class PaperMLPEncoder(nn.Module):
    """Concatenates the batch columns `input_keys` (flattened) and runs `paper_mlp` on them."""

    def __init__(self, input_dim: int, hiddens: Sequence[int], input_keys: Sequence[str]) -> None:
        super().__init__()
        self.input_keys = tuple(input_keys)
        self.net = paper_mlp(input_dim, hiddens)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        if len(self.input_keys) == 1:
            inputs = batch[self.input_keys[0]]
        else:
            inputs = torch.cat([batch[key].flatten(1).float() for key in self.input_keys], dim=-1)
        return {ENCODER_OUT: self.net(inputs)}


class MLPSACTorchRLModule(DefaultSACTorchRLModule, SACPolicyAPI):
    """RLlib's SAC module API with the paper's actor and critics (module docstring).

    `RetentionPolicyAPI` as RLlib's SAC module: log σ clamped to [−5, 2] as its distribution does.
    """

    def setup(self) -> None:
        self.twin_q = bool(self.model_config.get("twin_q", True))
        hiddens = list(self.model_config.get("fcnet_hiddens") or DEFAULT_HIDDENS)
        observation_dim = int(np.prod(self.observation_space.shape))
        action_dim = int(np.prod(self.action_space.shape))
        self.pi_encoder = PaperMLPEncoder(observation_dim, hiddens, (Columns.OBS,))
        self.pi = nn.Linear(hiddens[-1], 2 * action_dim)
        if not self.inference_only:
            critic_input = observation_dim + action_dim
            critic_keys = (Columns.OBS, Columns.ACTIONS)
            self.qf_encoder = PaperMLPEncoder(critic_input, hiddens, critic_keys)
            self.qf = nn.Linear(hiddens[-1], 1)
            if self.twin_q:
                self.qf_twin_encoder = PaperMLPEncoder(critic_input, hiddens, critic_keys)
                self.qf_twin = nn.Linear(hiddens[-1], 1)

    def _qf_forward_train_helper(
        self, batch: dict[str, Any], encoder: nn.Module, head: nn.Module, squeeze: bool = True
    ) -> torch.Tensor:
        q_values = head(encoder(batch)[ENCODER_OUT])
        return q_values.squeeze(-1) if squeeze else q_values
