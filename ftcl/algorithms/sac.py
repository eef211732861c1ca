"""SAC with knowledge retention: actor terms go into the policy optimizer's loss; EM replay.

RLlib's SAC learner backpropagates the per-optimizer losses it stored in
`self._temp_losses[(module_id, "<optimizer>_loss")]` and ignores the returned total, so the
retention term's actor side is added to `_temp_losses[(mid, "policy_loss")]` and its critic
side (L2 with critic_coeff > 0) to the qf (and qf_twin) losses. Replay is uniform FIFO
(`EpisodeReplayBuffer`) by default, as in Continual World and the paper, not RLlib's
prioritized default; method `em` swaps in `ProtectedMemoryEpisodeReplayBuffer`.

Throughput: `.throughput(flat_replay=True)` keeps the same schedule and losses but replays flat
transitions and runs a training step's gradient steps in one learner call
(`ftcl.algorithms.fast_replay`; EM then uses that buffer's protected partition).
"""
from __future__ import annotations

from typing import Any

from ray.rllib.algorithms.sac import SAC, SACConfig
from ray.rllib.algorithms.sac.sac_learner import QF_LOSS_KEY, QF_TWIN_LOSS_KEY
from ray.rllib.algorithms.sac.torch.sac_torch_learner import SACTorchLearner
from ray.rllib.core.learner.learner import POLICY_LOSS_KEY
from ray.rllib.utils.from_config import NotProvided
from ray.rllib.utils.typing import ModuleID, TensorType

from ftcl.algorithms.fast_learner import FusedChecksLearnerMixin
from ftcl.algorithms.fast_replay import FlatTransitionReplay, check_flat_replay_config, flat_training_step
from ftcl.algorithms.replay import ProtectedMemoryEpisodeReplayBuffer
from ftcl.algorithms.retention_algorithm import RetentionAlgorithmMixin, RetentionConfigMixin
from ftcl.algorithms.retention_learner import RETENTION_CONFIG_KEY, RetentionLearnerMixin
from ftcl.algorithms.stage_bootstrap import insert_stage_done_connector


class RetentionSACTorchLearner(RetentionLearnerMixin, FusedChecksLearnerMixin, SACTorchLearner):
    """SAC losses + λ·R(θ) on the actor's optimizer, with freezing and skip-train.

    `FusedChecksLearnerMixin` only makes RLlib's gradient checks and target updates cheaper
    (same arithmetic; `ftcl.algorithms.fast_learner`).
    """

    def _add_retention_losses(
        self,
        module_id: ModuleID,
        total_loss: TensorType,
        actor_loss: TensorType,
        critic_loss: TensorType | None,
    ) -> TensorType:
        policy_key = (module_id, POLICY_LOSS_KEY)
        self._temp_losses[policy_key] = self._temp_losses[policy_key] + actor_loss
        total = total_loss + actor_loss
        if critic_loss is not None:
            # Σ_critic splits into a Q part and a twin-Q part; each optimizer only takes its own grads.
            for key in (QF_LOSS_KEY, QF_TWIN_LOSS_KEY):
                if (module_id, key) in self._temp_losses:
                    self._temp_losses[(module_id, key)] = self._temp_losses[(module_id, key)] + critic_loss
            total = total + critic_loss
        return total


class RetentionSACConfig(RetentionConfigMixin, SACConfig):
    """SACConfig with `.retention(...)`; uniform `EpisodeReplayBuffer` replay by default."""

    supports_episodic_memory = True

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or RetentionSAC)
        self.replay_buffer_config = {"type": "EpisodeReplayBuffer", "capacity": int(1e6)}
        self.flat_replay = False
        self.stage_done_is_terminal: bool = True
        """Treat a step with info["stage_done"] as terminal in the TD target (paper §2.3)."""

    # ---- stage boundaries (ftcl.algorithms.stage_bootstrap) ----
    def training(self, *, stage_done_is_terminal: Any = NotProvided, **kwargs: Any) -> "RetentionSACConfig":
        """SACConfig.training(...) plus `stage_done_is_terminal` (bool, default True)."""
        super().training(**kwargs)
        if stage_done_is_terminal is not NotProvided:
            self.stage_done_is_terminal = stage_done_is_terminal
        return self

    def build_learner_connector(self, input_observation_space: Any, input_action_space: Any, device: Any = None) -> Any:
        pipeline = super().build_learner_connector(
            input_observation_space=input_observation_space,
            input_action_space=input_action_space,
            device=device,
        )
        if self.stage_done_is_terminal:
            insert_stage_done_connector(pipeline)
        return pipeline

    def throughput(self, *, flat_replay: bool | None = None) -> "RetentionSACConfig":
        """Settings that change speed, not the algorithm.

        flat_replay: replay flat transitions and run each training step's gradient steps in one
            learner call (`ftcl.algorithms.fast_replay`); needs n_step=1, num_learners=0.
        """
        if flat_replay is not None:
            self.flat_replay = bool(flat_replay)
        return self

    def get_default_learner_class(self) -> type:
        if self.framework_str != "torch":
            raise ValueError("ftcl retention learners are torch only; set framework='torch'")
        return RetentionSACTorchLearner

    def validate(self) -> None:
        super().validate()
        if self.flat_replay:
            check_flat_replay_config(self)
        if not isinstance(self.stage_done_is_terminal, bool):
            raise ValueError(f"stage_done_is_terminal must be True or False; got {self.stage_done_is_terminal!r}")
        if self.stage_done_is_terminal and self.n_step != 1:
            raise ValueError(
                f"stage_done_is_terminal=True needs n_step=1 (got {self.n_step!r}): an n-step return would "
                "run across a stage boundary; set n_step=1 or stage_done_is_terminal=False"
            )
        settings = self.retention_settings
        if settings and settings["method"]["name"] == "em":
            buffer_type = self.replay_buffer_config.get("type")
            if buffer_type != "EpisodeReplayBuffer":
                raise ValueError(
                    "method 'em' needs replay_buffer_config type 'EpisodeReplayBuffer' (uniform FIFO), "
                    f"which it extends with a protected partition; got {buffer_type!r}"
                )
            capacity = int(self.replay_buffer_config.get("capacity", 0))
            if settings["method"]["memory_size"] >= capacity:
                raise ValueError(
                    f"method 'em': memory_size {settings['method']['memory_size']} must be smaller "
                    f"than the replay capacity {capacity}"
                )


class RetentionSAC(RetentionAlgorithmMixin, SAC):
    """SAC that loads π* after building its learners; EM fills the protected replay partition."""

    @classmethod
    def get_default_config(cls) -> RetentionSACConfig:
        return RetentionSACConfig()

    def training_step(self) -> None:
        if getattr(self.config, "flat_replay", False):
            return flat_training_step(self)
        return super().training_step()

    def _create_local_replay_buffer_if_necessary(self, config: Any) -> Any:
        settings = (config.learner_config_dict or {}).get(RETENTION_CONFIG_KEY)
        if getattr(config, "flat_replay", False):
            memory = settings["method"] if settings and settings["method"]["name"] == "em" else None
            return FlatTransitionReplay(
                capacity=int(config.replay_buffer_config["capacity"]),
                stage_done_is_terminal=bool(getattr(config, "stage_done_is_terminal", False)),
                protected_capacity=int(memory["memory_size"]) if memory else 0,
                protected_fraction=memory.get("sample_fraction") if memory else None,
                seed=config.seed,
            )
        if not settings or settings["method"]["name"] != "em":
            return super()._create_local_replay_buffer_if_necessary(config)
        method = settings["method"]
        return ProtectedMemoryEpisodeReplayBuffer(
            capacity=int(config.replay_buffer_config["capacity"]),
            protected_capacity=int(method["memory_size"]),
            protected_fraction=method.get("sample_fraction"),
            seed=config.seed,
            metrics_num_episodes_for_smoothing=config.metrics_num_episodes_for_smoothing,
        )

    def _setup_retention_extras(self, settings: dict[str, Any], data: dict[str, Any] | None) -> None:
        if settings["method"]["name"] != "em":
            return
        assert data is not None
        assert isinstance(self.local_replay_buffer, (ProtectedMemoryEpisodeReplayBuffer, FlatTransitionReplay))
        self.local_replay_buffer.add_protected_transitions(
            data, self.config.observation_space, self.config.action_space
        )
