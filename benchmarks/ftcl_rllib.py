"""ftcl's RLlib algorithms as configured by default: RetentionSAC/RetentionPPO throughput, learner costs.

Retention methods need π* and its data: `make_pretrained_artifacts` builds a module of the
config's class with random weights, saves it as π* (`save_pi_star`) and collects transitions
with it (`ftcl.pretrain.data`, `ftcl.data.retention_data`); BC/EWC/EM are sized to that data (`method_settings`). Per-update
cost does not depend on those sizes (BC samples `batch_size`=128 states per update; EWC's Fisher
is computed once at setup; EM only changes which rows are replayed).

The learner rows time the learner alone on one fixed batch, all methods interleaved window by
window (`benchmarks.common.interleaved_update_ms`); only public RLlib API reaches the learner
(`LearnerGroup.foreach_learner`).
"""
from __future__ import annotations

import cProfile
import math
import pstats
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from benchmarks.common import (
    PPO_BATCH, PPO_HIDDENS, PPO_METHODS, PPO_MINIBATCH, PPO_EPOCHS, SAC_BATCH, SAC_ENV_NAME, SAC_HIDDENS, SAC_METHODS,
    SAC_STAGE, Row, interleaved_update_ms, median_pair, overhead_note, ray_session, register_robotic_sequence,
    robotic_sequence_env,
)

TIMESTEPS = {"num_env_steps_sampled_lifetime": 10_000}
"""What the fixed-batch learner updates are told about progress (past every warm-up schedule)."""
VARIANTS = ("", "sep", "loop")
"""Method-name suffixes of the learner rows: `bc_sep` runs BC's states in their own actor forward
(PPO; default: fused into the RL batch's forward), `l2_loop`/`ewc_loop` compute the penalty
with a per-parameter loop (default: one fused autograd node)."""


# ---------------------------------------------------------------------------------------- configs
def sac_config(num_steps_per_learner_call: int) -> Any:
    """RetentionSACConfig: paper networks, batch 128, UTD 1, local env runner and learner."""
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from ftcl.algorithms.sac import RetentionSACConfig
    from ftcl.models.mlp_sac import MLPSACTorchRLModule

    return (
        RetentionSACConfig()
        .environment(register_robotic_sequence(), env_config={"stages": [SAC_STAGE], "seed": 0})
        .env_runners(num_env_runners=0, rollout_fragment_length=num_steps_per_learner_call)
        .learners(num_learners=0)
        .rl_module(rl_module_spec=RLModuleSpec(module_class=MLPSACTorchRLModule, model_config={"fcnet_hiddens": SAC_HIDDENS}))
        .training(
            train_batch_size_per_learner=SAC_BATCH,
            num_steps_sampled_before_learning_starts=2 * SAC_BATCH,
            replay_buffer_config={"type": "EpisodeReplayBuffer", "capacity": 100_000},
            # training_intensity = replayed / sampled steps = batch × UTD
            training_intensity=SAC_BATCH if num_steps_per_learner_call > 1 else None,
        )
        .reporting(min_time_s_per_iteration=0, min_sample_timesteps_per_iteration=num_steps_per_learner_call)
        .debugging(seed=0, log_level="ERROR")
    )


def ppo_config(num_env_runners: int, num_envs: int = 1) -> Any:
    """RetentionPPOConfig on CartPole: 2×64 tanh actor and critic, 4000 steps/iteration, minibatch 128, 10 epochs."""
    from ftcl.algorithms.ppo import RetentionPPOConfig

    return (
        RetentionPPOConfig()
        .environment("CartPole-v1")
        .env_runners(num_env_runners=num_env_runners, num_envs_per_env_runner=num_envs)
        .learners(num_learners=0)
        .rl_module(model_config={"fcnet_hiddens": PPO_HIDDENS, "fcnet_activation": "tanh", "vf_share_layers": False})
        .training(train_batch_size_per_learner=PPO_BATCH, minibatch_size=PPO_MINIBATCH, num_epochs=PPO_EPOCHS)
        .reporting(min_time_s_per_iteration=0)
        .debugging(seed=0, log_level="ERROR")
    )


def method_settings(name: str, data_rows: int) -> dict[str, Any]:
    """The method dicts the benchmark runs (data-sized where the paper's sizes exceed the data)."""
    settings = {
        "finetune": {"name": "finetune"},
        "l2": {"name": "l2", "coeff": 1.0},
        "ewc": {"name": "ewc", "coeff": 100.0, "fisher_batches": max(1, data_rows // 256), "fisher_batch_size": min(256, data_rows)},
        "bc": {"name": "bc", "coeff": 1.0, "buffer_size": data_rows, "batch_size": 128},
        "ks": {"name": "ks", "coeff": 0.5},
        "em": {"name": "em", "memory_size": data_rows},
    }
    return settings[name]


def data_note(data_rows: int) -> str:
    """How the retention data and the data-sized methods were set up."""
    ewc = method_settings("ewc", data_rows)
    return (f"{data_rows} transitions from a random-weight π* (bc buffer_size={data_rows}, ewc fisher "
            f"{ewc['fisher_batches']}×{ewc['fisher_batch_size']}, em memory_size={data_rows})")


def make_pretrained_artifacts(config: Any, make_env: Callable[[], Any], directory: Path, data_rows: int) -> tuple[Path, Path]:
    """A module of the config's class (random weights, saved) and `data_rows` transitions it collected."""
    from ftcl.algorithms.pi_star import save_pi_star
    from ftcl.data.retention_data import save_retention_data
    from ftcl.pretrain.data import collect_policy_data

    env = make_env()
    spec = config.get_rl_module_spec(env=env)
    spec.observation_space, spec.action_space = env.observation_space, env.action_space
    module = spec.build()
    module_dir = directory / "module"
    save_pi_star(module, module_dir, log_alpha=math.log(0.2) if config.supports_replay else None)
    data = collect_policy_data(module, env, num_transitions=data_rows, seed=1)
    data_path = save_retention_data(directory / "data.npz", data)
    env.close()
    return module_dir, data_path


def build_with_method(config: Any, method: str, data_rows: int, module_dir: Path, data_path: Path) -> Any:
    """`config.retention(method=..., π*, data).build_algo()`."""
    return config.retention(
        method=method_settings(method, data_rows), pretrained_module_path=module_dir, retention_data_path=data_path
    ).build_algo()


# ---------------------------------------------------------------------------------------- counters
def on_learner(algo: Any, function: Callable[[Any], Any]) -> Any:
    """`function(learner)` on the algorithm's (local) learner; its return value."""
    return next(iter(algo.learner_group.foreach_learner(function))).get()


def env_steps_sampled(algo: Any) -> int:
    """Env steps sampled so far (RLlib's lifetime counter)."""
    from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME

    return int(algo.metrics.peek((ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME), default=0))


def optimizer_steps(algo: Any) -> int:
    """Gradient steps taken so far: the largest Adam step count among the module's optimizers."""
    from ray.rllib.core import DEFAULT_MODULE_ID

    def count(learner: Any) -> int:
        counts = [0]
        for _, optimizer in learner.get_optimizers_for_module(DEFAULT_MODULE_ID):
            for state in optimizer.state.values():
                step = state.get("step")
                if step is not None:
                    counts.append(int(step))
                break
        return max(counts)

    return on_learner(algo, count)


def rllib_rates(algo: Any, steps: int, repeats: int, warmup_steps: int) -> list[tuple[float, float]]:
    """(env steps/s, gradient steps/s) over `repeats` windows of ≥ `steps` env steps each."""
    while env_steps_sampled(algo) < warmup_steps:
        algo.train()
    results = []
    for _ in range(repeats):
        steps_before, updates_before = env_steps_sampled(algo), optimizer_steps(algo)
        start = time.perf_counter()
        while env_steps_sampled(algo) < steps_before + steps:
            algo.train()
        elapsed = time.perf_counter() - start
        results.append(((env_steps_sampled(algo) - steps_before) / elapsed, (optimizer_steps(algo) - updates_before) / elapsed))
    return results


def timed_build(config: Any, method: str, data_rows: int, artifacts: tuple[Path, Path], window: int, repeats: int,
                warmup_steps: int) -> tuple[float, float, str]:
    """Build with `method`, time it (median env steps/s, updates/s), stop it; also its replay class."""
    import torch

    algo = build_with_method(config, method, data_rows, *artifacts)
    torch.set_num_threads(1)
    try:
        replay = type(algo.local_replay_buffer).__name__ if getattr(algo, "local_replay_buffer", None) is not None else ""
        env_rate, update_rate = median_pair(rllib_rates(algo, window, repeats, warmup_steps))
    finally:
        algo.stop()
    return env_rate, update_rate, replay


# ---------------------------------------------------------------------------------------- tables
def sac_rows(artifacts: tuple[Path, Path], data_rows: int, steps: int, repeats: int, steps_per_call: int,
             methods: list[str], sb3_rate: dict[int, float], plain_rate: float) -> list[Row]:
    """RetentionSAC rows: finetune with 1 env step per learner call, then every method with K."""
    rows = []
    finetune_rate = None
    for per_call, method_names in ((1, ["finetune"]), (steps_per_call, methods)):
        for method in method_names:
            window = steps if per_call > 1 else max(50, steps // 4)
            env_rate, update_rate, replay = timed_build(
                sac_config(per_call), method, data_rows, artifacts, window, repeats, 2 * SAC_BATCH + per_call)
            if per_call == steps_per_call and method == "finetune":
                finetune_rate = update_rate
            overhead = "" if method == "finetune" or per_call != steps_per_call or not finetune_rate else overhead_note(
                1000 / update_rate, 1000 / finetune_rate)
            ratio = f"{env_rate / sb3_rate[1]:.2f}× SB3(train_freq=1)"
            if per_call in sb3_rate and per_call != 1:
                ratio += f", {env_rate / sb3_rate[per_call]:.2f}× SB3(train_freq={per_call})"
            rows.append(Row("sac", "ftcl RetentionSAC", SAC_ENV_NAME, method, f"{replay}, {per_call} steps/learner call",
                            env_rate, update_rate, 1000 / update_rate, repeats,
                            note="; ".join(x for x in (ratio, f"{update_rate / plain_rate:.2f}× plain update rate", overhead) if x)))
    return rows


def ppo_rows(artifacts: tuple[Path, Path], data_rows: int, iterations: int, repeats: int, quick: bool,
             methods: list[str], sb3: dict[int, tuple[float, float]], plain_rate: float) -> list[Row]:
    """RetentionPPO rows for 0 and 2 env runners × 1..8 envs (every method on 0 runners)."""
    settings = (
        [(0, 1, methods), (0, 8, ["finetune"]), (2, 1, ["finetune"])] if quick
        else [(0, 1, methods), (0, 8, methods), (2, 1, ["finetune"]), (2, 4, ["finetune"])]
    )
    rows = []
    for num_env_runners, num_envs, method_names in settings:
        finetune_rate = None
        for method in method_names:
            env_rate, update_rate, _ = timed_build(
                ppo_config(num_env_runners, num_envs), method, data_rows, artifacts, iterations * PPO_BATCH, repeats, PPO_BATCH)
            if method == "finetune":
                finetune_rate = update_rate
            overhead = "" if method == "finetune" or not finetune_rate else overhead_note(1000 / update_rate, 1000 / finetune_rate)
            versus = f"{env_rate / sb3[1][0]:.2f}× SB3(1 env)"
            if num_envs in sb3 and num_envs != 1:
                versus += f", {env_rate / sb3[num_envs][0]:.2f}× SB3({num_envs} envs)"
            note = "; ".join(x for x in (versus, f"{update_rate / plain_rate:.2f}× plain update rate", overhead) if x)
            rows.append(Row("ppo", "ftcl RetentionPPO", "CartPole-v1", method, f"{num_env_runners} env runners × {num_envs} envs",
                            env_rate, update_rate, 1000 / update_rate, repeats, note=note))
    return rows


# ---------------------------------------------------------------------------------------- learner costs
def split_variant(name: str, allowed: list[str]) -> tuple[str, str]:
    """'bc_sep' -> ('bc', 'sep'); ValueError for an unknown method or suffix."""
    method, _, variant = name.partition("_")
    if method not in allowed or variant not in VARIANTS:
        raise ValueError(f"unknown learner method {name!r}; allowed: {allowed}, optionally suffixed _sep or _loop")
    return method, variant


def per_parameter_penalty(parameters: list[Any], anchors: list[Any], weights: list[Any]) -> Any:
    """Σ_i sum(w_i (θ_i − θ*_i)²), one autograd op chain per parameter tensor."""
    total = None
    for parameter, anchor, weight in zip(parameters, anchors, weights):
        term = (weight * (parameter - anchor) ** 2).sum()
        total = term if total is None else total + term
    return total


def apply_variant(algo: Any, variant: str) -> None:
    """Switch one learner to the `_sep` or `_loop` variant (VARIANTS) in place."""
    from ray.rllib.core import DEFAULT_MODULE_ID

    def separate_bc_forward(learner: Any) -> None:
        learner.module[DEFAULT_MODULE_ID].unwrapped().supports_extra_actor_observations = False

    def loop_penalty(learner: Any) -> None:
        term = learner.retention_term
        if not hasattr(term, "_anchored_sum"):
            raise ValueError(f"_loop needs an anchored-parameter method (l2, ewc); got {type(term).__name__}")
        term._anchored_sum = lambda params: per_parameter_penalty(
            list(params.values()), [term.anchor[n] for n in params], [term.importance[n] for n in params])

    if variant:
        on_learner(algo, separate_bc_forward if variant == "sep" else loop_penalty)


def sac_fixed_batch(algo: Any, updates: int) -> dict[str, Any]:
    """`updates` minibatches of 128 rows drawn from 2·128+50 env steps of random actions.

    The columns RLlib's SAC learner connector builds for 1-step returns (obs, actions, rewards,
    new_obs, terminateds, weights = 1, n_step = 1), stacked: tensors of `updates`·128 rows.
    """
    import torch
    from ray.rllib.core.columns import Columns

    parts: dict[str, list[np.ndarray]] = {key: [] for key in ("obs", "actions", "rewards", "next_obs", "terminateds")}
    for episode in algo.env_runner.sample(num_timesteps=2 * SAC_BATCH + 50, random_actions=True):
        length = len(episode)
        if length == 0:
            continue
        observations = np.asarray(episode.get_observations(slice(0, length + 1)), dtype=np.float32)
        parts["obs"].append(observations[:-1])
        parts["next_obs"].append(observations[1:])
        parts["actions"].append(np.asarray(episode.get_actions(slice(0, length)), dtype=np.float32))
        parts["rewards"].append(np.asarray(episode.get_rewards(slice(0, length)), dtype=np.float32))
        parts["terminateds"].append(np.arange(length) == length - 1 if episode.is_terminated else np.zeros(length, bool))
    columns = {key: np.concatenate(values) for key, values in parts.items()}
    rows = np.random.default_rng(0).integers(len(columns["obs"]), size=updates * SAC_BATCH)
    count = len(rows)
    return {
        Columns.OBS: torch.as_tensor(columns["obs"][rows]), Columns.ACTIONS: torch.as_tensor(columns["actions"][rows]),
        Columns.REWARDS: torch.as_tensor(columns["rewards"][rows]), Columns.NEXT_OBS: torch.as_tensor(columns["next_obs"][rows]),
        Columns.TERMINATEDS: torch.as_tensor(columns["terminateds"][rows]),
        "weights": torch.ones(count, dtype=torch.float32), "n_step": torch.ones(count, dtype=torch.int64),
    }


def update_on_minibatches(learner: Any, batch: dict[str, Any], num_minibatches: int) -> None:
    """`num_minibatches` consecutive `learner.update` calls on equal slices of `batch`.

    As a RetentionSAC training step runs them: the learner's metrics are reduced after the last
    call only (RLlib's `_no_metrics_reduce`, also used by its IMPALA learner).
    """
    from ray.rllib.core import DEFAULT_MODULE_ID
    from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

    size = len(next(iter(batch.values()))) // num_minibatches
    for index in range(num_minibatches):
        minibatch = SampleBatch({key: value[index * size:(index + 1) * size] for key, value in batch.items()})
        learner.update(batch=MultiAgentBatch({DEFAULT_MODULE_ID: minibatch}, env_steps=size), timesteps=TIMESTEPS,
                       _no_metrics_reduce=index < num_minibatches - 1)


def ppo_fixed_batch(algo: Any) -> tuple[Any, int]:
    """One 4000-step CartPole batch through PPO's learner connector; its number of minibatches.

    The pipeline PPO's learner builds: the config's learner connector with one extra timestep
    per episode prepended and GAE appended (as `PPOLearner.build` does).
    """
    from ray.rllib.connectors.learner import AddOneTsToEpisodesAndTruncate, GeneralAdvantageEstimation
    from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

    episodes = algo.env_runner.sample(num_timesteps=PPO_BATCH, random_actions=False)
    connector = algo.config.build_learner_connector(input_observation_space=None, input_action_space=None)
    connector.prepend(AddOneTsToEpisodesAndTruncate())
    connector.append(GeneralAdvantageEstimation(gamma=algo.config.gamma, lambda_=algo.config.lambda_))

    def build(learner: Any) -> Any:
        columns = connector(rl_module=learner.module, batch={}, episodes=episodes, shared_data={}, metrics=learner.metrics)
        return MultiAgentBatch({mid: SampleBatch(data) for mid, data in columns.items()},
                               env_steps=sum(len(episode) for episode in episodes))

    batch = on_learner(algo, build)
    return batch, -(-batch.env_steps() // PPO_MINIBATCH)


def learner_rows(which: str, artifacts: tuple[Path, Path], data_rows: int, methods: list[str], repeats: int,
                 updates: int = 50, part: str | None = None, profile: bool = False) -> list[Row]:
    """ms per learner update on one fixed batch, per method (VARIANTS suffixes allowed), interleaved.

    which: 'sac' (`updates` minibatches of 128 per call, as one training step of K=`updates`)
    or 'ppo' (1 epoch of minibatch-128 updates on 4000 steps). profile: print cProfile's 45 most
    expensive calls per method over `repeats` calls instead (rows then are under the profiler).
    """
    import torch

    algos: dict[str, Any] = {}
    try:
        for name in methods:
            method, variant = split_variant(name, SAC_METHODS if which == "sac" else PPO_METHODS)
            config = sac_config(50) if which == "sac" else ppo_config(0)
            algos[name] = build_with_method(config, method, data_rows, *artifacts)
            apply_variant(algos[name], variant)
        first = next(iter(algos.values()))
        if which == "sac":
            sac_batch = sac_fixed_batch(first, updates)

            def update(algo: Any) -> int:
                on_learner(algo, lambda learner: update_on_minibatches(learner, sac_batch, updates))
                return updates
        else:
            ppo_batch, minibatches = ppo_fixed_batch(first)

            def update(algo: Any) -> int:
                on_learner(algo, lambda learner: learner.update(
                    batch=ppo_batch, minibatch_size=PPO_MINIBATCH, num_epochs=1, timesteps=TIMESTEPS))
                return minibatches

        torch.set_num_threads(1)
        ms = profiled_update_ms(algos, update, repeats) if profile else interleaved_update_ms(algos, update, repeats)
    finally:
        for algo in algos.values():
            algo.stop()
    base = ms.get("finetune")
    system, env, setting = (
        ("ftcl RetentionSAC learner", "fixed replay batch", f"{updates} updates/call")
        if which == "sac" else ("ftcl RetentionPPO learner", "fixed 4000-step batch", "1 epoch, minibatch 128")
    )
    setting += ", under cProfile" if profile else ", interleaved"
    windows = repeats if profile else max(repeats, 3)
    return [Row(part or which, system, env, name, setting, None, 1000 / value, value, windows,
                note="" if name == "finetune" else overhead_note(value, base))
            for name, value in ms.items()]


def profiled_update_ms(algos: dict[str, Any], update: Callable[[Any], int], repeats: int) -> dict[str, float]:
    """Print a cProfile of `repeats` calls of `update(algo)` per entry; ms per step under the profiler."""
    ms = {}
    for name, algo in algos.items():
        update(algo)
        profiler = cProfile.Profile()
        count, start = 0, time.perf_counter()
        profiler.enable()
        for _ in range(repeats):
            count += update(algo)
        profiler.disable()
        ms[name] = 1000 * (time.perf_counter() - start) / count
        print(f"\n===== cProfile: {name}, {repeats} calls")
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(45)
    return ms


def learner_part(which: str, data_rows: int, methods: list[str], repeats: int, profile: bool) -> list[Row]:
    """`ftcl bench --only {sac,ppo}-learner`: π* artifacts, then `learner_rows`."""
    import gymnasium as gym

    with ray_session(), tempfile.TemporaryDirectory(prefix="ftcl_bench_") as scratch:
        config, make_env = (sac_config(1), robotic_sequence_env) if which == "sac" else (ppo_config(0), lambda: gym.make("CartPole-v1"))
        artifacts = make_pretrained_artifacts(config, make_env, Path(scratch), data_rows)
        return learner_rows(which, artifacts, data_rows, methods, repeats, part=f"{which}-learner", profile=profile)
