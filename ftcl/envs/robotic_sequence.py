"""RoboticSequence (paper §2.3, Algorithm 1): several Meta-World v3 tasks solved in order in one episode.

Episode logic (Algorithm 1). Given stage envs E_1..E_N, policy π and per-stage time limit T:

    i = 1, t = 1
    while i <= N and t <= T:
        step E_i with π
        if E_i is solved (Meta-World info["success"]):  i <- i + 1, t <- 1   # per-stage clock resets
    return i - 1                                                              # number of solved stages

Overall success = every stage that the episode is meant to run is solved.

What this module adds on top of the raw Meta-World tasks:

* Observation = [39-d Meta-World observation of the current stage | one-hot of the current stage
  (N dims, N = len(stages)) | t/T], where t is the number of steps already taken in the current
  stage (0 at a stage's first observation). float32.
* Reward = the current stage's Meta-World reward r_t (reward_function_version "v2"). On the step at
  which a stage becomes solved, r'_t = β · r_t · (T − t), with β = `success_reward_multiplier` and t
  the 1-based index of that step within the stage (Algorithm 1's t), so solving early pays more and
  the agent is not tempted to delay success to farm dense reward. A success on the very last allowed
  step (t = T) therefore pays 0, exactly as the formula says.
* Random initial object/goal positions at every stage start, as in Continual World's
  `random_init_all`: each stage env draws a fresh position vector from its own seeded generator
  (Meta-World's `seeded_rand_vec` mode) instead of cycling through 50 fixed MT1 tasks.
  `reset(seed=s)` reseeds every stage env from s, so two resets with the same seed give identical
  observations and, for the same actions, identical trajectories.
* Each stage env is reset when the stage is entered and is stepped at most T times, so Meta-World's
  own horizon (`max_path_length` = 500, after which it raises) never interferes; for T > 500 the
  stage env's horizon is raised to T.

Termination and what SAC has to do (paper §2.3: "at a stage's success or time-out SAC is told the
state is terminal", i.e. no bootstrapping in either case):

* Time-out (t reaches T without success) ends the episode with `terminated=True` (the paper's
  choice; set `timeout_is_terminal=False` to report it as `truncated=True` instead, the usual
  Gymnasium/Continual World convention that bootstraps).
* Success of the last stage to run ends the episode with `terminated=True`.
* Success of any other stage does NOT end the episode (the next stage starts in the same episode,
  the returned observation is already the next stage's first observation), so Gymnasium/RLlib cannot
  mark it terminal. Instead `info["stage_done"] = True` on that step (it is also True on the two
  episode-ending cases above). The SAC learner must treat a transition with `stage_done` as terminal:
  its critic target is y = r (no γ · (1 − d) · V(s') term), i.e. use d = terminated OR stage_done.
  In RLlib this is a learner connector that ORs `infos["stage_done"]` into the TERMINATEDS column
  before the loss. The solved stage's own last observation is in `info["stage_final_observation"]`
  should a learner want it (it is not needed when the transition is not bootstrapped).

`info` on every step: `stage` (index of the stage this step acted in), `stage_name`,
`stages_solved` (count in this episode), `stage_success` (Meta-World's per-step success flag of that
stage), `stage_done`, `time_out`, `raw_reward` (Meta-World reward before augmentation), `success`
(True once all stages to run are solved). At episode end also `stage_<k>_success` for every stage k
this episode was meant to run.

FAR evaluation: `start_stage` starts the episode at stage k; `num_stages_to_run` stops it after that
many stages. `evaluation_suites` gives one suite per stage (that stage alone) plus `full`, and
`far_suites` names the suites of the pre-trained (FAR) stages.
"""
from __future__ import annotations

import pickle
from typing import Any, SupportsFloat

VIDEO_CAMERA = "corner"
"""Meta-World's camera for videos: the table from a front corner, arm and objects large. Meta-World's
cameras render upside down through gymnasium's renderer, so `render_frame` flips the image."""

import gymnasium as gym
import mujoco
import numpy as np
from metaworld.env_dict import ALL_V3_ENVIRONMENTS
from metaworld.sawyer_xyz_env import SawyerXYZEnv
from metaworld.types import Task
from pydantic import BaseModel, ConfigDict, field_validator, model_validator

DEFAULT_STAGES: list[str] = ["hammer-v3", "push-v3", "peg-unplug-side-v3", "push-wall-v3"]
"""The paper's 4-stage sequence (§2.3): CLOSE = hammer, push; FAR = peg-unplug-side, push-wall."""

TASK_VERSION_SUFFIX = "-v3"
"""Meta-World 3.x only ships v3 tasks; names without a suffix are normalised to it."""

META_WORLD_OBS_DIM = 39


def allowed_stage_names() -> list[str]:
    """All Meta-World task names a stage may use (v3 names, sorted)."""
    return sorted(ALL_V3_ENVIRONMENTS)


def normalise_stage_name(name: str) -> str:
    """`push` -> `push-v3`; a full v3 name is kept; anything else raises ValueError naming what is allowed."""
    candidate = name.strip()
    if not candidate.endswith(TASK_VERSION_SUFFIX):
        candidate = candidate + TASK_VERSION_SUFFIX
    if candidate not in ALL_V3_ENVIRONMENTS:
        raise ValueError(
            f"unknown Meta-World stage {name!r}; allowed (Meta-World {TASK_VERSION_SUFFIX[1:]} tasks, "
            f"the '{TASK_VERSION_SUFFIX}' suffix is optional): {', '.join(allowed_stage_names())}"
        )
    return candidate


def short_stage_name(name: str) -> str:
    """Stage name without the version suffix (`peg-unplug-side-v3` -> `peg-unplug-side`)."""
    return name[: -len(TASK_VERSION_SUFFIX)] if name.endswith(TASK_VERSION_SUFFIX) else name


class Options(BaseModel):
    """Validated options of a RoboticSequence env."""

    model_config = ConfigDict(extra="forbid", strict=True)

    stages: list[str] = list(DEFAULT_STAGES)
    """Meta-World v3 task names, in the order they must be solved (E_1..E_N)."""
    stage_time_limit: int = 200
    """T: steps allowed per stage; the clock t restarts when a stage is solved."""
    success_reward_multiplier: float = 1.5
    """β in r' = β · r · (T − t) on a stage's success step."""
    start_stage: int = 0
    """Index (from 0) of the stage each episode starts in (FAR evaluation starts later)."""
    num_stages_to_run: int | None = None
    """Stop (successfully) after this many stages from `start_stage`; None = run to the last stage."""
    pretrained_stages: list[str] | None = None
    """Stages π* was pre-trained on (the FAR stages); None = the last two stages."""
    timeout_is_terminal: bool = True
    """Paper: a stage time-out is terminal for SAC (terminated=True). False reports truncated=True."""
    seed: int | None = None
    """Seed for the first reset when `reset` is called without one (None = fresh entropy)."""

    @field_validator("stages")
    @classmethod
    def _known_stages(cls, stages: list[str]) -> list[str]:
        if not stages:
            raise ValueError("stages must name at least one Meta-World task")
        return [normalise_stage_name(name) for name in stages]

    @field_validator("pretrained_stages")
    @classmethod
    def _known_pretrained_stages(cls, stages: list[str] | None) -> list[str] | None:
        return None if stages is None else [normalise_stage_name(name) for name in stages]

    @field_validator("stage_time_limit")
    @classmethod
    def _positive_time_limit(cls, limit: int) -> int:
        if limit < 1:
            raise ValueError(f"stage_time_limit must be >= 1, got {limit}")
        return limit

    @model_validator(mode="after")
    def _consistent_stage_range(self) -> "Options":
        num_stages = len(self.stages)
        if not 0 <= self.start_stage < num_stages:
            raise ValueError(
                f"start_stage must be in 0..{num_stages - 1} for {num_stages} stages, got {self.start_stage}"
            )
        if self.num_stages_to_run is not None:
            remaining = num_stages - self.start_stage
            if not 1 <= self.num_stages_to_run <= remaining:
                raise ValueError(
                    f"num_stages_to_run must be in 1..{remaining} when start_stage={self.start_stage} "
                    f"of {num_stages} stages, got {self.num_stages_to_run}"
                )
        if self.pretrained_stages is not None:
            unknown = [name for name in self.pretrained_stages if name not in self.stages]
            if unknown:
                raise ValueError(
                    f"pretrained_stages {unknown} are not in stages; allowed: {', '.join(self.stages)}"
                )
        return self


def _make_stage_env(name: str, horizon: int) -> SawyerXYZEnv:
    """A Meta-World v3 task env with observable goal that samples a new random position at every reset.

    Continual World's `random_init_all`: the task is set once (to fix its kwargs and make the goal
    observable, as in MT benchmarks), then the position vector is unfrozen and drawn from the env's
    own seeded generator at every reset.
    """
    env_cls = ALL_V3_ENVIRONMENTS[name]
    env: SawyerXYZEnv = env_cls(reward_function_version="v2")
    # A Task needs *some* position vector; it is replaced by a fresh draw at every reset below.
    placeholder = np.asarray(env._random_reset_space.low, dtype=np.float64)  # type: ignore[union-attr]
    task_data = {"env_cls": env_cls, "rand_vec": placeholder, "partially_observable": False}
    env.set_task(Task(env_name=name, data=pickle.dumps(task_data)))
    env._freeze_rand_vec = False  # Meta-World 3.1.1: False = draw a new vector at every reset
    env.seeded_rand_vec = True  # ... from env.np_random (seeded by env.seed) rather than np.random
    env.max_path_length = max(env.max_path_length, horizon)
    return env


class RoboticSequenceEnv(gym.Env):
    """Meta-World tasks solved in sequence within one episode (paper Algorithm 1); see the module doc."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, options: dict[str, Any] | Options | None = None) -> None:
        opts = options if isinstance(options, Options) else Options.model_validate(options or {})
        self.options = opts
        self.stage_names: list[str] = list(opts.stages)
        self.num_stages = len(self.stage_names)
        self.time_limit = opts.stage_time_limit  # T
        self.success_reward_multiplier = opts.success_reward_multiplier  # β
        self.start_stage = opts.start_stage
        num_to_run = opts.num_stages_to_run or (self.num_stages - opts.start_stage)
        self.last_stage = opts.start_stage + num_to_run - 1  # episode succeeds when this one is solved
        self.timeout_is_terminal = opts.timeout_is_terminal
        self._first_seed = opts.seed
        self._seeded_once = False

        # One env per distinct task name; a name listed twice shares its env (only one runs at a time).
        self._stage_envs: dict[str, SawyerXYZEnv] = {}
        for name in self.stage_names:
            if name not in self._stage_envs:
                self._stage_envs[name] = _make_stage_env(name, self.time_limit)

        obs_dim = META_WORLD_OBS_DIM + self.num_stages + 1
        low = np.full(obs_dim, -np.inf, dtype=np.float32)
        high = np.full(obs_dim, np.inf, dtype=np.float32)
        low[META_WORLD_OBS_DIM:] = 0.0
        high[META_WORLD_OBS_DIM:] = 1.0
        # Meta-World's own bounds are not respected by its reset observations, hence ±inf there.
        self.observation_space = gym.spaces.Box(low, high, dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(4,), dtype=np.float32)

        self.stage = self.start_stage  # i (0-based)
        self.stage_step = 0  # t: steps taken in the current stage
        self.stages_solved = 0
        self._solved: dict[int, bool] = {}
        self._episode_over = True

    # ----------------------------------------------------------------------------------- helpers
    def _stage_env(self, stage: int) -> SawyerXYZEnv:
        return self._stage_envs[self.stage_names[stage]]

    def _observation(self, meta_world_obs: np.ndarray, stage: int, stage_step: int) -> np.ndarray:
        """[Meta-World obs | one-hot(stage) | t/T]."""
        features = np.zeros(self.num_stages + 1, dtype=np.float32)
        features[stage] = 1.0
        features[-1] = stage_step / self.time_limit
        return np.concatenate([np.asarray(meta_world_obs, dtype=np.float32), features])

    def _enter_stage(self, stage: int) -> np.ndarray:
        """Reset stage `stage`'s env (new random positions), restart the clock, return its observation."""
        self.stage = stage
        self.stage_step = 0
        meta_world_obs, _ = self._stage_env(stage).reset()
        return self._observation(meta_world_obs, stage, 0)

    def _seed_stage_envs(self) -> None:
        """Give every stage env its own seed drawn from this env's generator."""
        for name in sorted(self._stage_envs):  # sorted: independent of dict construction details
            self._stage_envs[name].seed(int(self.np_random.integers(2**31 - 1)))

    # ------------------------------------------------------------------------------ gym.Env API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode at `start_stage`; `seed` reseeds this env and every stage env."""
        if seed is None and not self._seeded_once:
            seed = self._first_seed
        if seed is not None or not self._seeded_once:
            super().reset(seed=seed)
            self._seed_stage_envs()
            self._seeded_once = True
        self.stages_solved = 0
        self._solved = {k: False for k in range(self.start_stage, self.last_stage + 1)}
        self._episode_over = False
        obs = self._enter_stage(self.start_stage)
        info = {
            "stage": self.stage,
            "stage_name": self.stage_names[self.stage],
            "stages_solved": 0,
            "success": False,
        }
        return obs, info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        """One step of the current stage (Algorithm 1's loop body)."""
        if self._episode_over:
            raise RuntimeError("RoboticSequenceEnv.step called after the episode ended; call reset() first")
        stage = self.stage
        meta_world_obs, raw_reward, _, _, mw_info = self._stage_env(stage).step(
            np.asarray(action, dtype=np.float32)
        )
        self.stage_step += 1  # t of Algorithm 1 for this step (1..T)
        t = self.stage_step
        stage_success = bool(mw_info["success"])
        reward = float(raw_reward)
        terminated = truncated = time_out = False
        stage_done = False
        info: dict[str, Any] = {}

        if stage_success:
            # r'_t = β · r_t · (T − t): the earlier the stage is solved, the larger the bonus.
            reward = self.success_reward_multiplier * float(raw_reward) * (self.time_limit - t)
            self._solved[stage] = True
            self.stages_solved += 1
            stage_done = True
            final_obs = self._observation(meta_world_obs, stage, t)
            if stage == self.last_stage:
                terminated = True
                obs = final_obs
            else:
                info["stage_final_observation"] = final_obs
                obs = self._enter_stage(stage + 1)  # i <- i + 1, t <- 1
        else:
            obs = self._observation(meta_world_obs, stage, t)
            if t >= self.time_limit:  # Algorithm 1 leaves the loop: the episode ends
                time_out = stage_done = True
                terminated = self.timeout_is_terminal
                truncated = not self.timeout_is_terminal

        episode_success = terminated and not time_out
        info.update(
            {
                "stage": stage,
                "stage_name": self.stage_names[stage],
                "stages_solved": self.stages_solved,
                "stage_success": stage_success,
                "stage_done": stage_done,
                "time_out": time_out,
                "raw_reward": float(raw_reward),
                "success": episode_success,
            }
        )
        if terminated or truncated:
            self._episode_over = True
            for k, solved in self._solved.items():
                info[f"stage_{k}_success"] = solved
        return obs, reward, terminated, truncated, info

    def render_frame(self, width: int = 240, height: int = 180) -> np.ndarray:
        """The current stage's scene as (height, width, 3) uint8, from MuJoCo's offscreen renderer.
        Headless, MuJoCo needs `MUJOCO_GL=egl` (or osmesa) before it loads: `ftcl evaluate --video`
        sets it (`ftcl.evaluation.video.use_headless_rendering`). Drawn without shadows and
        multisampling: on a CPU (Mesa's software GL) that is ≈ 10× faster (19 vs 160–250 ms a frame
        on the 2-core VM) and looks the same at this size."""
        env = self._stage_env(self.stage)
        renderer = env.mujoco_renderer
        if env.render_mode != "rgb_array" or (renderer.width, renderer.height) != (width, height):
            env.model.vis.quality.offsamples, env.model.vis.quality.shadowsize = 0, 0  # read when the viewer is made
            env.render_mode = "rgb_array"
            renderer.close()
            renderer._viewers.clear()  # gymnasium 1.2's close() keeps the closed viewers
            renderer.viewer, renderer.width, renderer.height = None, width, height
            renderer.camera_id = mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_CAMERA, VIDEO_CAMERA)
        return np.ascontiguousarray(np.flipud(np.asarray(env.render(), dtype=np.uint8)))

    def close(self) -> None:
        """Close every stage env."""
        for env in self._stage_envs.values():
            env.close()
        super().close()


def make_env(options: dict[str, Any]) -> gym.Env:
    """The RoboticSequence env for validated options (see `Options`)."""
    return RoboticSequenceEnv(options)


def stage_suite_name(stage: int, stage_name: str) -> str:
    """Suite name of stage `stage` alone, e.g. `stage_2_peg-unplug-side`."""
    return f"stage_{stage}_{short_stage_name(stage_name)}"


def evaluation_suites(options: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Suite name -> option overrides: `stage_<k>_<task>` starts at stage k and stops after it (that
    stage's success alone); `full` runs the whole sequence from stage 0."""
    opts = Options.model_validate(options)
    suites: dict[str, dict[str, Any]] = {
        stage_suite_name(k, name): {"start_stage": k, "num_stages_to_run": 1}
        for k, name in enumerate(opts.stages)
    }
    suites["full"] = {"start_stage": 0, "num_stages_to_run": None}
    return suites


def far_suites(options: dict[str, Any]) -> list[str]:
    """Names of the FAR suites: the stage suites of `pretrained_stages` (default: the last two stages)."""
    opts = Options.model_validate(options)
    if opts.pretrained_stages is None:
        far_indices = list(range(max(0, len(opts.stages) - 2), len(opts.stages)))
    else:
        far_indices = [k for k, name in enumerate(opts.stages) if name in opts.pretrained_stages]
    return [stage_suite_name(k, opts.stages[k]) for k in far_indices]


def scripted_policy_class_name(stage_name: str) -> str:
    """Meta-World's scripted-policy class for a v3 task: `push-wall-v3` -> `SawyerPushWallV3Policy`."""
    words = short_stage_name(normalise_stage_name(stage_name)).split("-")
    return "Sawyer" + "".join(word.capitalize() for word in words) + "V3Policy"


class ScriptedExpert:
    """Meta-World's hand-written expert of each stage, acting on RoboticSequence observations.

    `action(obs)` reads the stage from the observation's one-hot and returns that stage's scripted
    action for the 39-d Meta-World part, clipped to [-1, 1] (what the env applies anyway).
    """

    def __init__(self, stages: list[str]) -> None:
        import metaworld.policies as scripted  # imported here: only demonstrations need it

        self.policies = []
        missing = []
        for name in stages:
            class_name = scripted_policy_class_name(name)
            if not hasattr(scripted, class_name):
                missing.append(name)
            else:
                self.policies.append(getattr(scripted, class_name)())
        if missing:
            raise ValueError(f"Meta-World has no scripted expert for stage(s) {missing}; demonstrations need one per stage")
        self.num_stages = len(stages)

    def action(self, observation: np.ndarray) -> np.ndarray:
        stage = int(np.argmax(observation[META_WORLD_OBS_DIM : META_WORLD_OBS_DIM + self.num_stages]))
        raw = self.policies[stage].get_action(np.asarray(observation[:META_WORLD_OBS_DIM], dtype=np.float64))
        return np.clip(raw, -1.0, 1.0).astype(np.float32)


def scripted_expert(options: dict[str, Any]) -> ScriptedExpert:
    """The scripted expert for these options' stages (used for pre-training demonstrations)."""
    return ScriptedExpert(list(Options.model_validate(options).stages))


def suite_state_mask(
    options: dict[str, Any], suite_overrides: dict[str, Any], observations: np.ndarray
) -> np.ndarray:
    """Which observations (rows of an (n, obs_dim) array) lie in a suite's stages.

    A suite runs stages k = start_stage .. start_stage + num_stages_to_run − 1 (to the last stage
    when None); a row belongs to it when its stage one-hot, obs[:, 39 : 39 + N], marks one of them.
    E.g. `stage_3_push-wall` selects the rows with obs[:, 39 + 3] == 1; `full` selects every row.
    """
    opts = Options.model_validate({**options, **suite_overrides})
    num_stages = len(opts.stages)
    last = num_stages if opts.num_stages_to_run is None else opts.start_stage + opts.num_stages_to_run
    one_hot = np.asarray(observations)[:, META_WORLD_OBS_DIM : META_WORLD_OBS_DIM + num_stages]
    return one_hot[:, opts.start_stage : last].max(axis=1) == 1.0
