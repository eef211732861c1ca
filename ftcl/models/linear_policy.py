"""A linear-logistic policy RLModule: the paper's 2-parameter AppleRetrieval policy for PPO.

The paper (App. A.2) uses P(right | o) = σ(w·o + b). Here the actor is one linear layer giving
logits W·o + b_vec over the actions; for two actions the softmax of those logits is exactly
σ(w·o + b) with w = W[right] - W[left] and b = b_vec[right] - b_vec[left]. The critic, which the
paper's REINFORCE did not need but PPO does, is a separate small MLP: actor and critic share
no parameters, so PPO's value loss cannot move the policy.

Use it with:
    PPOConfig().rl_module(rl_module_spec=RLModuleSpec(
        module_class=LinearPolicyModule, model_config={"init_std": 0.01, "vf_hiddens": [32]}))
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis.value_function_api import ValueFunctionAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.utils.typing import TensorType

from ftcl.retention.policy_api import RetentionPolicyAPI, named_subset

DEFAULT_VF_HIDDENS: list[int] = [32]


class LinearPolicyModule(TorchRLModule, ValueFunctionAPI, RetentionPolicyAPI):
    """Linear actor `pi` (logits = W·o + b) and a separate MLP critic `vf`, for PPO.

    model_config keys:
      init_std: std of the normal init of the actor weights W (biases start at 0); None keeps
        torch's default init. Default 0.0: the pre-training start is the uniform policy.
      init_bias: optional list, one initial logit bias per action (default zeros).
      vf_hiddens: hidden sizes of the critic MLP (tanh), default [32].
    The observation space must be a 1-D Box and the action space Discrete.
    """

    def setup(self) -> None:
        """Build `pi` and `vf` from the spaces and `model_config`."""
        config = self.model_config or {}
        # RLlib merges its default model_config keys (e.g. vf_share_layers) into this dict,
        # so keys other than ours are expected and ignored.
        if len(self.observation_space.shape) != 1:
            raise ValueError(
                f"LinearPolicyModule needs a 1-D Box observation space, got {self.observation_space}"
            )
        if not hasattr(self.action_space, "n"):
            raise ValueError(f"LinearPolicyModule needs a Discrete action space, got {self.action_space}")
        observation_dim = int(self.observation_space.shape[0])
        num_actions = int(self.action_space.n)

        self.pi = nn.Linear(observation_dim, num_actions)
        init_std = config.get("init_std", 0.0)
        with torch.no_grad():
            if init_std is not None:
                nn.init.normal_(self.pi.weight, mean=0.0, std=float(init_std))
                nn.init.zeros_(self.pi.bias)
            if config.get("init_bias") is not None:
                init_bias = torch.as_tensor(config["init_bias"], dtype=torch.float32)
                if init_bias.shape != (num_actions,):
                    raise ValueError(
                        f"init_bias needs {num_actions} values (one per action), got {config['init_bias']}"
                    )
                self.pi.bias.copy_(init_bias)

        layers: list[nn.Module] = []
        in_size = observation_dim
        for width in config.get("vf_hiddens", DEFAULT_VF_HIDDENS):
            layers += [nn.Linear(in_size, int(width)), nn.Tanh()]
            in_size = int(width)
        layers.append(nn.Linear(in_size, 1))
        self.vf = nn.Sequential(*layers)

    def _forward(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        """Action logits W·o + b for inference, exploration and training."""
        return {Columns.ACTION_DIST_INPUTS: self.pi(batch[Columns.OBS])}

    def actor_parameters(self) -> dict[str, nn.Parameter]:
        return named_subset(self, ("pi",))

    def critic_parameters(self) -> dict[str, nn.Parameter]:
        return named_subset(self, ("vf",))

    def policy_distribution_inputs(self, observations: torch.Tensor, state: Any = None) -> torch.Tensor:
        return self.pi(observations)

    def compute_values(self, batch: dict[str, Any], embeddings: Any | None = None) -> TensorType:
        """V(o) from the critic MLP, shape (B,); `embeddings` is ignored (nothing is shared)."""
        return self.vf(batch[Columns.OBS]).squeeze(-1)


def logistic_parameters(module: LinearPolicyModule) -> tuple[np.ndarray, float]:
    """(w, b) of P(right | o) = σ(w·o + b) for a 2-action module (action 1 = right)."""
    weight = module.pi.weight.detach().cpu().numpy()
    bias = module.pi.bias.detach().cpu().numpy()
    if weight.shape[0] != 2:
        raise ValueError(f"logistic_parameters needs 2 actions, the module has {weight.shape[0]}")
    return weight[1] - weight[0], float(bias[1] - bias[0])


def action_probabilities(module: LinearPolicyModule, observations: np.ndarray) -> np.ndarray:
    """π(a | o) for each row of `observations`, shape (B, num_actions)."""
    obs = torch.as_tensor(np.asarray(observations, dtype=np.float32))
    if obs.ndim == 1:
        obs = obs.unsqueeze(-1)
    with torch.no_grad():
        logits = module.pi(obs)
    return torch.softmax(logits, dim=-1).cpu().numpy()
