"""Method entries of an experiment spec: which retention method, with which coefficients.

Each entry of a spec's `methods:` list validates into one of these models (discriminated by
`name`). They are plain pydantic (no RLlib); the algorithms package turns them into terms.
Paper values (Table 3, §3.1, §4.1) are the presets in `tune_configs/presets/`, not defaults here,
except where a default is the only sensible value.
"""
from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, NonNegativeInt, PositiveInt


class FreezeWindow(BaseModel):
    """Freeze named submodules (attribute paths of the RLModule) for an env-step range."""

    model_config = ConfigDict(extra="forbid")
    modules: list[str] = Field(min_length=1)
    from_env_step: NonNegativeInt = 0
    until_env_step: NonNegativeInt | None = None  # None = for the whole run


class _MethodBase(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: str | None = None
    """Display name in MLflow/reports; defaults to `name` (set it to tell variants apart)."""
    freeze: list[FreezeWindow] = []
    critic_warmup_env_steps: NonNegativeInt = 0
    """Train only the value/critic head for this many env steps, everything else frozen."""
    skip_train_env_steps: NonNegativeInt = 0
    """Collect this many env steps without any update (measures π* in place)."""

    @property
    def display_name(self) -> str:
        return self.label or self.name  # type: ignore[attr-defined]


KLDirection = Literal["teacher_student", "student_teacher"]
"""teacher_student = KL(π* ‖ π_θ) (the paper's code, default); student_teacher = KL(π_θ ‖ π*)."""


class ScratchMethod(_MethodBase):
    """Random initialisation, no retention (the paper's 'from scratch')."""

    name: Literal["scratch"]


class FinetuneMethod(_MethodBase):
    """Start from θ*, no retention term (vanilla fine-tuning)."""

    name: Literal["finetune"]


class L2Method(_MethodBase):
    """λ·Σ(θ−θ*)² over the actor's parameters."""

    name: Literal["l2"]
    coeff: NonNegativeFloat = 1.0
    critic_coeff: NonNegativeFloat = 0.0


class EWCMethod(_MethodBase):
    """λ·Σ F_i(θ_i−θ*_i)², diagonal Fisher F at θ* on pre-training data."""

    name: Literal["ewc"]
    coeff: NonNegativeFloat = 100.0
    critic_coeff: NonNegativeFloat = 0.0
    fisher_labels: Literal["sampled", "argmax", "dataset"] = "sampled"
    """Categorical policies only: label for log π(a|s): sampled from π*, argmax of π*, or the stored action."""
    fisher_batches: PositiveInt = 10
    fisher_batch_size: PositiveInt = 256
    fisher_floor: NonNegativeFloat = 1e-5


class BCMethod(_MethodBase):
    """λ·E_{s∼B} KL(π*(·|s) ‖ π_θ(·|s)) on a stored buffer B of pre-training states."""

    name: Literal["bc"]
    coeff: NonNegativeFloat = 1.0
    critic_coeff: NonNegativeFloat = 0.0
    kl_direction: KLDirection = "teacher_student"
    buffer_size: PositiveInt = 10_000
    batch_size: PositiveInt = 128
    teacher_labels: Literal["pretrained", "dataset"] = "pretrained"
    """pretrained: label B with π*'s outputs when the trial starts (the paper); dataset: use the
    data file's stored `action_dist_inputs` (e.g. scripted demonstrations), so no π* is needed."""


class KSMethod(_MethodBase):
    """Kickstarting: λ_t·E_{s∼online} KL(π* ‖ π_θ), λ_t decays per optimizer step to a floor."""

    name: Literal["ks"]
    coeff: NonNegativeFloat = 0.5
    decay: Annotated[float, Field(gt=0.0, le=1.0)] = 0.99998
    floor: NonNegativeFloat = 0.0
    kl_direction: KLDirection = "teacher_student"


class EMMethod(_MethodBase):
    """Episodic memory (SAC only): pre-training transitions in a protected replay partition."""

    name: Literal["em"]
    memory_size: PositiveInt = 10_000
    sample_fraction: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    """None: minibatches uniform over protected + online transitions (the paper); a number f:
    each minibatch item comes from the protected partition with probability f."""


MethodSpec = Annotated[
    Union[ScratchMethod, FinetuneMethod, L2Method, EWCMethod, BCMethod, KSMethod, EMMethod],
    Field(discriminator="name"),
]
METHOD_NAMES = ("scratch", "finetune", "l2", "ewc", "bc", "ks", "em")

# What each method needs before a trial can start.
NEEDS_PRETRAINED = {"finetune", "l2", "ewc", "bc", "ks", "em"}
NEEDS_STATES = {"ewc", "bc"}  # pre-training states (Fisher data, BC buffer)
NEEDS_TRANSITIONS = {"em"}  # full (s, a, r, s', done) transitions collected by π*
ON_POLICY_ONLY: set[str] = set()


def needs_pretrained(method) -> bool:
    """Whether a method (pydantic model or dict) starts from π*'s weights."""
    name = method["name"] if isinstance(method, dict) else method.name
    labels = method.get("teacher_labels") if isinstance(method, dict) else getattr(method, "teacher_labels", None)
    return name in NEEDS_PRETRAINED and not (name == "bc" and labels == "dataset")
OFF_POLICY_ONLY = {"em"}
