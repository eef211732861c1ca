"""The learner side of retention: one mixin that PPO, APPO and SAC torch learners share.

What it adds to an RLlib `TorchLearner` (it must come first in the bases):
  * the module must implement `RetentionPolicyAPI` (`rl_module_required_apis`): the actor's and
    critics' parameters and the policy's distribution inputs come from the module, never from
    guessed attribute paths;
  * `build()` turns the typed method of `learner_config_dict["ftcl_retention"]` into its term
    and a training gate (skip-train, critic warm-up, freeze windows);
  * `prepare_retention(data)` — called by the Algorithm *after* the pre-trained weights are
    loaded into this learner's module — captures θ*, the frozen teacher π* (for methods that
    declare `needs_teacher`; a recurrent module carries its own, which π*'s load set and which
    is checked here), the Fisher F and the BC buffer; until then a term refuses to run;
  * `compute_loss_for_module` adds the term's λ·R(θ) to the RL loss (SAC puts the actor side into
    the policy optimizer's loss, each critic's part into that critic's loss) and logs
    `retention_<term>_loss|penalty|coeff`;
  * `compute_gradients` drops the gradients of parameters the gate freezes at the current env
    step (`.grad = None`, so Adam leaves them and their moments untouched);
  * `after_gradient_based_update` advances the term's coefficient by the optimizer steps that
    moved the actor in this update (one per minibatch);
  * `load_pi_star(π*, initial_alpha)` sets the module from π* strictly (actor, critics; targets
    follow their networks) plus what the algorithm adds (SAC: α); `export_pi_star(path)` writes
    the module and those extras as π* (`ftcl.algorithms.pi_star`);
  * `get_state`/`set_state` carry the term's state (λ_t of kickstarting, BC's sampling RNG), so a
    resumed trial continues the schedule.
The retention term acts on the default module (single-agent).
"""
from __future__ import annotations

import copy
from typing import Any

import torch

from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.torch.torch_rl_module import TorchRLModule
from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME
from ray.rllib.utils.typing import ModuleID, ParamDict, TensorType

from ftcl.algorithms.pi_star import InitialAlpha, PiStar, load_pi_star_into, read_pi_star, save_pi_star
from ftcl.algorithms.retention_algorithm import RETENTION_CONFIG_KEY, RetentionSettings
from ftcl.data.retention_data import TTYREC_DATABASE
from ftcl.retention.finetune import FinetuneMethod
from ftcl.retention.freezing import TrainingGate
from ftcl.retention.method import RetentionMethod
from ftcl.retention.policy_api import TEACHER_ACTION_DIST_INPUTS, RetentionPolicyAPI
from ftcl.retention.term import RetentionTerm, TermInputs

RETENTION_STATE_KEY = "ftcl_retention_term"
"""Key of the term's state in the learner's `get_state()`."""


def with_sequence_stream(data: dict[str, Any] | None) -> dict[str, Any] | None:
    """π*'s data with `sequences` — a factory of dataset streams for sequence BC — where the data is
    a ttyrec database (`ftcl.data.retention_data`); other data unchanged."""
    if data is None or TTYREC_DATABASE not in data:
        return data
    from ftcl.data.ttyrecs import TtyrecBatches

    path = str(data[TTYREC_DATABASE])

    def sequences(batch_size: int, sequence_length: int):
        return iter(TtyrecBatches(path, batch_size, sequence_length, shuffle=True, loop_forever=True))

    return {**data, "sequences": sequences}


def check_carried_teacher(policy: RetentionPolicyAPI) -> None:
    """RuntimeError unless every carried teacher equals its network (θ*, as π*'s load set it)."""
    for teacher_name, network_name in policy.teacher_copies().items():
        teacher, network = policy.get_submodule(teacher_name), policy.get_submodule(network_name)  # type: ignore[attr-defined]
        for (name, value), (_, expected) in zip(teacher.state_dict().items(), network.state_dict().items()):
            if not torch.equal(value, expected):
                raise RuntimeError(f"the carried teacher {teacher_name!r} differs from π* at {name}: it must be "
                                   "set from π* (load_pi_star) before retention is prepared")


class RetentionLearnerMixin:
    """Adds a retention term and the training gate to an RLlib torch learner (see module doc)."""

    retention_term: RetentionTerm | None
    training_gate: TrainingGate
    retention_teacher: TorchRLModule | None

    @classmethod
    def rl_module_required_apis(cls) -> list[type]:
        return [*super().rl_module_required_apis(), RetentionPolicyAPI]  # type: ignore[misc]

    # ------------------------------------------------------------------ setup
    def configure_optimizers(self) -> None:
        """RLlib's, after refusing a module without the required APIs (RLlib would skip it silently)."""
        for module_id in self.module.keys():  # type: ignore[attr-defined]
            module = self.module[module_id]  # type: ignore[attr-defined]
            missing = [api.__name__ for api in self.rl_module_required_apis() if not isinstance(module.unwrapped(), api)]
            if missing:
                raise ValueError(
                    f"{type(module.unwrapped()).__name__} (module {module_id!r}) does not implement {missing}, which "
                    f"{type(self).__name__} needs; use an ftcl model (see `ftcl list`) or implement the API"
                )
        super().configure_optimizers()  # type: ignore[misc]

    def build(self) -> None:
        super().build()  # type: ignore[misc]
        settings: RetentionSettings | None = (self.config.learner_config_dict or {}).get(RETENTION_CONFIG_KEY)  # type: ignore[attr-defined]
        method: RetentionMethod = settings.method if settings is not None else FinetuneMethod()
        self.retention_method = method
        self.retention_term = method.build_term(seed=int(self.config.seed or 0))  # type: ignore[attr-defined]
        self.training_gate = TrainingGate.from_method(method)
        self.retention_teacher = None
        self.retention_phase = self.training_gate.phase(0)
        self.retention_ready = self.retention_term is None
        self._retention_env_step = 0
        self._retention_actor_steps_pending = 0
        self._retention_metrics_pending = False
        self._frozen_parameter_ids: set[int] = set()
        policy = self._retention_module()
        self._actor_parameter_ids = {id(p) for p in policy.actor_parameters().values()}
        critic = policy.critic_parameters()
        self._critic_names = list(critic)
        self._critic_parameter_ids = {id(p) for p in critic.values()}
        if not self._actor_parameter_ids:
            raise ValueError(f"{type(policy).__name__}.actor_parameters() is empty; retention needs the actor's parameters")
        self.training_gate.check_module_paths(n for n, _ in policy.named_parameters())  # type: ignore[attr-defined]

    def _retention_module(self) -> RetentionPolicyAPI:
        return self.module[DEFAULT_MODULE_ID].unwrapped()  # type: ignore[attr-defined]

    def prepare_retention(self, data: dict[str, Any] | None = None) -> dict[str, float]:
        """Capture θ*, teacher, Fisher and BC buffer from the module's *current* weights.

        Call after the pre-trained weights are loaded. Returns a small summary
        (`theta_star_checksum`: Σθ* over actor parameters) so callers can check what was captured.
        """
        policy = self._retention_module()
        term = self.retention_term
        data = with_sequence_stream(data)
        observation_shape = getattr(policy.observation_space, "shape", None)  # type: ignore[attr-defined]
        if observation_shape and term is not None:
            probe = policy.policy_distribution_inputs(torch.zeros((1,) + tuple(observation_shape), device=self._device))  # type: ignore[attr-defined]
            if not probe.requires_grad:
                raise ValueError(
                    f"{type(policy).__name__}.policy_distribution_inputs returns no gradients; retention terms "
                    "need it without no_grad"
                )
        if term is not None:
            teacher = None
            if self.retention_method.needs_teacher and policy.carries_teacher:
                check_carried_teacher(policy)
            elif self.retention_method.needs_teacher:
                teacher = copy.deepcopy(policy)
                teacher.eval()  # type: ignore[attr-defined]
                teacher.requires_grad_(False)  # type: ignore[attr-defined]
                self.retention_teacher = teacher  # type: ignore[assignment]
            term.prepare(policy, data, teacher)
        self.retention_ready = True
        return {"theta_star_checksum": float(sum(p.detach().double().sum() for p in policy.actor_parameters().values()))}

    # ------------------------------------------------------------------ π*
    def load_pi_star(self, pi_star: PiStar, initial_alpha: InitialAlpha = "from_pretrained") -> None:
        """Set the whole module from π* (strict; targets follow their networks), then the extras."""
        load_pi_star_into(self._retention_module(), pi_star)  # type: ignore[arg-type]
        self._load_pi_star_extras(pi_star, initial_alpha)

    def export_pi_star(self, path: str) -> dict[str, Any] | None:
        """Write this learner's module (and extras such as SAC's α) as π*; return its contents.

        With several (DDP) learners, all hold the same weights and only rank 0 writes (others: None)."""
        if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
            return None
        save_pi_star(self._retention_module(), path, log_alpha=self._pi_star_log_alpha())
        return read_pi_star(path).contents()

    def _load_pi_star_extras(self, pi_star: PiStar, initial_alpha: InitialAlpha) -> None:
        """What the algorithm's learner holds besides the module (SAC: α)."""

    def _pi_star_log_alpha(self) -> float | None:
        """log α of an algorithm with a temperature (SAC), else None."""
        return None

    # ------------------------------------------------------------------ loss
    def compute_loss_for_module(
        self, *, module_id: ModuleID, config: Any, batch: dict[str, Any], fwd_out: dict[str, TensorType]
    ) -> TensorType:
        """The algorithm's loss plus the retention term's λ·R(θ)."""
        loss = super().compute_loss_for_module(  # type: ignore[misc]
            module_id=module_id, config=config, batch=batch, fwd_out=fwd_out
        )
        term = self.retention_term
        if term is None or module_id != DEFAULT_MODULE_ID:
            return loss
        if not self.retention_ready:
            raise RuntimeError(
                f"retention method '{self.retention_method.display_name}' was not prepared: the Algorithm "
                "must load the pre-trained weights and call learner.prepare_retention() first"
            )
        inputs = TermInputs(observations=batch.get(Columns.OBS),
                            student_distribution_inputs=fwd_out.get(Columns.ACTION_DIST_INPUTS),
                            mask=batch.get(Columns.LOSS_MASK),
                            teacher_distribution_inputs=fwd_out.get(TEACHER_ACTION_DIST_INPUTS))
        actor_loss = term.loss(inputs)
        # The term's metrics are logged with window=1, so only the last minibatch's values survive
        # the reduction: `after_gradient_based_update` logs them once per `update()` call.
        self._retention_metrics_pending = True
        return self._add_retention_losses(module_id, loss, actor_loss, term)

    def _add_retention_losses(
        self, module_id: ModuleID, total_loss: TensorType, actor_loss: TensorType, term: RetentionTerm
    ) -> TensorType:
        """One-optimizer learners: the actor term and the critic term (if any) join the total loss."""
        total = total_loss + actor_loss
        critic_loss = term.critic_loss()
        return total if critic_loss is None else total + critic_loss

    # ------------------------------------------------------------------ state
    def get_state(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        state = super().get_state(*args, **kwargs)  # type: ignore[misc]
        if self.retention_term is not None:
            state[RETENTION_STATE_KEY] = self.retention_term.get_state()
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)  # type: ignore[misc]
        if self.retention_term is not None and RETENTION_STATE_KEY in state:
            self.retention_term.set_state(state[RETENTION_STATE_KEY])

    # ------------------------------------------------------------------ gate + schedule
    def before_gradient_based_update(self, *, timesteps: dict[str, Any]) -> None:
        super().before_gradient_based_update(timesteps=timesteps)  # type: ignore[misc]
        self._retention_env_step = int(timesteps.get(NUM_ENV_STEPS_SAMPLED_LIFETIME, 0) or 0)
        self._frozen_parameter_ids = self._frozen_ids_at(self._retention_env_step)
        self.metrics.log_value(  # type: ignore[attr-defined]
            (DEFAULT_MODULE_ID, "retention_trainable_fraction"),
            1.0 - len(self._frozen_parameter_ids) / max(1, len(self._params)),  # type: ignore[attr-defined]
            window=1,
        )
        self.retention_phase = self.training_gate.phase(self._retention_env_step)

    def _frozen_ids_at(self, env_step: int) -> set[int]:
        """ids of all learner parameters (module, alpha, ...) that must not change now."""
        gate = self.training_gate
        if gate.is_trivial:
            return set()
        phase = gate.phase(env_step)
        all_ids = {id(p) for p in self._params.values()}  # type: ignore[attr-defined]
        if phase == "skip":
            return all_ids
        if phase == "critic_warmup":
            return all_ids - self._critic_parameter_ids
        named = list(self._retention_module().named_parameters())  # type: ignore[attr-defined]
        frozen_names = gate.frozen_names(env_step, [n for n, _ in named], self._critic_names)
        return {id(p) for n, p in named if n in frozen_names}

    def compute_gradients(self, loss_per_module: dict[ModuleID, TensorType], **kwargs: Any) -> ParamDict:
        """The algorithm's gradients without those of frozen parameters."""
        gradients = super().compute_gradients(loss_per_module, **kwargs)  # type: ignore[misc]
        if not self._frozen_parameter_ids:
            return gradients
        kept = {}
        for reference, gradient in gradients.items():
            parameter = self._params[reference]  # type: ignore[attr-defined]
            if id(parameter) in self._frozen_parameter_ids:
                parameter.grad = None
            else:
                kept[reference] = gradient
        return kept

    def apply_gradients(self, gradients_dict: ParamDict) -> None:
        super().apply_gradients(gradients_dict)  # type: ignore[misc]
        if any(id(self._params[ref]) in self._actor_parameter_ids for ref in gradients_dict):  # type: ignore[attr-defined]
            self._retention_actor_steps_pending += 1

    def after_gradient_based_update(self, *, timesteps: dict[str, Any]) -> None:
        """Advance λ_t by the optimizer steps of this update that moved the actor; log λ."""
        super().after_gradient_based_update(timesteps=timesteps)  # type: ignore[misc]
        term = self.retention_term
        if term is None:
            return
        if self._retention_metrics_pending:  # values of the last loss call, before λ moves
            for key, value in term.metrics().items():
                self.metrics.log_value((DEFAULT_MODULE_ID, f"retention_{key}"), value, window=1)  # type: ignore[attr-defined]
            self._retention_metrics_pending = False
        term.after_optimizer_steps(self._retention_actor_steps_pending)
        self._retention_actor_steps_pending = 0
        self.metrics.log_value(  # type: ignore[attr-defined]
            (DEFAULT_MODULE_ID, f"retention_{term.name}_coeff"), term.coeff, window=1
        )
