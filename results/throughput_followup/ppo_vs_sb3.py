"""Interleaved env steps/s of RetentionPPO variants and SB3 PPO (CartPole, 2×64 tanh,
4000 steps/iteration, minibatch 128, 10 epochs, 0 env runners).

Usage: python ppo_vs_sb3.py NUM_ENVS REPEATS [sb3]   (one algo.train() / model.learn(4000) per window)
"""
import os, sys, time, statistics
import torch
from ftcl import bench as B

num_envs = int(sys.argv[1]); repeats = int(sys.argv[2]); with_sb3 = "sb3" in sys.argv[3:]
import ray
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
runs = {}
base = B.ppo_config(0, num_envs)
runs["ftcl (this code, defaults)"] = base.build_algo()
if hasattr(base, "throughput"):
    runs["ftcl + per_connector_timers=False"] = B.ppo_config(0, num_envs).throughput(per_connector_timers=False).build_algo()
torch.set_num_threads(1)
steps = {}
def step_ftcl(algo):
    t = time.perf_counter(); before = B.env_steps_sampled(algo); algo.train()
    return (B.env_steps_sampled(algo) - before) / (time.perf_counter() - t)
fns = {k: (lambda a=a: step_ftcl(a)) for k, a in runs.items()}
if with_sb3:
    from stable_baselines3 import PPO as SB3PPO
    from stable_baselines3.common.env_util import make_vec_env
    env = make_vec_env("CartPole-v1", n_envs=num_envs, seed=0)
    model = SB3PPO("MlpPolicy", env, n_steps=B.PPO_BATCH // num_envs, batch_size=B.PPO_MINIBATCH, n_epochs=B.PPO_EPOCHS,
                   policy_kwargs={"net_arch": {"pi": B.PPO_HIDDENS, "vf": B.PPO_HIDDENS}, "activation_fn": torch.nn.Tanh}, seed=0, device="cpu", verbose=0)
    model.learn(total_timesteps=B.PPO_BATCH)
    def step_sb3():
        t = time.perf_counter(); model.learn(total_timesteps=B.PPO_BATCH, reset_num_timesteps=False)
        return B.PPO_BATCH / (time.perf_counter() - t)
    fns[f"SB3 PPO ({num_envs} env)"] = step_sb3
for f in fns.values(): f()  # warm-up
res = {k: [] for k in fns}
print("load before", os.getloadavg())
for _ in range(repeats):
    for k, f in fns.items(): res[k].append(f())
print("load after", os.getloadavg())
for k, v in res.items():
    print(f"{num_envs} env(s) | {k}: median {statistics.median(v):,.0f} env steps/s  (windows: {', '.join(f'{x:,.0f}' for x in v)})")
for a in runs.values(): a.stop()
ray.shutdown()
