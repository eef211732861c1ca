"""The experiment spec's pydantic models (what a spec may say) and their one-line errors.

A spec names an environment, an algorithm, an optional pre-trained policy (given, or trained by a
pre-training stage), a grid of retention methods × seeds (× any extra grid over spec fields), an
environment-step budget, evaluation suites, tracking and per-trial resources.

Loading order: presets listed under `presets:` (files in `tune_configs/presets/`, merged in order),
then the spec file itself, then `--set key=value` overrides (dotted paths, values parsed as YAML),
then validation of the whole result. Any error becomes one `SpecError` line that names the field,
the bad value and what is allowed.
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ftcl.algorithms import ALGORITHMS as RLLIB_ALGORITHM_TABLE
from ftcl.envs.registry import ENVS
from ftcl.models import MODELS
from ftcl.retention.registry import METHOD_NAMES, MethodSpec

REPO_ROOT = Path(__file__).resolve().parents[2]
SPEC_DIR = REPO_ROOT / "tune_configs"
PRESET_DIR = SPEC_DIR / "presets"

RLLIB_ALGORITHMS = tuple(RLLIB_ALGORITHM_TABLE)
ANALYTIC_ALGORITHMS = ("two_state_mdp",)
ALGORITHMS = RLLIB_ALGORITHMS + ANALYTIC_ALGORITHMS
OFF_POLICY = tuple(name for name, entry in RLLIB_ALGORITHM_TABLE.items() if entry.off_policy)


LaxPath = Annotated[Path, Field(strict=False)]
"""A path field: given as a YAML string (the models are strict otherwise)."""


class SpecError(ValueError):
    """A spec, preset or override is invalid; the message is one line meant for the user."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # no silent coercion: `seeds: [true]` is an error, not [1]


class EnvSpec(_Strict):
    name: str = Field(description="registered environment family, see `ftcl list`")
    options: dict[str, Any] = {}

    @field_validator("name")
    @classmethod
    def _known_env(cls, name: str) -> str:
        if name not in ENVS and name != "none":
            raise ValueError(f"unknown env {name!r}; allowed: {', '.join(sorted(ENVS))}")
        return name


class ActorOptimizerSpec(_Strict):
    type: Literal["sgd", "adam"]
    lr: PositiveFloat


REMOVED_ALGORITHM_FIELDS = {
    "flat_replay": "flat-transition replay is now RetentionSAC's only replay path; delete the key",
}
"""Fields that older specs set, with what replaces them."""


class AlgorithmSpec(_Strict):
    name: str
    """An RLlib algorithm of `ftcl.algorithms.ALGORITHMS`, or an analytic toy."""
    options: dict[str, Any] = {}
    """RLlib `AlgorithmConfig.training(**options)` keywords, or the analytic toy's options."""
    model: str = "default"
    """An RLModule of `ftcl.models.MODELS` (`ftcl list`); default: the algorithm's own."""
    model_config_options: dict[str, Any] = Field(default={}, alias="model_options")
    actor_optimizer: ActorOptimizerSpec | None = None
    """PPO only: a separate optimizer for the actor (e.g. plain SGD as in the paper's toys)."""
    num_env_runners: NonNegativeInt = 0
    num_envs_per_env_runner: PositiveInt = 1
    rollout_fragment_length: PositiveInt | Literal["auto"] = "auto"

    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True)

    @model_validator(mode="before")
    @classmethod
    def _no_removed_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, replacement in REMOVED_ALGORITHM_FIELDS.items():
                if key in data:
                    raise ValueError(f"{key} was removed: {replacement}")
        return data

    @field_validator("name", "model")
    @classmethod
    def _known_name(cls, value: str, info: ValidationInfo) -> str:
        allowed = ALGORITHMS if info.field_name == "name" else tuple(MODELS)
        if value not in allowed:
            kind = "algorithm" if info.field_name == "name" else "model"
            raise ValueError(f"unknown {kind} {value!r}; allowed: {', '.join(allowed)}")
        return value


class DemonstrationsSpec(_Strict):
    """Demonstrations that guide pre-training by a BC term (`ftcl.pretrain.demonstrations`): rollouts of
    the env's scripted expert (robotic_sequence), or a recording replayed in the env (montezuma)."""

    transitions: PositiveInt = 20_000
    """Demonstration steps collected before SAC starts (the BC buffer D)."""
    action_noise: float = Field(default=0.1, ge=0.0)
    """σ of the Gaussian noise added to the executed expert actions (labels stay noise-free)."""
    label_log_std: float = -2.0
    """log σ_E of the Gaussian that stands for the expert's action in the KL."""
    bc_coeff: float = Field(default=1.0, ge=0.0)
    """λ_demo of the BC term toward the demonstrations during pre-training."""
    batch_size: PositiveInt = 128
    source: LaxPath | None = None
    """A recorded demonstration, for envs that replay one (montezuma: default the shipped
    artifacts/montezuma/demo/montezuma_demo.npz)."""
    label_smoothing: float = Field(default=0.01, gt=0.0, lt=1.0)
    """Discrete actions: the demonstrated action's label probability is 1 − ε, the others share ε."""


class PretrainTrainSpec(_Strict):
    """Train π* inside the experiment (a separate Tune stage) before fine-tuning."""

    env_options: dict[str, Any] = {}
    """Overrides of the env options for pre-training (e.g. only the FAR part of the task)."""
    env_steps: PositiveInt
    algorithm_options: dict[str, Any] = {}
    """Overrides of `algorithm.options` for pre-training."""
    seed: int = 0
    data_transitions: PositiveInt = 10_000
    """Transitions collected by π* on the pre-training task (BC buffer, Fisher data, EM memory)."""
    demonstrations: DemonstrationsSpec | None = None
    """Guide SAC with a BC term toward the env's scripted expert (RoboticSequence only); None = SAC alone."""


CLONE_ENVS = ("nethack",)  # envs whose scripted expert `pretrained.clone` records as ttyrecs


class ClonePretrainSpec(_Strict):
    """π* as a behavioural clone of the env's scripted expert, made by `ftcl pretrain` in one process
    (no Tune stage): record `games` expert games (≤ `record_steps` each) as ttyrecs, clone them into
    `algorithm.model` in `updates` steps of `batch_size` game streams × `sequence_length` (baseline:
    TD(0) on the score with `gamma`, weight `value_coeff`; a checkpoint every
    `checkpoint_every_updates` for `--resume`), then play expert and π* `evaluation_games` times
    from each of `evaluation_starts` (env `start`s: CLOSE `game`, FAR `dlvl4`…) for the gap in
    provenance.json. The paper's π* is such a clone (of AutoAscend); `ftcl.pretrain.nethack_clone`."""

    games: PositiveInt = 40
    record_steps: PositiveInt = 3000
    seed: int = 0
    updates: PositiveInt = 1000
    batch_size: PositiveInt = 8
    sequence_length: PositiveInt = 32
    lr: PositiveFloat = 1e-3
    gamma: float = Field(default=0.999, gt=0.0, le=1.0)
    value_coeff: float = Field(default=0.5, ge=0.0)
    checkpoint_every_updates: PositiveInt = 250
    evaluation_games: NonNegativeInt = 10
    evaluation_steps: PositiveInt = 2000
    evaluation_starts: list[str] = ["game", "dlvl4"]


class PretrainedSpec(_Strict):
    module: LaxPath | None = None
    """π*: the `module/` folder that `ftcl pretrain` writes (the whole agent: actor, critics, SAC's α)."""
    data: LaxPath | None = None
    """The retention data (.npz) collected by π*."""
    train: PretrainTrainSpec | None = None
    clone: ClonePretrainSpec | None = None
    """π* as a clone of the env's expert, by `ftcl pretrain`; a grid then names its `module`, `data`."""
    initial_alpha: Literal["from_pretrained"] | PositiveFloat = "from_pretrained"
    """SAC's temperature α when fine-tuning starts from π*: π*'s own α (`from_pretrained`, default:
    π* is the whole agent, and α = 1 would weigh entropy ≈ 17× more than the α ≈ 0.06 that
    pre-training settled on) or a number. Methods that start from scratch use
    `algorithm.options.initial_alpha` (RLlib: 1.0)."""

    @model_validator(mode="after")
    def _one_source(self) -> "PretrainedSpec":
        if self.train is not None and (self.module is not None or self.data is not None):
            raise ValueError("give either `train` (pre-train inside the experiment) or `module`/`data`, not both")
        if self.clone is not None and (self.train is not None or self.module is not None or self.data is not None):
            raise ValueError("give either `clone` (π* made by `ftcl pretrain`) or `train` or `module`/`data`, not two")
        if self.data is not None and self.module is None:
            raise ValueError("`data` needs `module` (the policy that collected it)")
        return self


class BudgetSpec(_Strict):
    env_steps: PositiveInt
    """Environment steps per trial (for analytic toys: gradient steps)."""


class EvaluationSpec(_Strict):
    suites: list[str] = []
    """Evaluation suites of the env (see `ftcl list`), e.g. `far` or per-stage suites."""
    every_env_steps: PositiveInt = 10_000
    episodes: PositiveInt = 10
    explore: bool = False
    """False: greedy/mean actions; True: sample from the policy."""
    log_likelihood_suites: list[str] = []
    """Evaluation suites (names as in `suites`, e.g. `stage_3_push-wall`) on whose states the current
    policy's log-likelihood of π*'s stored actions, mean of log π_θ(a*|s*) over π*'s data rows that
    belong to the suite, is logged at every evaluation as `analysis/log_likelihood/<suite>` (paper
    Fig. 8: it collapses on FAR states under plain fine-tuning), with quantiles over the states as
    `analysis/log_likelihood_<q>/<suite>` (q10, q25, median, q75, q90); every state's value goes to
    the run's artifact `analysis/state_log_likelihood.npz`, from which `ftcl report` draws the
    paper's figure (states in 2-D by PCA, coloured by log-likelihood). Computed for every fine-tuning
    trial, scratch included (a baseline curve); needs π*'s data (`pretrained.data` or
    `pretrained.train`)."""
    cka: bool = False
    """Log linear CKA of every hidden layer of actor and critics against θ* at every evaluation of a
    fine-tuning trial, as `analysis/cka/<network>/layer_<k>` (network: actor, critic, critic_twin;
    paper Fig. 20), on up to 1000 of π*'s stored states (s*, with a* for the Q-networks). 1.0 at env
    step 0 when fine-tuning starts from θ*; needs π*'s module and data."""
    video_every_env_steps: PositiveInt | None = None
    """Training-time videos: at env step 0 (π*, or the random init) and at the first evaluation at or
    after each multiple of this many env steps, the first episode of every suite in `suites` is
    recorded as it is evaluated (the numbers do not change) and logged to the run as
    `videos/<env step>/<suite>_ep0.mp4`. A multiple of `every_env_steps`; envs that draw frames only."""

    @model_validator(mode="after")
    def _videos_at_evaluations(self) -> "EvaluationSpec":
        every, video = self.every_env_steps, self.video_every_env_steps
        if video is not None and (video % every or not self.suites):
            raise ValueError(f"video_every_env_steps {video}: videos are recorded at evaluations of `suites`, so it "
                             f"must be a multiple of every_env_steps ({every}) with suites listed")
        return self

    @property
    def active(self) -> bool:
        """Whether the trial evaluates at all (suites to run, log-likelihoods or CKA to log)."""
        return bool(self.suites or self.log_likelihood_suites or self.cka)


class TrackingSpec(_Strict):
    experiment: str | None = None
    """MLflow experiment name (default: the spec name)."""
    uri: str | None = None
    """MLflow tracking URI (default: `MLFLOW_TRACKING_URI`, else SQLite under the ftcl home)."""
    dashboard: str = "default"
    extra_metrics: list[str] = []
    """Extra result keys (fnmatch patterns) to log besides the built-in whitelist."""


class ResourcesSpec(_Strict):
    cpus_per_trial: PositiveFloat = 1.0
    num_learners: NonNegativeInt = 0
    """Learner actors per trial (0: one learner in the trial's own process); RLlib's `num_learners`."""
    gpus_per_learner: NonNegativeFloat = 0.0
    """GPUs per learner (with `num_learners: 0`, the trial's own process gets them)."""
    gpus_per_env_runner: NonNegativeFloat = 0.0
    max_concurrent_trials: PositiveInt | None = None
    checkpoint_every_iterations: PositiveInt = 5
    max_failures: NonNegativeInt = 3
    """Times a failed trial (a worker killed, a node lost, an exception) is restarted from its last
    checkpoint before it counts as failed (Tune's `FailureConfig.max_failures`)."""


class ExperimentSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    env: EnvSpec
    algorithm: AlgorithmSpec
    pretrained: PretrainedSpec = PretrainedSpec()
    methods: list[MethodSpec] = Field(min_length=1)
    seeds: list[int] = Field(min_length=1)
    budget: BudgetSpec
    evaluation: EvaluationSpec = EvaluationSpec()
    tracking: TrackingSpec = TrackingSpec()
    resources: ResourcesSpec = ResourcesSpec()
    grid: dict[str, list[Any]] = {}
    """Extra grid: dotted spec path -> values, e.g. `env.options.apple_distance: [5, 30]`."""

    @model_validator(mode="after")
    def _consistent(self) -> "ExperimentSpec":
        labels = [m.display_name for m in self.methods]
        duplicates = sorted({label for label in labels if labels.count(label) > 1})
        if duplicates:
            raise ValueError(f"methods: duplicate labels {duplicates}; give each variant a distinct `label`")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds: duplicates in {self.seeds}")
        analytic = self.algorithm.name in ANALYTIC_ALGORITHMS
        if analytic != (self.env.name == "none"):
            raise ValueError(
                "env.name must be 'none' exactly when algorithm.name is an analytic toy "
                f"({', '.join(ANALYTIC_ALGORITHMS)})"
            )
        has_pretrained = any(part is not None for part in (self.pretrained.module, self.pretrained.train,
                                                            self.pretrained.clone))
        for method in self.methods:
            if method.starts_from_pretrained and not has_pretrained and not analytic:
                raise ValueError(
                    f"methods: {method.name!r} starts from π* but the spec has no `pretrained.module` "
                    "or `pretrained.train`"
                )
            if method.off_policy_only and self.algorithm.name not in OFF_POLICY:
                raise ValueError(
                    f"methods: {method.name!r} needs an off-policy algorithm ({', '.join(OFF_POLICY)}), "
                    f"not {self.algorithm.name!r}"
                )
        gpus = self.resources.gpus_per_learner or self.resources.gpus_per_env_runner or self.resources.num_learners
        if analytic and gpus:
            raise ValueError("resources: an analytic toy runs in one process; num_learners and GPUs are for RLlib algorithms")
        if self.pretrained.initial_alpha != "from_pretrained" and self.algorithm.name not in OFF_POLICY:
            raise ValueError(f"pretrained.initial_alpha: only {', '.join(OFF_POLICY)} have a temperature α, "
                             f"not {self.algorithm.name!r}; leave it out")
        if self.algorithm.actor_optimizer is not None and self.algorithm.name != "ppo":
            raise ValueError("algorithm.actor_optimizer: only supported for ppo")
        for key, values in self.grid.items():
            if not values:
                raise ValueError(f"grid: {key!r} has no values")
            if key.split(".")[0] in ("methods", "seeds", "name", "grid"):
                raise ValueError(f"grid: {key!r} cannot be gridded; methods and seeds are always a grid")
        if analytic:
            from ftcl.envs.toys import TwoStateMDPOptions

            try:
                TwoStateMDPOptions.model_validate({**self.algorithm.options, "steps": self.budget.env_steps})
            except ValidationError as error:
                raise ValueError("algorithm.options: " + _first_error(error)) from None
        if not analytic and self.env.name != "none":
            _validate_env_options(self.env.name, self.env.options, "env.options")
            if self.pretrained.train is not None:
                _validate_env_options(
                    self.env.name, {**self.env.options, **self.pretrained.train.env_options},
                    "pretrained.train.env_options",
                )
                if self.pretrained.train.demonstrations is not None:
                    entry = ENVS[self.env.name]
                    if not (entry.has_recorded_demonstrations or
                            (entry.has_scripted_expert and self.algorithm.name in OFF_POLICY)):
                        raise ValueError(
                            "pretrained.train.demonstrations: needs an env with recorded demonstrations (montezuma), "
                            f"or a scripted expert (robotic_sequence) and an off-policy algorithm ({', '.join(OFF_POLICY)}); "
                            f"got algorithm {self.algorithm.name!r}, env {self.env.name!r}"
                        )
            if self.pretrained.clone is not None:
                if self.env.name not in CLONE_ENVS or self.algorithm.model != "tty_lstm":
                    raise ValueError(f"pretrained.clone: clones a scripted expert's ttyrecs into model tty_lstm, for env "
                                     f"{', '.join(CLONE_ENVS)}; got env {self.env.name!r}, model {self.algorithm.model!r}")
                clone = self.pretrained.clone
                if clone.batch_size > clone.games:
                    raise ValueError(f"pretrained.clone: batch_size {clone.batch_size} needs at least as many games "
                                     f"(games: {clone.games})")
                for start in clone.evaluation_starts:
                    _validate_env_options(self.env.name, {**self.env.options, "start": start},
                                          "pretrained.clone.evaluation_starts")
        return self

    # ----- derived views -------------------------------------------------------------------------
    @property
    def experiment_name(self) -> str:
        return self.tracking.experiment or self.name

    def method(self, label: str):
        for method in self.methods:
            if method.display_name == label:
                return method
        raise KeyError(label)

    def variants(self) -> list[dict[str, Any]]:
        """Every combination of the extra grid, as {dotted_key: value} (one empty dict if none)."""
        keys = sorted(self.grid)
        return [dict(zip(keys, combo)) for combo in itertools.product(*(self.grid[k] for k in keys))]

    def with_overrides(self, overrides: dict[str, Any]) -> "ExperimentSpec":
        """A copy with dotted-path overrides applied (re-validated)."""
        from ftcl.spec.dotted import set_dotted

        raw = self.model_dump(mode="json", by_alias=True, exclude={"grid"})
        for key, value in overrides.items():
            set_dotted(raw, key, value)
        return ExperimentSpec.model_validate(raw)


def _validate_env_options(env_name: str, options: dict[str, Any], where: str) -> None:
    try:
        ENVS[env_name].validate_options(options)
    except ValidationError as error:
        raise ValueError(f"{where}: " + _first_error(error)) from None


def variant_label(variant: dict[str, Any]) -> str:
    """Stable short text for a grid variant, e.g. `apple_distance=30,observation_scale=0.1`.

    A whole mapping as a grid value is shown by its `variant` or `name` entry when it has one.
    """
    def show(value: Any) -> str:
        if isinstance(value, dict):
            for key in ("variant", "name"):
                if key in value:
                    return str(value[key])
            return ",".join(f"{k}:{v}" for k, v in value.items())
        return str(value)

    return ",".join(f"{key.split('.')[-1]}={show(value)}" for key, value in sorted(variant.items()))



# ----- errors ----------------------------------------------------------------------------------------
def _first_error(error: ValidationError) -> str:
    """One line: `<field path>: <what is wrong> (got <value>)`."""
    first = error.errors()[0]
    parts = [str(part) for part in first["loc"]]
    # Discriminated unions insert the tag into the path (methods.0.bc.coeff): drop it.
    parts = [p for i, p in enumerate(parts) if not (i > 0 and parts[i - 1].isdigit() and p in METHOD_NAMES)]
    location = ".".join(parts)
    prefix = f"{location}: " if location else ""
    value = first.get("input")
    kind = first["type"]
    if kind == "union_tag_invalid":
        tag = first.get("ctx", {}).get("tag", value)
        return f"{prefix}name: unknown method {tag!r}; allowed: {', '.join(METHOD_NAMES)}"
    if kind == "extra_forbidden":
        return f"{prefix}unknown field (got {value!r}); check the spelling against the spec reference in README"
    if kind == "union_tag_not_found":
        return f"{prefix}name: required field is missing (each method entry names its method, or a `preset`); allowed: {', '.join(METHOD_NAMES)}"
    if kind == "missing":
        return f"{prefix}required field is missing"
    message = first["msg"].removeprefix("Value error, ").replace("Input should be", "must be")
    shown = "" if isinstance(value, (dict, list)) or value is None or repr(value) in message else f" (got {value!r})"
    return f"{prefix}{message}{shown}"


