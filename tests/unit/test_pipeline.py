"""The pipeline with real parts and no servers: a video-file camera, the shipped model, rules, JSON-lines output."""
import io
import json
import threading
import time

import pytest

from streamcap.app import build
from streamcap.backends.select import load_captioner
from streamcap.config.schema import StreamcapConfig


@pytest.fixture(scope="module")
def captioner():
    return load_captioner(backend="torch")


def _config(shared_data, tmp_path, rules_text="[]"):
    rules = tmp_path / "rules.yaml"
    rules.write_text(rules_text)
    return StreamcapConfig.model_validate({
        "device_id": "unit",
        "cameras": {
            "lot": {"url": str(shared_data / "videos" / "car-detection.mp4"), "loop": True, "caption_interval_s": 0.5},
            "broken": {"url": str(tmp_path / "missing.mp4")},
        },
        "model": {"max_batch": 4},
        "rules": {"paths": [str(rules)]},
        "outputs": {"console": True, "jsonl": str(tmp_path / "events.jsonl")},
    })


def _wait(predicate, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _events(tmp_path, kind):
    path = tmp_path / "events.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line) for line in lines if json.loads(line)["kind"] == kind]


def test_a_broken_camera_does_not_stop_the_working_one_and_stop_joins_every_thread(shared_data, tmp_path, captioner):
    # given a working file camera, a camera whose file is missing, and a rule that matches everything
    rule = '- id: anything\n  triggers: [{trigger: caption, regex: "."}]\n  cooldown: 1h\n'
    console = io.StringIO()
    app = build(_config(shared_data, tmp_path, rule), captioner=captioner, console_stream=console)
    threads_before = set(threading.enumerate())
    # when it runs until a few captions came out
    app.start()
    try:
        _wait(lambda: len(_events(tmp_path, "caption")) >= 4, 120, "four captions")
        health = app.pipeline.metrics.health()
    finally:
        app.stop()
    # then the working camera was captioned, one alarm was raised and lasted (then ended at shutdown), the broken one is down
    captions = _events(tmp_path, "caption")
    assert {c["camera"] for c in captions} == {"lot"} and all(c["caption"] for c in captions)
    alarms = _events(tmp_path, "alarm")
    assert [a["rule"] for a in alarms] == ["anything"] * len(alarms) and alarms[0]["type"] == "new" and alarms[-1]["type"] == "end"
    assert len({a["id"] for a in alarms}) == 1 and all(a["type"] == "update" for a in alarms[1:-1])
    broken_states = [s["state"] for s in _events(tmp_path, "state") if s["camera"] == "broken"]
    assert "down" in broken_states and "connected" not in broken_states
    assert "lot" in console.getvalue() and "caption" in console.getvalue()
    # and every thread the pipeline started has been joined
    assert not [t.name for t in set(threading.enumerate()) - threads_before if t.is_alive()]
    assert health["status"] == "degraded"
    assert health["cameras"]["lot"]["last_frame_time"] is not None and health["cameras"]["broken"]["state"] == "down"


class _FailsOnce:
    """The real captioner, made to fail on its first batch (as a GPU error would)."""

    def __init__(self, captioner):
        self.inner, self.failed, self.model_name = captioner, False, captioner.model_name

    def describe(self, frames):
        if not self.failed:
            self.failed = True
            raise RuntimeError("injected model failure")
        return self.inner.describe(frames)


def test_a_model_error_on_one_batch_is_counted_and_captioning_continues(shared_data, tmp_path, captioner):
    app = build(_config(shared_data, tmp_path), captioner=_FailsOnce(captioner), console_stream=io.StringIO())
    app.start()
    try:
        _wait(lambda: len(_events(tmp_path, "caption")) >= 2, 120, "captions after the failure")
    finally:
        app.stop()
    dropped = app.pipeline.metrics.registry.get_sample_value(
        "streamcap_drops_total", {"stage": "inference", "cause": "model_error", "camera": "lot"})
    assert dropped >= 1
