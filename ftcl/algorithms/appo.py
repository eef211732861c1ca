"""APPO with knowledge retention: RLlib's APPO plus a retention term on the actor."""
from __future__ import annotations

from ray.rllib.algorithms.appo import APPO, APPOConfig
from ray.rllib.algorithms.appo.torch.appo_torch_learner import APPOTorchLearner

from ftcl.algorithms.retention_algorithm import RetentionAlgorithmMixin, RetentionConfigMixin
from ftcl.algorithms.retention_learner import RetentionLearnerMixin


class RetentionAPPOTorchLearner(RetentionLearnerMixin, APPOTorchLearner):
    """APPO loss + λ·R(θ) (L2/EWC/BC/KS), with freezing and skip-train."""


class RetentionAPPOConfig(RetentionConfigMixin, APPOConfig):
    """APPOConfig with `.retention(method=..., pretrained_module_path=..., retention_data_path=...)`."""

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or RetentionAPPO)

    def get_default_learner_class(self) -> type:
        if self.framework_str != "torch":
            raise ValueError("ftcl retention learners are torch only; set framework='torch'")
        return RetentionAPPOTorchLearner


class RetentionAPPO(RetentionAlgorithmMixin, APPO):
    """APPO that loads π* after building its learners and prepares the retention term."""

    @classmethod
    def get_default_config(cls) -> RetentionAPPOConfig:
        return RetentionAPPOConfig()
