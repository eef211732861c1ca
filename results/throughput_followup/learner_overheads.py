"""Interleaved ms per learner update for retention methods (ftcl bench's fixed-batch setup).

Usage: python learner_overheads.py {sac|ppo} {time|prof} METHODS [REPEATS]
  METHODS: comma list of finetune, l2, ewc, bc, ks, em; suffix `_sep` = BC without the fused actor
  forward, `_loop` = L2/EWC with the per-parameter loop (toggles on the current code, so both
  variants run in the same process, window by window). `prof` prints cProfile per method.
Runs with whatever `ftcl` is importable: PYTHONPATH=<tree from git archive> for an older version.
"""
from __future__ import annotations
import cProfile, pstats, sys, tempfile, time, os, statistics
from pathlib import Path
import gymnasium as gym
import torch
from ftcl import bench as B

def variant(algo, name):
    """Toggles for in-process comparisons (new code only): *_sep = BC not fused; *_loop = L2/EWC per-parameter loop."""
    learner = algo.learner_group._learner
    if name.endswith("_sep"):
        learner._retention_module().supports_extra_actor_observations = False
    if name.endswith("_loop"):
        from ftcl.retention.l2 import anchored_squared_distance_reference
        term = learner.retention_term
        term._anchored_sum = lambda params, term=term: anchored_squared_distance_reference(
            list(params.values()), [term.anchor[n] for n in params], [term.importance[n] for n in params])
    return algo

def build_sac(methods, data_rows=2048, updates=50):
    from ftcl.algorithms.fast_replay import rows_to_train_batch, update_on_minibatches
    scratch = tempfile.mkdtemp(prefix="fu_")
    module_dir, data_path = B.make_pretrained_artifacts(B.sac_config(1, False), lambda: B.robotic_sequence_env(B.SAC_STAGE), Path(scratch), data_rows)
    algos = {}
    for m in methods:
        algos[m] = variant(B.sac_config(50, True).retention(method=B.method_settings(m.split("_")[0], data_rows), pretrained_module_path=module_dir, retention_data_path=data_path).build_algo(), m)
    first = next(iter(algos.values()))
    first.train()
    while len(first.local_replay_buffer) < 2 * B.SAC_BATCH:
        first.train()
    batch = rows_to_train_batch(first.local_replay_buffer.sample_rows(updates, B.SAC_BATCH))
    def update(algo):
        update_on_minibatches(algo.learner_group._learner, batch, updates, {"num_env_steps_sampled_lifetime": 10_000})
        return updates
    return algos, update

def build_ppo(methods, data_rows=2048):
    from ray.rllib.core.learner.training_data import TrainingData
    scratch = tempfile.mkdtemp(prefix="fu_")
    module_dir, data_path = B.make_pretrained_artifacts(B.ppo_config(0), lambda: gym.make("CartPole-v1"), Path(scratch), data_rows)
    algos = {}
    for m in methods:
        algos[m] = variant(B.ppo_config(0).retention(method=B.method_settings(m.split("_")[0], data_rows), pretrained_module_path=module_dir, retention_data_path=data_path).build_algo(), m)
    first = next(iter(algos.values()))
    episodes = first.env_runner.sample(num_timesteps=B.PPO_BATCH, random_actions=False)
    batch = first.learner_group._learner._make_batch_if_necessary(TrainingData(episodes=episodes))
    n = -(-batch.env_steps() // B.PPO_MINIBATCH)
    def update(algo):
        algo.learner_group._learner.update(batch=batch, minibatch_size=B.PPO_MINIBATCH, num_epochs=1, timesteps={"num_env_steps_sampled_lifetime": 10_000})
        return n
    return algos, update

if __name__ == "__main__":
    which, mode = sys.argv[1], sys.argv[2]
    methods = sys.argv[3].split(",")
    repeats = int(sys.argv[4]) if len(sys.argv) > 4 else 7
    import ray
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    algos, update = (build_sac if which == "sac" else build_ppo)(methods)
    torch.set_num_threads(1)
    print("load before", os.getloadavg())
    if mode == "time":
        ms = B.interleaved_update_ms(algos, update, repeats)
        base = ms.get("finetune")
        for m, v in ms.items():
            print(f"{which} {m}: {v:.3f} ms/update" + (f"  +{100*(v/base-1):.1f}%" if base and m != "finetune" else ""))
    else:
        for m, algo in algos.items():
            update(algo)
            pr = cProfile.Profile(); pr.enable()
            for _ in range(repeats): update(algo)
            pr.disable()
            st = pstats.Stats(pr); st.sort_stats("cumulative")
            print(f"===== {which} {m}"); st.print_stats(45)
    print("load after", os.getloadavg())
    for a in algos.values(): a.stop()
    ray.shutdown()
