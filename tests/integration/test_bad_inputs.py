"""Inputs that used to slip through (issue 11, item 5), each through the real `ftcl` command: one
`ftcl: error:` line naming what is wrong, exit code 2, and nothing written (no ftcl home, no
experiment folder, no MLflow store)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from ftcl.spec import REPO_ROOT
from ftcl_cli import free_port, run_ftcl

APPLE = REPO_ROOT / "tune_configs/toys/apple_retrieval.yaml"
QUICKSTART = REPO_ROOT / "tune_configs/robotic_sequence/quickstart.yaml"
ARTIFACT = REPO_ROOT / "artifacts/robotic_sequence"


def refused(tmp_path: Path, *args: str, message: str) -> str:
    """Run `ftcl ARGS` with a fresh home; assert the one-line refusal and that nothing was written."""
    home = tmp_path / "home"
    result: subprocess.CompletedProcess = run_ftcl(home, *args, timeout=120)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("ftcl: error:"), result.stderr
    assert message in lines[0], lines[0]
    assert not home.exists(), f"refused input wrote {sorted(p.name for p in home.rglob('*'))}"
    return lines[0]


def spec_file(tmp_path: Path, base: Path, mutate) -> Path:
    raw = yaml.safe_load(base.read_text())
    for key in ("module", "data"):  # absolute paths: the spec is written elsewhere
        if key in (raw.get("pretrained") or {}):
            raw["pretrained"][key] = str((base.parent / raw["pretrained"][key]).resolve())
    mutate(raw)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    return path


def test_a_spec_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(APPLE.read_bytes() + "# café\n".encode("latin-1"))  # a comment saved as Latin-1
    refused(tmp_path, "run", str(path), message="is not UTF-8 text")


def test_a_directory_given_as_the_spec(tmp_path):
    line = refused(tmp_path, "run", str(REPO_ROOT / "tune_configs" / "toys"), message="is a directory, not a YAML file")
    assert "apple_retrieval.yaml" in line  # and it names the specs inside


@pytest.mark.parametrize("override,message", [
    ("seeds=[true,false]", "seeds.0: must be a valid integer (got True)"),
    ("budget.env_steps='20000'", "budget.env_steps: must be a valid integer (got '20000')"),
    ("methods.0.critic_warmup_env_steps=true", "methods.0.critic_warmup_env_steps: must be a valid integer"),
    ("algorithm.options.learning_rate=0.01", "'learning_rate' is not a keyword of ppo's training()"),
    ("algorithm.options.gama=0.9", "did you mean gamma?"),
    ("algorithm.options.lr=-0.01", "algorithm.options: lr: must be > 0 (got -0.01)"),
    ("algorithm.options.gamma=1.5", "gamma: must be in [0, 1]"),
    ("tracking.dashboard=nosuch", "tracking.dashboard: unknown dashboard layout 'nosuch'; available: apple_retrieval"),
    ("tracking.uri=./mlruns", "tracking.uri: tracking URI './mlruns': expected one of sqlite://"),
    ("methods=[{coeff: 1.0}]", "methods.0: name: required field is missing"),
    ("methods=[{name: bc, buffer_size: 5000}]", "reads 5000 rows of π*'s data but pretrained.train.data_transitions collects 2000"),
])
def test_values_that_used_to_pass(tmp_path, override, message):
    line = refused(tmp_path, "run", str(APPLE), "--set", override, message=message)
    if "name: required" in message:
        assert "allowed: bc, em, ewc, finetune, ks, l2, scratch" in line


@pytest.mark.parametrize("what", ["empty folder", "text file"])
def test_a_pi_star_path_that_is_no_checkpoint(tmp_path, what):
    target = tmp_path / "not_pi_star"
    if what == "empty folder":
        target.mkdir()
    else:
        target.write_text("hello\n")
    path = spec_file(tmp_path, QUICKSTART, lambda raw: raw["pretrained"].update(module=str(target)))
    refused(tmp_path, "run", str(path), message="pretrained.module: π* checkpoint")


@pytest.mark.parametrize("what,message", [
    ("truncated", "is not a readable .npz"),
    ("foreign keys", "lacks key(s) ['obs']"),
    ("too few rows", "holds 50 rows; at least 10000 are needed"),
    ("altered", "data.npz does not match its provenance"),
])
def test_a_corrupt_or_too_small_data_file(tmp_path, what, message):
    if what == "altered":  # a whole artifact folder, one byte of its data changed
        folder = tmp_path / "artifact"
        shutil.copytree(ARTIFACT, folder)
        data = bytearray((folder / "data.npz").read_bytes())
        data[len(data) // 2] ^= 0x01
        (folder / "data.npz").write_bytes(bytes(data))
        path = spec_file(tmp_path, QUICKSTART, lambda raw: raw["pretrained"].update(
            module=str(folder / "module"), data=str(folder / "data.npz")))
    else:
        data = tmp_path / "data.npz"
        if what == "truncated":
            data.write_bytes((ARTIFACT / "data.npz").read_bytes()[:4096])
        elif what == "foreign keys":
            np.savez(data, x=np.zeros(3))
        else:
            np.savez(data, obs=np.zeros((50, 4)), action_dist_inputs=np.zeros((50, 8)))
        path = spec_file(tmp_path, QUICKSTART, lambda raw: raw["pretrained"].update(data=str(data)))
    refused(tmp_path, "run", str(path), message=message)


def test_a_tampered_pi_star_is_refused(tmp_path):
    folder = tmp_path / "artifact"
    shutil.copytree(ARTIFACT, folder)
    state = bytearray((folder / "module" / "module_state.pkl").read_bytes())
    state[len(state) // 2] ^= 0x01
    (folder / "module" / "module_state.pkl").write_bytes(bytes(state))
    path = spec_file(tmp_path, QUICKSTART, lambda raw: raw["pretrained"].update(
        module=str(folder / "module"), data=str(folder / "data.npz")))
    line = refused(tmp_path, "run", str(path), message="pretrained.module:")
    assert f"{folder / 'module'} does not match its provenance" in line


@pytest.mark.parametrize("address,message", [
    ("head-node", "expected auto, HOST:PORT"),
    ("ray://", "expected auto, HOST:PORT"),
    ("127.0.0.1:99999", "expected auto, HOST:PORT"),
    ("127.0.0.1:{port}", "cannot reach a Ray cluster at 127.0.0.1:{port}"),
])
def test_a_malformed_or_unreachable_address(tmp_path, address, message):
    port = free_port()  # nothing listens there
    refused(tmp_path, "run", str(APPLE), "--address", address.format(port=port), message=message.format(port=port))


@pytest.mark.parametrize("uri,message", [
    ("bogus://x", "expected one of sqlite://"),
    ("/no/such/folder", "expected one of sqlite://"),
    ("http://127.0.0.1:{port}", "no MLflow server reachable at 127.0.0.1:{port}"),
    ("sqlite:////no/such/folder/mlflow.db", "no MLflow store at"),
])
def test_report_with_a_bad_tracking_uri(tmp_path, uri, message):
    port = free_port()
    refused(tmp_path, "report", "apple_retrieval", "--tracking-uri", uri.format(port=port),
            message=message.format(port=port))


def test_demo_states_refuses_bad_rooms_and_files_before_replaying(tmp_path):
    out = tmp_path / "states"
    refused(tmp_path, "demo-states", "montezuma", "--rooms", "seven", "--out", str(out), message="--rooms must be paper room numbers")
    refused(tmp_path, "demo-states", "montezuma", "--rooms", "7,99", "--out", str(out), message="paper rooms 1–23 (got [7, 99])")
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not a zip")
    refused(tmp_path, "demo-states", "montezuma", "--rooms", "7", "--with", str(broken), "--out", str(out),
            message="is not readable")
    assert not out.exists()
