"""Vanilla fine-tuning: start from θ*, add no retention term (the forgetting baseline)."""
from __future__ import annotations

from typing import Literal

from ftcl.retention.method import RetentionMethod


class FinetuneMethod(RetentionMethod):
    """Start from π*'s weights θ*; the RL loss alone."""

    name: Literal["finetune"] = "finetune"
