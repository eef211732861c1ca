"""The paper's NetHack network (`ftcl.models.tty_lstm.TtyLSTMNet`) as a stateful RLlib RLModule.

Inputs: the `nethack` env's dict observation — `tty` (3, 24, 80) and `prev_action` — with RLlib's
time axis: (B, 1, …) on EnvRunners, (B, T = `max_seq_len`, …) zero-padded sequences on learners.
RLlib never lets an episode start inside a sequence, so the LSTM state changes only where RLlib
puts it: `STATE_IN` at each sequence's first step (zeros at an episode's first step).

State: {"h", "c"} (B, h_dim) each. With `kickstarting_teacher: true` (set by
`config.retention(...)` for methods with a frozen teacher, see `RetentionConfigMixin`), the
module also holds `teacher`, a frozen copy of π*'s network that runs beside the student on every
forward pass — on the EnvRunners too — with its own LSTM state {"teacher_h", "teacher_c"}, so the
teacher sees the whole episode as it would have played it, as the authors' KickStarter carries
`[student | teacher]` RNN states. Its logits reach the learner's loss as
`fwd_out[TEACHER_ACTION_DIST_INPUTS]`; it follows the student when π* is loaded
(`teacher_copies`) and is not part of π* when one is exported.

APPO: `TargetNetworkAPI` gives the old policy (`_old_net`, a copy of the student network that
APPO moves towards the student every `target_network_update_freq` updates), run with the
student's sequence states; `ValueFunctionAPI` gives the baseline head on the LSTM outputs.
`RetentionPolicyAPI`: the actor is the whole network but the baseline head (the encoder and the
LSTM feed the policy); the critic is the baseline head.

model_config: the `TtyNetConfig` widths (`h_dim` 256 here; the paper's π* 1,738), `max_seq_len`
(32, the authors' rollout), `kickstarting_teacher`.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import gymnasium as gym
import torch
from torch import nn

from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.utils import make_target_network
from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
from ray.rllib.core.rl_module.apis import (TARGET_NETWORK_ACTION_DIST_INPUTS, InferenceOnlyAPI, TargetNetworkAPI,
                                           ValueFunctionAPI)
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.utils.typing import TensorType

from ftcl.models.tty_lstm import TtyLSTMNet, TtyNetConfig
from ftcl.retention.policy_api import TEACHER_ACTION_DIST_INPUTS, RetentionPolicyAPI, named_subset

KICKSTARTING_TEACHER = "kickstarting_teacher"
"""model_config key: build the carried teacher (module doc)."""
DEFAULTS = {"h_dim": 256, "max_seq_len": 32, KICKSTARTING_TEACHER: False}
NET_FIELDS = {field.name for field in dataclasses.fields(TtyNetConfig)} - {"num_actions"}
RLLIB_MODEL_KEYS = {field.name for field in dataclasses.fields(DefaultModelConfig)}
"""Keys RLlib's algorithms put into every model_config (APPO: vf_share_layers); not this module's."""


class TtyLSTMModule(TorchRLModule, ValueFunctionAPI, TargetNetworkAPI, InferenceOnlyAPI, RetentionPolicyAPI):
    """TtyLSTMNet with RLlib's recurrent state, APPO's old policy and an optional carried teacher."""

    carries_teacher_option = KICKSTARTING_TEACHER
    """The model_config key that makes the module carry a frozen teacher (see `RetentionConfigMixin`)."""

    def setup(self) -> None:
        config = {**DEFAULTS, **(self.model_config or {})}
        unknown = sorted(set(config) - NET_FIELDS - set(DEFAULTS) - RLLIB_MODEL_KEYS)
        if unknown:
            raise ValueError(f"tty_lstm: unknown model option(s) {unknown}; allowed: {sorted(NET_FIELDS | set(DEFAULTS))}")
        self.model_config = config  # RLlib's sequence connectors read max_seq_len from here
        space = self.observation_space
        if not (isinstance(space, gym.spaces.Dict) and {"tty", "prev_action"} <= set(space.spaces)):
            raise ValueError(f"tty_lstm needs the nethack env's dict observation (tty, prev_action); got {space}")
        if not isinstance(self.action_space, gym.spaces.Discrete):
            raise ValueError(f"tty_lstm needs a Discrete action space; got {self.action_space}")
        net_config = TtyNetConfig(num_actions=int(self.action_space.n),
                                  **{key: value for key, value in config.items() if key in NET_FIELDS})
        self.net = TtyLSTMNet(net_config)
        self.teacher: TtyLSTMNet | None = None
        if config[KICKSTARTING_TEACHER]:
            self.teacher = TtyLSTMNet(net_config)
            self.teacher.requires_grad_(False)

    @property
    def carries_teacher(self) -> bool:
        return self.teacher is not None

    def get_non_inference_attributes(self) -> list[str]:
        return ["_old_net"]  # the old policy lives on learners only

    # ---------------------------------------------------------------- state
    def get_initial_state(self) -> dict[str, torch.Tensor]:
        zeros = torch.zeros(self.net.config.h_dim)
        state = {"h": zeros, "c": zeros.clone()}
        if self.teacher is not None:
            state.update(teacher_h=zeros.clone(), teacher_c=zeros.clone())
        return state

    @staticmethod
    def _run(net: nn.Module, batch: dict[str, Any], h: torch.Tensor, c: torch.Tensor):
        """net's LSTM outputs (B, T, h) and state ((B, h), (B, h)) after the sequences."""
        obs = batch[Columns.OBS]
        core, (h, c) = net.core_outputs(obs["tty"], obs["prev_action"], None, (h[None], c[None]))
        return core, (h[0], c[0])

    def _forward_all(self, batch: dict[str, Any], train: bool) -> dict[str, Any]:
        state = batch[Columns.STATE_IN]
        core, (h, c) = self._run(self.net, batch, state["h"], state["c"])
        out: dict[str, Any] = {Columns.ACTION_DIST_INPUTS: self.net.policy(core)}
        state_out = {"h": h, "c": c}
        if self.teacher is not None:
            with torch.no_grad():
                teacher_core, (th, tc) = self._run(self.teacher, batch, state["teacher_h"], state["teacher_c"])
                if train:
                    out[TEACHER_ACTION_DIST_INPUTS] = self.teacher.policy(teacher_core)
            state_out.update(teacher_h=th, teacher_c=tc)
        out[Columns.STATE_OUT] = state_out
        if train:
            out[Columns.EMBEDDINGS] = core
        return out

    def _forward(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        return self._forward_all(batch, train=False)

    def _forward_train(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        return self._forward_all(batch, train=True)

    # ---------------------------------------------------------------- values, old policy
    def compute_values(self, batch: dict[str, Any], embeddings: Any | None = None) -> TensorType:
        """V(s_t), (B, T), from the LSTM outputs (recomputed from the batch if not given)."""
        if embeddings is None:
            state = batch[Columns.STATE_IN]
            embeddings, _ = self._run(self.net, batch, state["h"], state["c"])
        return self.net.baseline(embeddings).squeeze(-1)

    def make_target_networks(self) -> None:
        self._old_net = make_target_network(self.net)

    def get_target_network_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.net, self._old_net)]

    def forward_target(self, batch: dict[str, Any]) -> dict[str, Any]:
        state = batch[Columns.STATE_IN]
        core, _ = self._run(self._old_net, batch, state["h"], state["c"])
        return {TARGET_NETWORK_ACTION_DIST_INPUTS: self._old_net.policy(core)}

    # ---------------------------------------------------------------- RetentionPolicyAPI
    def actor_parameters(self) -> dict[str, nn.Parameter]:
        return {name: p for name, p in named_subset(self, ("net",)).items() if not name.startswith("net.baseline.")}

    def critic_parameters(self) -> dict[str, nn.Parameter]:
        return named_subset(self, ("net.baseline",))

    def teacher_copies(self) -> dict[str, str]:
        return {"teacher": "net"} if self.teacher is not None else {}

    def recurrent_distribution_inputs(self, observations: Any, is_first: torch.Tensor | None,
                                      state: Any = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits (B, T, |A|) and the state {"h", "c"} after the sequences (dataset streams, module doc);
        `is_first` None: no episode starts inside them; `state` None: zeros."""
        if state is None:
            zeros = torch.zeros(observations["tty"].shape[0], self.net.config.h_dim, device=self.net.policy.weight.device)
            state = {"h": zeros, "c": zeros}
        core, (h, c) = self.net.core_outputs(observations["tty"], observations["prev_action"],
                                             None if is_first is None else is_first.bool(),
                                             (state["h"][None], state["c"][None]))
        return self.net.policy(core), {"h": h[0], "c": c[0]}

    def policy_distribution_inputs(self, observations: Any, state: Any = None) -> torch.Tensor:
        """Logits (B, T, |A|) for dict observations with a time axis from `state` ({"h", "c"}; None: zeros)."""
        return self.recurrent_distribution_inputs(observations, None, state)[0]
