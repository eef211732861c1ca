"""RLlib algorithms with knowledge retention (PPO, APPO, SAC), in RLlib's own layout.

`ALGORITHMS` is the one table of the `algorithm.name` values a spec may use: name -> where its
config class lives and whether it is off-policy (replays data, so replay-changing methods such
as EM fit it). `algorithm_config_class(name)` imports the class only when a trial builds it, so
`ftcl validate` and `ftcl list` do not import RLlib. Each config has one more method than RLlib's,
`.retention(method=..., pretrained_module_path=..., retention_data_path=...)`.
"""
from __future__ import annotations

import importlib
from typing import NamedTuple


class AlgorithmEntry(NamedTuple):
    module: str
    config_class: str
    off_policy: bool
    description: str


ALGORITHMS: dict[str, AlgorithmEntry] = {
    "ppo": AlgorithmEntry("ftcl.algorithms.ppo", "RetentionPPOConfig", False, "RLlib PPO + retention terms"),
    "appo": AlgorithmEntry("ftcl.algorithms.appo", "RetentionAPPOConfig", False, "RLlib APPO + retention terms"),
    "sac": AlgorithmEntry("ftcl.algorithms.sac", "RetentionSACConfig", True,
                          "RLlib SAC on uniform transition replay + retention terms / protected replay"),
}
"""`algorithm.name` -> its RLlib config class (RLlib algorithms only; the analytic toys live in envs)."""


def algorithm_config_class(name: str) -> type:
    """The `Retention*Config` class of an algorithm name; KeyError names unknown ones."""
    if name not in ALGORITHMS:
        raise KeyError(f"unknown algorithm {name!r}; allowed: {', '.join(ALGORITHMS)}")
    entry = ALGORITHMS[name]
    return getattr(importlib.import_module(entry.module), entry.config_class)
