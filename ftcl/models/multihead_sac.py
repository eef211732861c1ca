"""Multi-head SAC RLModule for RoboticSequence (paper §2.3/§4.2, Continual World's SAC networks).

Networks (Continual World `sac/models.py`, paper B.3): an actor and twin critics, each an MLP of
`hidden_layers` × `hidden_size` (default 4 × 256) whose first layer is Linear → LayerNorm → tanh
(CW applies tanh right after the LayerNorm; `layer_norm_activation="leaky_relu"` changes that)
and whose other layers are Linear → LeakyReLU(0.2) (CW's `lrelu` is `tf.nn.leaky_relu`, slope 0.2).
On top of each trunk sit `num_heads` Linear output heads, one per stage; the output is the head
of the stage that the observation's one-hot names:

    y(s) = Σ_k  onehot_k(s) · head_k(trunk(s))

All heads are computed and weighted by the one-hot, so the loss gradient reaches only the active
head (∂y/∂head_k = onehot_k = 0 for the others); the trunk is shared by all stages.

Observation layout assumed (RoboticSequence, `ftcl.envs.robotic_sequence`):

    s = [ base observation (39-d Meta-World) | one-hot of the stage (num_heads) | t/T ]

i.e. the one-hot occupies the `num_heads` dims just before the last `trailing_obs_dims` (= 1, the
normalised time t/T). The trunks read the whole observation (one-hot and t/T included, as in CW).

Actor: the heads emit [μ, log σ] of a diagonal Gaussian before the tanh squashing; log σ is
clipped to `log_std_bounds` (CW: [−20, 2]) here, in the module, so that `action_dist_inputs` —
which the retention terms (KL, BC, EWC's Fisher) read — are exactly the parameters the policy
samples from. Critics: Q(s, a) = head_k(trunk([s, a])).

`model_config` keys (all optional; RLlib's own model-config keys and `twin_q` pass through):
  hidden_layers (4), hidden_size (256), num_heads (None: inferred as obs_dim − base_obs_dim −
  trailing_obs_dims), base_obs_dim (39), trailing_obs_dims (1), layer_norm (True),
  layer_norm_activation ("tanh"), leaky_relu_slope (0.2), log_std_bounds ([−20, 2]),
  initialization ("glorot": Xavier-uniform weights and zero biases, Keras' default that CW used;
  "torch": PyTorch's default).

Attribute names follow RLlib's `DefaultSACRLModule` so that `SACTorchLearner`'s optimizers, the
target-network updates work unchanged. `RetentionPolicyAPI`: actor = `pi_encoder` (trunk) + `pi`
(heads); critics = `qf_encoder` + `qf` and `qf_twin_encoder` + `qf_twin`; targets = `target_qf*`
(built by `make_target_networks`) are in neither.
"""
from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal

import gymnasium as gym
import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator
from torch import nn

from ray.rllib.algorithms.sac.default_sac_rl_module import DefaultSACRLModule
from ray.rllib.algorithms.sac.sac_learner import ACTION_DIST_INPUTS_NEXT, QF_PREDS, QF_TWIN_PREDS
from ray.rllib.core.columns import Columns
from ray.rllib.core.distribution.torch.torch_distribution import TorchDeterministic, TorchSquashedGaussian
from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
from ray.rllib.core.rl_module.torch.torch_rl_module import TorchRLModule

from ftcl.models.rllib_policy_api import SAC_ACTOR_PATHS, SAC_CRITIC_PATHS
from ftcl.retention.policy_api import RetentionPolicyAPI, named_subset

META_WORLD_OBS_DIM = 39
"""Size of Meta-World's observation, the part of RoboticSequence's observation before the one-hot."""

PASS_THROUGH_KEYS = frozenset(f.name for f in dataclasses.fields(DefaultModelConfig)) | {"twin_q"}
"""model_config keys RLlib puts in every module's config (ignored here, never an error)."""


class MultiHeadSACOptions(BaseModel):
    """The `model_config` keys of `MultiHeadSACModule` (see the module doc)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    hidden_layers: PositiveInt = 4
    hidden_size: PositiveInt = 256
    num_heads: PositiveInt | None = None
    """Stages (output heads); None = obs_dim − base_obs_dim − trailing_obs_dims."""
    base_obs_dim: int = Field(default=META_WORLD_OBS_DIM, ge=0)
    """Observation dims before the one-hot (only used to infer `num_heads`)."""
    trailing_obs_dims: int = Field(default=1, ge=0)
    """Observation dims after the one-hot (RoboticSequence: 1, the normalised time t/T)."""
    layer_norm: bool = True
    layer_norm_activation: Literal["tanh", "leaky_relu"] = "tanh"
    leaky_relu_slope: float = Field(default=0.2, ge=0.0)
    log_std_bounds: Annotated[tuple[float, float], Field(strict=False)] = (-20.0, 2.0)  # a YAML list
    initialization: Literal["glorot", "torch"] = "glorot"
    twin_q: bool = True

    @field_validator("log_std_bounds")
    @classmethod
    def _ordered_bounds(cls, bounds: tuple[float, float]) -> tuple[float, float]:
        if not bounds[0] < bounds[1]:
            raise ValueError(f"log_std_bounds must be [low, high] with low < high; got {list(bounds)}")
        return bounds

    @classmethod
    def from_model_config(cls, model_config: dict[str, Any] | DefaultModelConfig | None) -> "MultiHeadSACOptions":
        """Validate the module's keys of `model_config`; RLlib's own keys are passed over."""
        if dataclasses.is_dataclass(model_config) and not isinstance(model_config, type):
            model_config = dataclasses.asdict(model_config)
        config = dict(model_config or {})
        # RLlib merges its defaults (fcnet_hiddens, ...) into every model_config: skip those.
        ours = {key: value for key, value in config.items() if key not in PASS_THROUGH_KEYS or key == "twin_q"}
        unknown = sorted(set(ours) - set(cls.model_fields))
        if unknown:
            raise ValueError(
                f"multihead_sac: unknown model option(s) {unknown}; allowed: {', '.join(sorted(cls.model_fields))}"
            )
        return cls.model_validate(ours)


class SquashedGaussian(TorchSquashedGaussian):
    """RLlib's tanh-squashed Gaussian, taking log σ as the module emits it (already clipped to the
    module's bounds), and with the squashed mean tanh(μ) (rescaled to [low, high]) as its
    deterministic action, as Continual World and Spinning Up act at evaluation (RLlib's own
    `to_deterministic` returns the unsquashed μ)."""

    @classmethod
    def from_logits(
        cls, logits: torch.Tensor, low: float = -1.0, high: float = 1.0, **kwargs: Any
    ) -> "SquashedGaussian":
        loc, log_std = logits.chunk(2, dim=-1)
        return cls(loc=loc, scale=log_std.exp(), low=low, high=high, **kwargs)

    def to_deterministic(self) -> TorchDeterministic:
        return TorchDeterministic(loc=self._squash(self.loc))


class Trunk(nn.Module):
    """Linear → [LayerNorm → tanh | LeakyReLU] → (Linear → LeakyReLU) × (hidden_layers − 1)."""

    def __init__(self, input_dim: int, options: MultiHeadSACOptions) -> None:
        super().__init__()
        size = options.hidden_size
        layers: list[nn.Module] = [nn.Linear(input_dim, size)]
        if options.layer_norm:
            layers.append(nn.LayerNorm(size))
            layers.append(
                nn.Tanh()
                if options.layer_norm_activation == "tanh"
                else nn.LeakyReLU(options.leaky_relu_slope)
            )
        else:
            layers.append(nn.LeakyReLU(options.leaky_relu_slope))
        for _ in range(options.hidden_layers - 1):
            layers += [nn.Linear(size, size), nn.LeakyReLU(options.leaky_relu_slope)]
        self.layers = nn.Sequential(*layers)
        self.output_dim = size

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.layers(inputs)


class MultiHead(nn.Module):
    """`num_heads` Linear heads; y = Σ_k onehot_k · head_k(x) (only the active head gets gradient)."""

    def __init__(self, input_dim: int, output_dim: int, num_heads: int) -> None:
        super().__init__()
        self.heads = nn.ModuleList(nn.Linear(input_dim, output_dim) for _ in range(num_heads))

    def forward(self, features: torch.Tensor, one_hot: torch.Tensor) -> torch.Tensor:
        """features: (B, input_dim), one_hot: (B, num_heads) -> (B, output_dim)."""
        every_head = torch.stack([head(features) for head in self.heads], dim=-2)  # (B, K, out)
        return (one_hot.unsqueeze(-1) * every_head).sum(dim=-2)


def _glorot_init_(module: nn.Module) -> None:
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)


class _CriticsFrozen:
    """Context in which the online critics' parameters do not record gradients.

    Q(s, ã(θ)) for the actor loss then passes gradients to the actor only (RLlib's
    "straight-through" trick in `DefaultSACTorchRLModule`), unlike `.detach()`, which would cut
    the actor's path through ã as well.
    """

    def __init__(self, parameters: list[nn.Parameter]) -> None:
        self.parameters = parameters

    def __enter__(self) -> None:
        for parameter in self.parameters:
            parameter.requires_grad_(False)

    def __exit__(self, *exc: object) -> None:
        for parameter in self.parameters:
            parameter.requires_grad_(True)


class MultiHeadSACModule(TorchRLModule, DefaultSACRLModule, RetentionPolicyAPI):
    """SAC actor + twin critics with one output head per RoboticSequence stage (module doc)."""

    framework: str = "torch"

    # ------------------------------------------------------------------ RetentionPolicyAPI
    def actor_parameters(self) -> dict[str, nn.Parameter]:
        return named_subset(self, SAC_ACTOR_PATHS)

    def critic_parameters(self) -> dict[str, nn.Parameter]:
        return named_subset(self, SAC_CRITIC_PATHS)

    def policy_distribution_inputs(self, observations: torch.Tensor, state: Any = None) -> torch.Tensor:
        """[μ, log σ] as sampled: the module clamps log σ itself (`SquashedGaussian` does not)."""
        return self.actor_distribution_inputs(observations)

    # ------------------------------------------------------------------ build
    def setup(self) -> None:
        if not isinstance(self.action_space, gym.spaces.Box) or len(self.action_space.shape) != 1:
            raise ValueError(
                f"multihead_sac needs a 1-d Box action space (continuous SAC); got {self.action_space}"
            )
        if not isinstance(self.observation_space, gym.spaces.Box) or len(self.observation_space.shape) != 1:
            raise ValueError(
                "multihead_sac needs a 1-d Box observation [base obs | stage one-hot | t/T]; "
                f"got {self.observation_space}"
            )
        options = MultiHeadSACOptions.from_model_config(self.model_config)
        self.options = options
        self.twin_q = options.twin_q
        obs_dim = int(self.observation_space.shape[0])
        action_dim = int(self.action_space.shape[0])
        self.num_heads = self._resolve_num_heads(options, obs_dim)
        # Where the one-hot lies: obs[..., one_hot_start : one_hot_start + num_heads].
        self.one_hot_start = obs_dim - options.trailing_obs_dims - self.num_heads
        self.log_std_low, self.log_std_high = options.log_std_bounds

        # Actor π_θ: trunk + per-stage heads emitting [μ, log σ].
        self.pi_encoder = Trunk(obs_dim, options)
        self.pi = MultiHead(options.hidden_size, 2 * action_dim, self.num_heads)
        if not self.inference_only:
            # Twin critics Q_φ1, Q_φ2 on [s, a], one scalar head per stage.
            self.qf_encoder = Trunk(obs_dim + action_dim, options)
            self.qf = MultiHead(options.hidden_size, 1, self.num_heads)
            if self.twin_q:
                self.qf_twin_encoder = Trunk(obs_dim + action_dim, options)
                self.qf_twin = MultiHead(options.hidden_size, 1, self.num_heads)
        if options.initialization == "glorot":
            _glorot_init_(self)

    def _resolve_num_heads(self, options: MultiHeadSACOptions, obs_dim: int) -> int:
        """`num_heads`, or obs_dim − base_obs_dim − trailing_obs_dims; checks the one-hot's bounds."""
        num_heads = options.num_heads
        if num_heads is None:
            num_heads = obs_dim - options.base_obs_dim - options.trailing_obs_dims
            if num_heads < 1:
                raise ValueError(
                    f"multihead_sac: cannot infer num_heads from a {obs_dim}-d observation with "
                    f"base_obs_dim={options.base_obs_dim} and trailing_obs_dims={options.trailing_obs_dims}; "
                    "expected [base obs | stage one-hot | t/T]; set model option num_heads"
                )
        start = obs_dim - options.trailing_obs_dims - num_heads
        if start < 0:
            raise ValueError(
                f"multihead_sac: num_heads={num_heads} + trailing_obs_dims={options.trailing_obs_dims} "
                f"exceed the {obs_dim}-d observation"
            )
        low = np.asarray(self.observation_space.low)[start : start + num_heads]
        high = np.asarray(self.observation_space.high)[start : start + num_heads]
        if not (np.all(low >= 0.0) and np.all(high <= 1.0)):
            raise ValueError(
                f"multihead_sac: observation dims {start}..{start + num_heads - 1} should be the stage "
                f"one-hot (bounds [0, 1]) but have bounds [{low.min()}, {high.max()}]; check num_heads "
                "and trailing_obs_dims against the observation layout [base obs | one-hot | t/T]"
            )
        return int(num_heads)

    # ------------------------------------------------------------------ pieces
    def stage_one_hot(self, observations: torch.Tensor) -> torch.Tensor:
        """The stage one-hot of each observation: (B, num_heads)."""
        return observations[..., self.one_hot_start : self.one_hot_start + self.num_heads]

    def actor_distribution_inputs(self, observations: torch.Tensor) -> torch.Tensor:
        """[μ, log σ] of the pre-squash Gaussian, log σ clipped to `log_std_bounds`."""
        outputs = self.pi(self.pi_encoder(observations), self.stage_one_hot(observations))
        mean, log_std = outputs.chunk(2, dim=-1)
        return torch.cat([mean, log_std.clamp(self.log_std_low, self.log_std_high)], dim=-1)

    def _qf_forward_train_helper(
        self, batch: dict[str, Any], encoder: nn.Module, head: nn.Module, squeeze: bool = True
    ) -> torch.Tensor:
        """Q(s, a) of one critic (trunk `encoder`, heads `head`): shape (B,) (or (B, 1))."""
        observations = batch[Columns.OBS]
        features = encoder(torch.cat([observations, batch[Columns.ACTIONS]], dim=-1))
        q_values = head(features, self.stage_one_hot(observations))
        return q_values.squeeze(-1) if squeeze else q_values

    def compute_q_values(self, batch: dict[str, Any], squeeze: bool = True) -> torch.Tensor:
        """min(Q_φ1, Q_φ2)(s, a) of the online critics."""
        q_values = self._qf_forward_train_helper(batch, self.qf_encoder, self.qf, squeeze)
        if self.twin_q:
            twin = self._qf_forward_train_helper(batch, self.qf_twin_encoder, self.qf_twin, squeeze)
            q_values = torch.min(q_values, twin)
        return q_values

    def forward_target(self, batch: dict[str, Any], squeeze: bool = True) -> torch.Tensor:
        """min(Q_φ̄1, Q_φ̄2)(s, a) of the target critics."""
        q_values = self._qf_forward_train_helper(batch, self.target_qf_encoder, self.target_qf, squeeze)
        if self.twin_q:
            twin = self._qf_forward_train_helper(
                batch, self.target_qf_twin_encoder, self.target_qf_twin, squeeze
            )
            q_values = torch.min(q_values, twin)
        return q_values

    # ------------------------------------------------------------------ distributions
    def get_inference_action_dist_cls(self) -> type[SquashedGaussian]:
        return SquashedGaussian

    def get_exploration_action_dist_cls(self) -> type[SquashedGaussian]:
        return SquashedGaussian

    def get_train_action_dist_cls(self) -> type[SquashedGaussian]:
        return SquashedGaussian

    # ------------------------------------------------------------------ forward passes
    def _forward_inference(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """Actor only: action_dist_inputs = [μ, log σ] (with gradients; RLlib adds no_grad)."""
        return {Columns.ACTION_DIST_INPUTS: self.actor_distribution_inputs(batch[Columns.OBS])}

    def _forward_exploration(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return self._forward_inference(batch)

    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """Everything `SACTorchLearner._compute_loss_for_module_continuous` reads.

        QF_PREDS / QF_TWIN_PREDS = Q_φi(s, a); ã ~ π_θ(·|s) (reparameterised) with logp_resampled
        = log π_θ(ã|s) and q_curr = min_i Q_φi(s, ã) (gradient to θ only); a' ~ π_θ(·|s') with
        logp_next_resampled = log π_θ(a'|s') and q_target_next = min_i Q_φ̄i(s', a') (no gradient).
        """
        observations, next_observations = batch[Columns.OBS], batch[Columns.NEXT_OBS]
        output: dict[str, Any] = {}
        critic_batch = {Columns.OBS: observations, Columns.ACTIONS: batch[Columns.ACTIONS]}
        output[QF_PREDS] = self._qf_forward_train_helper(critic_batch, self.qf_encoder, self.qf)
        if self.twin_q:
            output[QF_TWIN_PREDS] = self._qf_forward_train_helper(
                critic_batch, self.qf_twin_encoder, self.qf_twin
            )

        inputs = self.actor_distribution_inputs(observations)
        inputs_next = self.actor_distribution_inputs(next_observations)
        output[Columns.ACTION_DIST_INPUTS] = inputs
        output[ACTION_DIST_INPUTS_NEXT] = inputs_next
        distribution_class = self.get_train_action_dist_cls()
        actions_resampled, output["logp_resampled"] = distribution_class.from_logits(inputs).rsample_and_logp()
        actions_next, logp_next = distribution_class.from_logits(inputs_next).sample_and_logp()
        output["logp_next_resampled"] = logp_next.detach()

        critic_parameters = list(self.qf_encoder.parameters()) + list(self.qf.parameters())
        if self.twin_q:
            critic_parameters += list(self.qf_twin_encoder.parameters()) + list(self.qf_twin.parameters())
        with _CriticsFrozen(critic_parameters):
            output["q_curr"] = self.compute_q_values({Columns.OBS: observations, Columns.ACTIONS: actions_resampled})
        output["q_target_next"] = self.forward_target(
            {Columns.OBS: next_observations, Columns.ACTIONS: actions_next.detach()}
        ).detach()
        return output
