"""What every retention method declares: its config (pydantic), its term, and what it needs.

A method lives in one file of this package (`l2.py`, `bc.py`, ...) as a subclass of
`RetentionMethod` with a `name: Literal[...]` field; `ftcl.retention.registry` finds it there.
The spec validates a `methods:` entry into that class once, and the typed object travels to the
learners. The algorithms read only the declarations below, never a method's name.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, NonNegativeFloat, NonNegativeInt

from ftcl.retention.term import RetentionTerm


def _must_be_zero(value: float) -> float:
    if value > 0:
        raise ValueError("this method has no critic term (the paper uses critic coefficient 0); set 0")
    return value


ZeroCriticCoeff = Annotated[NonNegativeFloat, AfterValidator(_must_be_zero)]
"""`critic_coeff` of a method without a critic term: accepted (older specs set it) only as 0."""


class FreezeWindow(BaseModel):
    """Freeze named submodules (attribute paths of the RLModule) for an env-step range."""

    model_config = ConfigDict(extra="forbid", strict=True)
    modules: list[str] = Field(min_length=1)
    from_env_step: NonNegativeInt = 0
    until_env_step: NonNegativeInt | None = None  # None = for the whole run


@dataclass(frozen=True)
class ProtectedReplay:
    """A replay partition of π*'s transitions that FIFO eviction never touches (episodic memory).

    `share` None: minibatches uniform over protected ∪ online items; a number f: each item comes
    from the protected partition with probability f.
    """

    capacity: int
    share: float | None = None


TTYREC_GAMES = "ttyrec_games"
"""The key a method needs of π*'s data when it reads dataset sequences (a ttyrec database's games,
`ftcl.data.retention_data.TTYREC_GAMES`; `min_rows` then counts games)."""


@dataclass(frozen=True)
class DataNeeds:
    """Keys and minimum rows a method needs from π*'s retention data file."""

    keys: tuple[str, ...] = ()
    min_rows: int = 0


class RetentionMethod(BaseModel):
    """Base of every method config: display label, freezing, critic warm-up, skip-train."""

    model_config = ConfigDict(extra="forbid", strict=True)

    label: str | None = None
    """Display name in MLflow/reports; defaults to `name` (set it to tell variants apart)."""
    freeze: list[FreezeWindow] = []
    critic_warmup_env_steps: NonNegativeInt = 0
    """Train only the critic for this many env steps, everything else frozen."""
    skip_train_env_steps: NonNegativeInt = 0
    """Collect this many env steps without any update (measures π* in place)."""
    entropy_coeff: NonNegativeFloat | None = None
    """The RL loss's entropy bonus for this method's trials (PPO/APPO `entropy_coeff`); None: the
    algorithm's. The paper switches it off (0) for its NetHack retention runs, as VPT does."""

    off_policy_only: ClassVar[bool] = False
    """True if the method needs a replay buffer (an off-policy algorithm)."""
    needs_teacher: ClassVar[bool] = False
    """True if the term compares π_θ with a frozen copy of π* on online states (kickstarting)."""

    def __reduce__(self) -> tuple:
        """Pickled as its config dict, parsed again by the registry where it is unpickled.

        A method from a file outside the package (`FTCL_METHOD_FILES`) has no importable module
        path; the receiving process (a Ray worker) loads it through its own registry instead.
        """
        from ftcl.retention.registry import parse_method

        return (parse_method, (self.model_dump(),))

    @property
    def display_name(self) -> str:
        return self.label or self.name  # type: ignore[attr-defined]

    @property
    def starts_from_pretrained(self) -> bool:
        """Whether the trial loads π*'s weights θ* before fine-tuning."""
        return True

    def data_needs(self) -> DataNeeds:
        """What the method reads from π*'s retention data (nothing by default)."""
        return DataNeeds()

    def protected_replay(self) -> ProtectedReplay | None:
        """The protected replay partition the method adds to the buffer, or None (most methods)."""
        return None

    def build_term(self, seed: int = 0) -> RetentionTerm | None:
        """The loss term λ·R(θ), or None for methods that add none (scratch, finetune, em)."""
        return None
