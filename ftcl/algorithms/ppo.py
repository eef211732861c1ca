"""PPO with knowledge retention: RLlib's PPO plus a retention term on the actor."""
from __future__ import annotations

from typing import Any

import torch
from ray.rllib.algorithms.ppo import PPO, PPOConfig
from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import DefaultPPOTorchRLModule
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.core.columns import Columns
from ray.rllib.core.models.base import ENCODER_OUT
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from ftcl.algorithms.fast_connectors import without_piece_timers
from ftcl.algorithms.fast_learner import FusedGradientCheckMixin
from ftcl.algorithms.retention_algorithm import RetentionAlgorithmMixin, RetentionConfigMixin
from ftcl.algorithms.retention_learner import (
    EXTRA_ACTOR_DIST_INPUTS,
    EXTRA_ACTOR_OBS,
    RetentionLearnerMixin,
    split_actor_critic_parameters,
)

ACTOR_OPTIMIZER_KEY = "ftcl_actor_optimizer"
"""`learner_config_dict` key: {"type": "sgd" | "adam", "lr": float} for a separate actor optimizer."""
ACTOR_OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}


class RetentionPPOTorchRLModule(DefaultPPOTorchRLModule):
    """RLlib's default PPO module; its train forward can also run extra actor states (BC's buffer).

    With the batch column `EXTRA_ACTOR_OBS` and separate actor/critic MLP encoders, the actor
    encoder and head run once on [OBS; EXTRA_ACTOR_OBS] (row-wise layers: the OBS rows are the
    same function of θ) and the extra rows' outputs come back as `EXTRA_ACTOR_DIST_INPUTS`;
    the critic encoder runs on OBS only. Otherwise (no column, shared or stateful encoder) it is
    RLlib's `_forward_train`, and a term then runs its own actor forward.
    """

    supports_extra_actor_observations = True

    def forward_exploration(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """RLlib's `forward_exploration` without switching back to train mode after every call.

        RLlib runs `eval()` before and `train()` after each call (two recursive walks over all
        submodules, ~40 µs per env step on CartPole, as long as the forward itself). Here the
        module switches to eval mode once and stays there until `forward_train()` (which calls
        `train()` itself); the forward runs in eval mode either way, so outputs are unchanged.
        """
        if self.training:
            self.eval()
        return self._forward_exploration(batch, **kwargs)

    def forward_inference(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """RLlib's `forward_inference` with the mode handling of `forward_exploration` above."""
        if self.training:
            self.eval()
        return self._forward_inference(batch, **kwargs)

    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        extra = batch.get(EXTRA_ACTOR_OBS)
        actor_encoder = getattr(self.encoder, "actor_encoder", None)
        critic_encoder = getattr(self.encoder, "critic_encoder", None)
        if extra is None or actor_encoder is None or critic_encoder is None or self.is_stateful():
            return super()._forward_train(batch, **kwargs)
        observations = batch[Columns.OBS]
        num_rows = observations.shape[0]
        actor_out = actor_encoder({Columns.OBS: torch.cat([observations, extra.to(observations.dtype)])})[ENCODER_OUT]
        logits = self.pi(actor_out)
        return {
            Columns.EMBEDDINGS: critic_encoder({Columns.OBS: observations})[ENCODER_OUT],
            Columns.ACTION_DIST_INPUTS: logits[:num_rows],
            EXTRA_ACTOR_DIST_INPUTS: logits[num_rows:],
        }


class RetentionPPOTorchLearner(RetentionLearnerMixin, FusedGradientCheckMixin, PPOTorchLearner):
    """PPO loss + λ·R(θ) (L2/EWC/BC/KS), with freezing and skip-train.

    `FusedGradientCheckMixin` only makes RLlib's per-parameter finiteness check one fused call
    (same arithmetic; `ftcl.algorithms.fast_learner`).

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
        self.per_connector_timers: bool = True
        """False: env-runner connector pipelines keep one timer per pipeline call, none per piece."""

    def throughput(self, *, per_connector_timers: bool | None = None) -> "RetentionPPOConfig":
        """Settings that change speed (and diagnostics), not the algorithm.

        per_connector_timers: False drops RLlib's per-piece connector timers on the env runners
            (`ftcl.algorithms.fast_connectors`); the same pieces run with the same inputs.
        """
        if per_connector_timers is not None:
            self.per_connector_timers = bool(per_connector_timers)
        return self

    def build_env_to_module_connector(self, *args: Any, **kwargs: Any) -> Any:
        pipeline = super().build_env_to_module_connector(*args, **kwargs)
        return pipeline if self.per_connector_timers else without_piece_timers(pipeline)

    def build_module_to_env_connector(self, *args: Any, **kwargs: Any) -> Any:
        pipeline = super().build_module_to_env_connector(*args, **kwargs)
        return pipeline if self.per_connector_timers else without_piece_timers(pipeline)

    def get_default_rl_module_spec(self) -> RLModuleSpec:
        """RLlib's default PPO module spec with `RetentionPPOTorchRLModule` (same networks)."""
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
