"""Episodic memory (EM): a replay memory whose protected partition FIFO never overwrites.

Before fine-tuning, transitions collected by π* fill the protected partition; online
transitions go to a FIFO ring that holds `capacity − protected_capacity` of them. A minibatch
is drawn uniformly over protected ∪ online (the paper: "sampled from the whole buffer"), i.e.
the number of protected items is Binomial(n, P/(P+N)) for P protected and N online items.
With `protected_fraction=f` the share is fixed instead: Binomial(n, f) (all online while the
protected partition is empty, all protected while the online ring is empty).

`split_sample_counts` is the mixing rule; RLlib's episode buffer in `ftcl.algorithms` reuses it.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

TRANSITION_KEYS = ("obs", "actions", "rewards", "next_obs", "terminateds", "truncateds")


def split_sample_counts(
    num_items: int,
    num_protected: int,
    num_online: int,
    rng: np.random.Generator,
    protected_fraction: float | None = None,
) -> tuple[int, int]:
    """How many of `num_items` to draw from the protected partition and from the online data."""
    if num_protected + num_online == 0:
        raise ValueError("cannot sample from an empty replay memory")
    if num_protected == 0:
        return 0, num_items
    if num_online == 0:
        return num_items, 0
    share = num_protected / (num_protected + num_online) if protected_fraction is None else protected_fraction
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"protected_fraction must be in [0, 1]; got {protected_fraction}")
    from_protected = int(rng.binomial(num_items, share))
    return from_protected, num_items - from_protected


class ProtectedReplayMemory:
    """Transition replay with a protected partition (plain numpy); see the module docstring."""

    def __init__(
        self,
        capacity: int,
        protected_capacity: int,
        protected_fraction: float | None = None,
        seed: int | None = None,
    ) -> None:
        if not 0 < protected_capacity < capacity:
            raise ValueError(
                f"protected_capacity must be in (0, capacity={capacity}); got {protected_capacity}"
            )
        self.capacity = capacity
        self.protected_capacity = protected_capacity
        self.online_capacity = capacity - protected_capacity
        self.protected_fraction = protected_fraction
        self.rng = np.random.default_rng(seed)
        self.protected: dict[str, np.ndarray] = {}
        self.online: dict[str, np.ndarray] = {}
        self._online_size = 0
        self._online_next = 0

    @property
    def num_protected(self) -> int:
        return len(self.protected["obs"]) if self.protected else 0

    @property
    def num_online(self) -> int:
        return self._online_size

    def __len__(self) -> int:
        return self.num_protected + self.num_online

    def add_protected(self, transitions: Mapping[str, np.ndarray]) -> None:
        """Store π*'s transitions in the protected partition (once; at most protected_capacity)."""
        missing = [key for key in TRANSITION_KEYS if key not in transitions]
        if missing:
            raise KeyError(f"episodic memory needs transition keys {missing}")
        if self.protected:
            raise RuntimeError("the protected partition is already filled")
        count = len(transitions["obs"])
        if count > self.protected_capacity:
            raise ValueError(
                f"{count} transitions do not fit the protected partition of {self.protected_capacity}"
            )
        self.protected = {key: np.array(transitions[key]) for key in TRANSITION_KEYS}

    def add(self, transitions: Mapping[str, np.ndarray]) -> None:
        """Append online transitions; the oldest online ones are overwritten once the ring is full."""
        count = len(transitions["obs"])
        if not self.online:
            self.online = {
                key: np.zeros((self.online_capacity,) + np.shape(transitions[key])[1:], np.asarray(transitions[key]).dtype)
                for key in TRANSITION_KEYS
            }
        for row in range(count):
            for key in TRANSITION_KEYS:
                self.online[key][self._online_next] = transitions[key][row]
            self._online_next = (self._online_next + 1) % self.online_capacity
            self._online_size = min(self._online_size + 1, self.online_capacity)

    def sample(self, batch_size: int) -> dict[str, np.ndarray]:
        """A uniform minibatch over protected ∪ online (or with the fixed protected share).

        The result has the transition keys plus `is_protected` (bool per row).
        """
        from_protected, from_online = split_sample_counts(
            batch_size, self.num_protected, self.num_online, self.rng, self.protected_fraction
        )
        protected_rows = self.rng.integers(self.num_protected, size=from_protected) if from_protected else []
        online_rows = self.rng.integers(self.num_online, size=from_online) if from_online else []
        batch = {}
        for key in TRANSITION_KEYS:
            parts = []
            if from_protected:
                parts.append(self.protected[key][protected_rows])
            if from_online:
                parts.append(self.online[key][online_rows])
            batch[key] = np.concatenate(parts)
        batch["is_protected"] = np.concatenate(
            [np.ones(from_protected, dtype=bool), np.zeros(from_online, dtype=bool)]
        )
        return batch
