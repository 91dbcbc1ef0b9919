"""Real frames for the GPU tests: the dev sets under STREAMCAP_DATA, or the copy benchmarks/bench_gpu.py
prepares in .device/frames for the GPU machine (where ../shared is not copied)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "unit"))  # shared test helpers

REPO = Path(__file__).resolve().parents[2]
DEVICE_FRAMES = REPO / ".device" / "frames"
DATA = Path(os.environ.get("STREAMCAP_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def cuda():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device visible to torch (these tests run on a GPU box)")
    return torch.device("cuda")


@pytest.fixture(scope="session")
def real_frames():
    """Up to 48 real frames: Flickr8k, COCO subset and clip dev images."""
    from streamcap.model.images import read_image

    if DEVICE_FRAMES.is_dir() and any(DEVICE_FRAMES.iterdir()):
        paths = sorted(DEVICE_FRAMES.iterdir())[:48]
    elif (DATA / "flickr8k" / "Flickr8k.token.txt").is_file():
        from _backend_models import dev_set_paths

        paths = dev_set_paths(DATA, 16)
    else:
        pytest.skip(f"no frames: neither {DEVICE_FRAMES} (benchmarks/bench_gpu.py --prepare) nor STREAMCAP_DATA")
    return [read_image(p) for p in paths]
