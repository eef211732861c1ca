"""`ftcl pretrain` of NetHack's π*: the scripted diver's games recorded as ttyrecs, cloned into a
CPU-width `tty_lstm`, written with its data and the measured gap; a stopped run resumes without
re-recording; the written folder is what a fine-tuning spec names, and it is checked whole."""
from __future__ import annotations

import json
import shutil

import pytest
import yaml

from ftcl_cli import run_ftcl as ftcl

SMALL = {"h_dim": 16, "msg_hdim": 8, "blstats_hdim": 8, "fc_after_cnn_hdim": 8, "char_edim": 4, "color_edim": 4}
CLONE = {"games": 2, "record_steps": 40, "updates": 4, "batch_size": 2, "sequence_length": 8,
         "checkpoint_every_updates": 2, "evaluation_games": 1, "evaluation_steps": 20,
         "evaluation_starts": ["game", "dlvl4"]}


def clone_spec(tmp_path, **clone) -> dict:
    spec = {"name": "nethack_clone_tiny", "env": {"name": "nethack"},
            "algorithm": {"name": "appo", "model": "tty_lstm", "model_options": SMALL},
            "pretrained": {"clone": {**CLONE, **clone}},
            "methods": [{"name": "finetune"}], "seeds": [0], "budget": {"env_steps": 1}}
    (tmp_path / "clone.yaml").write_text(yaml.safe_dump(spec))
    return spec


def test_pretrain_records_clones_and_writes_a_whole_pi_star_with_its_data_and_gap(tmp_path):
    from ftcl.algorithms.pi_star import read_pi_star
    from ftcl.data.ttyrecs import count_games

    clone_spec(tmp_path)
    out = tmp_path / "pi_star"
    result = ftcl(tmp_path / "home", "pretrain", str(tmp_path / "clone.yaml"), "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "recording expert game 2/2" in result.stderr and "update 4/4" in result.stderr
    assert not (tmp_path / "pi_star.partial").exists()
    assert sorted(p.name for p in out.iterdir()) == ["data", "module", "provenance.json", "recorded_games.json"]
    assert count_games(out / "data" / "games.db") == 2
    pi_star = read_pi_star(out / "module", needs_critics=True)
    assert pi_star.parts["actor"] and pi_star.parts["critics"]
    provenance = json.loads((out / "provenance.json").read_text())
    assert set(provenance["gap"]) == {"expert/game", "expert/dlvl4", "pi_star/game", "pi_star/dlvl4"}
    assert provenance["gap"]["expert/dlvl4"]["dlvl_mean"] >= 4, "a FAR start begins on level 4"
    assert provenance["recorded_games"]["games"] == 2 and set(provenance["sha256"]) == {"module", "data"}

    # the folder moves with its data (the database keeps its recordings relative) and a fine-tuning
    # spec names it: sequence BC counts its games; an altered recording is refused before anything runs
    moved = tmp_path / "shipped"
    shutil.move(out, moved)
    finetune = {"name": "nethack_from_clone", "env": {"name": "nethack"},
                "algorithm": {"name": "appo", "model": "tty_lstm", "model_options": SMALL},
                "pretrained": {"module": str(moved / "module"), "data": str(moved / "data")},
                "methods": [{"name": "bc", "sequence_length": 8, "batch_size": 2}], "seeds": [0],
                "budget": {"env_steps": 100}}
    (tmp_path / "finetune.yaml").write_text(yaml.safe_dump(finetune))
    result = ftcl(tmp_path / "home", "validate", str(tmp_path / "finetune.yaml"))
    assert result.returncode == 0, result.stderr[-3000:]
    recording = next((moved / "data" / "expert").rglob("*.ttyrec*"))
    recording.write_bytes(recording.read_bytes()[:-10])
    result = ftcl(tmp_path / "home", "validate", str(tmp_path / "finetune.yaml"))
    assert result.returncode != 0 and "does not match its provenance" in result.stderr


def test_a_stopped_clone_resumes_from_its_checkpoint_without_recording_again(tmp_path, monkeypatch):
    import ftcl.pretrain.nethack_clone as recipe
    from ftcl.spec import SpecError
    from ftcl.spec.loading import load_spec

    clone_spec(tmp_path)
    spec = load_spec(str(tmp_path / "clone.yaml"), [])
    out = tmp_path / "pi_star"

    def stop(*args, **kwargs):
        raise KeyboardInterrupt  # the user stops the run while it plays its evaluation games

    monkeypatch.setattr(recipe, "play_games", stop)
    with pytest.raises(KeyboardInterrupt):
        recipe.pretrain_by_cloning(spec, out, command="test")
    work = tmp_path / "pi_star.partial"
    assert (work / recipe.CHECKPOINT_FILE).is_file() and not out.exists()
    recorded = (work / "data" / "games.db").stat().st_mtime_ns
    with pytest.raises(SpecError, match="holds a stopped pre-training"):
        recipe.pretrain_by_cloning(spec, out, command="test")
    with pytest.raises(SpecError, match="the spec given now differs"):
        recipe.pretrain_by_cloning(load_spec(str(tmp_path / "clone.yaml"), ["pretrained.clone.updates=6"]), out,
                                   command="test", resume=True)
    monkeypatch.undo()
    updates = []
    real_clone = recipe.clone_policy
    monkeypatch.setattr(recipe, "clone_policy", lambda *a, **k: real_clone(
        *a, **{**k, "progress": lambda update, losses: updates.append(update)}))
    recipe.pretrain_by_cloning(spec, out, command="test", resume=True)
    assert (out / "data" / "games.db").stat().st_mtime_ns == recorded, "the recording is not redone"
    assert updates == [], "the clone had finished its 4 updates: none is run again"
    assert json.loads((out / "provenance.json").read_text())["gap"]


def test_clone_specs_are_checked_and_ftcl_run_points_to_ftcl_pretrain(tmp_path):
    spec = clone_spec(tmp_path)
    result = ftcl(tmp_path / "home", "run", str(tmp_path / "clone.yaml"))
    assert result.returncode != 0 and "made by `ftcl pretrain SPEC --out DIR`" in result.stderr
    spec["algorithm"]["model"] = "default"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(spec))
    result = ftcl(tmp_path / "home", "validate", str(tmp_path / "bad.yaml"))
    assert result.returncode != 0 and "into model tty_lstm" in result.stderr
    clone_spec(tmp_path, evaluation_starts=["game", "dlvl99"])
    result = ftcl(tmp_path / "home", "validate", str(tmp_path / "clone.yaml"))
    assert result.returncode != 0 and "pretrained.clone.evaluation_starts" in result.stderr
    clone_spec(tmp_path, batch_size=3)
    result = ftcl(tmp_path / "home", "validate", str(tmp_path / "clone.yaml"))
    assert result.returncode != 0 and "needs at least as many games" in result.stderr
    assert not (tmp_path / "home" / "pretrained").exists(), "nothing written"
