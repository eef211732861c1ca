"""The learner side of retention: one mixin that PPO, APPO and SAC torch learners share.

What it adds to an RLlib `TorchLearner` (it must come first in the bases):
  * `build()` turns `learner_config_dict["ftcl_retention"]["method"]` into a retention term
    (ftcl.retention) and a training gate (skip-train, critic warm-up, freeze windows);
  * `prepare_retention(data)` — called by the Algorithm *after* the pre-trained weights are
    loaded into this learner's module — captures θ*, the frozen teacher π*, the Fisher F and
    the BC buffer; until then a configured term refuses to run;
  * `compute_loss_for_module` adds the term's actor-side λ·R(θ) to the RL loss (SAC puts it
    into the policy optimizer's loss via `_add_retention_losses`) and logs
    `retention_<term>_loss|penalty|coeff`;
  * `compute_gradients` drops the gradients of parameters the gate freezes at the current env
    step (their `.grad` is set to None, so Adam leaves them and their moments untouched);
  * `after_gradient_based_update` advances the term's coefficient by the number of optimizer
    steps that moved the actor in this update (one per minibatch).
The retention term acts on the default module (single-agent).
"""
from __future__ import annotations

import copy
from typing import Any, Callable

import torch

from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import DefaultPPOTorchRLModule
from ray.rllib.core.columns import Columns
from ray.rllib.core.models.base import ENCODER_OUT
from ray.rllib.core.rl_module.torch.torch_rl_module import TorchRLModule
from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME
from ray.rllib.utils.typing import ModuleID, ParamDict, TensorType

from ftcl.retention import KSTerm, PolicyHandle, RetentionTerm, TermInputs, TrainingGate, build_term
from ftcl.retention.distributions import distribution_kind_for_action_space
from ftcl.retention.freezing import parameter_in_module

EXTRA_ACTOR_OBS = "ftcl_extra_actor_obs"
"""Train-batch column: states a retention term needs the actor on (BC's buffer minibatch)."""
EXTRA_ACTOR_DIST_INPUTS = "ftcl_extra_actor_dist_inputs"
"""forward_train output of modules that ran `EXTRA_ACTOR_OBS` in their actor pass (with gradients)."""

RETENTION_CONFIG_KEY = "ftcl_retention"
"""Key in `learner_config_dict` under which `.retention(...)` stores its settings."""

ACTOR_MODULE_PATHS = ("pi", "pi_encoder", "actor_encoder", "encoder.actor_encoder")
CRITIC_MODULE_PATHS = (
    "vf",
    "vf_encoder",
    "critic_encoder",
    "encoder.critic_encoder",
    "qf",
    "qf_encoder",
    "qf_twin",
    "qf_twin_encoder",
)
SHARED_TRUNK_PATHS = ("encoder",)
"""A shared encoder (e.g. PPO with vf_share_layers) feeds π, so it counts as actor."""


def _is_target_or_copy(parameter_name: str) -> bool:
    top = parameter_name.split(".")[0]
    return top.startswith("_") or "target" in top


def split_actor_critic_parameters(module: torch.nn.Module) -> tuple[list[str], list[str]]:
    """(actor names, critic names) by attribute path; target networks and old copies excluded.

    Actor: pi, pi_encoder, actor_encoder, encoder.actor_encoder, or a shared `encoder`;
    critic: vf*, qf*, critic_encoder. Other parameters (e.g. curiosity heads) are in neither.
    """
    actor, critic = [], []
    for name, _ in module.named_parameters():
        if _is_target_or_copy(name):
            continue
        if any(parameter_in_module(name, path) for path in CRITIC_MODULE_PATHS):
            critic.append(name)
        elif any(parameter_in_module(name, path) for path in ACTOR_MODULE_PATHS + SHARED_TRUNK_PATHS):
            actor.append(name)
    return actor, critic


def actor_distribution_function(module: TorchRLModule) -> Callable[[torch.Tensor], torch.Tensor]:
    """obs -> the module's action-distribution inputs, with gradients (no `no_grad` wrapper).

    Uses the module's own `_forward_inference` where the class overrides it (SAC's runs only
    the actor), otherwise the generic `_forward` (PPO/APPO, most custom modules).
    """
    overrides_inference = type(module)._forward_inference is not TorchRLModule._forward_inference
    actor_only = _ppo_actor_only_function(module)
    if actor_only is not None and not overrides_inference:
        return actor_only
    forward = module._forward_inference if overrides_inference else module._forward

    def distribution_inputs(observations: torch.Tensor) -> torch.Tensor:
        return forward({Columns.OBS: observations})[Columns.ACTION_DIST_INPUTS]

    return distribution_inputs


def _ppo_actor_only_function(module: TorchRLModule) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """`pi(actor_encoder(obs))` for RLlib's PPO/APPO modules with separate actor/critic encoders.

    Their `_forward` also runs the critic encoder, whose output the action-distribution inputs
    do not use; this computes `_forward(...)[ACTION_DIST_INPUTS]` with the same ops minus the
    critic. None for every other module (shared encoder, stateful, overridden `_forward`).
    """
    if not isinstance(module, DefaultPPOTorchRLModule) or type(module)._forward is not DefaultPPOTorchRLModule._forward:
        return None
    actor_encoder = getattr(getattr(module, "encoder", None), "actor_encoder", None)
    if not isinstance(actor_encoder, torch.nn.Module) or module.is_stateful():
        return None
    head = module.pi

    def distribution_inputs(observations: torch.Tensor) -> torch.Tensor:
        return head(actor_encoder({Columns.OBS: observations})[ENCODER_OUT])

    return distribution_inputs


class RetentionLearnerMixin:
    """Adds a retention term and the training gate to an RLlib torch learner (see module doc)."""

    retention_term: RetentionTerm | None
    training_gate: TrainingGate
    retention_teacher: TorchRLModule | None

    # ------------------------------------------------------------------ setup
    def build(self) -> None:
        super().build()  # type: ignore[misc]
        settings = (self.config.learner_config_dict or {}).get(RETENTION_CONFIG_KEY) or {}  # type: ignore[attr-defined]
        self.retention_settings: dict[str, Any] = settings
        method = settings.get("method") or {"name": "finetune"}
        self.retention_method_name: str = method["name"]
        self.retention_term = build_term(method, seed=int(self.config.seed or 0))  # type: ignore[attr-defined]
        self.training_gate = TrainingGate.from_method_config(method)
        self.retention_teacher = None
        self.retention_phase = self.training_gate.phase(0)
        self.retention_ready = self.retention_term is None
        self._retention_env_step = 0
        self._retention_actor_steps_pending = 0
        self._retention_metrics_pending = False
        self._frozen_parameter_ids: set[int] = set()
        self._actor_parameter_ids: set[int] = set()
        self._critic_parameter_ids: set[int] = set()
        self._index_parameters()
        self.training_gate.check_module_paths(n for n, _ in self._retention_module().named_parameters())

    def _retention_module(self) -> TorchRLModule:
        return self.module[DEFAULT_MODULE_ID].unwrapped()  # type: ignore[attr-defined]

    def _index_parameters(self) -> None:
        module = self._retention_module()
        self._actor_names, self._critic_names = split_actor_critic_parameters(module)
        named = dict(module.named_parameters())
        self._actor_parameter_ids = {id(named[n]) for n in self._actor_names}
        self._critic_parameter_ids = {id(named[n]) for n in self._critic_names}

    def policy_handle(self) -> PolicyHandle:
        """The default module as retention terms see it (live parameters)."""
        module = self._retention_module()
        if not self._actor_names:
            raise ValueError(
                "no actor parameters found in the RLModule; retention expects the actor under "
                f"{ACTOR_MODULE_PATHS} and the critic under {CRITIC_MODULE_PATHS}"
            )
        return PolicyHandle(
            module=module,
            distribution_inputs=actor_distribution_function(module),
            distribution_kind=distribution_kind_for_action_space(module.action_space),
            actor_parameter_names=list(self._actor_names),
            critic_parameter_names=list(self._critic_names),
        )

    def prepare_retention(self, data: dict[str, Any] | None = None) -> dict[str, float]:
        """Capture θ*, teacher, Fisher and BC buffer from the module's *current* weights.

        Call after the pre-trained weights are loaded. Returns a small summary
        (`theta_star_checksum`: Σθ* over actor parameters) so callers can check what was captured.
        """
        handle = self.policy_handle()
        observation_shape = getattr(handle.module.observation_space, "shape", None)
        if observation_shape and self.retention_term is not None:
            probe = handle.distribution_inputs(torch.zeros((1,) + tuple(observation_shape), device=self._device))  # type: ignore[attr-defined]
            if not probe.requires_grad:
                raise ValueError(
                    f"{type(handle.module).__name__}'s actor forward returns no gradients; retention "
                    "terms need `_forward` (or an overridden `_forward_inference`) without no_grad"
                )
        if self.retention_term is not None:
            if isinstance(self.retention_term, KSTerm):
                teacher = copy.deepcopy(handle.module)
                teacher.eval()
                teacher.requires_grad_(False)
                self.retention_teacher = teacher
                self.retention_term.set_teacher(actor_distribution_function(teacher))
            self.retention_term.prepare(handle, data)
        self.retention_ready = True
        actor = handle.named_parameters(handle.actor_parameter_names)
        return {"theta_star_checksum": float(sum(p.detach().double().sum() for p in actor.values()))}

    # ------------------------------------------------------------------ loss
    def compute_loss_for_module(
        self, *, module_id: ModuleID, config: Any, batch: dict[str, Any], fwd_out: dict[str, TensorType]
    ) -> TensorType:
        """The algorithm's loss plus the retention term's λ·R(θ) (actor side)."""
        loss = super().compute_loss_for_module(  # type: ignore[misc]
            module_id=module_id, config=config, batch=batch, fwd_out=fwd_out
        )
        term = self.retention_term
        if term is None or module_id != DEFAULT_MODULE_ID:
            return loss
        if not self.retention_ready:
            raise RuntimeError(
                f"retention method '{self.retention_method_name}' was not prepared: the Algorithm "
                "must load the pre-trained weights and call learner.prepare_retention() first"
            )
        inputs = TermInputs(
            observations=batch.get(Columns.OBS),
            student_distribution_inputs=fwd_out.get(Columns.ACTION_DIST_INPUTS),
            mask=batch.get(Columns.LOSS_MASK),
            extra_student_distribution_inputs=fwd_out.get(EXTRA_ACTOR_DIST_INPUTS),
        )
        actor_loss, critic_loss = term.losses(inputs)
        # The term's metrics are logged with window=1, so only the last minibatch's values survive
        # the reduction: `after_gradient_based_update` logs them once per `update()` call.
        self._retention_metrics_pending = True
        return self._add_retention_losses(module_id, loss, actor_loss, critic_loss)

    def _update(self, batch: dict[str, Any]) -> Any:
        """RLlib's `_update`; a term's extra actor states join the module's actor forward if it can.

        Modules with `supports_extra_actor_observations` (`RetentionPPOTorchRLModule`) run the
        states a term asks for (BC's buffer minibatch) in the same actor pass as the batch's
        observations and return the outputs as `EXTRA_ACTOR_DIST_INPUTS`.
        """
        term = self.retention_term
        module = self._retention_module()
        if (
            term is not None
            and self.retention_ready
            and getattr(module, "supports_extra_actor_observations", False)
            and DEFAULT_MODULE_ID in batch
        ):
            extra = term.extra_actor_observations()
            if extra is not None:
                batch = dict(batch)
                module_batch = dict(batch[DEFAULT_MODULE_ID])
                module_batch[EXTRA_ACTOR_OBS] = extra
                batch[DEFAULT_MODULE_ID] = module_batch
        return super()._update(batch)  # type: ignore[misc]

    def _add_retention_losses(
        self,
        module_id: ModuleID,
        total_loss: TensorType,
        actor_loss: TensorType,
        critic_loss: TensorType | None,
    ) -> TensorType:
        """One-optimizer learners: the terms join the total loss."""
        total = total_loss + actor_loss
        return total if critic_loss is None else total + critic_loss

    # ------------------------------------------------------------------ gate + schedule
    def before_gradient_based_update(self, *, timesteps: dict[str, Any]) -> None:
        super().before_gradient_based_update(timesteps=timesteps)  # type: ignore[misc]
        self._retention_env_step = int(timesteps.get(NUM_ENV_STEPS_SAMPLED_LIFETIME, 0) or 0)
        self._frozen_parameter_ids = self._frozen_ids_at(self._retention_env_step)
        phase = self.training_gate.phase(self._retention_env_step)
        self.metrics.log_value(  # type: ignore[attr-defined]
            (DEFAULT_MODULE_ID, "retention_trainable_fraction"),
            1.0 - len(self._frozen_parameter_ids) / max(1, len(self._params)),  # type: ignore[attr-defined]
            window=1,
        )
        self.retention_phase = phase

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
        module = self._retention_module()
        names = [n for n, _ in module.named_parameters()]
        frozen_names = gate.frozen_names(env_step, names, self._critic_names)
        return {id(p) for n, p in module.named_parameters() if n in frozen_names}

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
