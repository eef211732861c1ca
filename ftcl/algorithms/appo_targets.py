"""APPO's value targets and policy-gradient advantages, as ftcl's RetentionAPPO computes them.

RLlib 2.60's APPO learner builds both with `vtrace_torch` over time-major rows in which
`AddOneTsToEpisodesAndTruncate` has appended one bootstrap step after every episode chunk
(loss mask 0, reward 0, discount 0). Inside a row, that step's TD error is δ = 0 − V(s_T), and
V-trace carries it back: with ρ = c (as always here, both clipped at 1) the last real step's target
becomes r_{T−1} instead of r_{T−1} + γ V(s_T). Every chunk that ends inside a row (flat APPO
always; an LSTM's only when the chunk is shorter than `max_seq_len`) loses its bootstrap value.
Here the TD errors of loss-masked steps are 0, so the appended step's target is its own V(s_T).

What ftcl adds (`RetentionAPPOConfig.training`, the authors' sample-factory learner, paper §4.1):
- `vtrace: False` — RLlib's new stack refuses it. Without V-trace the importance weights
  are 1 and the targets are GAE's:  A_t = Σ_k (γλ)^k δ_{t+k},  δ_t = r_t + γ_t V_{t+1} − V_t,
  value target A_t + V_t, with λ = `lambda_` (the paper: λ = 1, Monte-Carlo returns to the end of
  the chunk, bootstrapped there).
- `reward_clip` — rewards clipped to [−c, c] for the targets (the paper: 10).
- `standardize_advantages` — advantages minus their mean, over their standard deviation, across
  the minibatch's valid steps (sample-factory's default, so the authors').
- A module whose value head predicts normalised returns (tty_lstm's `normalize_returns`) is
  read through its running mean μ and std σ: V = σ·v̂ + μ for the targets, which update the
  statistics and return to the head's scale, (G − μ)/σ, for the value loss.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch

from ray.rllib.algorithms.appo.torch import appo_torch_learner

from ftcl.models.returns_normalizer import ReturnsNormalizer

VTRACE_FUNCTION = "vtrace_torch"
"""The name under which RLlib's APPO loss calls V-trace (replaced while ftcl's loss runs)."""
RLLIB_VTRACE = getattr(appo_torch_learner, VTRACE_FUNCTION)


def appo_targets(*, behaviour_log_probs: torch.Tensor, old_log_probs: torch.Tensor, discounts: torch.Tensor,
                 rewards: torch.Tensor, values: torch.Tensor, bootstrap_values: torch.Tensor, valid: torch.Tensor,
                 use_vtrace: bool, lambda_: float = 1.0, clip_rho: float = 1.0,
                 clip_pg_rho: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Value targets v_s and policy-gradient advantages, both (T, B) time-major and detached.

    V-trace (IMPALA):  ρ_t = min(ρ̄, π_old/μ),  c_t = min(1, π_old/μ),
      v_s − V_s = Σ_t γ^{t−s} (Π_{i<t} c_i) δ_t,  δ_t = valid_t · ρ_t (r_t + γ_t V_{t+1} − V_t),
      advantage_s = ρ^pg_s (r_s + γ_s v_{s+1} − V_s).
    Without V-trace: ρ = c = 1 and the trace decays by λ: GAE(λ), advantage = v_s − V_s.
    `valid` is the loss mask; V_{T} of a row's last step is `bootstrap_values` (the next row's first).
    """
    with torch.no_grad():
        values, rewards = values.detach(), rewards.to(values.dtype)
        next_values = torch.cat([values[1:], bootstrap_values.detach()[None]], dim=0)
        if use_vtrace:
            ratios = torch.exp(old_log_probs - behaviour_log_probs)
            rho, pg_rho, trace = ratios.clamp(max=clip_rho), ratios.clamp(max=clip_pg_rho), ratios.clamp(max=1.0)
        else:
            rho = pg_rho = torch.ones_like(values)
            trace = torch.full_like(values, lambda_)
        deltas = valid * rho * (rewards + discounts * next_values - values)
        accumulated = torch.zeros_like(bootstrap_values, dtype=values.dtype)
        corrections = []
        for t in reversed(range(values.shape[0])):
            accumulated = deltas[t] + discounts[t] * trace[t] * accumulated
            corrections.append(accumulated)
        targets = values + torch.stack(corrections[::-1])
        if not use_vtrace:
            return targets, targets - values
        next_targets = torch.cat([targets[1:], bootstrap_values.detach()[None]], dim=0)
        return targets, pg_rho * (rewards + discounts * next_targets - values)


@contextlib.contextmanager
def ftcl_appo_targets(*, valid: torch.Tensor, use_vtrace: bool, lambda_: float, reward_clip: float | None,
                      normalizer: ReturnsNormalizer | None, standardize_advantages: bool = False) -> Iterator[None]:
    """While RLlib's APPO loss runs, its `vtrace_torch` call computes `appo_targets` instead
    (module doc): rewards clipped, values read through `normalizer`, masked TD errors."""

    def targets(*, target_action_log_probs: torch.Tensor, behaviour_action_log_probs: torch.Tensor,
                discounts: torch.Tensor, rewards: torch.Tensor, values: torch.Tensor, bootstrap_values: torch.Tensor,
                clip_rho_threshold: float = 1.0, clip_pg_rho_threshold: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        if reward_clip is not None:
            rewards = rewards.clamp(-reward_clip, reward_clip)
        if normalizer is not None:
            values, bootstrap_values = normalizer.denormalize(values.detach()), normalizer.denormalize(bootstrap_values.detach())
        value_targets, advantages = appo_targets(
            behaviour_log_probs=behaviour_action_log_probs, old_log_probs=target_action_log_probs, discounts=discounts,
            rewards=rewards, values=values, bootstrap_values=bootstrap_values, valid=valid, use_vtrace=use_vtrace,
            lambda_=lambda_, clip_rho=clip_rho_threshold, clip_pg_rho=clip_pg_rho_threshold)
        if normalizer is not None:
            normalizer.update(value_targets[valid > 0])
            value_targets = normalizer.normalize(value_targets)
        if standardize_advantages:
            counted = advantages[valid > 0]
            spread = counted.std() if counted.numel() > 1 else torch.ones(())
            advantages = (advantages - counted.mean()) / spread.clamp(min=1e-7)
        return value_targets, advantages

    setattr(appo_torch_learner, VTRACE_FUNCTION, targets)
    try:
        yield
    finally:
        setattr(appo_torch_learner, VTRACE_FUNCTION, RLLIB_VTRACE)


def module_returns_normalizer(module: Any) -> ReturnsNormalizer | None:
    """The module's returns normaliser, if its value head predicts normalised returns."""
    net = getattr(module, "net", None)
    normalizer = getattr(net, "returns_normalizer", None)
    return normalizer if isinstance(normalizer, ReturnsNormalizer) else None


def check_appo_target_options(config: Any) -> None:
    """ValueError for APPO options RLlib's new stack would ignore without a word."""
    if not isinstance(config.targets_use_vtrace, bool):
        raise ValueError(f"appo: vtrace must be true or false (got {config.targets_use_vtrace!r})")
    if not config.targets_use_vtrace and not config.use_gae:
        raise ValueError("appo: vtrace: false computes GAE(λ) advantages; use_gae: false (no value baseline) is not supported")
    if config.targets_use_vtrace and config.lambda_ != 1.0:
        raise ValueError(f"appo: lambda_ ({config.lambda_}) applies only with vtrace: false (V-trace has no λ here)")
    if not isinstance(config.standardize_advantages, bool):
        raise ValueError(f"appo: standardize_advantages must be true or false (got {config.standardize_advantages!r})")
    clip = getattr(config, "reward_clip", None)
    if clip is not None and (isinstance(clip, bool) or not isinstance(clip, (int, float)) or not clip > 0):
        raise ValueError(f"appo: reward_clip must be a number > 0 or null (got {clip!r})")
