"""Every place where ftcl replaces an RLlib 2.60 method body: what each changes and why.

An RLlib upgrade touches this one module: each override below names the RLlib code it mirrors.
None changes the algorithm's arithmetic; they remove per-update bookkeeping that profiling showed
to cost more than the networks themselves on small models (results/throughput.md).

1. `FusedGradientCheckMixin.apply_gradients` — mirrors `TorchLearner.apply_gradients`. RLlib
   calls `torch.isfinite(grad).all()` once per parameter, and every optimizer checks its
   gradients again before `step()`: ~2 × 39 small kernel launches and Python round trips per SAC
   update (≈3 ms of a ≈15 ms update on one core). Here the norms of all gradients are taken in
   one fused call: a gradient is finite iff its norm is, except that a finite gradient with
   elements above ~1e19 can overflow the norm. When every norm is finite RLlib would just assign
   them and step every optimizer, which is what happens here; otherwise (or with grad scalers /
   torch LR schedulers configured) RLlib's own method runs.
2. `FusedTargetUpdateMixin.after_gradient_based_update` — mirrors
   `DQNLearner.after_gradient_based_update`. RLlib updates each target network with
   `target.load_state_dict({k: τ·main[k] + (1−τ)·target[k]})`, building new tensors per entry;
   `polyak_update_` computes the same expression, in the same order of rounding (τ·main,
   (1−τ)·target, then their sum), in place with fused `torch._foreach_*` calls.
3. `sac_training_step` — mirrors SAC's (DQN's) new-API-stack `training_step`, with the same
   schedule: `calculate_rr_weights(config)` store and sample-and-train rounds, the same
   `timesteps` passed to every update, target networks updated after every gradient step. What
   changes: sampled episodes are flattened once into `TransitionReplay`; a training step's
   minibatches are sampled at once and built as tensors directly (the columns RLlib's SAC
   learner connector builds for 1-step returns); the learner runs them back to back
   (`update_on_minibatches`) and reduces its metrics once, instead of one `LearnerGroup.update`
   with a full metrics reduction per gradient step.
4. `StayInEvalModeMixin` — mirrors `RLModule.forward_exploration` / `forward_inference`, which run
   `eval()` before and `train()` after every call; here the module switches to eval mode once and
   stays there until `forward_train()` (RetentionPPO's default module).

One replacement does change the arithmetic, on purpose, and lives in its own module:
`ftcl.algorithms.appo_targets` replaces the `vtrace_torch` call of `APPOTorchLearner`'s loss while
that loss runs (RLlib's V-trace loses the bootstrap value of chunks that end inside a row; ftcl's
options `vtrace: false`, `reward_clip`, `standardize_advantages` and a normalised value head).
"""
from __future__ import annotations

from typing import Any

import torch

from ray.rllib.algorithms.dqn.dqn import calculate_rr_weights
from ray.rllib.algorithms.dqn.dqn_learner import DQNLearner
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis import TargetNetworkAPI
from ray.rllib.execution.rollout_ops import synchronous_parallel_sample
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
from ray.rllib.utils.metrics import (
    ALL_MODULES,
    ENV_RUNNER_RESULTS,
    ENV_RUNNER_SAMPLING_TIMER,
    LAST_TARGET_UPDATE_TS,
    LEARNER_RESULTS,
    LEARNER_UPDATE_TIMER,
    NUM_AGENT_STEPS_SAMPLED_LIFETIME,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    NUM_TARGET_UPDATES,
    REPLAY_BUFFER_ADD_DATA_TIMER,
    REPLAY_BUFFER_RESULTS,
    REPLAY_BUFFER_SAMPLE_TIMER,
    SYNCH_WORKER_WEIGHTS_TIMER,
    TD_ERROR_KEY,
    TIMERS,
)
from ray.rllib.utils.typing import ParamDict

from ftcl.algorithms.transition_replay import STAGE_DONE_TERMINALS_METRIC, TransitionReplay, rows_to_train_batch


# ---------------------------------------------------------------- 1 + 2: learner bookkeeping
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
    """`TorchLearner.apply_gradients` with one fused finiteness check (override 1 of the module docstring)."""

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


class FusedTargetUpdateMixin:
    """In-place Polyak target updates for DQN/SAC learners (override 2 of the module docstring)."""

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


# ---------------------------------------------------------------- 3: the SAC training step
def update_on_minibatches(
    learner: Any,
    batch: dict[str, torch.Tensor],
    num_minibatches: int,
    timesteps: dict[str, Any],
) -> dict[str, Any]:
    """`num_minibatches` consecutive `learner.update` calls on equal slices of `batch`.

    Each call is a full RLlib update (before/after_gradient_based_update, so target networks and
    retention schedules advance per gradient step); only the last reduces the metrics.
    """
    size = len(batch[Columns.OBS]) // num_minibatches
    results: dict[str, Any] = {}
    for index in range(num_minibatches):
        minibatch = SampleBatch({key: value[index * size:(index + 1) * size] for key, value in batch.items()})
        results = learner.update(
            batch=MultiAgentBatch({DEFAULT_MODULE_ID: minibatch}, env_steps=size),
            timesteps=timesteps,
            _no_metrics_reduce=index < num_minibatches - 1,
        )
    for module_results in results.values():
        if isinstance(module_results, dict):
            module_results.pop(TD_ERROR_KEY, None)  # per-row TD errors: only priorities need them
    return results


def sac_training_step(algo: Any) -> None:
    """RLlib SAC's new-stack `training_step` on a `TransitionReplay` (override 3 of the module docstring)."""
    config = algo.config
    buffer: TransitionReplay = algo.local_replay_buffer
    store_weight, train_weight = calculate_rr_weights(config)
    for _ in range(store_weight):
        with algo.metrics.log_time((TIMERS, ENV_RUNNER_SAMPLING_TIMER)):
            episodes, env_runner_results = synchronous_parallel_sample(
                worker_set=algo.env_runner_group,
                concat=True,
                sample_timeout_s=config.sample_timeout_s,
                _uses_new_env_runners=True,
                _return_metrics=True,
            )
        algo.metrics.aggregate(env_runner_results, key=ENV_RUNNER_RESULTS)
        with algo.metrics.log_time((TIMERS, REPLAY_BUFFER_ADD_DATA_TIMER)):
            buffer.add(episodes)
    env_steps = algo.metrics.peek((ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME), default=0)
    if env_steps < config.num_steps_sampled_before_learning_starts or len(buffer) == 0:
        return
    minibatch_size = config.total_train_batch_size
    with algo.metrics.log_time((TIMERS, REPLAY_BUFFER_SAMPLE_TIMER)):
        rows = buffer.sample_rows(train_weight, minibatch_size)
        batch = rows_to_train_batch(rows)
    algo.metrics.log_value((REPLAY_BUFFER_RESULTS, "num_env_steps_stored"), buffer.get_num_timesteps(), window=1)
    if buffer.stage_done_is_terminal:  # per sampled row made terminal by a stage boundary alone
        algo.metrics.log_value(
            (LEARNER_RESULTS, DEFAULT_MODULE_ID, STAGE_DONE_TERMINALS_METRIC),
            int(rows["stage_done_only"].sum()), reduce="lifetime_sum",
        )
    if buffer.num_protected_timesteps:
        algo.metrics.log_value(
            (REPLAY_BUFFER_RESULTS, "protected_items_per_sample"), float(buffer.last_protected_counts.mean()), window=1
        )
    timesteps = {
        NUM_ENV_STEPS_SAMPLED_LIFETIME: env_steps,
        NUM_AGENT_STEPS_SAMPLED_LIFETIME: algo.metrics.peek(
            (ENV_RUNNER_RESULTS, NUM_AGENT_STEPS_SAMPLED_LIFETIME), default={}
        ),
    }
    with algo.metrics.log_time((TIMERS, LEARNER_UPDATE_TIMER)):
        outcome = algo.learner_group.foreach_learner(
            lambda learner: update_on_minibatches(learner, batch, train_weight, timesteps)
        )
        learner_results = []
        for result in outcome:
            if not result.ok:
                raise RuntimeError(f"learner update failed: {result.get()}")
            learner_results.append(result.get())
        algo.metrics.aggregate(learner_results, key=LEARNER_RESULTS)
    with algo.metrics.log_time((TIMERS, SYNCH_WORKER_WEIGHTS_TIMER)):
        modules_to_update = set(learner_results[0].keys()) - {ALL_MODULES}
        algo.env_runner_group.sync_weights(
            from_worker_or_learner_group=algo.learner_group,
            policies=modules_to_update,
            global_vars=None,
            inference_only=True,
        )


# ---------------------------------------------------------------- 4: env-runner forwards
class StayInEvalModeMixin:
    """`RLModule.forward_exploration`/`forward_inference` without the per-call mode switch (override 4).

    RLlib runs `eval()` before and `train()` after every call (two recursive walks over all
    submodules, ~40 µs per env step on CartPole, as long as the forward itself). Here the module
    switches to eval mode once and stays there until `forward_train()` (which calls `train()`);
    the forward runs in eval mode either way, so outputs are unchanged.
    """

    def forward_exploration(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        if self.training:  # type: ignore[attr-defined]
            self.eval()  # type: ignore[attr-defined]
        return self._forward_exploration(batch, **kwargs)  # type: ignore[attr-defined]

    def forward_inference(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        if self.training:  # type: ignore[attr-defined]
            self.eval()  # type: ignore[attr-defined]
        return self._forward_inference(batch, **kwargs)  # type: ignore[attr-defined]
