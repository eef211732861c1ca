"""EWC: λ·Σ_i F_i (θ_i − θ*_i)², F the diagonal Fisher of π* at θ* on pre-training states.

Per-sample squared gradients are computed with `torch.func` (`vmap` over `grad`/`jacrev` of a
`functional_call`), in chunks of states to bound memory; a plain per-state loop is the fallback
for modules that `vmap` cannot trace. Both give the same numbers; vmap is ~an order of magnitude
faster on CPU for small MLPs.

Recurrent policies (NetHack, `sequence_length` set) take F from dataset sequences instead, as the
authors' EWC branch does (anchors §1.6): over `fisher_batches` minibatches of `fisher_batch_size`
game streams × `sequence_length` steps from π*'s ttyrec database (the LSTM state carried from one
minibatch to the next, reset where a game starts), F += (∂ CE(π_θ*(·|h_t), label)/∂θ)² of each
minibatch's mean cross-entropy over valid steps, divided by the number of minibatches — a
per-batch empirical Fisher, not per-sample squares. Labels as `fisher_labels` (the authors: argmax).
"""
from __future__ import annotations

from typing import Callable, Literal

import numpy as np
from pydantic import NonNegativeFloat, PositiveInt
import torch
from torch import nn
from torch.nn import functional as F
from torch.func import functional_call, grad, jacrev, vmap

from ftcl.retention.anchoring import AnchoredParameterTerm
from ftcl.retention.bc_sequences import sequence_tensors
from ftcl.retention.distributions import categorical_log_prob, split_gaussian_inputs
from ftcl.retention.method import TTYREC_GAMES, DataNeeds, RetentionMethod, ZeroCriticCoeff
from ftcl.retention.policy_api import RetentionPolicyAPI, module_device
from ftcl.retention.term import RetentionData, RetentionTerm, as_float_tensor, require_data

FisherLabels = Literal["sampled", "argmax", "dataset"]


class _DistributionAdapter(nn.Module):
    """Lets `functional_call` swap the parameters of `policy` while `fn` runs the actor."""

    def __init__(self, policy: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.policy = policy
        self._fn = fn

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self._fn(observations)


def _single_state_function(
    policy: RetentionPolicyAPI,
) -> Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor]:
    """f(θ_subset, s) = distribution inputs of π_θ at one state s (no batch dim in or out)."""
    adapter = _DistributionAdapter(policy, policy.policy_distribution_inputs)  # type: ignore[arg-type]

    def outputs(parameters: dict[str, torch.Tensor], observation: torch.Tensor) -> torch.Tensor:
        prefixed = {f"policy.{name}": value for name, value in parameters.items()}
        return functional_call(adapter, prefixed, (observation.unsqueeze(0),), strict=False).squeeze(0)

    return outputs


def _per_sample(
    per_state: Callable[..., dict[str, torch.Tensor]],
    parameters: dict[str, torch.Tensor],
    *batched: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """Stack `per_state(parameters, *row)` over rows; vmap first, a loop if vmap cannot trace."""
    try:
        return vmap(per_state, in_dims=(None,) + (0,) * len(batched), randomness="different")(
            parameters, *batched
        )
    except Exception:  # noqa: BLE001 - vmap refuses some ops (in-place, data-dependent control flow)
        rows = [per_state(parameters, *(tensor[i] for tensor in batched)) for i in range(len(batched[0]))]
        return {name: torch.stack([row[name] for row in rows]) for name in parameters}


def _detached(policy: RetentionPolicyAPI, names: list[str]) -> dict[str, torch.Tensor]:
    available = dict(policy.named_parameters())  # type: ignore[attr-defined]
    return {name: available[name].detach() for name in names}


def gaussian_policy_fisher(
    policy: RetentionPolicyAPI,
    parameter_names: list[str],
    observations: torch.Tensor,
    chunk_size: int = 16,
    floor: float = 1e-5,
) -> dict[str, torch.Tensor]:
    """Closed-form diagonal Fisher of a diagonal-Gaussian policy (Continual World's EWC).

    F_k = E_s Σ_j [(∂μ_j/∂θ_k)² + 2(∂σ_j/∂θ_k)²] / σ_j², clipped below at `floor`.
    Uses (∂σ_j/∂θ_k)/σ_j = ∂ log σ_j/∂θ_k. For tanh-squashed policies this is the Fisher of
    the pre-squash Gaussian (the inputs the policy emits).
    """
    function = _single_state_function(policy)
    parameters = _detached(policy, parameter_names)
    totals = {name: torch.zeros_like(value) for name, value in parameters.items()}
    for start in range(0, len(observations), chunk_size):
        chunk = observations[start : start + chunk_size]

        def per_state(params: dict[str, torch.Tensor], observation: torch.Tensor) -> dict[str, torch.Tensor]:
            jacobians = jacrev(function)(params, observation)  # name -> (2A, *θ.shape)
            distribution_inputs = function(params, observation).detach()
            _, log_std = split_gaussian_inputs(distribution_inputs)
            inverse_variance = torch.exp(-2.0 * log_std)
            fisher = {}
            for name, jacobian in jacobians.items():
                d_mean, d_log_std = split_gaussian_inputs(jacobian.movedim(0, -1))
                shape = (1,) * (d_mean.dim() - 1) + (-1,)
                # Σ_j (∂μ_j)²/σ_j² + 2 (∂ log σ_j)²
                fisher[name] = (d_mean**2 * inverse_variance.reshape(shape)).sum(-1) + 2.0 * (
                    d_log_std**2
                ).sum(-1)
            return fisher

        per_sample = _per_sample(per_state, parameters, chunk)
        for name in totals:
            totals[name] += per_sample[name].sum(0)
    return {name: (total / len(observations)).clamp_min(floor) for name, total in totals.items()}


def categorical_policy_fisher(
    policy: RetentionPolicyAPI,
    parameter_names: list[str],
    observations: torch.Tensor,
    actions: torch.Tensor,
    chunk_size: int = 64,
) -> dict[str, torch.Tensor]:
    """Empirical diagonal Fisher F_k = E_s[(∂ log π(a|s)/∂θ_k)²] with per-sample gradients.

    `actions` are the labels a (sampled from π*, argmax of π*, or dataset actions).
    """
    function = _single_state_function(policy)
    parameters = _detached(policy, parameter_names)

    def log_prob(params: dict[str, torch.Tensor], observation: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return categorical_log_prob(function(params, observation), action)

    def per_state(params: dict[str, torch.Tensor], observation: torch.Tensor, action: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: g**2 for name, g in grad(log_prob)(params, observation, action).items()}

    totals = {name: torch.zeros_like(value) for name, value in parameters.items()}
    for start in range(0, len(observations), chunk_size):
        per_sample = _per_sample(
            per_state, parameters, observations[start : start + chunk_size], actions[start : start + chunk_size]
        )
        for name in totals:
            totals[name] += per_sample[name].sum(0)
    return {name: total / len(observations) for name, total in totals.items()}


def sequence_fisher(policy: RetentionPolicyAPI, parameter_names: list[str], stream, batches: int,
                    labels: FisherLabels, seed: int = 0) -> dict[str, torch.Tensor]:
    """The per-minibatch empirical Fisher of a recurrent policy on dataset sequences (module doc)."""
    device = module_device(policy)  # type: ignore[arg-type]
    available = dict(policy.named_parameters())  # type: ignore[attr-defined]
    parameters = [available[name] for name in parameter_names]
    totals = [torch.zeros_like(p) for p in parameters]
    generator = torch.Generator(device="cpu").manual_seed(seed)
    state = None
    for _ in range(batches):
        batch = sequence_tensors(next(stream), device)
        valid = batch["valid"]
        logits, state = policy.recurrent_distribution_inputs(batch["observations"], batch["is_first"], state)
        state = {key: value.detach() for key, value in state.items()}
        logits = logits[valid]
        if labels == "argmax":
            target = logits.detach().argmax(-1)
        elif labels == "sampled":
            target = torch.multinomial(logits.detach().softmax(-1).cpu(), 1, generator=generator).squeeze(-1).to(device)
        else:
            target = batch["actions"][valid]
        gradients = torch.autograd.grad(F.cross_entropy(logits, target), parameters, allow_unused=True)
        for total, gradient in zip(totals, gradients):
            if gradient is not None:
                total += gradient.detach() ** 2
    return {name: total / batches for name, total in zip(parameter_names, totals)}


class EWCTerm(AnchoredParameterTerm):
    """λ·Σ_i F_i (θ_i − θ*_i)² over the actor; F is the diagonal Fisher at θ* (see module doc)."""

    name = "ewc"

    def __init__(
        self,
        coeff: float,
        critic_coeff: float = 0.0,
        fisher_labels: FisherLabels = "sampled",
        fisher_batches: int = 10,
        fisher_batch_size: int = 256,
        fisher_floor: float = 1e-5,
        seed: int = 0,
        sequence_length: int | None = None,
    ) -> None:
        self.sequence_length = sequence_length
        if critic_coeff > 0:
            raise ValueError(
                "EWC on critic parameters is not supported (π*'s Fisher does not cover the critic; "
                "the paper uses critic coefficient 0); set critic_coeff: 0"
            )
        super().__init__(coeff, critic_coeff=0.0)
        self.fisher_labels = fisher_labels
        self.fisher_batches = fisher_batches
        self.fisher_batch_size = fisher_batch_size
        self.fisher_floor = fisher_floor
        self.seed = seed
        self._fisher_mean = float("nan")
        self._fisher_mean_of: dict[str, torch.Tensor] | None = None

    def _importance_weights(self, policy: RetentionPolicyAPI, data: RetentionData | None) -> dict[str, torch.Tensor]:
        if self.sequence_length is not None:
            data = require_data(data, ("sequences",), "ewc (sequences)")
            stream = data["sequences"](self.fisher_batch_size, self.sequence_length)  # type: ignore[operator]
            return sequence_fisher(policy, list(self._actor_parameters), stream, self.fisher_batches,
                                   self.fisher_labels, self.seed)
        data = require_data(data, ("obs", "actions") if self.fisher_labels == "dataset" else ("obs",), self.name)
        generator = np.random.default_rng(self.seed)
        num_states = len(data["obs"])
        wanted = self.fisher_batches * self.fisher_batch_size
        indices = generator.choice(num_states, size=min(wanted, num_states), replace=False)
        device = module_device(policy)  # type: ignore[arg-type]
        observations = as_float_tensor(data["obs"][indices], device)
        names = list(self._actor_parameters)
        if policy.policy_distribution_kind == "diag_gaussian":
            return gaussian_policy_fisher(policy, names, observations, floor=self.fisher_floor)
        with torch.no_grad():
            logits = policy.policy_distribution_inputs(observations)
        if self.fisher_labels == "sampled":
            torch_generator = torch.Generator(device="cpu").manual_seed(self.seed)
            labels = torch.multinomial(logits.softmax(-1).cpu(), 1, generator=torch_generator).squeeze(-1)
        elif self.fisher_labels == "argmax":
            labels = logits.argmax(-1)
        else:
            labels = torch.as_tensor(np.asarray(data["actions"])[indices]).long()
        return categorical_policy_fisher(policy, names, observations, labels.to(device))

    def metrics(self) -> dict[str, float]:
        values = super().metrics()
        if self.importance:
            if self._fisher_mean_of is not self.importance:  # F is fixed after prepare: compute once
                self._fisher_mean = float(torch.cat([f.flatten() for f in self.importance.values()]).mean())
                self._fisher_mean_of = self.importance
            values["ewc_fisher_mean"] = self._fisher_mean
        return values


class EWCMethod(RetentionMethod):
    """λ·Σ F_i(θ_i−θ*_i)², diagonal Fisher F at θ* on π*'s states (paper §3.1, Table 3)."""

    name: Literal["ewc"] = "ewc"
    coeff: NonNegativeFloat = 100.0
    critic_coeff: ZeroCriticCoeff = 0.0
    fisher_labels: FisherLabels = "sampled"
    """Categorical policies only: label for log π(a|s): sampled from π*, argmax of π*, or the stored action."""
    fisher_batches: PositiveInt = 10
    fisher_batch_size: PositiveInt = 256
    fisher_floor: NonNegativeFloat = 1e-5
    sequence_length: PositiveInt | None = None
    """Recurrent policies: F from dataset sequences of this many steps (module doc); π*'s data is then
    a ttyrec database with at least `fisher_batch_size` games. None: from stored states."""

    def data_needs(self) -> DataNeeds:
        if self.sequence_length is not None:
            return DataNeeds((TTYREC_GAMES,), self.fisher_batch_size)
        keys = ("obs", "actions") if self.fisher_labels == "dataset" else ("obs",)
        return DataNeeds(keys, self.fisher_batches * self.fisher_batch_size)

    def build_term(self, seed: int = 0) -> RetentionTerm:
        return EWCTerm(
            self.coeff,
            critic_coeff=self.critic_coeff,
            fisher_labels=self.fisher_labels,
            fisher_batches=self.fisher_batches,
            fisher_batch_size=self.fisher_batch_size,
            fisher_floor=self.fisher_floor,
            seed=seed,
            sequence_length=self.sequence_length,
        )
