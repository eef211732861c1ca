"""RLModules, each implementing `ftcl.retention.policy_api.RetentionPolicyAPI`.

`MODELS` is the one table of the `algorithm.model` names a spec may use: name -> (module path,
class name, description). `default` is the algorithm's default module: RLlib's, with the policy API
of `rllib_policy_api.py` (the subclasses sit next to their algorithm in `ftcl.algorithms`).
Classes are imported only when a trial builds them.
"""
from __future__ import annotations

import importlib
from typing import NamedTuple


class ModelEntry(NamedTuple):
    module: str
    class_name: str
    description: str


MODELS: dict[str, ModelEntry | None] = {
    "default": None,
    "linear_policy": ModelEntry("ftcl.models.linear_policy", "LinearPolicyModule",
                                "σ(w·o+b) actor and a separate MLP critic (the paper's toys, PPO)"),
    "multihead_sac": ModelEntry("ftcl.models.multihead_sac", "MultiHeadSACModule",
                                "the paper's RoboticSequence SAC MLPs with one output head per stage"),
    "rnd_cnn": ModelEntry("ftcl.models.rnd_cnn", "RNDPolicyModule",
                          "the paper's Montezuma PPO + RND CNNs: policy, two value heads, RND target and predictor"),
    "tty_lstm": ModelEntry("ftcl.models.tty_lstm_module", "TtyLSTMModule",
                           "the paper's NetHack tty encoder + LSTM (policy, baseline; APPO), widths configurable"),
    "mlp_sac": ModelEntry("ftcl.models.mlp_sac", "MLPSACTorchRLModule",
                          "the paper's SAC MLPs (LayerNorm + tanh first layer), one head"),
}
"""`algorithm.model` name -> where its RLModule class lives (None: the algorithm's default)."""


def model_class(name: str) -> type | None:
    """The RLModule class of a model name (None for `default`); KeyError names unknown ones."""
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; allowed: {', '.join(MODELS)}")
    entry = MODELS[name]
    if entry is None:
        return None
    return getattr(importlib.import_module(entry.module), entry.class_name)
