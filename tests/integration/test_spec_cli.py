"""Spec validation through the real `ftcl` command: good specs pass, bad input gets one clear line,
exit code 2, and nothing is written."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from ftcl.spec import REPO_ROOT, SpecError, available_specs, load_spec
from ftcl_cli import run_ftcl

APPLE = REPO_ROOT / "tune_configs/toys/apple_retrieval.yaml"


def ftcl(*args: str, home: Path) -> subprocess.CompletedProcess:
    return run_ftcl(home, *args, timeout=120)


BROUGHT_FILES = {"tune_configs/nethack/paper.yaml": "artifacts/nethack/pi_star_paper/module"}
"""Specs that need files a user brings (the paper's NetHack π* and NLD-AA, see the README): without
them they are refused naming the first missing path; `tests/unit/test_tty_lstm_module.py`
validates them with a checkpoint and a dataset the test makes."""


@pytest.mark.parametrize("spec", available_specs())
def test_every_shipped_spec_validates(spec):
    if spec in BROUGHT_FILES:
        with pytest.raises(SpecError, match=BROUGHT_FILES[spec]):
            load_spec(REPO_ROOT / spec)
        return
    loaded = load_spec(REPO_ROOT / spec)
    assert loaded.methods and loaded.seeds


def test_validate_prints_the_trial_grid(tmp_path):
    result = ftcl("validate", str(APPLE), "--set", "seeds=[0,1,2]", home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "finetune__seed2__v3" in result.stdout
    assert "pretrain: 4 trials" in result.stdout


def test_set_methods_may_name_method_presets():
    spec = load_spec(REPO_ROOT / "tune_configs/robotic_sequence/payoff.yaml",
                     ["seeds=[1, 2]", "methods=[{name: finetune}, {preset: bc_robotic_sequence, coeff: 2.0}]"])
    assert [m.name for m in spec.methods] == ["finetune", "bc"]
    assert spec.methods[1].buffer_size == 10000 and spec.methods[1].coeff == 2.0  # preset, then the entry
    with pytest.raises(SpecError, match="methods.0.preset: unknown method preset 'nope'; allowed: .*bc_robotic_sequence"):
        load_spec(REPO_ROOT / "tune_configs/robotic_sequence/payoff.yaml", ["methods=[{preset: nope}]"])


BAD_OVERRIDES = [
    ("budget.env_steps=abc", "budget.env_steps", "valid integer"),
    ("budget.env_steps=-5", "budget.env_steps", "greater than 0"),
    ("methods.0.name=distill", "unknown method 'distill'", "allowed: bc, em, ewc, finetune, ks, l2, scratch"),
    ("env.name=mars", "unknown env 'mars'", "allowed: apple_retrieval"),
    ("algorithm.name=dqn", "algorithm.name", "unknown algorithm 'dqn'; allowed: ppo, ppo_rnd, appo, sac, two_state_mdp"),
    ("evaluation.suites=[near]", "unknown suite 'near'", "allowed: far, full"),
    ("env.options.apple_distance=0", "apple_distance", "greater than or equal to 1"),
    ("env.options.speed=3", "speed", "unknown field"),
    ("methods.0.coeff=2", "methods.0.coeff", "unknown field"),
    ("seeds=[1,1]", "seeds", "duplicates"),
    ("methods=[{name: em}]", "'em' needs an off-policy algorithm", "sac"),
    ("methods=[{name: bc}, {name: bc}]", "duplicate labels", "label"),
    ("pretrained.train.env_steps=0", "pretrained.train.env_steps", "greater than 0"),
    ("methods.4.name=bc", "methods.4", "out of range"),
    ("nonsense", "expected KEY=VALUE", "budget.env_steps"),
]


@pytest.mark.parametrize("override,where,allowed", BAD_OVERRIDES)
def test_bad_override_is_one_clear_line_exit_2_nothing_written(tmp_path, override, where, allowed):
    home = tmp_path / "home"
    for command in ("validate", "run"):
        result = ftcl(command, str(APPLE), "--set", override, home=home)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("ftcl: error:")
        assert where in lines[0] and allowed in lines[0], lines[0]
    assert not home.exists(), "a rejected spec must not create the ftcl home"


def write_spec(tmp_path: Path, mutate) -> Path:
    raw = yaml.safe_load(APPLE.read_text())
    mutate(raw)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda raw: raw.update(pretrained={"module": "missing/module"}), "pretrained.module: file not found"),
        (lambda raw: raw.pop("budget"), "budget: required field is missing"),
        (lambda raw: raw.update(presets=["no_such_preset"]), "unknown preset 'no_such_preset'"),
        (lambda raw: raw.update(methods=[{"name": "scratch"}, {"name": "bc"}], pretrained={}),
         "'bc' starts from π*"),
        (lambda raw: raw.update(grid={"env.options.apple_distance": [5, -1]}), "grid env.options.apple_distance=-1"),
        (lambda raw: raw["env"].update(name="robotic_sequence", options={"stages": ["fly-v3"]}), "fly-v3"),
        # a folder that exists but holds no π* (the whole agent with agent.json)
        (lambda raw: raw.update(pretrained={"module": str(REPO_ROOT / "tune_configs")}),
         "pretrained.module: π* checkpoint"),
        (lambda raw: raw["pretrained"].update(initial_alpha=0.1), "pretrained.initial_alpha: only sac"),
        (lambda raw: raw.update(methods=[{"name": "scratch"}], pretrained={}, evaluation={"cka": True}),
         "evaluation.cka: compares the layers against θ* and needs π*"),
        # RLlib's APPO would ignore λ under V-trace without a word
        (lambda raw: raw["algorithm"].update(name="appo", actor_optimizer=None, options={"lambda_": 0.95}),
         "algorithm.options: appo: lambda_ (0.95) applies only with vtrace: false"),
    ],
)
def test_bad_spec_files(tmp_path, mutate, message):
    path = write_spec(tmp_path, mutate)
    with pytest.raises(SpecError, match="^" + str(path).replace(".", r"\.") + ": .*") as raised:
        load_spec(path)
    assert message in str(raised.value)
    result = ftcl("run", str(path), home=tmp_path / "home")
    assert result.returncode == 2 and message in result.stderr
    assert not (tmp_path / "home").exists()


def test_missing_file_and_not_yaml(tmp_path):
    result = ftcl("validate", str(tmp_path / "absent.yaml"), home=tmp_path / "home")
    assert result.returncode == 2 and "spec not found" in result.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    result = ftcl("validate", str(broken), home=tmp_path / "home")
    assert result.returncode == 2 and "not valid YAML" in result.stderr


def test_unknown_flag_and_resume_with_set(tmp_path):
    result = ftcl("run", str(APPLE), "--speed", "9", home=tmp_path / "home")
    assert result.returncode == 2 and "unrecognized arguments: --speed" in result.stderr
    result = ftcl("run", str(APPLE), "--resume", "--set", "seeds=[0]", home=tmp_path / "home")
    assert result.returncode == 2 and "--resume" in result.stderr
    result = ftcl("run", str(APPLE), "--resume", home=tmp_path / "home")
    assert result.returncode == 2 and "no earlier run" in result.stderr


def test_help_everywhere_has_examples(tmp_path):
    for command in ([], ["run"], ["validate"], ["report"], ["ui"], ["list"]):
        result = ftcl(*command, "--help", home=tmp_path)
        assert result.returncode == 0
        assert "example" in result.stdout


def test_list_names_envs_methods_specs(tmp_path):
    result = ftcl("list", home=tmp_path)
    assert result.returncode == 0, result.stderr
    for expected in ("apple_retrieval", "robotic_sequence", "ewc", "ks", "tune_configs/toys/apple_retrieval.yaml",
                     "suites: far, full"):
        assert expected in result.stdout
