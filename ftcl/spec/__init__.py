"""Experiment specs: YAML files in `tune_configs/`, validated by pydantic.

A spec names an environment, an algorithm, an optional pre-trained policy (given, or trained by a
pre-training stage), a grid of retention methods × seeds (× any extra grid over spec fields), an
environment-step budget, evaluation suites, tracking and per-trial resources. `models.py` holds
what a spec may say; `loading.py` merges presets and `--set` overrides and checks the content.
"""
from ftcl.spec.loading import available_method_presets, available_presets, available_specs, load_spec, parse_overrides
from ftcl.spec.models import (
    ALGORITHMS,
    ANALYTIC_ALGORITHMS,
    OFF_POLICY,
    PRESET_DIR,
    REPO_ROOT,
    RLLIB_ALGORITHMS,
    SPEC_DIR,
    ExperimentSpec,
    SpecError,
    variant_label,
)

__all__ = [
    "ALGORITHMS", "ANALYTIC_ALGORITHMS", "OFF_POLICY", "PRESET_DIR", "REPO_ROOT", "RLLIB_ALGORITHMS", "SPEC_DIR",
    "ExperimentSpec", "SpecError", "available_method_presets", "available_presets", "available_specs", "load_spec",
    "parse_overrides", "variant_label",
]
