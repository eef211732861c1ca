"""Loading a spec: presets, the spec file, `--set` overrides, then validation and content checks.

Loading order: presets listed under `presets:` (files in `tune_configs/presets/`, merged in order),
then the spec file itself, then `--set key=value` overrides (dotted paths, values parsed as YAML),
then validation of the whole result. Any error becomes one `SpecError` line that names the field,
the bad value and what is allowed.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ftcl.envs.registry import ENVS
from ftcl.spec.dotted import set_dotted
from ftcl.spec.models import PRESET_DIR, REPO_ROOT, SPEC_DIR, ExperimentSpec, SpecError, _first_error


def _deep_merge(base: dict, update: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _read_yaml(path: Path, what: str) -> dict:
    if path.is_dir():
        inside = sorted(str(p) for p in path.rglob("*.y*ml") if "presets" not in p.parts)[:5]
        hint = f"; YAML files in it: {', '.join(inside)}" + (" ..." if len(inside) == 5 else "") if inside else ""
        raise SpecError(f"{what} {path} is a directory, not a YAML file{hint}")
    if not path.is_file():
        raise SpecError(f"{what} not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise SpecError(f"{what} {path} is not UTF-8 text (byte {error.start}: {error.reason}); save it as UTF-8") from None
    except OSError as error:
        raise SpecError(f"{what} {path} cannot be read: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise SpecError(f"{what} {path} is not valid YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{what} {path} must be a YAML mapping, got {type(data).__name__}")
    return data


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def available_method_presets() -> list[str]:
    return sorted(p.stem for p in (PRESET_DIR / "methods").glob("*.yaml"))


def _resolve_method_preset(entry: Any, index: int) -> Any:
    """A method entry `{preset: NAME, ...}`: the preset file's fields, then the entry's own."""
    if not isinstance(entry, dict) or "preset" not in entry:
        return entry
    entry = dict(entry)
    name = entry.pop("preset")
    path = PRESET_DIR / "methods" / f"{name}.yaml"
    if not isinstance(name, str) or not path.is_file():
        raise SpecError(
            f"methods.{index}.preset: unknown method preset {name!r}; allowed: "
            f"{', '.join(available_method_presets()) or '(none)'}"
        )
    return _deep_merge(_read_yaml(path, "method preset"), entry)


PATH_ENV_OPTIONS = ("start_states",)
"""Env options that name files: relative to the spec's folder (else to the repository), as `pretrained`."""


def _resolve_presets(raw: dict, spec_path: Path) -> dict:
    presets = raw.pop("presets", []) or []
    if isinstance(presets, str):
        presets = [presets]
    merged: dict = {}
    for name in presets:
        path = PRESET_DIR / f"{name}.yaml"
        if not path.is_file():
            raise SpecError(f"presets: unknown preset {name!r}; allowed: {', '.join(available_presets()) or '(none)'}")
        merged = _deep_merge(merged, _read_yaml(path, "preset"))
    merged = _deep_merge(merged, raw)
    if isinstance(merged.get("methods"), list):
        merged["methods"] = [_resolve_method_preset(m, i) for i, m in enumerate(merged["methods"])]
    # Relative paths in a spec are relative to the spec file's folder.
    pretrained = merged.get("pretrained") or {}
    for key in ("module", "data"):
        if isinstance(pretrained.get(key), str) and not Path(pretrained[key]).is_absolute():
            candidate = (spec_path.parent / pretrained[key]).resolve()
            repo_candidate = (REPO_ROOT / pretrained[key]).resolve()
            pretrained[key] = str(candidate if candidate.exists() or not repo_candidate.exists() else repo_candidate)
    demonstrations = (pretrained.get("train") or {}).get("demonstrations") or {}
    if isinstance(demonstrations.get("source"), str) and not Path(demonstrations["source"]).is_absolute():
        candidate = (spec_path.parent / demonstrations["source"]).resolve()
        repo_candidate = (REPO_ROOT / demonstrations["source"]).resolve()
        demonstrations["source"] = str(candidate if candidate.exists() or not repo_candidate.exists() else repo_candidate)
    for env_options in ((merged.get("env") or {}).get("options") or {}, (pretrained.get("train") or {}).get("env_options") or {}):
        for key in PATH_ENV_OPTIONS:
            if isinstance(env_options.get(key), str) and not Path(env_options[key]).is_absolute():
                candidate = (spec_path.parent / env_options[key]).resolve()
                repo_candidate = (REPO_ROOT / env_options[key]).resolve()
                env_options[key] = str(candidate if candidate.exists() or not repo_candidate.exists() else repo_candidate)
    tracking = merged.get("tracking") or {}
    dashboard = tracking.get("dashboard")
    if isinstance(dashboard, str) and dashboard.endswith((".yaml", ".yml")) and not Path(dashboard).is_absolute():
        tracking["dashboard"] = str((spec_path.parent / dashboard).resolve())
    return merged


def parse_overrides(pairs: list[str]) -> list[tuple[str, Any]]:
    """Parse `key=value` strings; values are YAML (so `3`, `1e-4`, `[0,1]`, `true` are typed)."""
    parsed = []
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key or not re.fullmatch(r"[A-Za-z0-9_.\-]+", key):
            raise SpecError(f"--set {pair!r}: expected KEY=VALUE with a dotted KEY such as budget.env_steps=20000")
        try:
            value = yaml.safe_load(text) if text != "" else ""
        except yaml.YAMLError:
            value = text
        parsed.append((key, value))
    return parsed


def load_spec(path: str | Path, overrides: list[str] | None = None) -> ExperimentSpec:
    """Load, merge presets, apply `--set` overrides and validate; raises SpecError."""
    spec_path = Path(path)
    raw = _read_yaml(spec_path, "spec")
    try:
        raw = _resolve_presets(raw, spec_path)
        for key, value in parse_overrides(overrides or []):
            set_dotted(raw, key, value)
        if isinstance(raw.get("methods"), list):  # `--set methods=[{preset: …}]` names presets too
            raw["methods"] = [_resolve_method_preset(m, i) for i, m in enumerate(raw["methods"])]
    except SpecError as error:
        raise SpecError(f"{spec_path}: {error}") from None
    try:
        spec = ExperimentSpec.model_validate(raw)
    except ValidationError as error:
        raise SpecError(f"{spec_path}: {_first_error(error)}") from None
    _check_grid(spec, spec_path)
    _check_algorithm_options(spec, spec_path)
    _check_files(spec, spec_path)
    _check_suites(spec, spec_path)
    _check_tracking(spec, spec_path)
    return spec


def _check_tracking(spec: ExperimentSpec, spec_path: Path) -> None:
    """The dashboard layout exists and validates; a `tracking.uri` is a store ftcl can use."""
    from ftcl.tracking.dashboard import LayoutError, load_layout
    from ftcl.tracking.store import check_tracking_uri

    if spec.tracking.uri is not None:
        try:
            check_tracking_uri(spec.tracking.uri)
        except ValueError as error:
            raise SpecError(f"{spec_path}: tracking.uri: {error}") from None

    try:
        load_layout(spec.tracking.dashboard)
    except LayoutError as error:
        raise SpecError(f"{spec_path}: tracking.dashboard: {error}") from None


def _check_grid(spec: ExperimentSpec, spec_path: Path) -> None:
    for key, values in spec.grid.items():
        for value in values:
            try:
                spec.with_overrides({key: value})
            except ValidationError as error:
                raise SpecError(f"{spec_path}: grid {key}={value!r}: {_first_error(error)}") from None
            except (SpecError, KeyError) as error:
                raise SpecError(f"{spec_path}: grid {key}: {error}") from None


def _check_algorithm_options(spec: ExperimentSpec, spec_path: Path) -> None:
    """`algorithm.options` (and pre-training's overrides of them) are keywords the RLlib algorithm
    takes, within range; the extra grid's variants are checked the same way."""
    from ftcl.algorithms import ALGORITHMS, check_training_options

    if spec.algorithm.name not in ALGORITHMS:
        return  # an analytic toy: its options are validated by its own model
    variants = [spec.algorithm.options] + [spec.with_overrides(v).algorithm.options for v in spec.variants() if v]
    checks = [("algorithm.options", options) for options in variants]
    if spec.pretrained.train is not None:
        checks.append(("pretrained.train.algorithm_options",
                       {**spec.algorithm.options, **spec.pretrained.train.algorithm_options}))
    for index, method in enumerate(spec.methods):
        if method.entropy_coeff is not None:
            checks.append((f"methods.{index}.entropy_coeff", {**spec.algorithm.options, "entropy_coeff": method.entropy_coeff}))
    for where, options in checks:
        try:
            check_training_options(spec.algorithm.name, options)
        except ValueError as error:
            raise SpecError(f"{spec_path}: {where}: {error}") from None


def _check_files(spec: ExperimentSpec, spec_path: Path) -> None:
    for key in ("module", "data"):
        path = getattr(spec.pretrained, key)
        if path is not None and not Path(path).exists():
            raise SpecError(f"{spec_path}: pretrained.{key}: file not found: {path}")
    from ftcl.data.integrity import verify_artifact_files

    for key in ("module", "data"):
        try:
            verify_artifact_files(getattr(spec.pretrained, key))
        except ValueError as error:
            raise SpecError(f"{spec_path}: pretrained.{key}: {error}") from None
    _check_data(spec, spec_path)
    if spec.pretrained.module is not None and any(method.starts_from_pretrained for method in spec.methods):
        from ftcl.algorithms import ALGORITHMS
        from ftcl.algorithms.pi_star import read_pi_star

        off_policy = spec.algorithm.name in ALGORITHMS and ALGORITHMS[spec.algorithm.name].off_policy
        try:  # the whole agent, readable: actor, critics, and α where SAC starts from π*'s
            read_pi_star(spec.pretrained.module, needs_critics=True,
                         needs_alpha=off_policy and spec.pretrained.initial_alpha == "from_pretrained")
        except ValueError as error:
            raise SpecError(f"{spec_path}: pretrained.module: {error}") from None


def _check_data(spec: ExperimentSpec, spec_path: Path) -> None:
    """π*'s data file is a readable .npz with the keys and rows every method reads; with a
    pre-training stage, that stage collects enough rows for every method."""
    from ftcl.data.retention_data import check_retention_shapes, retention_data_shapes

    needs = [(method.display_name, method.data_needs()) for method in spec.methods]
    if spec.pretrained.data is not None:
        try:
            shapes = retention_data_shapes(spec.pretrained.data)
            if not shapes:
                raise ValueError(f"retention data {spec.pretrained.data} holds no arrays")
            for label, need in needs:
                if need.keys:
                    check_retention_shapes(shapes, need.keys, min_rows=need.min_rows,
                                           source=f"method {label!r}: retention data {spec.pretrained.data}")
        except (ValueError, FileNotFoundError) as error:
            raise SpecError(f"{spec_path}: pretrained.data: {error}") from None
    if spec.pretrained.train is not None:
        rows = spec.pretrained.train.data_transitions
        for label, need in needs:
            if need.keys and need.min_rows > rows:
                raise SpecError(
                    f"{spec_path}: method {label!r} reads {need.min_rows} rows of π*'s data but "
                    f"pretrained.train.data_transitions collects {rows}; raise data_transitions or lower the method's size"
                )


def _check_suites(spec: ExperimentSpec, spec_path: Path) -> None:
    """`evaluation.suites` and `evaluation.log_likelihood_suites` name suites of the env; the latter
    also need π*'s data."""
    evaluation = spec.evaluation
    if evaluation.cka and spec.pretrained.module is None and spec.pretrained.train is None:
        raise SpecError(
            f"{spec_path}: evaluation.cka: compares the layers against θ* and needs π*; give `pretrained.module` "
            "and `pretrained.data` (its stored states) or `pretrained.train`"
        )
    if evaluation.cka and spec.pretrained.module is not None and spec.pretrained.data is None:
        raise SpecError(f"{spec_path}: evaluation.cka: needs π*'s stored states; give `pretrained.data`")
    if evaluation.log_likelihood_suites and spec.pretrained.data is None and spec.pretrained.train is None:
        raise SpecError(
            f"{spec_path}: evaluation.log_likelihood_suites: needs π*'s stored data; give `pretrained.data` "
            "(with `pretrained.module`) or `pretrained.train`"
        )
    for field in ("suites", "log_likelihood_suites"):
        names = getattr(evaluation, field)
        if not names:
            continue
        if spec.env.name == "none":
            raise SpecError(f"{spec_path}: evaluation.{field}: analytic toys have no evaluation suites")
        allowed = ENVS[spec.env.name].suites_for(ENVS[spec.env.name].validate_options(spec.env.options))
        for suite in names:
            if suite not in allowed:
                raise SpecError(
                    f"{spec_path}: evaluation.{field}: unknown suite {suite!r} for env {spec.env.name!r}; "
                    f"allowed: {', '.join(sorted(allowed)) or '(none)'}"
                )
    if evaluation.video_every_env_steps is not None:
        from ftcl.evaluation.video import check_draws_frames

        try:
            check_draws_frames(spec.env.name, ENVS[spec.env.name].validate_options(spec.env.options),
                               "evaluation.video_every_env_steps")
        except ValueError as error:
            raise SpecError(f"{spec_path}: {error}") from None


def available_specs() -> list[str]:
    return sorted(str(p.relative_to(REPO_ROOT)) for p in SPEC_DIR.rglob("*.yaml") if PRESET_DIR not in p.parents)


