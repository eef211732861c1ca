"""From scratch: random initialisation, no retention (the paper's baseline for forward transfer)."""
from __future__ import annotations

from typing import Literal

from ftcl.retention.method import RetentionMethod


class ScratchMethod(RetentionMethod):
    """Train from random weights; π* is not loaded."""

    name: Literal["scratch"] = "scratch"

    @property
    def starts_from_pretrained(self) -> bool:
        return False
