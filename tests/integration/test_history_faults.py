"""A full disk under the history: it pauses (health says so, /metrics counts what was not written), the pipeline
goes on, and writing resumes by itself when space returns. On a real size-limited filesystem (tmpfs; needs root)."""
from __future__ import annotations

import io
import json
import os
import subprocess
import time
import urllib.request

import cv2
import numpy as np
import pytest
from mqtt_fixtures import free_port

from streamcap.app import build
from streamcap.config.schema import StreamcapConfig
from streamcap.model.decoding import Description


class Scenes:
    """Stands in for the model: a new scene every few batches, so the history keeps writing new segments."""

    model_name = "fake"

    def __init__(self):
        self.n = 0

    def describe(self, frames):
        self.n += 1
        return [Description(f"a man walks past the gate number{self.n // 3}", {"person": 0.9}) for _ in frames]


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a size-limited tmpfs (CI runs as root)")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder) -> object:
    filler = folder / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    return filler


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def metric(text: str, name: str, labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and labels in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def wait(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return value


def test_a_full_disk_pauses_the_history_the_pipeline_goes_on_and_writing_resumes(tmp_path, small_disk):
    # given a box whose history lives on a 3 MB filesystem, captioning a camera ten times a second
    clip = tmp_path / "gate.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 180))
    for i in range(20):
        writer.write(np.full((180, 320, 3), 40 + i * 5, np.uint8))
    writer.release()
    port = free_port()
    events = tmp_path / "events.jsonl"
    config = StreamcapConfig.model_validate({
        "cameras": {"gate": {"url": str(clip), "loop": True, "caption_interval_s": 0.1}},
        "outputs": {"console": False, "jsonl": str(events)},
        "http": {"enabled": True, "port": port},
        "history": {"path": str(small_disk / "history")},
    })
    app = build(config, captioner=Scenes(), console_stream=io.StringIO())
    base = f"http://127.0.0.1:{port}"
    app.start()
    try:
        written = lambda: metric(get(base + "/metrics"), "streamcap_history_written_total", 'kind="caption"')  # noqa: E731
        wait(lambda: written() >= 20, 60, "the history writing")
        # when the disk fills up
        filler = fill(small_disk)
        health = wait(lambda: (h := json.loads(get(base + "/healthz")))["history"]["state"] == "paused" and h, 60,
                      "the history to pause")
        # then health says so, with the reason
        assert health["status"] == "degraded"
        assert "disk is full" in health["history"]["detail"]
        # and /metrics counts what was not written, while the pipeline goes on captioning and publishing
        published = len(events.read_text().splitlines())
        wait(lambda: metric(get(base + "/metrics"), "streamcap_drops_total", 'cause="disk_full",stage="history"') >= 10, 60,
             "captions counted as not written")
        wait(lambda: len(events.read_text().splitlines()) >= published + 20, 60, "captions still published")
        at_pause = written()
        # when space returns
        filler.unlink()
        # then writing resumes by itself, and health is ok again
        wait(lambda: json.loads(get(base + "/healthz"))["history"]["state"] == "writing", 60, "writing to resume")
        wait(lambda: written() >= at_pause + 10, 60, "new captions written")
        assert json.loads(get(base + "/healthz"))["status"] == "ok"
        results = json.loads(get(base + "/api/history/search?q=gate&camera=gate"))["results"]
        assert results and results[0]["camera"] == "gate"
    finally:
        app.stop()
