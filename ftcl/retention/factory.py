"""Method config (dict or pydantic model from `ftcl.retention.config`) -> retention term."""
from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

from ftcl.retention.base import RetentionTerm
from ftcl.retention.bc import BCTerm
from ftcl.retention.config import MethodSpec
from ftcl.retention.ewc import EWCTerm
from ftcl.retention.ks import KSTerm
from ftcl.retention.l2 import L2Term

_METHOD_ADAPTER: TypeAdapter = TypeAdapter(MethodSpec)


def parse_method(method: Any) -> Any:
    """Validate a method config dict (or pass a model through) into its pydantic model."""
    if hasattr(method, "model_dump"):
        return method
    return _METHOD_ADAPTER.validate_python(method)


def build_term(method: Any, seed: int = 0) -> RetentionTerm | None:
    """The loss term of a method, or None for methods without one (scratch, finetune, em)."""
    spec = parse_method(method)
    if spec.name == "l2":
        return L2Term(spec.coeff, critic_coeff=spec.critic_coeff)
    if spec.name == "ewc":
        return EWCTerm(
            spec.coeff,
            critic_coeff=spec.critic_coeff,
            fisher_labels=spec.fisher_labels,
            fisher_batches=spec.fisher_batches,
            fisher_batch_size=spec.fisher_batch_size,
            fisher_floor=spec.fisher_floor,
            seed=seed,
        )
    if spec.name == "bc":
        return BCTerm(
            spec.coeff,
            critic_coeff=spec.critic_coeff,
            kl_direction=spec.kl_direction,
            buffer_size=spec.buffer_size,
            batch_size=spec.batch_size,
            seed=seed,
            teacher_labels=spec.teacher_labels,
        )
    if spec.name == "ks":
        return KSTerm(spec.coeff, decay=spec.decay, floor=spec.floor, kl_direction=spec.kl_direction)
    return None
