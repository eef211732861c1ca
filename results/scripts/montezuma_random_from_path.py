"""Results/montezuma.md §4: success of uniformly random actions from each Room-7 path state (10 episodes each)."""
import numpy as np
from ftcl.envs.montezuma import MontezumaEnv
from ftcl.envs.montezuma_states import load_start_states
path = "artifacts/montezuma/room7_path/start_states.npz"
states = load_start_states(path)
rng = np.random.default_rng(0)
for name in [n for n in states.names if n.startswith("room7_step")]:
    env = MontezumaEnv({"start_states": path, "start_state": name, "end_on_room_exit": True, "success_reward": 1.0, "max_episode_steps": 300})
    results = []
    for episode in range(10):
        env.reset(seed=episode)
        done = False
        while not done:
            _, _, terminated, truncated, info = env.step(int(rng.integers(18)))
            done = terminated or truncated
        results.append(info["success"])
    env.close()
    info = states.info_of(name)
    print(f"| {name} | {info['x']} | {info['y']} | {np.mean(results):.1f} |")
