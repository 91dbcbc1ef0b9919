"""Shared fixtures: where the real data lives, and skipping cleanly without it."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def data_root() -> Path:
    return Path(os.environ.get("STREAMCAP_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = data_root()
    if not (root / "flickr8k" / "Flickr8k.token.txt").is_file():
        pytest.skip(f"shared data not found at {root}; set STREAMCAP_DATA to the folder with flickr8k/, glove/, videos/")
    return root


@pytest.fixture(scope="session")
def flickr8k(shared_data):
    from streamcap.train.data import load_flickr8k

    return load_flickr8k(shared_data / "flickr8k")


@pytest.fixture(scope="session")
def lite0_encoder():
    from streamcap.model.encoder import build_encoder

    return build_encoder("efficientnet_lite0")


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    """Each test module gets its own $XDG_CACHE_HOME: ONNX exports and engines never leak between modules or into ~/.cache."""
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield Path(os.environ["XDG_CACHE_HOME"])
    if previous is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = previous
