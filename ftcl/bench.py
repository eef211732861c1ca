"""`ftcl bench`: throughput of ftcl's RLlib algorithms against plain PyTorch and Stable-Baselines3.

Parts (each prints one table; `--only` runs one):
  env     raw env steps/s with a random policy: RoboticSequence stages (Meta-World v3),
          CartPole, Montezuma (ALE), NetHackScore (NLE);
  sac     SAC with the paper's networks (4×256, Linear→LayerNorm→tanh first, LeakyReLU after;
          twin Q, auto-α, batch 128, one gradient step per env step) on RoboticSequence
          [push-wall]: the plain-PyTorch update (lower bound), SB3 SAC, ftcl RetentionSAC with
          RLlib's stock replay path and with the flat replay path, for finetune and every
          retention method (l2, ewc, bc, ks, em);
  ppo     PPO on CartPole (2×64 tanh actor and critic, 4000 steps per iteration, minibatch
          128, 10 epochs): plain-PyTorch minibatch update, SB3 PPO, ftcl RetentionPPO with
          0 and 2 env runners, for finetune, l2, ewc, bc, ks;
  memory  peak RSS of the process tree while Ray Tune runs a 2-trial RetentionSAC grid.
Timings: warm-up first, then the median of `--repeats` timed windows; every row records the
1-minute load average at its measurement. Rows go to `--out` (CSV).

Retention methods need π* and its data: the benchmark builds a module of the same class with
random weights, saves it (`module.save_to_path`) and collects `--data` transitions with it
(`ftcl.pretrain.data`); BC/EWC/EM are sized to that data (noted in the table). Per-update cost
does not depend on those sizes (BC samples `batch_size`=128 states per update; EWC's Fisher is
computed once at setup; EM only changes which rows are replayed).
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import os
import platform
import shlex
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

SAC_HIDDENS = [256, 256, 256, 256]
SAC_BATCH = 128
PPO_HIDDENS = [64, 64]
PPO_BATCH, PPO_MINIBATCH, PPO_EPOCHS = 4000, 128, 10
SAC_STAGE = "push-wall-v3"
SAC_METHODS = ["finetune", "l2", "ewc", "bc", "ks", "em"]
PPO_METHODS = ["finetune", "l2", "ewc", "bc", "ks"]
PARTS = ("env", "sac", "ppo", "memory")


# ---------------------------------------------------------------------------------------- helpers
def load_average() -> float:
    """1-minute load average (what `uptime` shows first)."""
    return round(os.getloadavg()[0], 2)


def timed_windows(step: Callable[[], float], repeats: int) -> list[float]:
    """Call `step()` (returns a rate) `repeats` times; the list of rates."""
    return [step() for _ in range(repeats)]


@dataclass
class Row:
    """One measured line of a table."""

    part: str
    system: str
    env: str
    method: str = "-"
    setting: str = "-"
    env_steps_per_s: float | None = None
    updates_per_s: float | None = None
    ms_per_update: float | None = None
    repeats: int = 0
    load_1min: float = field(default_factory=load_average)
    note: str = ""


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def print_table(title: str, rows: list[Row], extra: dict[str, str] | None = None) -> None:
    print(f"\n## {title}")
    header = ["system", "env", "method", "setting", "env steps/s", "updates/s", "wall ms/update", "load", "note"]
    lines = [header, ["---"] * len(header)]
    for row in rows:
        lines.append([
            row.system, row.env, row.method, row.setting, fmt(row.env_steps_per_s), fmt(row.updates_per_s),
            fmt(row.ms_per_update, 2), f"{row.load_1min:.2f}", row.note,
        ])
    for line in lines:
        print("| " + " | ".join(line) + " |")
    for key, value in (extra or {}).items():
        print(f"{key}: {value}")
    sys.stdout.flush()


def machine_info(argv: list[str]) -> dict[str, str]:
    """CPU count, load, torch threads, package versions and the exact command."""
    import importlib.metadata as metadata

    import torch

    versions = {}
    for package in ("torch", "ray", "gymnasium", "stable_baselines3", "metaworld", "mujoco", "ale_py", "nle", "numpy"):
        try:
            versions[package] = metadata.version(package.replace("_", "-"))
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "command": "ftcl bench " + " ".join(shlex.quote(a) for a in argv),
        "machine": f"{platform.platform()}, {os.cpu_count()} CPUs, python {platform.python_version()}",
        "load (1/5/15 min)": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "torch threads": str(torch.get_num_threads()),
        "versions": ", ".join(f"{k} {v}" for k, v in versions.items()),
    }


def median_rate(rates: list[float]) -> float:
    return float(statistics.median(rates))


# ---------------------------------------------------------------------------------------- envs
def robotic_sequence_env(stage: str):
    from ftcl.envs.robotic_sequence import Options, make_env

    return make_env(Options(stages=[stage], seed=0).model_dump())


def random_policy_rate(make: Callable[[], Any], steps: int, repeats: int) -> list[float]:
    """Env steps/s of a random policy (resets counted inside the timed window)."""
    env = make()
    env.action_space.seed(0)
    env.reset(seed=0)
    rates = []
    for _ in range(repeats + 1):  # the first window is the warm-up
        start = time.perf_counter()
        for _ in range(steps):
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            if terminated or truncated:
                env.reset()
        rates.append(steps / (time.perf_counter() - start))
    env.close()
    return rates[1:]


def bench_env(steps: int, repeats: int, quick: bool) -> list[Row]:
    import gymnasium as gym

    from ftcl.envs.robotic_sequence import DEFAULT_STAGES

    makers: list[tuple[str, Callable[[], Any]]] = [
        (f"RoboticSequence[{stage}]", lambda stage=stage: robotic_sequence_env(stage)) for stage in DEFAULT_STAGES
    ]
    makers.append(("CartPole-v1", lambda: gym.make("CartPole-v1")))

    def montezuma():
        import ale_py

        gym.register_envs(ale_py)
        return gym.make("ALE/MontezumaRevenge-v5")

    def nethack():
        os.environ.setdefault("USER", "ftcl")
        import nle  # noqa: F401  (registers NetHack envs)

        return gym.make("NetHackScore-v0")

    makers += [("ALE/MontezumaRevenge-v5", montezuma), ("NetHackScore-v0", nethack)]
    rows = []
    for name, make in makers:
        count = steps if not quick else max(200, steps // 4)
        try:
            rates = random_policy_rate(make, count, repeats)
        except Exception as error:  # a missing simulator must not hide the other rows
            rows.append(Row("env", "random policy", name, note=f"failed: {type(error).__name__}: {error}"))
            continue
        rows.append(Row("env", "random policy", name, env_steps_per_s=median_rate(rates), repeats=len(rates),
                        note=f"{count} steps/window"))
    return rows


# ---------------------------------------------------------------------------------------- plain PyTorch
def paper_mlp(input_dim: int, output_dim: int):
    from torch import nn

    from ftcl.models.mlp_sac import paper_mlp as hidden_stack

    return nn.Sequential(hidden_stack(input_dim, SAC_HIDDENS), nn.Linear(SAC_HIDDENS[-1], output_dim))


class PlainSAC:
    """The SAC update RLlib's SAC learner performs, in plain PyTorch (one forward, four optimizers).

    Same networks, squashed Gaussian actor (log σ clipped to [-20, 2]), twin Q with Huber loss
    on y = r + γ(1−d)(min Q̄(s', a') − α log π(a'|s')), actor loss E[α log π − min Q(s, ã)],
    auto-α, Polyak τ = 0.005 on the target critics.
    """

    def __init__(self, observation_dim: int, action_dim: int, seed: int = 0) -> None:
        import copy

        import torch

        torch.manual_seed(seed)
        self.actor = paper_mlp(observation_dim, 2 * action_dim)
        self.q1, self.q2 = paper_mlp(observation_dim + action_dim, 1), paper_mlp(observation_dim + action_dim, 1)
        self.q1_target, self.q2_target = copy.deepcopy(self.q1), copy.deepcopy(self.q2)
        self.log_alpha = torch.zeros(1, requires_grad=True)
        self.target_entropy = -float(action_dim)
        self.optimizers = [
            torch.optim.Adam(self.q1.parameters(), lr=3e-4), torch.optim.Adam(self.q2.parameters(), lr=3e-4),
            torch.optim.Adam(self.actor.parameters(), lr=3e-4), torch.optim.Adam([self.log_alpha], lr=3e-4),
        ]
        self.critic_parameters = list(self.q1.parameters()) + list(self.q2.parameters())
        self.target_pairs = (list(self.q1.parameters()) + list(self.q2.parameters()),
                             list(self.q1_target.parameters()) + list(self.q2_target.parameters()))

    def policy(self, observations):
        import torch

        mean, log_std = self.actor(observations).chunk(2, dim=-1)
        std = log_std.clamp(-20.0, 2.0).exp()
        pre_tanh = mean + std * torch.randn_like(mean)
        action = torch.tanh(pre_tanh)
        normal_logp = (-0.5 * ((pre_tanh - mean) / std) ** 2 - std.log() - 0.5 * np.log(2 * np.pi)).sum(-1)
        logp = normal_logp - torch.log(1 - action.pow(2) + 1e-6).sum(-1)
        return action, logp

    def update(self, batch: dict[str, Any], gamma: float = 0.99, tau: float = 0.005) -> None:
        import torch

        obs, actions, rewards, next_obs, dones = (batch[k] for k in ("obs", "actions", "rewards", "next_obs", "dones"))
        alpha = self.log_alpha.exp()
        q1 = self.q1(torch.cat([obs, actions], -1)).squeeze(-1)
        q2 = self.q2(torch.cat([obs, actions], -1)).squeeze(-1)
        action_new, logp = self.policy(obs)
        with torch.no_grad():
            next_action, next_logp = self.policy(next_obs)
            next_input = torch.cat([next_obs, next_action], -1)
            next_q = torch.min(self.q1_target(next_input), self.q2_target(next_input)).squeeze(-1)
            target = rewards + gamma * (1.0 - dones) * (next_q - alpha * next_logp)
        for parameter in self.critic_parameters:
            parameter.requires_grad_(False)
        new_input = torch.cat([obs, action_new], -1)
        q_new = torch.min(self.q1(new_input), self.q2(new_input)).squeeze(-1)
        for parameter in self.critic_parameters:
            parameter.requires_grad_(True)
        losses = [
            torch.nn.functional.huber_loss(q1, target),
            torch.nn.functional.huber_loss(q2, target),
            (alpha.detach() * logp - q_new).mean(),
            -(self.log_alpha * (logp.detach() + self.target_entropy)).mean(),
        ]
        for optimizer, loss in zip(self.optimizers, losses):
            optimizer.zero_grad(set_to_none=True)
            loss.backward(retain_graph=True)
        for optimizer in self.optimizers:
            optimizer.step()
        with torch.no_grad():
            torch._foreach_lerp_(self.target_pairs[1], self.target_pairs[0], tau)


def random_sac_batch(observation_dim: int, action_dim: int, size: int, generator: np.random.Generator):
    import torch

    return {
        "obs": torch.as_tensor(generator.standard_normal((size, observation_dim)), dtype=torch.float32),
        "actions": torch.as_tensor(generator.uniform(-1, 1, (size, action_dim)), dtype=torch.float32),
        "rewards": torch.as_tensor(generator.standard_normal(size), dtype=torch.float32),
        "next_obs": torch.as_tensor(generator.standard_normal((size, observation_dim)), dtype=torch.float32),
        "dones": torch.zeros(size),
    }


def plain_sac_update_rates(observation_dim: int, action_dim: int, updates: int, repeats: int) -> list[float]:
    """Updates/s of `PlainSAC.update` on fresh random batches of 128 (batch building included)."""
    agent = PlainSAC(observation_dim, action_dim)
    generator = np.random.default_rng(0)
    rates = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        for _ in range(updates):
            agent.update(random_sac_batch(observation_dim, action_dim, SAC_BATCH, generator))
        rates.append(updates / (time.perf_counter() - start))
    return rates[1:]


def plain_sac_loop_rates(steps: int, repeats: int) -> list[float]:
    """Env steps/s of a plain loop: act with the actor, step push-wall, store, one update per step."""
    import torch

    env = robotic_sequence_env(SAC_STAGE)
    observation_dim, action_dim = env.observation_space.shape[0], env.action_space.shape[0]
    agent = PlainSAC(observation_dim, action_dim)
    capacity = 100_000
    storage = {"obs": np.zeros((capacity, observation_dim), np.float32), "actions": np.zeros((capacity, action_dim), np.float32),
               "rewards": np.zeros(capacity, np.float32), "next_obs": np.zeros((capacity, observation_dim), np.float32),
               "dones": np.zeros(capacity, np.float32)}
    generator = np.random.default_rng(0)
    observation, _ = env.reset(seed=0)
    size = 0

    def run(count: int, learn: bool) -> float:
        nonlocal observation, size
        start = time.perf_counter()
        for _ in range(count):
            with torch.no_grad():
                action = agent.policy(torch.as_tensor(observation, dtype=torch.float32)[None])[0][0].numpy()
            next_observation, reward, terminated, truncated, _ = env.step(action)
            row = size % capacity
            for key, value in (("obs", observation), ("actions", action), ("rewards", reward),
                               ("next_obs", next_observation), ("dones", float(terminated))):
                storage[key][row] = value
            size += 1
            observation = env.reset()[0] if terminated or truncated else next_observation
            if learn:
                rows = generator.integers(min(size, capacity), size=SAC_BATCH)
                agent.update({key: torch.from_numpy(value[rows]) for key, value in storage.items()})
        return count / (time.perf_counter() - start)

    run(SAC_BATCH * 2, learn=False)
    run(min(steps, 100), learn=True)
    return [run(steps, learn=True) for _ in range(repeats)]


class PlainPPO:
    """PPO's minibatch update in plain PyTorch: separate 2×64 tanh actor and critic, one Adam."""

    def __init__(self, observation_dim: int, num_actions: int, seed: int = 0) -> None:
        import torch
        from torch import nn

        torch.manual_seed(seed)

        def mlp(output_dim: int) -> nn.Sequential:
            return nn.Sequential(nn.Linear(observation_dim, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, output_dim))

        self.actor, self.critic = mlp(num_actions), mlp(1)
        self.optimizer = torch.optim.Adam(list(self.actor.parameters()) + list(self.critic.parameters()), lr=3e-4)

    def update(self, batch: dict[str, Any], clip: float = 0.2) -> None:
        import torch

        logits = self.actor(batch["obs"])
        distribution = torch.distributions.Categorical(logits=logits)
        ratio = (distribution.log_prob(batch["actions"]) - batch["logp"]).exp()
        advantages = batch["advantages"]
        policy_loss = -torch.min(ratio * advantages, ratio.clamp(1 - clip, 1 + clip) * advantages).mean()
        value_loss = (self.critic(batch["obs"]).squeeze(-1) - batch["returns"]).pow(2).mean()
        loss = policy_loss + 0.5 * value_loss - 0.0 * distribution.entropy().mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


def plain_ppo_update_rates(updates: int, repeats: int) -> list[float]:
    import torch

    agent = PlainPPO(4, 2)
    generator = np.random.default_rng(0)
    rates = []
    for _ in range(repeats + 1):
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


# ---------------------------------------------------------------------------------------- SB3
def sb3_paper_networks(model: Any) -> None:
    """Give an SB3 SAC the paper's networks: LayerNorm + tanh after the first Linear of every MLP."""
    import torch
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
    assert isinstance(policy.actor.latent_pi[1][0], torch.nn.LayerNorm)


def sb3_sac_rates(steps: int, repeats: int, train_freq: int) -> list[tuple[float, float]]:
    """(env steps/s, updates/s) of SB3 SAC on RoboticSequence[push-wall], UTD 1."""
    from stable_baselines3 import SAC
    from torch import nn

    env = robotic_sequence_env(SAC_STAGE)
    model = SAC(
        "MlpPolicy", env, learning_rate=3e-4, buffer_size=100_000, learning_starts=2 * SAC_BATCH,
        batch_size=SAC_BATCH, train_freq=train_freq, gradient_steps=train_freq, ent_coef="auto",
        policy_kwargs={"net_arch": SAC_HIDDENS, "activation_fn": nn.LeakyReLU}, device="cpu", seed=0, verbose=0,
    )
    sb3_paper_networks(model)
    model.learn(total_timesteps=2 * SAC_BATCH + max(train_freq, 50))  # fills learning_starts, warms up
    results = []
    for _ in range(repeats):
        updates_before = model._n_updates
        start = time.perf_counter()
        model.learn(total_timesteps=steps, reset_num_timesteps=False)
        elapsed = time.perf_counter() - start
        results.append((steps / elapsed, (model._n_updates - updates_before) / elapsed))
    env.close()
    return results


def sb3_ppo_rates(iterations: int, repeats: int, num_envs: int = 1) -> list[tuple[float, float]]:
    """(env steps/s, minibatch updates/s) of SB3 PPO on CartPole, same sizes as RetentionPPO."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from torch import nn

    model = PPO(
        "MlpPolicy", make_vec_env("CartPole-v1", n_envs=num_envs, seed=0), n_steps=PPO_BATCH // num_envs, batch_size=PPO_MINIBATCH, n_epochs=PPO_EPOCHS,
        policy_kwargs={"net_arch": {"pi": PPO_HIDDENS, "vf": PPO_HIDDENS}, "activation_fn": nn.Tanh},
        device="cpu", seed=0, verbose=0,
    )
    model.learn(total_timesteps=PPO_BATCH)  # warm-up iteration
    minibatches_per_iteration = PPO_EPOCHS * -(-PPO_BATCH // PPO_MINIBATCH)
    results = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.learn(total_timesteps=iterations * PPO_BATCH, reset_num_timesteps=False)
        elapsed = time.perf_counter() - start
        results.append((iterations * PPO_BATCH / elapsed, iterations * minibatches_per_iteration / elapsed))
    return results


# ---------------------------------------------------------------------------------------- ftcl (RLlib)
def ray_session() -> contextlib.AbstractContextManager:
    @contextlib.contextmanager
    def session() -> Iterator[None]:
        import ray

        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        started = not ray.is_initialized()
        if started:
            ray.init(address="local", num_cpus=os.cpu_count() or 2, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
        try:
            yield
        finally:
            if started:
                ray.shutdown()

    return session()


def sac_config(num_steps_per_learner_call: int, flat_replay: bool):
    """RetentionSACConfig: paper networks, batch 128, UTD 1, local env runner and learner."""
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from ftcl.algorithms import RetentionSACConfig
    from ftcl.models.mlp_sac import MLPSACTorchRLModule
    from ftcl.runner import env_id, register_envs

    register_envs()
    config = (
        RetentionSACConfig()
        .environment(env_id("robotic_sequence"), env_config={"stages": [SAC_STAGE], "seed": 0})
        .env_runners(num_env_runners=0, rollout_fragment_length=num_steps_per_learner_call)
        .learners(num_learners=0)
        .rl_module(rl_module_spec=RLModuleSpec(module_class=MLPSACTorchRLModule, model_config={"fcnet_hiddens": SAC_HIDDENS}))
        .training(
            train_batch_size_per_learner=SAC_BATCH,
            num_steps_sampled_before_learning_starts=2 * SAC_BATCH,
            replay_buffer_config={"type": "EpisodeReplayBuffer", "capacity": 100_000},
            # training_intensity = replayed / sampled steps = batch × UTD
            training_intensity=SAC_BATCH if num_steps_per_learner_call > 1 else None,
        )
        .reporting(min_time_s_per_iteration=0, min_sample_timesteps_per_iteration=num_steps_per_learner_call)
        .debugging(seed=0, log_level="ERROR")
        .throughput(flat_replay=flat_replay)
    )
    return config


def ppo_config(num_env_runners: int, num_envs: int = 1):
    from ftcl.algorithms import RetentionPPOConfig

    return (
        RetentionPPOConfig()
        .environment("CartPole-v1")
        .env_runners(num_env_runners=num_env_runners, num_envs_per_env_runner=num_envs)
        .learners(num_learners=0)
        .rl_module(model_config={"fcnet_hiddens": PPO_HIDDENS, "fcnet_activation": "tanh", "vf_share_layers": False})
        .training(train_batch_size_per_learner=PPO_BATCH, minibatch_size=PPO_MINIBATCH, num_epochs=PPO_EPOCHS)
        .reporting(min_time_s_per_iteration=0)
        .debugging(seed=0, log_level="ERROR")
    )


def method_settings(name: str, data_rows: int) -> dict[str, Any]:
    """The method dicts the benchmark runs (data-sized where the paper's sizes exceed --data)."""
    settings = {
        "finetune": {"name": "finetune"},
        "l2": {"name": "l2", "coeff": 1.0},
        "ewc": {"name": "ewc", "coeff": 100.0, "fisher_batches": max(1, data_rows // 256), "fisher_batch_size": min(256, data_rows)},
        "bc": {"name": "bc", "coeff": 1.0, "buffer_size": data_rows, "batch_size": 128},
        "ks": {"name": "ks", "coeff": 0.5},
        "em": {"name": "em", "memory_size": data_rows},
    }
    return settings[name]


def make_pretrained_artifacts(config: Any, make_env: Callable[[], Any], directory: Path, data_rows: int) -> tuple[Path, Path]:
    """A module of the config's class (random weights, saved) and `data_rows` transitions it collected."""
    from ftcl.pretrain.data import collect_policy_data, save_retention_data

    env = make_env()
    spec = config.get_rl_module_spec(env=env)
    spec.observation_space, spec.action_space = env.observation_space, env.action_space
    module = spec.build()
    module_dir = directory / "module"
    module.save_to_path(module_dir)
    data = collect_policy_data(module, env, num_transitions=data_rows, seed=1)
    data_path = save_retention_data(directory / "data.npz", data)
    env.close()
    return module_dir, data_path


def env_steps_sampled(algo: Any) -> int:
    from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME

    return int(algo.metrics.peek((ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME), default=0))


def optimizer_steps(algo: Any) -> int:
    """Gradient steps taken so far: the largest Adam step count among the module's optimizers."""
    from ray.rllib.core import DEFAULT_MODULE_ID

    learner = algo.learner_group._learner
    counts = [0]
    for _, optimizer in learner.get_optimizers_for_module(DEFAULT_MODULE_ID):
        for state in optimizer.state.values():
            step = state.get("step")
            if step is not None:
                counts.append(int(step))
            break
    return max(counts)


def rllib_rates(algo: Any, steps: int, repeats: int, warmup_steps: int) -> list[tuple[float, float]]:
    """(env steps/s, gradient steps/s) over `repeats` windows of ≥ `steps` env steps each."""
    while env_steps_sampled(algo) < warmup_steps:
        algo.train()
    results = []
    for _ in range(repeats):
        steps_before, updates_before = env_steps_sampled(algo), optimizer_steps(algo)
        start = time.perf_counter()
        while env_steps_sampled(algo) < steps_before + steps:
            algo.train()
        elapsed = time.perf_counter() - start
        results.append(((env_steps_sampled(algo) - steps_before) / elapsed, (optimizer_steps(algo) - updates_before) / elapsed))
    return results


def median_pair(results: list[tuple[float, float]]) -> tuple[float, float]:
    return median_rate([r[0] for r in results]), median_rate([r[1] for r in results])


def interleaved_update_ms(
    algos: dict[str, Any], update: Callable[[Any], int], repeats: int
) -> dict[str, float]:
    """Median wall ms per gradient step of `update(algo)` (returns its step count), per method.

    All algorithms are built up front and timed round-robin, window by window, so a change in
    machine load hits every method alike.
    """
    times: dict[str, list[float]] = {name: [] for name in algos}
    for name, algo in algos.items():  # warm-up
        update(algo)
    for _ in range(max(repeats, 3)):
        for name, algo in algos.items():
            start = time.perf_counter()
            count = update(algo)
            times[name].append(1000 * (time.perf_counter() - start) / count)
    return {name: float(statistics.median(values)) for name, values in times.items()}


def sac_learner_overheads(module_dir: Path, data_path: Path, data_rows: int, methods: list[str], updates: int, repeats: int) -> list[Row]:
    """ms per SAC learner update (flat path, fixed replay contents) for each method, interleaved."""
    from ftcl.algorithms.fast_replay import rows_to_train_batch, update_on_minibatches

    algos = {}
    try:
        for method in methods:
            config = sac_config(50, True).retention(
                method=method_settings(method, data_rows), pretrained_module_path=module_dir, retention_data_path=data_path
            )
            algos[method] = config.build_algo()
        first = next(iter(algos.values()))
        first.train()
        rows = first.local_replay_buffer.sample_rows(updates, SAC_BATCH) if len(first.local_replay_buffer) else None
        while rows is None or len(first.local_replay_buffer) < 2 * SAC_BATCH:
            first.train()
            rows = first.local_replay_buffer.sample_rows(updates, SAC_BATCH)
        batch = rows_to_train_batch(rows)

        def update(algo: Any) -> int:
            learner = algo.learner_group._learner
            update_on_minibatches(learner, batch, updates, {"num_env_steps_sampled_lifetime": 10_000})
            return updates

        import torch

        torch.set_num_threads(1)
        ms = interleaved_update_ms(algos, update, repeats)
    finally:
        for algo in algos.values():
            algo.stop()
    base = ms.get("finetune")
    return [
        Row("sac", "ftcl RetentionSAC learner", "fixed replay batch", method, f"{updates} updates/call, interleaved",
            None, 1000 / value, value, max(repeats, 3),
            note="" if method == "finetune" or base is None else f"+{100 * (value / base - 1):.1f} % per update vs finetune")
        for method, value in ms.items()
    ]


def ppo_learner_overheads(module_dir: Path, data_path: Path, data_rows: int, methods: list[str], repeats: int) -> list[Row]:
    """ms per PPO minibatch update on one fixed 4000-step batch (1 epoch, minibatch 128), interleaved."""
    from ray.rllib.core.learner.training_data import TrainingData

    algos = {}
    try:
        for method in methods:
            config = ppo_config(0).retention(
                method=method_settings(method, data_rows), pretrained_module_path=module_dir, retention_data_path=data_path
            )
            algos[method] = config.build_algo()
        first = next(iter(algos.values()))
        episodes = first.env_runner.sample(num_timesteps=PPO_BATCH, random_actions=False)
        batch = first.learner_group._learner._make_batch_if_necessary(TrainingData(episodes=episodes))
        minibatches = -(-batch.env_steps() // PPO_MINIBATCH)

        def update(algo: Any) -> int:
            algo.learner_group._learner.update(
                batch=batch, minibatch_size=PPO_MINIBATCH, num_epochs=1, timesteps={"num_env_steps_sampled_lifetime": 10_000}
            )
            return minibatches

        import torch

        torch.set_num_threads(1)
        ms = interleaved_update_ms(algos, update, repeats)
    finally:
        for algo in algos.values():
            algo.stop()
    base = ms.get("finetune")
    return [
        Row("ppo", "ftcl RetentionPPO learner", "fixed 4000-step batch", method, "1 epoch, minibatch 128, interleaved",
            None, 1000 / value, value, max(repeats, 3),
            note="" if method == "finetune" or base is None else f"+{100 * (value / base - 1):.1f} % per update vs finetune")
        for method, value in ms.items()
    ]


def bench_sac(steps: int, repeats: int, quick: bool, data_rows: int, steps_per_call: int, methods: list[str]) -> tuple[list[Row], dict[str, str]]:
    import torch

    rows: list[Row] = []
    env_name = f"RoboticSequence[{SAC_STAGE}]"
    probe = robotic_sequence_env(SAC_STAGE)
    observation_dim, action_dim = probe.observation_space.shape[0], probe.action_space.shape[0]
    probe.close()

    plain = plain_sac_update_rates(observation_dim, action_dim, updates=50 if quick else 200, repeats=repeats)
    plain_rate = median_rate(plain)
    rows.append(Row("sac", "plain PyTorch", "random batches", "-", "update only", None, plain_rate, 1000 / plain_rate, len(plain)))
    loop = plain_sac_loop_rates(steps, repeats)
    rows.append(Row("sac", "plain PyTorch", env_name, "-", "loop, 1 update/step", median_rate(loop), median_rate(loop), 1000 / median_rate(loop), len(loop)))

    sb3_settings = [1] if quick else [1, steps_per_call]
    sb3_rate = {}
    for train_freq in sb3_settings:
        result = median_pair(sb3_sac_rates(steps, repeats, train_freq))
        sb3_rate[train_freq] = result[0]
        rows.append(Row("sac", "SB3 SAC", env_name, "-", f"train_freq={train_freq}, gradient_steps={train_freq}",
                        result[0], result[1], 1000 / result[1], repeats))

    ftcl_settings = [(1, False, ["finetune"])] if quick else [(1, False, ["finetune"]), (steps_per_call, False, ["finetune"])]
    ftcl_settings.append((steps_per_call, True, methods))
    extra: dict[str, str] = {}
    with ray_session(), tempfile.TemporaryDirectory(prefix="ftcl_bench_") as scratch:
        module_dir, data_path = make_pretrained_artifacts(
            sac_config(1, False), lambda: robotic_sequence_env(SAC_STAGE), Path(scratch), data_rows
        )
        finetune_rate = None
        for per_call, flat, method_names in ftcl_settings:
            for method in method_names:
                config = sac_config(per_call, flat).retention(
                    method=method_settings(method, data_rows), pretrained_module_path=module_dir, retention_data_path=data_path
                )
                algo = config.build_algo()
                torch.set_num_threads(1)
                try:
                    window = steps if per_call > 1 else max(50, steps // 4)
                    env_rate, update_rate = median_pair(rllib_rates(algo, window, repeats, 2 * SAC_BATCH + per_call))
                finally:
                    algo.stop()
                setting = f"{'flat replay' if flat else 'stock replay'}, {per_call} steps/learner call"
                if flat and method == "finetune":
                    finetune_rate = update_rate
                overhead = "" if not (flat and finetune_rate and method != "finetune") else f"+{100 * (finetune_rate / update_rate - 1):.1f} % per update vs finetune"
                ratio = f"{env_rate / sb3_rate[1]:.2f}× SB3(train_freq=1)"
                if per_call in sb3_rate and per_call != 1:
                    ratio += f", {env_rate / sb3_rate[per_call]:.2f}× SB3(train_freq={per_call})"
                rows.append(Row("sac", "ftcl RetentionSAC", env_name, method, setting, env_rate, update_rate,
                                1000 / update_rate, repeats,
                                note="; ".join(x for x in (ratio, f"{update_rate / plain_rate:.2f}× plain update rate", overhead) if x)))
        if len(methods) > 1:
            rows += sac_learner_overheads(module_dir, data_path, data_rows, methods, 25 if quick else 50, repeats)
    extra["retention data"] = f"{data_rows} transitions from a random-weight π* (bc buffer_size={data_rows}, ewc fisher {method_settings('ewc', data_rows)['fisher_batches']}×{method_settings('ewc', data_rows)['fisher_batch_size']}, em memory_size={data_rows})"
    return rows, extra


def bench_ppo(iterations: int, repeats: int, quick: bool, data_rows: int, methods: list[str]) -> tuple[list[Row], dict[str, str]]:
    import gymnasium as gym
    import torch

    rows: list[Row] = []
    plain = plain_ppo_update_rates(updates=200 if quick else 1000, repeats=repeats)
    plain_rate = median_rate(plain)
    rows.append(Row("ppo", "plain PyTorch", "random batches", "-", "update only, minibatch 128", None, plain_rate, 1000 / plain_rate, len(plain)))
    sb3_by_envs = {}
    for num_envs in (1, 8):
        sb3_by_envs[num_envs] = median_pair(sb3_ppo_rates(iterations, repeats, num_envs))
        result = sb3_by_envs[num_envs]
        rows.append(Row("ppo", "SB3 PPO", "CartPole-v1", "-", f"{num_envs} env(s)", result[0], result[1], 1000 / result[1], repeats))
    sb3 = sb3_by_envs[1]
    runner_settings = (
        [(0, 1, methods), (0, 8, ["finetune"]), (2, 1, ["finetune"])] if quick
        else [(0, 1, methods), (0, 8, methods), (2, 1, ["finetune"]), (2, 4, ["finetune"])]
    )
    with ray_session(), tempfile.TemporaryDirectory(prefix="ftcl_bench_") as scratch:
        module_dir, data_path = make_pretrained_artifacts(ppo_config(0), lambda: gym.make("CartPole-v1"), Path(scratch), data_rows)
        for num_env_runners, num_envs, method_names in runner_settings:
            finetune_rate = None
            for method in method_names:
                config = ppo_config(num_env_runners, num_envs).retention(
                    method=method_settings(method, data_rows), pretrained_module_path=module_dir, retention_data_path=data_path
                )
                algo = config.build_algo()
                torch.set_num_threads(1)
                try:
                    env_rate, update_rate = median_pair(rllib_rates(algo, iterations * PPO_BATCH, repeats, PPO_BATCH))
                finally:
                    algo.stop()
                if method == "finetune":
                    finetune_rate = update_rate
                overhead = "" if method == "finetune" or not finetune_rate else f"+{100 * (finetune_rate / update_rate - 1):.1f} % per update vs finetune"
                peer = sb3_by_envs.get(num_envs, sb3)
                versus = f"{env_rate / sb3[0]:.2f}× SB3(1 env)" + (f", {env_rate / peer[0]:.2f}× SB3({num_envs} envs)" if num_envs in sb3_by_envs and num_envs != 1 else "")
                note = "; ".join(x for x in (versus, f"{update_rate / plain_rate:.2f}× plain update rate", overhead) if x)
                rows.append(Row("ppo", "ftcl RetentionPPO", "CartPole-v1", method, f"{num_env_runners} env runners × {num_envs} envs",
                                env_rate, update_rate, 1000 / update_rate, repeats, note=note))
        if len(methods) > 1:
            rows += ppo_learner_overheads(module_dir, data_path, data_rows, methods, repeats)
    return rows, {}


# ---------------------------------------------------------------------------------------- memory
def process_tree_rss_mb(root_pid: int) -> float:
    """Summed RSS (MiB) of `root_pid` and all its descendants, read from /proc (over-counts shared pages)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            parent, pages = int(fields[1]), int(fields[21])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry))
        rss[int(entry)] = pages
    total, stack = 0, [root_pid]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total * os.sysconf("SC_PAGE_SIZE") / 2**20


def bench_memory(steps: int, data_rows: int) -> tuple[list[Row], dict[str, str]]:
    """Peak process-tree RSS while Tune runs 2 RetentionSAC (flat replay, finetune) trials."""
    from ray import tune

    from ftcl.algorithms.sac import RetentionSAC

    peak = {"mb": 0.0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak["mb"] = max(peak["mb"], process_tree_rss_mb(os.getpid()))
            stop.wait(0.5)

    with ray_session(), tempfile.TemporaryDirectory(prefix="ftcl_bench_") as scratch:
        module_dir, data_path = make_pretrained_artifacts(sac_config(1, False), lambda: robotic_sequence_env(SAC_STAGE), Path(scratch), data_rows)
        config = sac_config(50, True).retention(method={"name": "finetune"}, pretrained_module_path=module_dir)
        config = config.debugging(seed=tune.grid_search([0, 1]))
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        start = time.perf_counter()
        tuner = tune.Tuner(
            RetentionSAC, param_space=config,
            run_config=tune.RunConfig(storage_path=str(Path(scratch) / "ray_results"), name="bench_memory",
                                      stop={"env_runners/num_env_steps_sampled_lifetime": steps}, verbose=0),
        )
        results = tuner.fit()
        elapsed = time.perf_counter() - start
        stop.set()
        sampler.join()
        errors = len(results.errors)
    row = Row("memory", "Ray Tune grid", f"RoboticSequence[{SAC_STAGE}]", "finetune", "2 trials × RetentionSAC (flat replay), 0 env runners",
              note=f"peak process-tree RSS {peak['mb']:,.0f} MiB; {elapsed:.0f} s; {errors} trial errors; {steps} env steps/trial")
    return [row], {"peak RSS (MiB)": f"{peak['mb']:,.0f} (sum over the driver, Ray system processes and trial workers; shared pages counted once per process)"}


# ---------------------------------------------------------------------------------------- main
def write_csv(path: Path, rows: list[Row], info: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(Row.__dataclass_fields__)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(names + ["command"])
        for row in rows:
            writer.writerow([getattr(row, name) for name in names] + [info["command"]])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ftcl bench", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  ftcl bench --quick\n  ftcl bench --only sac --methods finetune,bc --out results/throughput.csv",
    )
    parser.add_argument("--quick", action="store_true", help="small windows and fewer settings (< ~3 min)")
    parser.add_argument("--only", choices=PARTS, default=None, help="run one part")
    parser.add_argument("--steps", type=int, default=None, help="env steps per timed window (SAC/env); PPO uses iterations of 4000")
    parser.add_argument("--repeats", type=int, default=None, help="timed windows per measurement (median reported)")
    parser.add_argument("--data", type=int, default=2048, help="transitions of π* data for bc/ewc/em")
    parser.add_argument("--steps-per-learner-call", type=int, default=50,
                        help="SAC rollout_fragment_length K: K env steps, then K gradient steps (UTD 1)")
    parser.add_argument("--methods", default=None, help="comma-separated subset of retention methods")
    parser.add_argument("--out", type=Path, default=None, help="CSV file for all rows")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark parts, print one table each, write the CSV; returns an exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    repeats = args.repeats or (1 if args.quick else 3)
    if repeats < 1 or (args.steps is not None and args.steps < 1) or args.data < 256:
        print("ftcl bench: error: --repeats and --steps must be >= 1 and --data >= 256", file=sys.stderr)
        return 2
    parts = [args.only] if args.only else (["env", "sac", "ppo"] if args.quick else list(PARTS))
    info = machine_info(argv)
    print("# ftcl bench")
    for key, value in info.items():
        print(f"{key}: {value}")
    all_rows: list[Row] = []
    if "env" in parts:
        rows = bench_env(args.steps or 1000, repeats, args.quick)
        print_table("Raw env steps/s (random policy)", rows)
        all_rows += rows
    if "sac" in parts:
        methods = args.methods.split(",") if args.methods else (["finetune", "l2", "bc"] if args.quick else SAC_METHODS)
        unknown = sorted(set(methods) - set(SAC_METHODS))
        if unknown:
            print(f"ftcl bench: error: unknown SAC methods {unknown}; allowed: {SAC_METHODS}", file=sys.stderr)
            return 2
        rows, extra = bench_sac(args.steps or (100 if args.quick else 300), repeats, args.quick, args.data,
                                args.steps_per_learner_call, methods)
        print_table(f"SAC, RoboticSequence[{SAC_STAGE}], 4×256 paper MLPs, batch {SAC_BATCH}, UTD 1", rows, extra)
        all_rows += rows
    if "ppo" in parts:
        methods = [m for m in (args.methods.split(",") if args.methods else PPO_METHODS) if m in PPO_METHODS]
        rows, extra = bench_ppo(1 if args.quick else 2, repeats, args.quick, args.data, methods if not args.quick else ["finetune", "l2"])
        print_table(f"PPO, CartPole-v1, 2×64 tanh, {PPO_BATCH} steps/iteration, minibatch {PPO_MINIBATCH}, {PPO_EPOCHS} epochs", rows, extra)
        all_rows += rows
    if "memory" in parts:
        rows, extra = bench_memory(args.steps or 500, args.data)
        print_table("Peak memory of a 2-trial grid", rows, extra)
        all_rows += rows
    if args.out:
        write_csv(args.out, all_rows, info)
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
