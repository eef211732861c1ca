"""APPO with knowledge retention: RLlib's APPO plus a retention term on the actor.

Value targets and advantages come from `ftcl.algorithms.appo_targets` (bootstrap values kept at
every chunk end; `vtrace: false` as GAE(λ); `reward_clip`; a value head on normalised returns).
"""
from __future__ import annotations

from ray.rllib.algorithms.appo import APPO, APPOConfig
from ray.rllib.algorithms.appo.torch.appo_torch_learner import APPOTorchLearner
from ray.rllib.algorithms.appo.torch.default_appo_torch_rl_module import DefaultAPPOTorchRLModule
from ray.rllib.algorithms.impala.torch.vtrace_torch_v2 import make_time_major
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.utils.annotations import override
from ray.rllib.utils.from_config import NotProvided

from ftcl.algorithms.appo_targets import check_appo_target_options, ftcl_appo_targets, module_returns_normalizer
from ftcl.algorithms.retention_algorithm import RetentionAlgorithmMixin, RetentionConfigMixin
from ftcl.algorithms.retention_learner import RetentionLearnerMixin
from ftcl.models.rllib_policy_api import ActorCriticEncoderPolicyAPI


class RetentionAPPOTorchRLModule(DefaultAPPOTorchRLModule, ActorCriticEncoderPolicyAPI):
    """RLlib's default APPO module with `RetentionPolicyAPI` (`_old_*` targets in neither part)."""


class RetentionAPPOTorchLearner(RetentionLearnerMixin, APPOTorchLearner):
    """APPO loss (with ftcl's targets, module doc) + λ·R(θ), with freezing and skip-train."""

    @override(APPOTorchLearner)
    def compute_loss_for_module(self, *, module_id, config, batch, fwd_out):
        valid = make_time_major(batch[Columns.LOSS_MASK].float(), trajectory_len=config.get_rollout_fragment_length(),
                                recurrent_seq_len=batch.get("seq_lens"))
        normalizer = module_returns_normalizer(self.module[module_id].unwrapped())
        with ftcl_appo_targets(valid=valid, use_vtrace=config.targets_use_vtrace, lambda_=config.lambda_,
                               reward_clip=config.reward_clip, normalizer=normalizer,
                               standardize_advantages=config.standardize_advantages):
            loss = super().compute_loss_for_module(module_id=module_id, config=config, batch=batch, fwd_out=fwd_out)
        if normalizer is not None:  # the value head's scale: μ and σ of the returns so far
            self.metrics.log_dict({"returns_mean": normalizer.running_mean.item(),
                                   "returns_std": normalizer.running_var.sqrt().item()}, key=module_id, window=1)
        return loss


class RetentionAPPOConfig(RetentionConfigMixin, APPOConfig):
    """APPOConfig with `.retention(method=..., pretrained_module_path=..., retention_data_path=...)`
    and `.training(reward_clip=..., standardize_advantages=...)`; `vtrace: false` and `lambda_` take
    effect (module doc)."""

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or RetentionAPPO)
        self.reward_clip: float | None = None
        self.standardize_advantages = False
        self.targets_use_vtrace = True
        """`vtrace` as given; RLlib's own `vtrace` stays True (its new stack refuses False)."""

    def training(self, *, vtrace: bool = NotProvided, reward_clip: float | None = NotProvided,
                 standardize_advantages: bool = NotProvided, **kwargs):
        super().training(**kwargs)
        if standardize_advantages is not NotProvided:
            self.standardize_advantages = standardize_advantages
        if vtrace is not NotProvided:
            self.targets_use_vtrace = vtrace
        if reward_clip is not NotProvided:
            self.reward_clip = reward_clip
        return self

    check_option_combination = staticmethod(check_appo_target_options)
    """Checked by `ftcl validate` too (`ftcl.algorithms.check_training_options`)."""

    def validate(self) -> None:
        super().validate()
        check_appo_target_options(self)

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
