"""Videos of evaluation episodes: frames from an env's `render_frame()` (RoboticSequence: MuJoCo's
offscreen renderer; Montezuma: the emulator's colour screen; NetHack: the terminal drawn as a
picture), written as H.264 MP4 with imageio-ffmpeg's bundled ffmpeg, or as a GIF (Pillow) where
that is not installed. `EpisodeRecorder.on_frame` plugs into `evaluate_policy(on_frame=...)`."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

FPS = 20
VIDEO_DIR = "videos"
"""Run artifact folder of videos: `videos/<env step>/<suite>_ep<k>.mp4` (trials and `ftcl evaluate`)."""


def use_headless_rendering() -> None:
    """MuJoCo scenes render offscreen through EGL unless the user chose a backend (`MUJOCO_GL`).
    gymnasium's MuJoCo renderer reads the variable when it makes its first viewer, so this runs
    before any env draws a frame (MuJoCo itself may be loaded already). Only video commands and
    trials that record set it: MuJoCo's own `GLContext` reads it at import, and `import mujoco`
    with `egl` fails on machines without libEGL."""
    os.environ.setdefault("MUJOCO_GL", "egl")


def check_draws_frames(env_name: str, options: dict[str, Any], asked_by: str) -> None:
    """ValueError for an env that draws no frames (`render_frame`), naming the envs that do."""
    from ftcl.envs.registry import ENVS

    env = ENVS[env_name].make(options)
    try:
        drawn = env_frame_source(env) is not None
    finally:
        env.close()
    if not drawn:
        raise ValueError(f"{asked_by}: env {env_name!r} draws no frames; videos are made for robotic_sequence, "
                         "montezuma and nethack")


def env_frame_source(env: Any) -> Any:
    """The innermost env under gymnasium wrappers that has `render_frame()`, or None."""
    inner = env
    while not hasattr(inner, "render_frame") and hasattr(inner, "env"):
        inner = inner.env  # gymnasium wrappers
    return inner if hasattr(inner, "render_frame") else None


def env_frame(env: Any) -> np.ndarray:
    """The env's current picture (H, W, 3) uint8; TypeError for an env that draws none."""
    inner = env_frame_source(env)
    if inner is None:
        raise TypeError(f"{type(env).__name__} has no render_frame(): no video for it")
    return inner.render_frame()


class EpisodeRecorder:
    """Keeps the frames of the first `episodes` episodes of an evaluation (module doc)."""

    def __init__(self, episodes: int = 1):
        self.episodes = episodes
        self.frames: dict[int, list[np.ndarray]] = {}

    def on_frame(self, episode: int, env: Any) -> None:
        if episode < self.episodes:
            self.frames.setdefault(episode, []).append(env_frame(env))

    def write(self, folder: Path, stem: str) -> list[Path]:
        """One file per recorded episode, `<stem>_ep<k>.mp4` (or .gif); the paths."""
        folder.mkdir(parents=True, exist_ok=True)
        return [write_video(frames, folder / f"{stem}_ep{episode}") for episode, frames in sorted(self.frames.items())]


def write_video(frames: list[np.ndarray], path_without_suffix: Path, fps: int = FPS) -> Path:
    """MP4 (H.264, even sizes padded) if imageio-ffmpeg is installed, else GIF; the path written."""
    path_without_suffix.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames[0].shape[:2]
    padded = [np.pad(f, ((0, height % 2), (0, width % 2), (0, 0))) for f in frames] if (height % 2 or width % 2) else frames
    try:
        import imageio_ffmpeg
    except ImportError:
        from PIL import Image

        path = path_without_suffix.with_suffix(".gif")
        images = [Image.fromarray(frame) for frame in frames]
        images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
        return path
    path = path_without_suffix.with_suffix(".mp4")
    size = (padded[0].shape[1], padded[0].shape[0])
    writer = imageio_ffmpeg.write_frames(str(path), size, fps=fps, codec="libx264", pix_fmt_out="yuv420p",
                                         macro_block_size=1, quality=7)
    writer.send(None)
    for frame in padded:
        writer.send(np.ascontiguousarray(frame))
    writer.close()
    if not path.is_file() or path.stat().st_size == 0:  # ffmpeg reports some failures only on its stderr
        raise OSError(f"ffmpeg wrote no video to {path}")
    return path
