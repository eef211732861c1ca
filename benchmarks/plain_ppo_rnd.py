"""PPO + RND in plain PyTorch (CleanRL's `ppo_rnd_envpool.py` layout), the reference for ftcl's RetentionPPORND.

The same networks (`ftcl.models.rnd_cnn.RNDPolicyModule`'s trunk, policy, value heads, RND target and
predictor, used as plain `nn.Module`s), the same envs (`MontezumaEnv` in a gymnasium SyncVectorEnv)
and the same batch shape (N envs × 128 steps, 4 epochs of 4 minibatches). One iteration:
  1. rollout: 128 steps of N envs, π sampled without gradients;
  2. intrinsic rewards e(s_{t+1}) and their normalisation by the running std of the discounted
     intrinsic return; two GAEs (γ 0.999 with terminations, γ_int 0.99 without);
  3. 4 epochs × 4 minibatches of: clipped surrogate on 2·A_ext + A_int, 0.5·(value losses of both
     heads), entropy 0.001, the predictor's loss on 25 % of the minibatch; Adam lr 1e-4, clip 0.5.
The running statistics of RND's input are updated from each rollout, as in ftcl.
"""
from __future__ import annotations

import time

import gymnasium as gym
import numpy as np
import torch

ROLLOUT, EPOCHS, MINIBATCHES = 128, 4, 4
GAMMA, GAMMA_INT, LAMBDA, CLIP, ENTROPY, EXT, INT, PROPORTION = 0.999, 0.99, 0.95, 0.1, 0.001, 2.0, 1.0, 0.25


def make_module(observation_space: gym.Space, action_space: gym.Space):
    from ftcl.models.rnd_cnn import RNDPolicyModule

    return RNDPolicyModule(observation_space=observation_space, action_space=action_space, model_config={})


def gae(rewards: np.ndarray, values: np.ndarray, next_value: np.ndarray, dones: np.ndarray, gamma: float) -> np.ndarray:
    """(T, N) advantages; `dones[t]` ends the stream after step t."""
    advantages = np.zeros_like(rewards)
    running = np.zeros(rewards.shape[1])
    for t in reversed(range(len(rewards))):
        following = next_value if t == len(rewards) - 1 else values[t + 1]
        delta = rewards[t] + gamma * following * (1 - dones[t]) - values[t]
        running = delta + gamma * LAMBDA * (1 - dones[t]) * running
        advantages[t] = running
    return advantages


class PlainPPORND:
    """The module docstring's loop on `num_envs` Montezuma envs."""

    def __init__(self, num_envs: int, seed: int = 0) -> None:
        from ftcl.envs.montezuma import MontezumaEnv

        torch.manual_seed(seed)
        self.envs = gym.vector.SyncVectorEnv([lambda: MontezumaEnv({}) for _ in range(num_envs)])
        self.module = make_module(self.envs.single_observation_space, self.envs.single_action_space)
        parameters = [p for p in self.module.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(parameters, lr=1e-4)
        self.observations, _ = self.envs.reset(seed=seed)
        self.running_return = np.zeros(num_envs)
        self.timings = {"rollout": 0.0, "update": 0.0}

    def iteration(self) -> int:
        """One rollout and update; returns the env steps taken."""
        module, n = self.module, self.envs.num_envs
        start = time.perf_counter()
        observations, actions, logps, rewards, dones = [], [], [], [], []
        with torch.no_grad():
            for _ in range(ROLLOUT):
                obs = torch.as_tensor(self.observations)
                logits = module.policy_distribution_inputs(obs)
                distribution = torch.distributions.Categorical(logits=logits)
                action = distribution.sample()
                next_obs, reward, terminated, truncated, _ = self.envs.step(action.numpy())
                observations.append(self.observations)
                actions.append(action)
                logps.append(distribution.log_prob(action))
                rewards.append(reward)
                dones.append(np.logical_or(terminated, truncated))
                self.observations = next_obs
            obs = torch.as_tensor(np.stack(observations))                     # (T, N, H, W, C)
            flat = obs.reshape(ROLLOUT * n, *obs.shape[2:])
            next_flat = torch.cat([flat[n:], torch.as_tensor(self.observations)])
            novelty = module.novelty(next_flat).reshape(ROLLOUT, n).double().numpy()
            values_ext, values_int = (v.reshape(ROLLOUT, n).numpy() for v in module.compute_both_values(flat))
            last_ext, last_int = (v.numpy() for v in module.compute_both_values(torch.as_tensor(self.observations)))
        self.timings["rollout"] += time.perf_counter() - start
        start = time.perf_counter()
        module.update_observation_statistics(flat[..., -1].numpy())
        returns = np.zeros_like(novelty)
        for t in range(ROLLOUT):
            self.running_return = GAMMA_INT * self.running_return + novelty[t]
            returns[t] = self.running_return
        rewards_int = novelty / max(module.update_intrinsic_return_statistics(returns), 1e-8)
        dones = np.asarray(dones, np.float64)
        advantages_ext = gae(np.asarray(rewards, np.float64), values_ext, last_ext, dones, GAMMA)
        advantages_int = gae(rewards_int, values_int, last_int, np.zeros_like(dones), GAMMA_INT)
        batch = {
            "obs": flat, "actions": torch.stack(actions).reshape(-1), "logp": torch.stack(logps).reshape(-1),
            "advantages": torch.as_tensor(EXT * advantages_ext + INT * advantages_int, dtype=torch.float32).reshape(-1),
            "targets_ext": torch.as_tensor(advantages_ext + values_ext, dtype=torch.float32).reshape(-1),
            "targets_int": torch.as_tensor(advantages_int + values_int, dtype=torch.float32).reshape(-1),
        }
        size = ROLLOUT * n
        for _ in range(EPOCHS):
            order = torch.randperm(size)
            for chunk in order.chunk(MINIBATCHES):
                self._minibatch_step({key: value[chunk] for key, value in batch.items()})
        self.timings["update"] += time.perf_counter() - start
        return size

    def _minibatch_step(self, batch: dict[str, torch.Tensor]) -> None:
        module = self.module
        features = module._features(batch["obs"])
        distribution = torch.distributions.Categorical(logits=module.pi(features))
        ratio = (distribution.log_prob(batch["actions"]) - batch["logp"]).exp()
        advantages = batch["advantages"]
        policy_loss = -torch.min(ratio * advantages, ratio.clamp(1 - CLIP, 1 + CLIP) * advantages).mean()
        value_features = features + module.extra(features)
        value_loss = ((module.vf_ext(value_features).squeeze(-1) - batch["targets_ext"]).pow(2).mean()
                      + (module.vf_int(value_features).squeeze(-1) - batch["targets_int"]).pow(2).mean())
        chosen = torch.rand(len(advantages)) < PROPORTION
        rnd_loss = module.novelty(batch["obs"][chosen]).mean() if chosen.any() else torch.zeros(())
        loss = policy_loss + 0.5 * value_loss - ENTROPY * distribution.entropy().mean() + rnd_loss
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.module.parameters(), 0.5)
        self.optimizer.step()

    def close(self) -> None:
        self.envs.close()
