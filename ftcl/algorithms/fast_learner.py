"""Cheaper bookkeeping for RLlib's torch SAC learner, with the same arithmetic.

Profiling RetentionSAC (results/throughput.md) showed two per-update costs that are not the
networks' work:

* `TorchLearner.apply_gradients` calls `torch.isfinite(grad).all()` once per parameter to decide
  whether to zero non-finite gradients, and every optimizer checks all its gradients again before
  `step()`: ~2 × 39 small kernel launches and Python round trips per SAC update (≈3 ms of a
  ≈15 ms update on one core). `FusedChecksLearnerMixin.apply_gradients` first takes the norms of
  all gradients in one fused call: a gradient is finite iff its norm is, except that a finite
  gradient with elements above ~1e19 can overflow the norm. When every norm is finite, all
  gradients are finite and RLlib's code would just assign them and step every optimizer, which
  is what the fast path does; otherwise (or with grad scalers / torch LR schedulers configured)
  RLlib's own method runs.
* `DQNLearner.after_gradient_based_update` updates each target network with
  `target.load_state_dict({k: τ·main[k] + (1−τ)·target[k]})`, building new tensors per entry.
  `polyak_update_` computes the same expression, in the same order of rounding (τ·main, (1−τ)·target,
  then their sum), in place with fused `torch._foreach_*` calls.
The mixins go before the RLlib learner class in the bases: `FusedGradientCheckMixin` (the
gradient check only; PPO) and `FusedChecksLearnerMixin` (check + Polyak; SAC).
"""
from __future__ import annotations

from typing import Any

import torch

from ray.rllib.algorithms.dqn.dqn_learner import DQNLearner
from ray.rllib.core.rl_module.apis import TargetNetworkAPI
from ray.rllib.utils.metrics import LAST_TARGET_UPDATE_TS, NUM_ENV_STEPS_SAMPLED_LIFETIME, NUM_TARGET_UPDATES
from ray.rllib.utils.typing import ParamDict


@torch.no_grad()
def polyak_update_(main_net: torch.nn.Module, target_net: torch.nn.Module, tau: float) -> None:
    """target ← τ·main + (1−τ)·target for every state_dict entry, in place (RLlib's formula)."""
    main_state, target_state = main_net.state_dict(), target_net.state_dict()
    targets = list(target_state.values())
    if any(not tensor.is_floating_point() for tensor in targets):  # e.g. BatchNorm counters
        target_net.load_state_dict({k: tau * main_state[k] + (1 - tau) * v for k, v in target_state.items()})
        return
    mains = [main_state[key] for key in target_state]
    torch._foreach_mul_(targets, 1 - tau)
    torch._foreach_add_(targets, torch._foreach_mul(mains, tau))


def all_finite(gradients: list[torch.Tensor]) -> bool:
    """True if the norms of all gradients are finite (then every element is finite)."""
    if not gradients:
        return True
    return bool(torch.isfinite(torch.stack(torch._foreach_norm(gradients))).all())


class FusedGradientCheckMixin:
    """`TorchLearner.apply_gradients` with one fused finiteness check (any torch learner; module doc)."""

    def apply_gradients(self, gradients_dict: ParamDict) -> None:
        uses_extras = getattr(self, "_grad_scalers", None) is not None or getattr(self, "_lr_scheduler_classes", None) is not None
        gradients = [g for g in gradients_dict.values() if g is not None]
        if uses_extras or not all_finite(gradients):
            return super().apply_gradients(gradients_dict)  # type: ignore[misc]
        for reference, gradient in gradients_dict.items():
            self._params[reference].grad = gradient  # type: ignore[attr-defined]
        for module_id, optimizer_names in self._module_optimizers.items():  # type: ignore[attr-defined]
            for optimizer_name in optimizer_names:
                self.get_optimizer(module_id, optimizer_name).step()  # type: ignore[attr-defined]
        return None


class FusedChecksLearnerMixin(FusedGradientCheckMixin):
    """Fused finiteness check in `apply_gradients` and in-place Polyak targets (DQN/SAC learners)."""

    def after_gradient_based_update(self, *, timesteps: dict[str, Any]) -> None:
        """`DQNLearner.after_gradient_based_update` with `polyak_update_` for the targets."""
        super(DQNLearner, self).after_gradient_based_update(timesteps=timesteps)  # type: ignore[misc]
        timestep = timesteps.get(NUM_ENV_STEPS_SAMPLED_LIFETIME, 0)
        for module_id, module in self.module._rl_modules.items():  # type: ignore[attr-defined]
            config = self.config.get_config_for_module(module_id)  # type: ignore[attr-defined]
            if timestep - self.last_update_ts_by_mid[module_id] >= config.target_network_update_freq and isinstance(  # type: ignore[attr-defined]
                module.unwrapped(), TargetNetworkAPI
            ):
                for main_net, target_net in module.unwrapped().get_target_network_pairs():
                    polyak_update_(main_net, target_net, config.tau)
                self.metrics.log_value((module_id, NUM_TARGET_UPDATES), 1, reduce="lifetime_sum")  # type: ignore[attr-defined]
                self.last_update_ts_by_mid[module_id] = timestep  # type: ignore[attr-defined]
                self.metrics.log_value((module_id, LAST_TARGET_UPDATE_TS), timestep, reduce="max")  # type: ignore[attr-defined]
