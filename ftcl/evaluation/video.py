"""Videos of evaluation episodes: frames from an env's `render_frame()` (RoboticSequence: MuJoCo's
offscreen renderer; Montezuma: the emulator's colour screen; NetHack: the terminal drawn as a
picture), written as H.264 MP4 with imageio-ffmpeg's bundled ffmpeg, or as a GIF (Pillow) where
that is not installed. `EpisodeRecorder.on_frame` plugs into `evaluate_policy(on_frame=...)`."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

FPS = 20


def use_headless_rendering() -> None:
    """MuJoCo renders offscreen through EGL unless the user chose a backend (`MUJOCO_GL`). MuJoCo
    reads the variable when it loads, so this runs before any env is imported; setting it for
    every process would make `import mujoco` fail on machines without libEGL, so only video
    commands do."""
    if "mujoco" in sys.modules and "MUJOCO_GL" not in os.environ:
        raise RuntimeError("MuJoCo was loaded before headless rendering was chosen: set MUJOCO_GL=egl")
    os.environ.setdefault("MUJOCO_GL", "egl")


def env_frame(env: Any) -> np.ndarray:
    """The env's current picture (H, W, 3) uint8; TypeError for an env that draws none."""
    inner = env
    while not hasattr(inner, "render_frame") and hasattr(inner, "env"):
        inner = inner.env  # gymnasium wrappers
    if not hasattr(inner, "render_frame"):
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
    return path
