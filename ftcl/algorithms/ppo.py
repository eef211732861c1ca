"""PPO with knowledge retention: RLlib's PPO plus a retention term on the actor."""
from __future__ import annotations

from typing import Any

import torch
from ray.rllib.algorithms.ppo import PPO, PPOConfig
from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import DefaultPPOTorchRLModule
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from ftcl.algorithms.retention_algorithm import RetentionAlgorithmMixin, RetentionConfigMixin
from ftcl.algorithms.retention_learner import RetentionLearnerMixin
from ftcl.algorithms.rllib_overrides import FusedGradientCheckMixin, StayInEvalModeMixin
from ftcl.models.rllib_policy_api import ActorCriticEncoderPolicyAPI

ACTOR_OPTIMIZER_KEY = "ftcl_actor_optimizer"
"""`learner_config_dict` key: {"type": "sgd" | "adam", "lr": float} for a separate actor optimizer."""
ACTOR_OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}


class RetentionPPOTorchRLModule(StayInEvalModeMixin, DefaultPPOTorchRLModule, ActorCriticEncoderPolicyAPI):
    """RLlib's default PPO module with `RetentionPolicyAPI` (same networks, same outputs)."""


class RetentionPPOTorchLearner(RetentionLearnerMixin, FusedGradientCheckMixin, PPOTorchLearner):
    """PPO loss + λ·R(θ), with freezing and skip-train.

    With `learner_config_dict["ftcl_actor_optimizer"]` the actor (its parameters as the module's
    `RetentionPolicyAPI` names them) gets its own optimizer — e.g. plain SGD, as the paper's
    REINFORCE toys — and everything else keeps Adam at `config.lr`.
    """

    def configure_optimizers_for_module(self, module_id: str, config: Any = None) -> None:
        choice = (config.learner_config_dict or {}).get(ACTOR_OPTIMIZER_KEY) if config else None
        if not choice:
            return super().configure_optimizers_for_module(module_id, config)
        module = self._module[module_id]
        actor_ids = {id(p) for p in module.unwrapped().actor_parameters().values()}
        actor = [p for p in module.parameters() if id(p) in actor_ids]
        rest = [p for p in module.parameters() if id(p) not in actor_ids]
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

    def get_default_rl_module_spec(self) -> RLModuleSpec:
        """RLlib's default PPO module spec with `RetentionPPOTorchRLModule` (same networks + the policy API)."""
        spec = super().get_default_rl_module_spec()
        if spec.module_class is DefaultPPOTorchRLModule:
            spec.module_class = RetentionPPOTorchRLModule
        return spec

    def get_default_learner_class(self) -> type:
        if self.framework_str != "torch":
            raise ValueError("ftcl retention learners are torch only; set framework='torch'")
        return RetentionPPOTorchLearner


class RetentionPPO(RetentionAlgorithmMixin, PPO):
    """PPO that loads π* after building its learners and prepares the retention term."""

    @classmethod
    def get_default_config(cls) -> RetentionPPOConfig:
        return RetentionPPOConfig()
