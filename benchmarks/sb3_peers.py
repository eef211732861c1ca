"""Stable-Baselines3 peers with the same networks and sizes: SAC on push-wall, PPO on CartPole."""
from __future__ import annotations

import time
from typing import Any

from benchmarks.common import (
    PPO_BATCH, PPO_EPOCHS, PPO_HIDDENS, PPO_MINIBATCH, SAC_BATCH, SAC_HIDDENS, robotic_sequence_env,
)


def use_paper_networks(model: Any) -> None:
    """Give an SB3 SAC the paper's networks: LayerNorm + tanh after the first Linear of every MLP."""
    from torch import nn

    policy = model.policy

    def patch(sequential: nn.Sequential) -> None:
        width = sequential[0].out_features
        sequential[1] = nn.Sequential(nn.LayerNorm(width), nn.Tanh())

    patch(policy.actor.latent_pi)
    for critic in (policy.critic, policy.critic_target):
        for q_network in critic.q_networks:
            patch(q_network)
    policy.critic_target.load_state_dict(policy.critic.state_dict())
    learning_rate = model.lr_schedule(1)
    policy.actor.optimizer = policy.optimizer_class(policy.actor.parameters(), lr=learning_rate, **policy.optimizer_kwargs)
    policy.critic.optimizer = policy.optimizer_class(policy.critic.parameters(), lr=learning_rate, **policy.optimizer_kwargs)
    model.batch_norm_stats = []
    model.batch_norm_stats_target = []
    assert isinstance(policy.actor.latent_pi[1][0], nn.LayerNorm)


def sac_rates(steps: int, repeats: int, train_freq: int) -> list[tuple[float, float]]:
    """(env steps/s, updates/s) of SB3 SAC on RoboticSequence[push-wall], UTD 1, per timed window."""
    from stable_baselines3 import SAC
    from torch import nn

    env = robotic_sequence_env()
    model = SAC(
        "MlpPolicy", env, learning_rate=3e-4, buffer_size=100_000, learning_starts=2 * SAC_BATCH,
        batch_size=SAC_BATCH, train_freq=train_freq, gradient_steps=train_freq, ent_coef="auto",
        policy_kwargs={"net_arch": SAC_HIDDENS, "activation_fn": nn.LeakyReLU}, device="cpu", seed=0, verbose=0,
    )
    use_paper_networks(model)
    model.learn(total_timesteps=2 * SAC_BATCH + max(train_freq, 50))  # fills learning_starts, warms up
    results = []
    for _ in range(repeats):
        updates_before = model._n_updates  # SB3's own gradient-step counter
        start = time.perf_counter()
        model.learn(total_timesteps=steps, reset_num_timesteps=False)
        elapsed = time.perf_counter() - start
        results.append((steps / elapsed, (model._n_updates - updates_before) / elapsed))
    env.close()
    return results


def ppo_model(num_envs: int) -> Any:
    """SB3 PPO on CartPole sized like RetentionPPO: 2×64 tanh, 4000 steps/iteration, minibatch 128, 10 epochs."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from torch import nn

    return PPO(
        "MlpPolicy", make_vec_env("CartPole-v1", n_envs=num_envs, seed=0), n_steps=PPO_BATCH // num_envs,
        batch_size=PPO_MINIBATCH, n_epochs=PPO_EPOCHS,
        policy_kwargs={"net_arch": {"pi": PPO_HIDDENS, "vf": PPO_HIDDENS}, "activation_fn": nn.Tanh},
        device="cpu", seed=0, verbose=0,
    )


def ppo_rates(iterations: int, repeats: int, num_envs: int = 1) -> list[tuple[float, float]]:
    """(env steps/s, minibatch updates/s) of SB3 PPO on CartPole, per timed window of `iterations`."""
    model = ppo_model(num_envs)
    model.learn(total_timesteps=PPO_BATCH)  # warm-up iteration
    minibatches_per_iteration = PPO_EPOCHS * -(-PPO_BATCH // PPO_MINIBATCH)
    results = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.learn(total_timesteps=iterations * PPO_BATCH, reset_num_timesteps=False)
        elapsed = time.perf_counter() - start
        results.append((iterations * PPO_BATCH / elapsed, iterations * minibatches_per_iteration / elapsed))
    return results
