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
    "ppo_rnd": AlgorithmEntry("ftcl.algorithms.ppo_rnd", "RetentionPPORNDConfig", False,
                              "PPO + random network distillation (two value heads, two-stream GAE) + retention terms"),
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


# ----- `algorithm.options`: RLlib's training() keywords, checked before anything runs ------------------
POSITIVE_OPTIONS = ("lr", "actor_lr", "critic_lr", "alpha_lr", "initial_alpha", "train_batch_size",
                    "train_batch_size_per_learner", "minibatch_size", "num_epochs", "num_sgd_iter", "n_step",
                    "training_intensity", "clip_param", "vf_clip_param", "kl_target", "grad_clip")
NON_NEGATIVE_OPTIONS = ("entropy_coeff", "vf_loss_coeff", "kl_coeff", "num_steps_sampled_before_learning_starts",
                        "target_network_update_freq")
UNIT_INTERVAL_OPTIONS = ("gamma", "tau", "lambda_")
"""Numeric `training()` keywords with a range: lr > 0, γ ∈ [0, 1], ... (RLlib checks few of them itself,
and a negative lr fails, or worse trains, only after the trial has started)."""


def training_keywords(name: str) -> set[str]:
    """Every keyword the algorithm's `training()` takes (its own, and those of its RLlib bases)."""
    import inspect

    keywords: set[str] = set()
    for cls in algorithm_config_class(name).__mro__:
        method = cls.__dict__.get("training")
        if method is None:
            continue
        for parameter in inspect.signature(method).parameters.values():
            if parameter.name != "self" and parameter.kind in (parameter.KEYWORD_ONLY, parameter.POSITIONAL_OR_KEYWORD):
                keywords.add(parameter.name)
    return keywords


def check_training_options(name: str, options: dict) -> None:
    """ValueError naming the first option the algorithm does not take, or one out of its range."""
    import difflib

    keywords = training_keywords(name)
    for key, value in options.items():
        if key not in keywords:
            close = difflib.get_close_matches(key, sorted(keywords), n=3)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            rllib_class = next(cls.__name__ for cls in algorithm_config_class(name).__mro__
                               if cls.__module__.startswith("ray.rllib"))
            raise ValueError(f"{key!r} is not a keyword of {name}'s training() (RLlib {rllib_class}.training "
                             f"and ftcl's additions){hint}")
        _check_range(key, value)
    config_class = algorithm_config_class(name)
    if hasattr(config_class, "check_option_combination"):  # options that only mean something together
        config_class.check_option_combination(config_class().training(**options))


def _check_range(key: str, value) -> None:
    if key not in POSITIVE_OPTIONS + NON_NEGATIVE_OPTIONS + UNIT_INTERVAL_OPTIONS or value is None:
        return
    # lr and entropy_coeff may also be RLlib schedules: [[timestep, value], ...]
    values = [pair[1] for pair in value] if isinstance(value, list) and all(
        isinstance(pair, (list, tuple)) and len(pair) == 2 for pair in value) else [value]
    for number in values:
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise ValueError(f"{key}: must be a number (got {number!r})")
        if key in POSITIVE_OPTIONS and not number > 0:
            raise ValueError(f"{key}: must be > 0 (got {number!r})")
        if key in NON_NEGATIVE_OPTIONS and not number >= 0:
            raise ValueError(f"{key}: must be >= 0 (got {number!r})")
        if key in UNIT_INTERVAL_OPTIONS and not 0 <= number <= 1:
            raise ValueError(f"{key}: must be in [0, 1] (got {number!r})")
