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
