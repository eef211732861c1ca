"""PPO with knowledge retention: RLlib's PPO plus a retention term on the actor."""
from __future__ import annotations

from typing import Any

import torch
from ray.rllib.algorithms.ppo import PPO, PPOConfig
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner

from ftcl.algorithms.retention_algorithm import RetentionAlgorithmMixin, RetentionConfigMixin
from ftcl.algorithms.retention_learner import RetentionLearnerMixin, split_actor_critic_parameters

ACTOR_OPTIMIZER_KEY = "ftcl_actor_optimizer"
"""`learner_config_dict` key: {"type": "sgd" | "adam", "lr": float} for a separate actor optimizer."""
ACTOR_OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}


class RetentionPPOTorchLearner(RetentionLearnerMixin, PPOTorchLearner):
    """PPO loss + λ·R(θ) (L2/EWC/BC/KS), with freezing and skip-train.

    With `learner_config_dict["ftcl_actor_optimizer"]` the actor gets its own optimizer (e.g. plain
    SGD, as the paper's REINFORCE toys) and everything else keeps Adam at `config.lr`.
    """

    def configure_optimizers_for_module(self, module_id: str, config: Any = None) -> None:
        choice = (config.learner_config_dict or {}).get(ACTOR_OPTIMIZER_KEY) if config else None
        if not choice:
            return super().configure_optimizers_for_module(module_id, config)
        module = self._module[module_id]
        named = dict(module.named_parameters())
        actor_names = set(split_actor_critic_parameters(module)[0])
        actor = [named[name] for name in named if name in actor_names]
        rest = [named[name] for name in named if name not in actor_names]
        self.register_optimizer(
            module_id=module_id, optimizer_name="actor", optimizer=ACTOR_OPTIMIZERS[choice["type"]](actor),
            params=actor, lr_or_lr_schedule=choice["lr"],
        )
        self.register_optimizer(
            module_id=module_id, optimizer_name="rest", optimizer=torch.optim.Adam(rest), params=rest,
            lr_or_lr_schedule=config.lr,
        )


class RetentionPPOConfig(RetentionConfigMixin, PPOConfig):
    """PPOConfig with `.retention(method=..., pretrained_module_path=..., retention_data_path=...)`."""

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or RetentionPPO)

    def get_default_learner_class(self) -> type:
        if self.framework_str != "torch":
            raise ValueError("ftcl retention learners are torch only; set framework='torch'")
        return RetentionPPOTorchLearner


class RetentionPPO(RetentionAlgorithmMixin, PPO):
    """PPO that loads π* after building its learners and prepares the retention term."""

    @classmethod
    def get_default_config(cls) -> RetentionPPOConfig:
        return RetentionPPOConfig()
