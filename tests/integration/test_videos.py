"""Videos of evaluation episodes: each simulator draws real frames (MuJoCo offscreen on a headless
CPU machine, the emulator's screen, NetHack's terminal), `ftcl evaluate --video` writes an MP4 of
the episode it evaluated, recording leaves the numbers unchanged, and an env without frames is
refused."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from ftcl.spec import REPO_ROOT
from ftcl_cli import mlflow_client, run_ftcl

pytestmark = pytest.mark.slow


def test_robotic_sequence_draws_the_scene_headless():
    """In a fresh process with EGL chosen before MuJoCo loads (as `ftcl evaluate --video` does)."""
    script = """
import numpy as np
from ftcl.evaluation.video import use_headless_rendering
use_headless_rendering()
from ftcl.envs.robotic_sequence import RoboticSequenceEnv
env = RoboticSequenceEnv({"start_stage": 3})
env.reset(seed=0)
first = env.render_frame()
for _ in range(10):
    env.step(np.ones(4, dtype=np.float32))
later = env.render_frame()
env.close()
print(first.shape, first.dtype, round(float(first.std()), 1), round(float(np.abs(later.astype(int) - first.astype(int)).mean()), 3))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("(180, 240, 3) uint8"), done.stdout
    assert float(done.stdout.split()[-2]) > 20, "not a blank frame"
    assert float(done.stdout.split()[-1]) > 0.1, "the arm moved: the frames differ"


def test_montezuma_and_nethack_draw_their_screens():
    from ftcl.envs.montezuma import MontezumaEnv
    from ftcl.envs.nethack import NetHackEnv

    montezuma = MontezumaEnv({})
    montezuma.reset(seed=0)
    screen = montezuma.render_frame()
    montezuma.close()
    assert screen.shape == (210, 160, 3) and screen.std() > 10
    nethack = NetHackEnv({"seed": 0})
    nethack.reset()
    terminal = nethack.render_frame()
    nethack.close()
    assert terminal.shape == (24 * 14, 80 * 8, 3)
    lit = terminal.max(axis=2) > 100
    assert lit[:14].sum() > 300, "the welcome message on the top line"
    assert lit[-28:].sum() > 300, "the status lines"


def test_evaluate_video_records_the_episode_it_scored(tmp_path):
    import imageio_ffmpeg

    home, out = tmp_path / "home", tmp_path / "videos"
    common = ["evaluate", "artifacts/robotic_sequence", "--suite", "stage_3_push-wall", "--episodes", "1"]
    recorded = run_ftcl(home, *common, "--video", "1", "--out", str(out))
    assert recorded.returncode == 0, recorded.stderr[-3000:]
    plain = run_ftcl(home, *common, "--no-mlflow")
    metrics = lambda text: [line for line in text.splitlines() if "evaluate/" in line]
    assert metrics(recorded.stdout) == metrics(plain.stdout), "recording changes nothing"
    (video,) = out.glob("pi_star/env_step_0/stage_3_push-wall_ep0.mp4")
    reader = imageio_ffmpeg.read_frames(str(video))
    size = next(reader)["size"]
    frames = sum(1 for _ in reader)
    length = float(next(line for line in metrics(plain.stdout) if "episode_len_mean" in line).split()[-1])
    assert size == (240, 180) and frames == length + 1, "the reset frame, then one per step"
    client = mlflow_client(home)
    (run,) = client.search_runs([client.get_experiment_by_name("evaluate").experiment_id])
    assert run.data.tags["ftcl.kind"] == "evaluate"
    assert [a.path for a in client.list_artifacts(run.info.run_id, "videos/0")] == ["videos/0/stage_3_push-wall_ep0.mp4"]


def test_an_env_without_frames_is_refused_before_anything_runs(tmp_path):
    spec = REPO_ROOT / "tune_configs/toys/apple_retrieval.yaml"
    result = subprocess.run([sys.executable, "-m", "ftcl.cli", "evaluate", "artifacts/robotic_sequence", "--video", "1",
                             "--spec", str(spec), "--no-mlflow"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "draws no frames; videos are made for robotic_sequence, montezuma and nethack" in result.stderr
