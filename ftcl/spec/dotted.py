"""`--set` overrides: a dotted path (`methods.0.coeff`, `env.options.stages`) set in a raw spec dict."""
from __future__ import annotations

import re
from typing import Any

from ftcl.spec.models import SpecError


def set_dotted(raw: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node: Any = raw
    for i, part in enumerate(parts[:-1]):
        node = _child(node, part, ".".join(parts[: i + 1]), create=True)
    last = parts[-1]
    if isinstance(node, list):
        index = _list_index(node, last, dotted)
        node[index] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise SpecError(f"--set {dotted}: {'.'.join(parts[:-1])} is a {type(node).__name__}, not a mapping")


def _child(node: Any, part: str, path: str, create: bool) -> Any:
    if isinstance(node, list):
        return node[_list_index(node, part, path)]
    if isinstance(node, dict):
        if part not in node or node[part] is None:
            if not create:
                raise KeyError(path)
            node[part] = {}
        return node[part]
    raise SpecError(f"--set: {path} goes inside a {type(node).__name__}, which has no fields")


def _list_index(node: list, part: str, path: str) -> int:
    if not re.fullmatch(r"-?\d+", part) or not -len(node) <= int(part) < len(node):
        raise SpecError(f"--set: {path}: list index {part!r} out of range (list has {len(node)} items)")
    return int(part)
