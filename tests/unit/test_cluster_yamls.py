"""The shipped cluster YAMLs validate against Ray 2.60's cluster schema and keep what the real
`ray up` / `ray down` run over SSH (cluster/try_ssh_local.sh) needed: the venv on PATH before any
`ray` command, in Ray's own login shells too, and no local venv synced to the nodes."""
from __future__ import annotations

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from ftcl.spec import REPO_ROOT


@pytest.mark.parametrize("name", ["local-manual.yaml", "aws-minimal.yaml"])
def test_cluster_yaml_is_valid_and_reaches_ray_through_the_venv(name):
    config = yaml.safe_load((REPO_ROOT / "cluster" / name).read_text())
    validate_config(prepare_config(dict(config)))
    for command in config["head_start_ray_commands"] + config["worker_start_ray_commands"]:
        assert command.startswith("export PATH=~/ftcl/.venv/bin:$PATH && ray "), command
    assert any("ftcl/.venv/bin" in command and ".bashrc" in command for command in config["setup_commands"]), \
        "`ray down` runs `ray stop` in a login shell: the venv must be on its PATH"
    assert {".venv", ".git", ".ftcl"} <= set(config["rsync_exclude"])
    assert not any("0.0.0.0" in command for command in config["head_start_ray_commands"])
