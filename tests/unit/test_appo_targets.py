"""APPO's targets as ftcl computes them (`ftcl.algorithms.appo_targets`): V-trace that keeps the
bootstrap value of a chunk that ends inside a row, GAE(λ) with `vtrace: false`, reward clipping and a
value head on normalised returns — against plain reference loops written here."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ftcl.algorithms.appo_targets import appo_targets, check_appo_target_options, ftcl_appo_targets
from ftcl.models.returns_normalizer import ReturnsNormalizer

GAMMA = 0.9


def chunk_row(values, rewards, terminated_last=False):
    """One row as RLlib's APPO sees it: the chunk's steps, then the appended bootstrap step
    (loss mask 0, reward 0, discount 0). Time-major (T, 1)."""
    steps = len(rewards)
    valid = torch.tensor([1.0] * steps + [0.0])[:, None]
    discounts = GAMMA * valid.clone()
    if terminated_last:
        discounts[steps - 1] = 0.0
    return (torch.tensor(values, dtype=torch.float32)[:, None], torch.tensor(list(rewards) + [0.0])[:, None],
            discounts, valid)


def reference_returns(values, rewards, bootstrap, lambda_):
    """GAE(λ) by its definition, one chunk: A_t = Σ_k (γλ)^k δ_{t+k}; targets A_t + V_t."""
    next_values = list(values[1:len(rewards)]) + [bootstrap]
    deltas = [r + GAMMA * v1 - v for r, v, v1 in zip(rewards, values, next_values)]
    advantages = [sum((GAMMA * lambda_) ** k * deltas[t + k] for k in range(len(deltas) - t)) for t in range(len(deltas))]
    return np.array(advantages) + np.array(values[:len(rewards)]), np.array(advantages)


def test_rllibs_vtrace_drops_the_bootstrap_value_and_ftcls_keeps_it():
    """A chunk of 3 steps cut by the rollout, V(s_3) = 10: the last step's target is r + γ·V(s_3)."""
    from ray.rllib.algorithms.impala.torch.vtrace_torch_v2 import vtrace_torch

    values, rewards, discounts, valid = chunk_row([1.0, 2.0, 3.0, 10.0], [0.0, 0.0, 1.0])
    same = torch.zeros_like(values)
    rllib, _ = vtrace_torch(target_action_log_probs=same, behaviour_action_log_probs=same, discounts=discounts,
                            rewards=rewards, values=values, bootstrap_values=values[0])
    assert rllib[2].item() == pytest.approx(1.0), "RLlib 2.60: the appended step's −V(s_3) cancels the bootstrap"
    ours, advantages = appo_targets(behaviour_log_probs=same, old_log_probs=same, discounts=discounts, rewards=rewards,
                                    values=values, bootstrap_values=values[0], valid=valid, use_vtrace=True)
    expected, expected_advantages = reference_returns([1.0, 2.0, 3.0], [0.0, 0.0, 1.0], 10.0, 1.0)
    np.testing.assert_allclose(ours[:3, 0].numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(advantages[:3, 0].numpy(), expected_advantages, rtol=1e-6)
    assert ours[3].item() == pytest.approx(10.0), "the bootstrap step's target is its own value"


def test_with_no_step_masked_ftcls_vtrace_is_rllibs():
    from ray.rllib.algorithms.impala.torch.vtrace_torch_v2 import vtrace_torch

    generator = torch.Generator().manual_seed(0)
    shape = (7, 5)
    behaviour, old = torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)
    rewards, values = torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)
    discounts = GAMMA * (torch.rand(shape, generator=generator) > 0.2).float()
    bootstrap = torch.randn(shape[1], generator=generator)
    common = dict(discounts=discounts, rewards=rewards, values=values, bootstrap_values=bootstrap)
    rllib = vtrace_torch(target_action_log_probs=old, behaviour_action_log_probs=behaviour, clip_rho_threshold=1.0,
                         clip_pg_rho_threshold=1.0, **common)
    ours = appo_targets(behaviour_log_probs=behaviour, old_log_probs=old, valid=torch.ones(shape), use_vtrace=True,
                        **common)
    for theirs, mine in zip(rllib, ours):
        torch.testing.assert_close(mine, theirs)


@pytest.mark.parametrize("lambda_", [1.0, 0.95])
def test_without_vtrace_the_targets_are_gae_whatever_the_policies(lambda_):
    values, rewards, discounts, valid = chunk_row([0.5, -1.0, 2.0, 0.3, 4.0], [1.0, 0.0, -2.0, 3.0])
    generator = torch.Generator().manual_seed(1)
    behaviour, old = torch.randn(values.shape, generator=generator), torch.randn(values.shape, generator=generator)
    targets, advantages = appo_targets(behaviour_log_probs=behaviour, old_log_probs=old, discounts=discounts,
                                       rewards=rewards, values=values, bootstrap_values=values[0], valid=valid,
                                       use_vtrace=False, lambda_=lambda_)
    expected, expected_advantages = reference_returns([0.5, -1.0, 2.0, 0.3], [1.0, 0.0, -2.0, 3.0], 4.0, lambda_)
    np.testing.assert_allclose(targets[:4, 0].numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(advantages[:4, 0].numpy(), expected_advantages, rtol=1e-5)


def test_a_terminated_chunk_does_not_bootstrap():
    values, rewards, discounts, valid = chunk_row([1.0, 2.0, 10.0], [0.0, 5.0], terminated_last=True)
    same = torch.zeros_like(values)
    targets, _ = appo_targets(behaviour_log_probs=same, old_log_probs=same, discounts=discounts, rewards=rewards,
                              values=values, bootstrap_values=values[0], valid=valid, use_vtrace=False)
    np.testing.assert_allclose(targets[:2, 0].numpy(), [GAMMA * 5.0, 5.0], rtol=1e-6)


def test_the_normaliser_tracks_the_targets_and_maps_both_ways():
    normalizer = ReturnsNormalizer()
    generator = torch.Generator().manual_seed(2)
    batches = [torch.randn(64, generator=generator) * 30 + 100 for _ in range(3)]
    for batch in batches:
        normalizer.update(batch)
    seen = torch.cat(batches).double()
    # the prior (mean 0, variance 1, count 1) weighs as one more sample
    assert normalizer.count.item() == seen.numel() + 1
    assert normalizer.running_mean.item() == pytest.approx(seen.sum().item() / (seen.numel() + 1), rel=1e-9)
    assert normalizer.running_var.sqrt().item() == pytest.approx(seen.std().item(), rel=0.05)
    returns = torch.tensor([90.0, 100.0, 130.0])
    torch.testing.assert_close(normalizer.denormalize(normalizer.normalize(returns)), returns)
    assert normalizer.normalize(torch.tensor([1e6])).item() == 5.0, "clipped at ±5 standard deviations"


def test_the_loss_context_clips_rewards_and_trains_the_head_on_normalised_returns():
    from ray.rllib.algorithms.appo.torch import appo_torch_learner

    rllib_vtrace = appo_torch_learner.vtrace_torch
    values, rewards, discounts, valid = chunk_row([0.0, 0.0, 0.0], [100.0, -100.0])
    normalizer = ReturnsNormalizer()
    same = torch.zeros_like(values)
    with ftcl_appo_targets(valid=valid, use_vtrace=False, lambda_=1.0, reward_clip=10.0, normalizer=normalizer):
        targets, advantages = appo_torch_learner.vtrace_torch(
            target_action_log_probs=same, behaviour_action_log_probs=same, discounts=discounts, rewards=rewards,
            values=values, bootstrap_values=values[0])
    assert appo_torch_learner.vtrace_torch is rllib_vtrace, "RLlib's function is back after the loss"
    raw = torch.tensor([10.0 - GAMMA * 10.0, -10.0])  # rewards clipped to ±10, values 0 on the head's scale
    np.testing.assert_allclose(advantages[:2, 0].numpy(), raw.numpy(), rtol=1e-5)
    assert normalizer.count.item() == 3, "the statistics saw the two valid targets (and the prior)"
    np.testing.assert_allclose(targets[:2, 0].numpy(), normalizer.normalize(raw).numpy(), rtol=1e-5)


def test_options_rllib_would_ignore_are_refused():
    from ftcl.algorithms.appo import RetentionAPPOConfig

    with pytest.raises(ValueError, match="lambda_ .* applies only with vtrace: false"):
        check_appo_target_options(RetentionAPPOConfig().training(lambda_=0.95))
    with pytest.raises(ValueError, match="use_gae: false"):
        check_appo_target_options(RetentionAPPOConfig().training(vtrace=False, use_gae=False))
    with pytest.raises(ValueError, match="reward_clip must be a number > 0"):
        check_appo_target_options(RetentionAPPOConfig().training(reward_clip=-1))
    with pytest.raises(ValueError, match="standardize_advantages must be true or false"):
        check_appo_target_options(RetentionAPPOConfig().training(standardize_advantages="yes"))
    check_appo_target_options(RetentionAPPOConfig().training(vtrace=False, lambda_=0.95, reward_clip=10))


def test_standardised_advantages_have_mean_0_and_std_1_over_the_valid_steps():
    from ray.rllib.algorithms.appo.torch import appo_torch_learner

    values, rewards, discounts, valid = chunk_row([0.0, 1.0, 2.0, 3.0, 4.0], [5.0, -1.0, 0.5, 2.0])
    same = torch.zeros_like(values)
    with ftcl_appo_targets(valid=valid, use_vtrace=True, lambda_=1.0, reward_clip=None, normalizer=None,
                           standardize_advantages=True):
        _, advantages = appo_torch_learner.vtrace_torch(
            target_action_log_probs=same, behaviour_action_log_probs=same, discounts=discounts, rewards=rewards,
            values=values, bootstrap_values=values[0])
    counted = advantages[valid > 0]
    assert counted.mean().item() == pytest.approx(0.0, abs=1e-6) and counted.std().item() == pytest.approx(1.0)
