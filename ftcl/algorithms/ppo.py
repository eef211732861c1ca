"""PPO with knowledge retention: RLlib's PPO plus a retention term on the actor."""
from __future__ import annotations

from ray.rllib.algorithms.ppo import PPO, PPOConfig
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner

from ftcl.algorithms.retention_algorithm import RetentionAlgorithmMixin, RetentionConfigMixin
from ftcl.algorithms.retention_learner import RetentionLearnerMixin


class RetentionPPOTorchLearner(RetentionLearnerMixin, PPOTorchLearner):
    """PPO loss + λ·R(θ) (L2/EWC/BC/KS), with freezing and skip-train."""


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
