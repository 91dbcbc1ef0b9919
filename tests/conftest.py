"""Shared fixtures: where the real data lives, and skipping cleanly without it."""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
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


class SmallDisk:
    """A real filesystem that fills up: a tmpfs of `size_mb`, and a filler file to take its last byte."""

    def __init__(self, root: Path):
        self.root = root
        self.filler = root / "filler"

    def fill(self, leave_bytes: int = 0) -> None:
        """Write until the filesystem says ENOSPC, then give back `leave_bytes` (whole pages on a tmpfs)."""
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            while True:
                os.write(fd, b"\0" * 65536)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
        finally:
            os.close(fd)
        try:  # the last few bytes too
            fd = os.open(self.filler, os.O_WRONLY | os.O_APPEND)
            try:
                while True:
                    os.write(fd, b"\0" * 512)
            finally:
                os.close(fd)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
        if leave_bytes:
            os.truncate(self.filler, self.filler.stat().st_size - leave_bytes)

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    @property
    def free_bytes(self) -> int:
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize


@pytest.fixture
def small_disk(tmp_path):
    """A size-limited tmpfs (8 MiB) mounted for one test and unmounted after; needs root (CI runs as root)."""
    if os.geteuid() != 0:
        pytest.skip("a size-limited filesystem needs root to mount a tmpfs (CI runs the tests as root)")
    if shutil.which("mount") is None:
        pytest.skip("mount(8) is not installed")
    root = tmp_path / "small-disk"
    root.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0755", "tmpfs", str(root)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode}); a container without "
                    "CAP_SYS_ADMIN cannot")
    try:
        yield SmallDisk(root)
    finally:
        subprocess.run(["umount", "-l", str(root)], capture_output=True)
