"""The package's layers import downwards only, and no module grows past what a reader can hold.

Layers, bottom up: `retention` (plain PyTorch) and `data` (files) < `envs` (simulators; they may read
data files) < `models`
(RLModules implementing the retention policy API) < `algorithms` (RLlib + retention) < `spec`,
`plan`, `pretrain`, `evaluation`, `tracking` < `trial_config`, `trainable`, `runner` < `cli`.
Checked on the source (every import statement, lazy ones inside functions included).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "ftcl"
MAX_MODULE_LINES = 450

ALLOWED_FTCL_IMPORTS = {
    "retention": {"retention"},
    "data": {"data"},
    "envs": {"envs", "data"},  # an env may read data files (stored start states) and check their integrity
    "models": {"models", "retention"},
    "algorithms": {"algorithms", "retention", "models", "data"},
}
"""Layer -> the ftcl packages its modules may import."""
NO_RAY = ("retention", "data")
"""Layers that never import Ray (envs may: the analytic two-state-MDP toy reports to Tune itself)."""


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def layer_of(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_down_the_layers(path: Path) -> None:
    layer = layer_of(path)
    imports = imported_modules(path)
    assert "ftcl.cli" not in imports or layer == "cli"
    ftcl_layers = {name.split(".")[1] for name in imports if name.startswith("ftcl.") and name.count(".") >= 1}
    allowed = ALLOWED_FTCL_IMPORTS.get(layer)
    if allowed is not None:
        assert ftcl_layers <= allowed, f"{path.name} ({layer}) imports {sorted(ftcl_layers - allowed)}"
    if layer in NO_RAY:
        assert not any(name == "ray" or name.startswith("ray.") for name in imports), f"{path.name} imports ray"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_is_longer_than_a_reader_can_hold(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= MAX_MODULE_LINES
