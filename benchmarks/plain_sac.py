"""SAC in plain PyTorch, the lower bound for RetentionSAC: the update RLlib's SAC learner performs.

Networks as in the paper (Continual World's SAC): 4×256 MLPs, Linear→LayerNorm→tanh first,
Linear→LeakyReLU after. The actor π_θ outputs [μ, log σ] of a Gaussian squashed by tanh
(log σ clipped to [-20, 2]); twin critics Q_φ1, Q_φ2 take [s, a]. One update on a minibatch
(s, a, r, s', d) of 128:

    y        = r + γ(1 − d)(min_i Q_φ̄i(s', a') − α log π_θ(a'|s')),   a' ~ π_θ(·|s')
    L_Q_i    = Huber(Q_φi(s, a), y)                                    (i = 1, 2)
    L_π      = E[α log π_θ(ã|s) − min_i Q_φi(s, ã)]  (+ λ·L_BC),      ã ~ π_θ(·|s)
    L_α      = −E[log α · (log π_θ(ã|s) + H̄)],                         H̄ = −dim(A)
    φ̄        ← (1 − τ) φ̄ + τ φ                                         (τ = 0.005)

with four Adam optimizers (Q_φ1, Q_φ2, π_θ, α; lr 3e-4), all gradients taken before any step,
as RLlib does. With a behavioural-cloning buffer (π*'s states and distribution inputs), the
actor loss also gets L_BC = E_{s∼buffer}[KL(π*(·|s) ‖ π_θ(·|s))] on 128 buffer states, the
paper's BC term (KL of the pre-tanh Gaussians, equal to that of the squashed ones).
"""
from __future__ import annotations

import copy
import time

import numpy as np
import torch
from torch import nn

from benchmarks.common import SAC_BATCH, SAC_ENV_NAME, SAC_HIDDENS, Row, median_rate, robotic_sequence_env

LEARNING_RATE, GAMMA, TAU = 3e-4, 0.99, 0.005
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


def paper_mlp(input_dim: int, output_dim: int) -> nn.Sequential:
    """Linear→LayerNorm→tanh, then Linear→LeakyReLU per further hidden layer, then a linear head."""
    layers: list[nn.Module] = [nn.Linear(input_dim, SAC_HIDDENS[0]), nn.LayerNorm(SAC_HIDDENS[0]), nn.Tanh()]
    for width_in, width_out in zip(SAC_HIDDENS[:-1], SAC_HIDDENS[1:]):
        layers += [nn.Linear(width_in, width_out), nn.LeakyReLU()]
    return nn.Sequential(nn.Sequential(*layers), nn.Linear(SAC_HIDDENS[-1], output_dim))


def squashed_gaussian_sample(distribution_inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ã = tanh(μ + σ·ε) and log π(ã|s), with the tanh change of variables."""
    mean, log_std = distribution_inputs.chunk(2, dim=-1)
    std = log_std.clamp(LOG_STD_MIN, LOG_STD_MAX).exp()
    pre_tanh = mean + std * torch.randn_like(mean)
    action = torch.tanh(pre_tanh)
    normal_log_prob = (-0.5 * ((pre_tanh - mean) / std) ** 2 - std.log() - 0.5 * np.log(2 * np.pi)).sum(-1)
    return action, normal_log_prob - torch.log(1 - action.pow(2) + 1e-6).sum(-1)


def gaussian_kl(teacher_inputs: torch.Tensor, student_inputs: torch.Tensor) -> torch.Tensor:
    """KL(N(μ*, σ*²) ‖ N(μ_θ, σ_θ²)) per sample, summed over action dimensions."""
    mean_p, log_std_p = teacher_inputs.chunk(2, dim=-1)
    mean_q, log_std_q = student_inputs.chunk(2, dim=-1)
    variance_ratio = torch.exp(2.0 * (log_std_p - log_std_q))
    mean_term = (mean_p - mean_q) ** 2 * torch.exp(-2.0 * log_std_q)
    return ((log_std_q - log_std_p) + 0.5 * (variance_ratio + mean_term) - 0.5).sum(-1)


class BCBuffer:
    """π*'s states and distribution inputs; `sample()` draws a minibatch of them uniformly."""

    def __init__(self, observations: torch.Tensor, teacher_inputs: torch.Tensor, batch_size: int = 128, seed: int = 1) -> None:
        self.observations, self.teacher_inputs, self.batch_size = observations, teacher_inputs, batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.randint(len(self.observations), (self.batch_size,), generator=self.generator)
        return self.observations[rows], self.teacher_inputs[rows]


class PlainSAC:
    """π_θ, Q_φ1, Q_φ2, their targets, log α and the four optimizers; `update` is the module docstring.

    bc: the BC buffer (None: plain SAC); bc_coeff: λ; fused_bc: run the actor once on
    [s; BC states] instead of twice.
    """

    def __init__(self, observation_dim: int, action_dim: int, seed: int = 0, bc: BCBuffer | None = None,
                 bc_coeff: float = 1.0, fused_bc: bool = False) -> None:
        torch.manual_seed(seed)
        self.actor = paper_mlp(observation_dim, 2 * action_dim)
        self.qf1, self.qf2 = paper_mlp(observation_dim + action_dim, 1), paper_mlp(observation_dim + action_dim, 1)
        self.qf1_target, self.qf2_target = copy.deepcopy(self.qf1), copy.deepcopy(self.qf2)
        self.log_alpha = torch.zeros(1, requires_grad=True)
        self.target_entropy = -float(action_dim)
        self.optimizers = [
            torch.optim.Adam(self.qf1.parameters(), lr=LEARNING_RATE), torch.optim.Adam(self.qf2.parameters(), lr=LEARNING_RATE),
            torch.optim.Adam(self.actor.parameters(), lr=LEARNING_RATE), torch.optim.Adam([self.log_alpha], lr=LEARNING_RATE),
        ]
        self.critic_parameters = list(self.qf1.parameters()) + list(self.qf2.parameters())
        self.target_parameters = list(self.qf1_target.parameters()) + list(self.qf2_target.parameters())
        self.bc, self.bc_coeff, self.fused_bc = bc, bc_coeff, fused_bc

    def act(self, observations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ã ~ π_θ(·|s) and log π_θ(ã|s)."""
        return squashed_gaussian_sample(self.actor(observations))

    def update(self, batch: dict[str, torch.Tensor]) -> None:
        """One gradient step of each optimizer on `batch` (obs, actions, rewards, next_obs, dones)."""
        obs, actions, rewards, next_obs, dones = (batch[k] for k in ("obs", "actions", "rewards", "next_obs", "dones"))
        alpha = self.log_alpha.exp()
        # Q_φi(s, a)
        qf1_a_values = self.qf1(torch.cat([obs, actions], -1)).squeeze(-1)
        qf2_a_values = self.qf2(torch.cat([obs, actions], -1)).squeeze(-1)
        # π_θ(·|s), and π_θ on the BC states (in the same forward when fused)
        bc_loss = None
        if self.bc is None:
            pi_inputs = self.actor(obs)
        else:
            bc_obs, teacher_inputs = self.bc.sample()
            if self.fused_bc:
                outputs = self.actor(torch.cat([obs, bc_obs]))
                pi_inputs, student_inputs = outputs[:len(obs)], outputs[len(obs):]
            else:
                pi_inputs, student_inputs = self.actor(obs), self.actor(bc_obs)
            bc_loss = gaussian_kl(teacher_inputs, student_inputs).mean()
        pi, log_pi = squashed_gaussian_sample(pi_inputs)
        # y = r + γ(1 − d)(min Q̄(s', a') − α log π(a'|s'))
        with torch.no_grad():
            next_state_actions, next_state_log_pi = self.act(next_obs)
            next_input = torch.cat([next_obs, next_state_actions], -1)
            min_qf_next_target = torch.min(self.qf1_target(next_input), self.qf2_target(next_input)).squeeze(-1)
            next_q_value = rewards + GAMMA * (1.0 - dones) * (min_qf_next_target - alpha * next_state_log_pi)
        # min Q(s, ã): gradients reach π_θ only
        for parameter in self.critic_parameters:
            parameter.requires_grad_(False)
        pi_input = torch.cat([obs, pi], -1)
        min_qf_pi = torch.min(self.qf1(pi_input), self.qf2(pi_input)).squeeze(-1)
        for parameter in self.critic_parameters:
            parameter.requires_grad_(True)
        actor_loss = (alpha.detach() * log_pi - min_qf_pi).mean()
        if bc_loss is not None:
            actor_loss = actor_loss + self.bc_coeff * bc_loss
        losses = [
            nn.functional.huber_loss(qf1_a_values, next_q_value),
            nn.functional.huber_loss(qf2_a_values, next_q_value),
            actor_loss,
            -(self.log_alpha * (log_pi.detach() + self.target_entropy)).mean(),
        ]
        for optimizer, loss in zip(self.optimizers, losses):
            optimizer.zero_grad(set_to_none=True)
            loss.backward(retain_graph=True)
        for optimizer in self.optimizers:
            optimizer.step()
        # φ̄ ← (1 − τ) φ̄ + τ φ
        with torch.no_grad():
            torch._foreach_lerp_(self.target_parameters, self.critic_parameters, TAU)


def random_sac_batch(observation_dim: int, action_dim: int, size: int, generator: np.random.Generator) -> dict[str, torch.Tensor]:
    """A minibatch of standard-normal states, uniform actions, normal rewards, no terminals."""
    return {
        "obs": torch.as_tensor(generator.standard_normal((size, observation_dim)), dtype=torch.float32),
        "actions": torch.as_tensor(generator.uniform(-1, 1, (size, action_dim)), dtype=torch.float32),
        "rewards": torch.as_tensor(generator.standard_normal(size), dtype=torch.float32),
        "next_obs": torch.as_tensor(generator.standard_normal((size, observation_dim)), dtype=torch.float32),
        "dones": torch.zeros(size),
    }


def push_wall_dims() -> tuple[int, int]:
    """(observation size, action size) of RoboticSequence[push-wall]."""
    env = robotic_sequence_env()
    dims = env.observation_space.shape[0], env.action_space.shape[0]
    env.close()
    return dims


def update_rates(observation_dim: int, action_dim: int, updates: int, repeats: int) -> list[float]:
    """Updates/s of `PlainSAC.update` on fresh random batches of 128 (batch building included)."""
    agent = PlainSAC(observation_dim, action_dim)
    generator = np.random.default_rng(0)
    rates = []
    for _ in range(repeats + 1):  # the first window is the warm-up
        start = time.perf_counter()
        for _ in range(updates):
            agent.update(random_sac_batch(observation_dim, action_dim, SAC_BATCH, generator))
        rates.append(updates / (time.perf_counter() - start))
    return rates[1:]


def loop_rates(steps: int, repeats: int) -> list[float]:
    """Env steps/s of a plain loop on push-wall: act, step, store, one update per env step."""
    env = robotic_sequence_env()
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
                action = agent.act(torch.as_tensor(observation, dtype=torch.float32)[None])[0][0].numpy()
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

    run(SAC_BATCH * 2, learn=False)  # fill the first minibatch's worth of steps
    run(min(steps, 100), learn=True)  # warm-up
    rates = [run(steps, learn=True) for _ in range(repeats)]
    env.close()
    return rates


def plain_rows(steps: int, repeats: int, quick: bool) -> tuple[list[Row], float]:
    """The SAC table's plain-PyTorch rows (update only; full loop) and the update-only rate."""
    observation_dim, action_dim = push_wall_dims()
    update = update_rates(observation_dim, action_dim, updates=50 if quick else 200, repeats=repeats)
    update_rate = median_rate(update)
    loop = median_rate(loop_rates(steps, repeats))
    return [
        Row("sac", "plain PyTorch", "random batches", "-", "update only", None, update_rate, 1000 / update_rate, len(update)),
        Row("sac", "plain PyTorch", SAC_ENV_NAME, "-", "loop, 1 update/step", loop, loop, 1000 / loop, repeats),
    ], update_rate


def bc_overhead_rows(repeats: int, buffer_size: int = 2048, batches: int = 20) -> list[Row]:
    """ms per update of plain SAC, + BC with a separate actor forward, + BC fused; interleaved windows.

    The BC buffer holds random states and π* distribution inputs (cost does not depend on them).
    """
    observation_dim, action_dim = push_wall_dims()
    generator = torch.Generator().manual_seed(0)
    observations = torch.randn(buffer_size, observation_dim, generator=generator)
    teacher_inputs = torch.randn(buffer_size, 2 * action_dim, generator=generator) * 0.1
    agents = {
        ("finetune", "update only"): PlainSAC(observation_dim, action_dim),
        ("bc", "+ λ·BC, separate actor forward"): PlainSAC(observation_dim, action_dim, bc=BCBuffer(observations, teacher_inputs)),
        ("bc", "+ λ·BC, actor once on [obs; BC states]"):
            PlainSAC(observation_dim, action_dim, bc=BCBuffer(observations, teacher_inputs), fused_bc=True),
    }
    numpy_generator = np.random.default_rng(0)
    fixed = [random_sac_batch(observation_dim, action_dim, SAC_BATCH, numpy_generator) for _ in range(batches)]
    times: dict[tuple[str, str], list[float]] = {key: [] for key in agents}
    for _ in range(repeats + 1):  # the first window is the warm-up
        for key, agent in agents.items():
            start = time.perf_counter()
            for batch in fixed:
                agent.update(batch)
            times[key].append(1000 * (time.perf_counter() - start) / batches)
    medians = {key: median_rate(values[1:]) for key, values in times.items()}
    base = medians[("finetune", "update only")]
    return [
        Row("plain-sac-bc", "plain PyTorch", "random batches", method, f"{setting}, interleaved", None, 1000 / ms, ms, repeats,
            note="" if method == "finetune" else f"+{100 * (ms / base - 1):.1f} % per update vs plain SAC")
        for (method, setting), ms in medians.items()
    ]
