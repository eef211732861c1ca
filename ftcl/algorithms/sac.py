"""SAC with knowledge retention: RLlib's SAC losses on ftcl's transition replay, plus the terms.

Losses. RLlib's SAC learner backpropagates the per-optimizer losses it stored in
`self._temp_losses[(module_id, "<optimizer>_loss")]` and ignores the returned total. The term's
actor side λ·R(θ) therefore joins `policy_loss`, and its critic side (L2 with critic_coeff > 0)
joins `qf_loss` and `qf_twin_loss` — each only the part over that Q-network's own parameters,
because RLlib keeps references to `p.grad` across its per-optimizer backward passes: a penalty
over both networks in both losses would reach the first network's gradient twice.

Replay. One path: uniform FIFO over flat transitions (`TransitionReplay`), as Continual World and
the paper replay (not RLlib's prioritized default), with stage boundaries as terminals
(`stage_done_is_terminal`, paper §2.3) and, for methods that declare a protected replay
partition (EM), π*'s transitions that FIFO never evicts. Each training step's gradient steps run
in one learner call (`rllib_overrides.sac_training_step`).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from ray.rllib.algorithms.sac import SAC, SACConfig
from ray.rllib.algorithms.sac.sac_learner import QF_LOSS_KEY, QF_TWIN_LOSS_KEY
from ray.rllib.algorithms.sac.torch.default_sac_torch_rl_module import DefaultSACTorchRLModule
from ray.rllib.algorithms.sac.torch.sac_torch_learner import SACTorchLearner
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.learner.learner import POLICY_LOSS_KEY
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.utils.from_config import NotProvided
from ray.rllib.utils.typing import ModuleID, TensorType

from ftcl.algorithms.pi_star import InitialAlpha, PiStar
from ftcl.algorithms.retention_algorithm import RetentionAlgorithmMixin, RetentionConfigMixin
from ftcl.algorithms.retention_learner import RetentionLearnerMixin
from ftcl.algorithms.rllib_overrides import FusedGradientCheckMixin, FusedTargetUpdateMixin, sac_training_step
from ftcl.algorithms.transition_replay import TransitionReplay
from ftcl.models.rllib_policy_api import SACPolicyAPI
from ftcl.retention.method import RetentionMethod
from ftcl.retention.term import RetentionTerm

CRITIC_OPTIMIZERS = {QF_LOSS_KEY: "qf", QF_TWIN_LOSS_KEY: "qf_twin"}
"""SAC's critic loss keys and the optimizer that steps each one's parameters."""
LOG_ALPHA_STATE_KEY = "ftcl_log_alpha"
"""Key of log α per module in the learner's `get_state()`: RLlib's SAC learner does not checkpoint
α, so a restored (resumed) trial would go on with the α it was built with."""
UNIFORM_REPLAY_TYPE = "EpisodeReplayBuffer"
"""The `replay_buffer_config` type RetentionSAC accepts (RLlib's name for uniform replay)."""


class RetentionSACTorchRLModule(DefaultSACTorchRLModule, SACPolicyAPI):
    """RLlib's default SAC module with `RetentionPolicyAPI` (same networks; log σ as sampled)."""


class RetentionSACTorchLearner(RetentionLearnerMixin, FusedGradientCheckMixin, FusedTargetUpdateMixin, SACTorchLearner):
    """SAC losses + λ·R(θ) on the actor's optimizer (critic parts on each critic's), with freezing."""

    def _critic_parameter_names(self, module_id: ModuleID, optimizer_name: str) -> list[str]:
        """Names of the module parameters that the optimizer `optimizer_name` steps (cached)."""
        cache = self.__dict__.setdefault("_ftcl_optimizer_names", {})
        if (module_id, optimizer_name) not in cache:
            optimizer = self.get_optimizer(module_id, optimizer_name)
            stepped = {id(p) for group in optimizer.param_groups for p in group["params"]}
            module = self.module[module_id].unwrapped()
            cache[(module_id, optimizer_name)] = [n for n, p in module.named_parameters() if id(p) in stepped]
        return cache[(module_id, optimizer_name)]

    def get_state(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        state = super().get_state(*args, **kwargs)
        state[LOG_ALPHA_STATE_KEY] = {module_id: float(log_alpha.detach().cpu()[0])
                                      for module_id, log_alpha in self.curr_log_alpha.items()}
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        with torch.no_grad():
            for module_id, log_alpha in state.get(LOG_ALPHA_STATE_KEY, {}).items():
                self.curr_log_alpha[module_id].fill_(log_alpha)

    def _pi_star_log_alpha(self) -> float:
        return float(self.curr_log_alpha[DEFAULT_MODULE_ID].detach().cpu()[0])

    def _load_pi_star_extras(self, pi_star: PiStar, initial_alpha: InitialAlpha) -> None:
        """α at fine-tuning start: π*'s log α, or log of the number given (the optimizer keeps its tensor)."""
        if initial_alpha == "from_pretrained":
            if pi_star.log_alpha is None:
                raise ValueError(f"π* checkpoint {str(pi_star.path)!r} holds no α; give initial_alpha as a number")
            log_alpha = pi_star.log_alpha
        else:
            log_alpha = math.log(float(initial_alpha))
        with torch.no_grad():
            self.curr_log_alpha[DEFAULT_MODULE_ID].fill_(log_alpha)

    def _add_retention_losses(
        self, module_id: ModuleID, total_loss: TensorType, actor_loss: TensorType, term: RetentionTerm
    ) -> TensorType:
        policy_key = (module_id, POLICY_LOSS_KEY)
        self._temp_losses[policy_key] = self._temp_losses[policy_key] + actor_loss
        total = total_loss + actor_loss
        for loss_key, optimizer_name in CRITIC_OPTIMIZERS.items():
            if (module_id, loss_key) not in self._temp_losses:
                continue  # no twin Q
            critic_loss = term.critic_loss(self._critic_parameter_names(module_id, optimizer_name))
            if critic_loss is not None:
                self._temp_losses[(module_id, loss_key)] = self._temp_losses[(module_id, loss_key)] + critic_loss
                total = total + critic_loss
        return total


class RetentionSACConfig(RetentionConfigMixin, SACConfig):
    """SACConfig with `.retention(...)`; uniform transition replay with stage-done terminals."""

    supports_replay = True

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or RetentionSAC)
        self.replay_buffer_config = {"type": UNIFORM_REPLAY_TYPE, "capacity": int(1e6)}
        self.stage_done_is_terminal: bool = True
        """Treat a step with info["stage_done"] as terminal in the TD target (paper §2.3)."""

    def training(self, *, stage_done_is_terminal: Any = NotProvided, **kwargs: Any) -> "RetentionSACConfig":
        """SACConfig.training(...) plus `stage_done_is_terminal` (bool, default True)."""
        super().training(**kwargs)
        if stage_done_is_terminal is not NotProvided:
            self.stage_done_is_terminal = stage_done_is_terminal
        return self

    def get_default_rl_module_spec(self) -> RLModuleSpec:
        """RLlib's default SAC module spec with `RetentionSACTorchRLModule` (same networks + the policy API)."""
        spec = super().get_default_rl_module_spec()
        if spec.module_class is DefaultSACTorchRLModule:
            spec.module_class = RetentionSACTorchRLModule
        return spec

    def get_default_learner_class(self) -> type:
        if self.framework_str != "torch":
            raise ValueError("ftcl retention learners are torch only; set framework='torch'")
        return RetentionSACTorchLearner

    def validate(self) -> None:
        super().validate()
        problems = []
        if self.n_step != 1:
            problems.append(f"n_step={self.n_step!r} (needs 1: no n-step return may run across a stage boundary)")
        if self.num_learners != 0:
            problems.append(f"num_learners={self.num_learners} (needs 0: a local learner)")
        buffer_type = self.replay_buffer_config.get("type")
        if buffer_type != UNIFORM_REPLAY_TYPE:
            problems.append(f"replay_buffer_config type {buffer_type!r} (needs {UNIFORM_REPLAY_TYPE!r}: uniform replay)")
        if self._learner_connector is not None:
            problems.append("a custom learner connector (the training step builds the train batch itself)")
        if self.is_multi_agent:
            problems.append("multi-agent")
        if not isinstance(self.stage_done_is_terminal, bool):
            problems.append(f"stage_done_is_terminal={self.stage_done_is_terminal!r} (True or False)")
        if problems:
            raise ValueError("RetentionSAC's transition replay does not support: " + "; ".join(problems))
        settings = self.retention_settings
        protected = settings.method.protected_replay() if settings is not None else None
        capacity = int(self.replay_buffer_config.get("capacity", 0))
        if protected is not None and protected.capacity >= capacity:
            raise ValueError(
                f"method '{settings.method.display_name}': its protected replay partition ({protected.capacity}) "
                f"must be smaller than the replay capacity {capacity}"
            )


class RetentionSAC(RetentionAlgorithmMixin, SAC):
    """SAC on `TransitionReplay` that loads π* after building its learners (module docstring)."""

    @classmethod
    def get_default_config(cls) -> RetentionSACConfig:
        return RetentionSACConfig()

    def training_step(self) -> None:
        return sac_training_step(self)

    def _create_local_replay_buffer_if_necessary(self, config: Any) -> TransitionReplay:
        settings = config.retention_settings
        protected = settings.method.protected_replay() if settings is not None else None
        return TransitionReplay(
            capacity=int(config.replay_buffer_config["capacity"]),
            stage_done_is_terminal=bool(config.stage_done_is_terminal),
            protected_capacity=protected.capacity if protected else 0,
            protected_share=protected.share if protected else None,
            seed=config.seed,
        )

    def _setup_retention_extras(self, method: RetentionMethod, data: dict[str, Any] | None) -> None:
        if method.protected_replay() is None:
            return
        if data is None:
            raise ValueError(f"method '{method.display_name}' fills a protected replay partition but got no data")
        self.local_replay_buffer.add_protected_transitions(data)
