"""PPO's minibatch update in plain PyTorch, the lower bound for RetentionPPO's learner.

Separate 2×64 tanh MLPs for the actor π_θ (categorical logits) and the critic V_ψ, one Adam
(lr 3e-4) over both. On a minibatch (s, a, log π_old(a|s), Â, R̂) of 128:

    ρ      = exp(log π_θ(a|s) − log π_old(a|s))
    L_clip = −E[min(ρ Â, clip(ρ, 1 − ε, 1 + ε) Â)]                       (ε = 0.2)
    L_V    = E[(V_ψ(s) − R̂)²]
    L      = L_clip + c_V L_V − c_H E[H(π_θ(·|s))]                       (c_V = 0.5, c_H = 0)
"""
from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from benchmarks.common import PPO_HIDDENS, PPO_MINIBATCH

LEARNING_RATE, CLIP, VALUE_COEFF, ENTROPY_COEFF = 3e-4, 0.2, 0.5, 0.0


def tanh_mlp(input_dim: int, output_dim: int) -> nn.Sequential:
    """Linear→tanh per hidden layer of PPO_HIDDENS, then a linear head."""
    layers: list[nn.Module] = []
    for width_in, width_out in zip([input_dim] + PPO_HIDDENS[:-1], PPO_HIDDENS):
        layers += [nn.Linear(width_in, width_out), nn.Tanh()]
    return nn.Sequential(*layers, nn.Linear(PPO_HIDDENS[-1], output_dim))


class PlainPPO:
    """π_θ and V_ψ with one optimizer; `update` is the module docstring's loss and one Adam step."""

    def __init__(self, observation_dim: int, num_actions: int, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.actor, self.critic = tanh_mlp(observation_dim, num_actions), tanh_mlp(observation_dim, 1)
        self.optimizer = torch.optim.Adam(list(self.actor.parameters()) + list(self.critic.parameters()), lr=LEARNING_RATE)

    def update(self, batch: dict[str, torch.Tensor]) -> None:
        """One gradient step on `batch` (obs, actions, logp, advantages, returns)."""
        distribution = torch.distributions.Categorical(logits=self.actor(batch["obs"]))
        ratio = (distribution.log_prob(batch["actions"]) - batch["logp"]).exp()
        advantages = batch["advantages"]
        policy_loss = -torch.min(ratio * advantages, ratio.clamp(1 - CLIP, 1 + CLIP) * advantages).mean()
        value_loss = (self.critic(batch["obs"]).squeeze(-1) - batch["returns"]).pow(2).mean()
        loss = policy_loss + VALUE_COEFF * value_loss - ENTROPY_COEFF * distribution.entropy().mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


def update_rates(updates: int, repeats: int) -> list[float]:
    """Minibatch updates/s on fresh random CartPole-sized minibatches of 128 (batch building included)."""
    agent = PlainPPO(4, 2)
    generator = np.random.default_rng(0)
    rates = []
    for _ in range(repeats + 1):  # the first window is the warm-up
        start = time.perf_counter()
        for _ in range(updates):
            agent.update({
                "obs": torch.as_tensor(generator.standard_normal((PPO_MINIBATCH, 4)), dtype=torch.float32),
                "actions": torch.as_tensor(generator.integers(2, size=PPO_MINIBATCH)),
                "logp": torch.full((PPO_MINIBATCH,), -0.69),
                "advantages": torch.as_tensor(generator.standard_normal(PPO_MINIBATCH), dtype=torch.float32),
                "returns": torch.as_tensor(generator.standard_normal(PPO_MINIBATCH), dtype=torch.float32),
            })
        rates.append(updates / (time.perf_counter() - start))
    return rates[1:]
