"""The paper's NetHack π* as an ftcl π*: a Tuyls et al. or sample-factory checkpoint file -> `module/`.

`ftcl import-checkpoint nethack CHECKPOINT --format tuyls|sample_factory --out DIR` reads the file
with `ftcl.models.nethack_checkpoints.load_paper_checkpoint` (strict: every tensor placed, widths
from its shapes), puts the network into the `tty_lstm` RLModule (the baseline head is π*'s critic)
and writes DIR/module (a π* folder) and DIR/provenance.json (the source file, its sha256, the
format, the widths, the module's sha256), so specs use it as `pretrained.module: DIR/module`. The
folder is written beside DIR and renamed: a failed import leaves nothing under DIR.
"""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

from ftcl.data.integrity import sha256_of, write_provenance


def import_paper_checkpoint(checkpoint: str | Path, checkpoint_format: str, out: str | Path,
                            command: str = "") -> dict[str, Any]:
    """Write DIR/module and DIR/provenance.json from a paper checkpoint (module doc); the provenance."""
    from ftcl.algorithms.pi_star import read_pi_star, save_pi_star
    from ftcl.envs.nethack import NetHackEnv
    from ftcl.models.nethack_checkpoints import FORMATS, load_paper_checkpoint
    from ftcl.models.tty_lstm_module import TtyLSTMModule

    if checkpoint_format not in FORMATS:
        raise ValueError(f"unknown checkpoint format {checkpoint_format!r}; allowed: {', '.join(FORMATS)}")
    out = Path(out)
    if out.exists():
        raise ValueError(f"--out {out} exists: give a new folder")
    net = load_paper_checkpoint(checkpoint, checkpoint_format)
    widths = {key: value for key, value in dataclasses.asdict(net.config).items() if key != "num_actions"}
    env = NetHackEnv({})
    try:
        if net.config.num_actions != env.action_space.n:
            raise ValueError(f"checkpoint {checkpoint} has {net.config.num_actions} actions; the nethack env has "
                             f"{env.action_space.n} (NLE's full keyboard)")
        module = TtyLSTMModule(observation_space=env.observation_space, action_space=env.action_space,
                               model_config=widths)
    finally:
        env.close()
    module.net.load_state_dict(net.state_dict(), strict=True)
    partial = out.with_name(out.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    save_pi_star(module, partial / "module")
    provenance = {
        "source": str(Path(checkpoint).resolve()), "source_sha256": sha256_of(checkpoint),
        "format": checkpoint_format, "model": "tty_lstm", "model_options": widths, "command": command,
        "pi_star": read_pi_star(partial / "module").contents(),
        "sha256": {"module": sha256_of(partial / "module")},
    }
    write_provenance(partial, provenance)
    partial.rename(out)
    return provenance
