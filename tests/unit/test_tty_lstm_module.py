"""The NetHack LSTM as an RLlib module on the real NLE and RLlib APPO: a carried KS teacher whose
LSTM state runs along the rollouts and restarts with each episode, retention on the policy output
only, π* without the teacher, recurrent evaluation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ftcl.algorithms.pi_star import read_pi_star, save_pi_star
from ftcl.envs.nethack import NetHackEnv
from ftcl.models.tty_lstm_module import TtyLSTMModule

SMALL = {"h_dim": 32, "msg_hdim": 8, "blstats_hdim": 16, "fc_after_cnn_hdim": 16, "char_edim": 4, "color_edim": 4,
         "max_seq_len": 8}


def module(teacher: bool = False, seed: int = 0) -> TtyLSTMModule:
    env = NetHackEnv({"seed": 0})
    torch.manual_seed(seed)
    built = TtyLSTMModule(observation_space=env.observation_space, action_space=env.action_space,
                          model_config={**SMALL, "kickstarting_teacher": teacher})
    env.close()
    return built


@pytest.fixture(scope="module")
def pi_star_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("pi_star") / "module"
    save_pi_star(module(seed=1), path)
    return path


def test_pi_star_leaves_the_teacher_out_and_a_teacher_carrying_module_loads_it_into_both(pi_star_path, tmp_path):
    from ftcl.algorithms.pi_star import load_pi_star_into

    pi_star = read_pi_star(pi_star_path, needs_critics=True)
    assert pi_star.parts["critics"] == ["net.baseline.weight", "net.baseline.bias"]
    student = module(teacher=True, seed=2)
    load_pi_star_into(student, pi_star)
    for name, value in student.net.state_dict().items():
        assert torch.equal(value, student.teacher.state_dict()[name]), name
        assert np.array_equal(value.numpy(), pi_star.state[f"net.{name}"]), name
    save_pi_star(student, tmp_path / "again")
    assert not [name for name in read_pi_star(tmp_path / "again").state if name.startswith("teacher.")]


def test_kickstarting_touches_the_policy_output_only(pi_star_path):
    from ray.rllib.core.columns import Columns

    from ftcl.algorithms.pi_star import load_pi_star_into
    from ftcl.retention.ks import KSTerm
    from ftcl.retention.term import TermInputs

    policy = module(teacher=True)
    load_pi_star_into(policy, read_pi_star(pi_star_path))
    with torch.no_grad():  # the student moves away from θ*
        policy.net.fc[0].weight.add_(0.05 * torch.randn_like(policy.net.fc[0].weight))
    env = NetHackEnv({"seed": 3})
    obs, _ = env.reset()
    steps = [obs] + [env.step(action)[0] for action in (1, 2, 3, 4, 5)]
    env.close()
    batch = {Columns.OBS: {key: torch.as_tensor(np.stack([s[key] for s in steps]))[None] for key in obs},
             Columns.STATE_IN: {key: value[None] for key, value in policy.get_initial_state().items()}}
    out = policy.forward_train(batch)
    term = KSTerm(1.0)
    term.prepare(policy, teacher=None)
    loss = term.loss(TermInputs(student_distribution_inputs=out[Columns.ACTION_DIST_INPUTS],
                                teacher_distribution_inputs=out["teacher_action_dist_inputs"]))
    assert loss.item() > 0
    loss.backward()
    assert policy.net.baseline.weight.grad is None, "the value head is the critic's: KS must not reach it"
    assert policy.net.core.weight_hh_l0.grad.abs().sum() > 0 and policy.net.policy.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in policy.teacher.parameters()), "the teacher is frozen"


@pytest.fixture(scope="module")
def kickstarting_algorithm(pi_star_path):
    import ray
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from ftcl.algorithms.appo import RetentionAPPOConfig
    from ftcl.trial_config import env_id, register_envs

    ray.init(address="local", num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
    register_envs()
    config = (
        RetentionAPPOConfig().environment(env_id("nethack"), env_config={"seed": 0, "max_episode_steps": 11})
        .env_runners(num_env_runners=0, rollout_fragment_length=8)
        .rl_module(rl_module_spec=RLModuleSpec(module_class=TtyLSTMModule, model_config=dict(SMALL)))
        .learners(num_learners=0).training(train_batch_size_per_learner=32).debugging(seed=0)
        .retention(method={"name": "ks", "coeff": 0.5}, pretrained_module_path=str(pi_star_path))
    )
    algo = config.build_algo()
    yield algo
    algo.stop()
    ray.shutdown()


def test_the_carried_teacher_runs_along_the_rollout_and_restarts_with_each_episode(kickstarting_algorithm, pi_star_path):
    """Episodes of 11 steps sampled 8 steps at a time: chunks cross sample calls and episodes start
    inside them. Every step's teacher state must be the teacher run from zeros over its episode so far,
    after an update has moved the student away from θ* (so the two states differ)."""
    from ray.rllib.core.columns import Columns

    kickstarting_algorithm.train()
    runner = kickstarting_algorithm.env_runner
    runner_module = runner.module
    pi_star = read_pi_star(pi_star_path)
    for name, value in runner_module.teacher.state_dict().items():
        assert np.array_equal(value.numpy(), pi_star.state[f"net.{name}"]), "the EnvRunner's teacher is π*"
    chunks = [episode for _ in range(4) for episode in runner.sample(num_timesteps=8, random_actions=False)]
    episodes: dict[str, list] = {}
    for chunk in chunks:
        episodes.setdefault(chunk.id_, []).append(chunk)
    whole = [parts for parts in episodes.values() if parts[0].t_started == 0 and len(parts) > 1]
    assert whole, "an episode that spans sample calls"
    started_later = [parts for parts in episodes.values() if parts[0].t_started == 0 and parts is not whole[0]]
    assert started_later, "an episode that starts after another ended"
    for parts in whole + started_later[:1]:
        tty = np.concatenate([p.get_observations()["tty"][:-1] for p in parts])
        prev = np.concatenate([p.get_observations()["prev_action"][:-1] for p in parts])
        carried = np.concatenate([p.get_extra_model_outputs(Columns.STATE_OUT)["teacher_h"] for p in parts])
        student = np.concatenate([p.get_extra_model_outputs(Columns.STATE_OUT)["h"] for p in parts])
        assert not np.allclose(carried, student, atol=1e-4), "the student moved: its state is its own"
        with torch.no_grad():
            zeros = torch.zeros(1, 1, SMALL["h_dim"])
            outputs, _ = runner_module.teacher.core_outputs(torch.as_tensor(tty)[None], torch.as_tensor(prev)[None],
                                                            None, (zeros, zeros.clone()))
        np.testing.assert_allclose(carried, outputs[0].numpy(), atol=1e-5)
        assert prev[0] == -1 and (prev[1:] >= 0).all()


def test_kickstarting_trains_and_logs_its_term(kickstarting_algorithm):
    result = kickstarting_algorithm.train()
    learner = result["learners"]["default_policy"]
    assert learner["retention_ks_coeff"] < 0.5, "λ decays per optimizer step"
    assert learner["retention_ks_penalty"] > 0, "the student has moved away from the teacher"


def test_recurrent_evaluation_plays_whole_episodes(pi_star_path):
    from ftcl.algorithms.pi_star import load_pi_star_module
    from ftcl.evaluation.suites import evaluate_policy

    policy = load_pi_star_module(pi_star_path)
    values = evaluate_policy(policy, lambda: NetHackEnv({"seed": 0, "start": "dlvl4", "max_episode_steps": 15}),
                             episodes=2, seed=0)
    assert values["episode_len_mean"] == 15.0


@pytest.fixture(scope="module")
def games_db(tmp_path_factory):
    from test_nethack_ttyrecs import record

    from ftcl.data.ttyrecs import ttyrec_database

    root = tmp_path_factory.mktemp("ttyrecs")
    record(root / "data", games=3)
    ttyrec_database(root / "data", root / "games.db")
    return root / "games.db"


def test_states_carried_across_dataset_chunks_equal_one_pass_over_the_stream(games_db, pi_star_path):
    from ftcl.algorithms.pi_star import load_pi_star_module
    from ftcl.data.ttyrecs import TtyrecBatches

    policy = load_pi_star_module(pi_star_path)
    chunks = list(TtyrecBatches(games_db, batch_size=1, seq_length=6, shuffle=False))[:4]
    as_inputs = lambda b: ({"tty": torch.as_tensor(b["obs"]), "prev_action": torch.as_tensor(b["prev_actions"])},
                           torch.as_tensor(b["is_first"]))
    assert sum(int(b["is_first"][:, 1:].sum()) for b in chunks) >= 1, "a game starts inside a chunk"
    with torch.no_grad():
        state, carried = None, []
        for chunk in chunks:
            logits, state = policy.recurrent_distribution_inputs(*as_inputs(chunk), state)
            carried.append(logits)
        whole = {key: np.concatenate([b[key] for b in chunks], axis=1) for key in chunks[0]}
        one_pass, _ = policy.recurrent_distribution_inputs(*as_inputs(whole))
    np.testing.assert_allclose(torch.cat(carried, dim=1).numpy(), one_pass.numpy(), atol=1e-5)


def test_sequence_bc_and_ewc_read_the_ttyrec_database(games_db, pi_star_path):
    from ftcl.algorithms.pi_star import load_pi_star_into
    from ftcl.algorithms.retention_learner import with_sequence_stream
    from ftcl.data.retention_data import check_retention_shapes, load_retention_data, retention_data_shapes
    from ftcl.retention.bc import BCMethod
    from ftcl.retention.ewc import EWCMethod
    from ftcl.retention.term import TermInputs

    shapes = retention_data_shapes(games_db)
    assert shapes == {"ttyrec_games": (3,)}
    method = BCMethod(coeff=1.0, batch_size=2, sequence_length=5)
    check_retention_shapes(shapes, method.data_needs().keys, method.data_needs().min_rows)
    too_many = BCMethod(batch_size=4, sequence_length=5).data_needs()
    with pytest.raises(ValueError, match="holds 3 games; at least 4"):
        check_retention_shapes(shapes, too_many.keys, too_many.min_rows)
    data = with_sequence_stream(load_retention_data(games_db))
    policy = module(seed=5)
    load_pi_star_into(policy, read_pi_star(pi_star_path))
    bc = method.build_term()
    bc.prepare(policy, data)
    assert bc.loss(TermInputs()).item() == pytest.approx(0.0, abs=1e-6), "at θ* the student is its teacher"
    with torch.no_grad():
        policy.net.policy.weight.add_(0.1 * torch.randn_like(policy.net.policy.weight))
    loss = bc.loss(TermInputs())
    assert loss.item() > 0
    loss.backward()
    assert policy.net.baseline.weight.grad is None and policy.net.policy.weight.grad.abs().sum() > 0
    assert bc._student_state["h"].shape == (2, SMALL["h_dim"]), "one carried state per stream row"

    ewc = EWCMethod(coeff=1.0, sequence_length=5, fisher_batch_size=2, fisher_batches=2, fisher_labels="argmax")
    term = ewc.build_term()
    term.prepare(policy, data)
    fisher = term.importance
    assert set(fisher) == set(policy.actor_parameters()) and "net.baseline.weight" not in fisher
    values = torch.cat([f.flatten() for f in fisher.values()])
    assert torch.isfinite(values).all() and values.max() > 0


def test_the_paper_grid_validates_with_a_checkpoint_and_dataset_and_counts_the_datasets_games(games_db, pi_star_path):
    from ftcl.spec import SpecError
    from ftcl.spec.loading import load_spec

    paths = [f"pretrained.module={pi_star_path}", f"pretrained.data={games_db}"]
    with pytest.raises(SpecError, match="holds 3 games; at least 128 are needed"):
        load_spec("tune_configs/nethack/paper.yaml", paths)
    spec = load_spec("tune_configs/nethack/paper.yaml",
                     paths + ["methods.3.batch_size=2", "methods.4.fisher_batch_size=2"])
    assert [m.display_name for m in spec.methods] == ["scratch", "finetune", "ks", "bc", "ewc"]
    assert spec.method("ks").entropy_coeff == 0.0 and spec.method("ks").floor == 0.33
    assert spec.method("bc").sequence_length == 32 and spec.algorithm.model_config_options["h_dim"] == 1738
    with pytest.raises(SpecError, match="entropy_coeff"):
        load_spec("tune_configs/nethack/paper.yaml", paths + ["methods.3.batch_size=2", "methods.4.fisher_batch_size=2",
                                                              "methods.0.entropy_coeff=-1"])


def test_a_clone_of_recorded_games_fits_their_actions_and_is_a_whole_agent(games_db, tmp_path):
    from ftcl.data.ttyrecs import TtyrecBatches
    from ftcl.pretrain.nethack_clone import clone_losses, clone_policy

    def fit(module) -> float:
        batch = next(iter(TtyrecBatches(games_db, batch_size=3, seq_length=20, shuffle=False)))
        batch = {key: torch.as_tensor(np.asarray(value)) for key, value in batch.items()}
        batch["actions"] = batch["actions"].clamp(min=0)
        zeros = torch.zeros(3, SMALL["h_dim"])
        with torch.no_grad():
            return float(clone_losses(module, batch, {"h": zeros, "c": zeros}, 0.999)[0])

    before = fit(clone_policy(games_db, SMALL, updates=0, batch_size=3, sequence_length=20))
    reports = []
    clone = clone_policy(games_db, SMALL, updates=40, batch_size=3, sequence_length=20, lr=3e-3,
                         progress=lambda update, values: reports.append((update, values)))
    # the test's games are random moves among 8 keys (≈ 2.1 nats), so the fit ends near 2.1-2.5
    assert fit(clone) < 0.6 * before, "the clone learns the recorded keys"
    assert reports[-1][0] == 40 and np.isfinite(reports[-1][1]["value_loss"])
    save_pi_star(clone, tmp_path / "module")
    assert read_pi_star(tmp_path / "module", needs_critics=True).parts["critics"]
