"""APPO with knowledge retention: RLlib's APPO plus a retention term on the actor."""
from __future__ import annotations

from ray.rllib.algorithms.appo import APPO, APPOConfig
from ray.rllib.algorithms.appo.torch.appo_torch_learner import APPOTorchLearner
from ray.rllib.algorithms.appo.torch.default_appo_torch_rl_module import DefaultAPPOTorchRLModule
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from ftcl.algorithms.retention_algorithm import RetentionAlgorithmMixin, RetentionConfigMixin
from ftcl.algorithms.retention_learner import RetentionLearnerMixin
from ftcl.models.rllib_policy_api import ActorCriticEncoderPolicyAPI


class RetentionAPPOTorchRLModule(DefaultAPPOTorchRLModule, ActorCriticEncoderPolicyAPI):
    """RLlib's default APPO module with `RetentionPolicyAPI` (`_old_*` targets in neither part)."""


class RetentionAPPOTorchLearner(RetentionLearnerMixin, APPOTorchLearner):
    """APPO loss + λ·R(θ), with freezing and skip-train."""


class RetentionAPPOConfig(RetentionConfigMixin, APPOConfig):
    """APPOConfig with `.retention(method=..., pretrained_module_path=..., retention_data_path=...)`."""

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or RetentionAPPO)

    def get_default_rl_module_spec(self) -> RLModuleSpec:
        """RLlib's default APPO module spec with `RetentionAPPOTorchRLModule` (same networks + the policy API)."""
        spec = super().get_default_rl_module_spec()
        if spec.module_class is DefaultAPPOTorchRLModule:
            spec.module_class = RetentionAPPOTorchRLModule
        return spec

    def get_default_learner_class(self) -> type:
        if self.framework_str != "torch":
            raise ValueError("ftcl retention learners are torch only; set framework='torch'")
        return RetentionAPPOTorchLearner


class RetentionAPPO(RetentionAlgorithmMixin, APPO):
    """APPO that loads π* after building its learners and prepares the retention term."""

    @classmethod
    def get_default_config(cls) -> RetentionAPPOConfig:
        return RetentionAPPOConfig()
