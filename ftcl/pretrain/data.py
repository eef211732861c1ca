"""Pre-training data for retention methods: transitions collected by π*, stored as one .npz.

Keys (one row per transition): obs, actions, rewards, next_obs, terminateds, truncateds, and
action_dist_inputs (π*'s distribution inputs at obs). BC and EWC read `obs` (EWC with
`fisher_labels: dataset` also `actions`); EM reads the full transitions.

Actions are stored as the policy emits them (for a Box action space with normalised actions:
in [-1, 1], as RLlib's episodes and replay buffers keep them); the env receives them rescaled
to its bounds, as RLlib's module-to-env connector does.
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import gymnasium as gym
import numpy as np
import torch

TRANSITION_KEYS = ("obs", "actions", "rewards", "next_obs", "terminateds", "truncateds")
ALL_KEYS = TRANSITION_KEYS + ("action_dist_inputs",)


def _env_action(action: np.ndarray, space: gym.Space, normalize_actions: bool) -> Any:
    """The action handed to the env: ints for Discrete, rescaled from [-1, 1] for Box."""
    if isinstance(space, gym.spaces.Discrete):
        return int(action)
    if normalize_actions:
        # low + (a + 1)·(high − low)/2, with a clipped to [-1, 1]
        clipped = np.clip(action, -1.0, 1.0)
        return (space.low + (clipped + 1.0) * (space.high - space.low) / 2.0).astype(space.dtype)
    return np.clip(action, space.low, space.high).astype(space.dtype)


@torch.no_grad()
def collect_policy_data(
    module: Any,
    env: gym.Env,
    num_transitions: int,
    seed: int,
    explore: bool = True,
    normalize_actions: bool = True,
) -> dict[str, np.ndarray]:
    """Roll out an RLModule (π*) in `env` for `num_transitions` steps; returns the arrays above.

    explore=True samples from π*'s exploration distribution, False takes its deterministic
    action. Episodes are reset (seeded from `seed`) whenever they terminate or truncate.
    """
    from ray.rllib.core.columns import Columns  # the module is an RLlib RLModule

    device = next(iter(module.parameters()), torch.zeros(())).device if hasattr(module, "parameters") else "cpu"

    def act(observation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        obs_tensor = torch.as_tensor(np.asarray(observation, dtype=np.float32), device=device)[None]
        batch = {Columns.OBS: obs_tensor}
        if explore:
            inputs = module.forward_exploration(batch)[Columns.ACTION_DIST_INPUTS]
            action = module.get_exploration_action_dist_cls().from_logits(inputs).sample()
        else:
            inputs = module.forward_inference(batch)[Columns.ACTION_DIST_INPUTS]
            action = module.get_inference_action_dist_cls().from_logits(inputs).to_deterministic().sample()
        return action[0].cpu().numpy(), inputs[0].cpu().numpy()

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return collect_transitions(act, env, num_transitions, seed, normalize_actions)


def collect_transitions(
    act: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    env: gym.Env,
    num_transitions: int,
    seed: int,
    normalize_actions: bool = True,
) -> dict[str, np.ndarray]:
    """Roll out `act(obs) -> (action, action_dist_inputs)` for `num_transitions` steps (module doc keys).

    Episodes are reset (seeded from `seed`, then seed + k for the k-th episode) whenever they end.
    """
    if num_transitions <= 0:
        raise ValueError(f"num_transitions must be positive; got {num_transitions}")
    rows: dict[str, list[np.ndarray]] = {key: [] for key in ALL_KEYS}
    observation, _ = env.reset(seed=seed)
    episode = 0
    while len(rows["obs"]) < num_transitions:
        action, inputs = act(observation)
        next_observation, reward, terminated, truncated, info = env.step(
            _env_action(action, env.action_space, normalize_actions)
        )
        # RoboticSequence: a solved intermediate stage is terminal for the critic (no bootstrap,
        # paper §2.3) although the episode goes on; store it as such for episodic memory.
        stage_done = bool(info.get("stage_done", False)) and not truncated
        rows["obs"].append(np.asarray(observation, dtype=np.float32))
        rows["actions"].append(np.asarray(action))
        rows["rewards"].append(np.float32(reward))
        rows["next_obs"].append(np.asarray(next_observation, dtype=np.float32))
        rows["terminateds"].append(np.bool_(terminated or stage_done))
        rows["truncateds"].append(np.bool_(truncated))
        rows["action_dist_inputs"].append(np.asarray(inputs, dtype=np.float32))
        if terminated or truncated:
            episode += 1
            observation, _ = env.reset(seed=seed + episode)
        else:
            observation = next_observation
    # the last row ends the collection: mark it truncated so episodes never run across files
    rows["truncateds"][-1] = np.bool_(True) if not rows["terminateds"][-1] else rows["truncateds"][-1]
    return {key: np.stack(values) for key, values in rows.items()}


def check_retention_shapes(
    shapes: Mapping[str, tuple[int, ...]],
    required_keys: Iterable[str],
    min_rows: int = 1,
    source: str = "retention data",
) -> None:
    """Raise ValueError naming missing keys, ragged arrays, or too few rows (from array shapes)."""
    required = list(required_keys)
    missing = [key for key in required if key not in shapes]
    if missing:
        raise ValueError(f"{source} lacks key(s) {missing}; present: {sorted(shapes)}")
    lengths = {key: (shape[0] if shape else 0) for key, shape in shapes.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"{source} has arrays of different lengths: {lengths}")
    rows = next(iter(lengths.values()), 0)
    if rows < min_rows:
        raise ValueError(f"{source} holds {rows} rows; at least {min_rows} are needed")


def check_retention_data(
    data: Mapping[str, np.ndarray],
    required_keys: Iterable[str],
    min_rows: int = 1,
    source: str = "retention data",
) -> None:
    """`check_retention_shapes` on loaded arrays."""
    check_retention_shapes({key: np.shape(value) for key, value in data.items()}, required_keys, min_rows, source)


def retention_data_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Key -> array shape of an .npz, read from the array headers only (no array is loaded).

    ValueError names a file that is not a readable .npz; FileNotFoundError a missing one.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"retention data file not found: {path}")
    shapes: dict[str, tuple[int, ...]] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                if not member.endswith(".npy"):
                    continue
                with archive.open(member) as stream:
                    major, _ = np.lib.format.read_magic(stream)
                    read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                    shape, _, _ = read_header(stream)
                shapes[member[: -len(".npy")]] = tuple(shape)
    except (zipfile.BadZipFile, ValueError, OSError) as error:
        raise ValueError(f"retention data {path} is not a readable .npz ({error})") from None
    return shapes


def save_retention_data(path: str | Path, data: Mapping[str, np.ndarray]) -> Path:
    """Write `data` to a compressed .npz (after checking the transition keys); returns the path."""
    check_retention_data(data, ("obs",), source="data to save")
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"retention data files end in .npz; got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.stem + ".partial.npz")
    np.savez_compressed(temporary, **{key: np.asarray(value) for key, value in data.items()})
    temporary.replace(path)  # nothing half-written under the final name
    return path


def load_retention_data(path: str | Path) -> dict[str, np.ndarray]:
    """Read an .npz written by `save_retention_data` (FileNotFoundError names the path)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"retention data file not found: {path}")
    with np.load(path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}
