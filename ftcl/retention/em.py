"""Episodic memory (EM): π*'s transitions in a protected replay partition that FIFO never evicts.

Before fine-tuning, transitions collected by π* fill the protected partition; online transitions
go to a FIFO ring of `capacity − memory_size`. EM adds no loss term: it changes the replay buffer
(off-policy algorithms only). A minibatch is drawn uniformly over protected ∪ online (the paper:
"sampled from the whole buffer"), i.e. the number of protected items is Binomial(n, P/(P+N)) for
P protected and N online items; with `sample_fraction` f it is Binomial(n, f) instead.
"""
from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import Field, PositiveInt

from ftcl.retention.method import DataNeeds, ProtectedReplay, RetentionMethod

TRANSITION_KEYS = ("obs", "actions", "rewards", "next_obs", "terminateds", "truncateds")


def split_sample_counts(
    num_items: int,
    num_protected: int,
    num_online: int,
    rng: np.random.Generator,
    protected_share: float | None = None,
) -> tuple[int, int]:
    """How many of `num_items` to draw from the protected partition and from the online data."""
    if num_protected + num_online == 0:
        raise ValueError("cannot sample from an empty replay memory")
    if num_protected == 0:
        return 0, num_items
    if num_online == 0:
        return num_items, 0
    share = num_protected / (num_protected + num_online) if protected_share is None else protected_share
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"protected share must be in [0, 1]; got {protected_share}")
    from_protected = int(rng.binomial(num_items, share))
    return from_protected, num_items - from_protected


class EMMethod(RetentionMethod):
    """Episodic memory: `memory_size` of π*'s transitions in a protected replay partition."""

    name: Literal["em"] = "em"
    memory_size: PositiveInt = 10_000
    sample_fraction: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    """None: minibatches uniform over protected + online transitions (the paper); a number f:
    each minibatch item comes from the protected partition with probability f."""

    off_policy_only = True

    def data_needs(self) -> DataNeeds:
        return DataNeeds(TRANSITION_KEYS, self.memory_size)

    def protected_replay(self) -> ProtectedReplay:
        return ProtectedReplay(capacity=self.memory_size, share=self.sample_fraction)
