"""The NetHack network and the paper-checkpoint importers, on synthetic checkpoints the tests write
with the paper's key layouts."""
from __future__ import annotations

import pytest
import torch

from ftcl.models.nethack_checkpoints import SAMPLE_FACTORY_RENAMES, load_paper_checkpoint
from ftcl.models.tty_lstm import Crop, TtyLSTMNet, TtyNetConfig, parameter_count

SMALL = TtyNetConfig(h_dim=64, msg_hdim=16, blstats_hdim=32, fc_after_cnn_hdim=32, char_edim=8, color_edim=8)


def terminals(batch: int, steps: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    obs = torch.randint(32, 127, (batch, steps, 3, 24, 80), generator=generator, dtype=torch.uint8)
    obs[:, :, 1] = torch.randint(0, 16, obs[:, :, 1].shape, generator=generator, dtype=torch.uint8)
    obs[:, :, 2] = 0
    obs[:, :, 2, 7, 40] = 1
    return obs


def test_the_paper_width_has_the_papers_size_and_a_cpu_width_runs():
    assert 30e6 < parameter_count(TtyLSTMNet()) < 35e6  # "a 30M LSTM" (h = 1,738)
    net = TtyLSTMNet(SMALL).eval()
    logits, values, (h, c) = net(terminals(2, 3), torch.full((2, 3), -1), torch.zeros(2, 3, dtype=torch.bool), net.initial_state(2))
    assert logits.shape == (2, 3, 121) and values.shape == (2, 3) and h.shape == c.shape == (1, 2, 64)


def test_the_state_carries_across_steps_and_resets_where_an_episode_starts():
    net = TtyLSTMNet(SMALL).eval()
    obs, actions = terminals(1, 6), torch.tensor([[-1, 3, 5, -1, 7, 9]])
    first = torch.tensor([[True, False, False, True, False, False]])
    with torch.no_grad():
        whole, _, _ = net(obs, actions, first, net.initial_state(1))
        tail, _, _ = net(obs[:, 3:], actions[:, 3:], first[:, 3:], net.initial_state(1))
        carried, _, _ = net(obs[:, 3:], actions[:, 3:], torch.zeros(1, 3, dtype=torch.bool), net(obs[:, :3], actions[:, :3], first[:, :3], net.initial_state(1))[2])
        split_head = net(obs[:, :2], actions[:, :2], first[:, :2], net.initial_state(1))
        split_tail, _, _ = net(obs[:, 2:3], actions[:, 2:3], first[:, 2:3], split_head[2])
    torch.testing.assert_close(whole[:, 3:], tail)            # the reset forgets the first episode
    assert not torch.allclose(carried, tail)                  # without it the state carries over
    torch.testing.assert_close(whole[:, 2], split_tail[:, 0])  # chunked unrolls continue the state
    with torch.no_grad():
        other, _, _ = net(obs, torch.tensor([[-1, 4, 5, -1, 7, 9]]), first, net.initial_state(1))
    assert not torch.allclose(other[:, 1], whole[:, 1]), "the previous action is an input"


def test_the_crop_is_centred_on_the_cursor_and_zero_outside():
    grid = torch.arange(21 * 80).view(1, 21, 80)
    crop = Crop(21, 80, 3)
    assert crop(grid, torch.tensor([5]), torch.tensor([10]))[0].tolist() == [[r * 80 + c for c in (9, 10, 11)] for r in (4, 5, 6)]
    corner = crop(grid, torch.tensor([0]), torch.tensor([0]))[0]
    assert corner[0].tolist() == [0, 0, 0] and corner[1].tolist() == [0, 0, 1]


def _save_as(net: TtyLSTMNet, path, checkpoint_format: str, edit=None):
    state = dict(net.state_dict())
    if checkpoint_format == "sample_factory":
        renamed = {}
        for key, tensor in state.items():
            for old, new in reversed(SAMPLE_FACTORY_RENAMES):
                if new == "" and not key.startswith(("core.", "baseline.", "policy.")):
                    renamed["encoder." + key] = tensor
                    break
                if new and key.startswith(new):
                    renamed[old + key[len(new):]] = tensor
                    break
        state = renamed
    if edit:
        edit(state)
    payload = {"learner_state": {"model": state}} if checkpoint_format == "tuyls" else {"model": state}
    torch.save(payload, path)
    return path


@pytest.mark.parametrize("checkpoint_format", ["tuyls", "sample_factory"])
def test_a_paper_checkpoint_loads_whole_with_its_widths(tmp_path, checkpoint_format):
    source = TtyLSTMNet(SMALL).eval()
    path = _save_as(source, tmp_path / "model.tar", checkpoint_format)
    loaded = load_paper_checkpoint(path, checkpoint_format).eval()
    assert loaded.config == SMALL
    for key, tensor in source.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], tensor)
    obs, actions, first = terminals(1, 2), torch.tensor([[-1, 2]]), torch.tensor([[True, False]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(obs, actions, first, loaded.initial_state(1))[0],
                                   source(obs, actions, first, source.initial_state(1))[0])


def test_a_truncated_or_foreign_checkpoint_is_refused(tmp_path):
    net = TtyLSTMNet(SMALL)
    truncated = _save_as(net, tmp_path / "a.tar", "tuyls", lambda s: s.pop("baseline.weight"))
    with pytest.raises(ValueError, match=r"missing: baseline.weight"):
        load_paper_checkpoint(truncated)
    foreign = _save_as(net, tmp_path / "b.tar", "sample_factory", lambda s: s.update({"obs_normalizer.running_mean": torch.zeros(1)}))
    with pytest.raises(ValueError, match="no place in the network: obs_normalizer.running_mean"):
        load_paper_checkpoint(foreign, "sample_factory")
    half_normaliser = _save_as(net, tmp_path / "f.tar", "sample_factory", lambda s: s.update({"returns_normalizer.running_mean": torch.zeros(1, dtype=torch.float64)}))
    with pytest.raises(ValueError, match=r"missing: returns_normalizer.running_var, returns_normalizer.count"):
        load_paper_checkpoint(half_normaliser, "sample_factory")
    reshaped = _save_as(net, tmp_path / "c.tar", "tuyls", lambda s: s.update({"policy.bias": torch.zeros(120)}))
    with pytest.raises(ValueError, match=r"shape: policy.bias \(120,\)"):
        load_paper_checkpoint(reshaped)
    with pytest.raises(ValueError, match=r"no \[\"learner_state\"\]\[\"model\"\] state dict"):
        load_paper_checkpoint(_save_as(net, tmp_path / "d.tar", "sample_factory"), "tuyls")
    (tmp_path / "e.tar").write_bytes(b"\x00garbage" * 50)
    with pytest.raises(ValueError, match="not a readable torch file"):
        load_paper_checkpoint(tmp_path / "e.tar")
    with pytest.raises(ValueError, match="not found"):
        load_paper_checkpoint(tmp_path / "none.tar")


def test_a_checkpoint_trained_on_normalised_returns_keeps_its_value_scale(tmp_path):
    """The authors trained with normalised returns: their checkpoint's `returns_normalizer` comes along,
    and V = σ·head + μ, not the head's raw output."""
    statistics = {"returns_normalizer.running_mean": torch.tensor([120.0], dtype=torch.float64),
                  "returns_normalizer.running_var": torch.tensor([400.0], dtype=torch.float64),
                  "returns_normalizer.count": torch.tensor([1e6], dtype=torch.float64)}
    path = _save_as(TtyLSTMNet(SMALL).eval(), tmp_path / "model.tar", "sample_factory", lambda s: s.update(statistics))
    loaded = load_paper_checkpoint(path, "sample_factory").eval()
    assert loaded.config.normalize_returns
    head = torch.tensor([0.5])
    assert loaded.returns_normalizer.denormalize(head).item() == pytest.approx(120.0 + 0.5 * 20.0, rel=1e-4)


def test_a_pi_star_and_a_spec_that_disagree_on_normalised_returns_are_refused(tmp_path):
    from ftcl.algorithms.pi_star import load_pi_star_into, read_pi_star, save_pi_star
    from ftcl.envs.nethack import NetHackEnv
    from ftcl.models.tty_lstm_module import TtyLSTMModule

    env = NetHackEnv({})
    widths = {"h_dim": 16, "msg_hdim": 8, "blstats_hdim": 16, "fc_after_cnn_hdim": 16, "char_edim": 4, "color_edim": 4}
    build = lambda **extra: TtyLSTMModule(observation_space=env.observation_space, action_space=env.action_space,
                                          model_config={**widths, **extra})
    save_pi_star(build(), tmp_path / "plain")
    with pytest.raises(ValueError, match="lacks other: net.returns_normalizer.*normalize_returns must be what π\\* was"):
        load_pi_star_into(build(normalize_returns=True), read_pi_star(tmp_path / "plain"))
    env.close()


def test_the_import_command_writes_a_pi_star_that_acts_as_the_checkpoint(tmp_path):
    import subprocess
    import sys

    from ftcl.algorithms.pi_star import load_pi_star_module, read_pi_star

    source = TtyLSTMNet(TtyNetConfig(num_actions=121, h_dim=32, msg_hdim=8, blstats_hdim=16, fc_after_cnn_hdim=16,
                                     char_edim=4, color_edim=4)).eval()
    path = _save_as(source, tmp_path / "model.tar", "sample_factory")
    command = [sys.executable, "-m", "ftcl.cli", "import-checkpoint", "nethack", str(path), "--format", "sample_factory"]
    done = subprocess.run(command + ["--out", str(tmp_path / "pi_star")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    pi_star = read_pi_star(tmp_path / "pi_star" / "module", needs_critics=True)
    assert pi_star.parts["critics"] == ["net.baseline.weight", "net.baseline.bias"]
    module = load_pi_star_module(tmp_path / "pi_star" / "module")
    obs, actions, first = terminals(1, 3), torch.tensor([[-1, 2, 5]]), torch.tensor([[True, False, False]])
    with torch.no_grad():
        expected = source(obs, actions, first, source.initial_state(1))[0]
        logits = module.recurrent_distribution_inputs({"tty": obs, "prev_action": actions}, first)[0]
    torch.testing.assert_close(logits, expected)

    wrong = subprocess.run(command[:-2] + ["--format", "tuyls", "--out", str(tmp_path / "other")],
                           capture_output=True, text=True)
    assert wrong.returncode == 2 and "no [\"learner_state\"][\"model\"] state dict" in wrong.stderr
    assert not (tmp_path / "other").exists() and not (tmp_path / "other.partial").exists()
