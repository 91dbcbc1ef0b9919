"""H.264 test clips with key frames exactly where a test wants them, made by Debian's ffmpeg (libx264)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def make_clip(path: Path, seconds: float, fps: int = 25, gop: int | None = None, key_times: str | None = None,
              size: str = "320x180") -> Path:
    """ffmpeg's test pattern with key frames every `gop` frames (or at `key_times`) and nowhere else (no scene cuts)."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("ffmpeg not found; apt-get install -y ffmpeg")
    keys = ["-g", str(gop), "-keyint_min", str(gop)] if gop else ["-g", "100000", "-force_key_frames", key_times]
    subprocess.run(
        [ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}", "-t", str(seconds),
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-bf", "0", "-sc_threshold", "0", *keys, str(path)],
        check=True, timeout=120,
    )  # fmt: skip
    return path
