"""pyinstrument profile of two RetentionPPO.train() iterations (bench's PPO setting).

Usage: python ppo_profile.py NUM_ENVS {timers|notimers}   (notimers: per_connector_timers=False)
"""
import os, sys, time
import torch
from pyinstrument import Profiler
from ftcl import bench as B
import ray
num_envs = int(sys.argv[1]); timers = sys.argv[2] == "timers"
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
cfg = B.ppo_config(0, num_envs)
if not timers: cfg = cfg.throughput(per_connector_timers=False)
algo = cfg.build_algo(); torch.set_num_threads(1)
algo.train()
print("load", os.getloadavg())
p = Profiler(interval=0.0005); p.start()
t = time.perf_counter()
for _ in range(2): algo.train()
wall = (time.perf_counter() - t) / 2
p.stop()
print(f"{1000*wall:.0f} ms/iteration under pyinstrument = {B.PPO_BATCH/wall:.0f} env steps/s")
print(p.output_text(unicode=False, color=False, show_all=False, timeline=False))
algo.stop(); ray.shutdown()
