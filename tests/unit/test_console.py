"""ConsolePublisher: readable lines on a stream, optional JSON lines in a file."""
from __future__ import annotations

import io
import json
import re
import time

import pytest

from streamcap.messages import Alarm, CameraState, Caption, Severity
from streamcap.publish.console import ConsolePublisher

STAMP = r"\d\d:\d\d:\d\d\.\d{3}"


def make_caption(text: str = "a man is walking down the street", camera: str = "gate") -> Caption:
    now, mono = time.time(), time.monotonic()
    return Caption(camera_id=camera, frame_id=7, captured_at=now - 0.4, t_mono=mono - 0.4, text=text,
                   model="resnet-lstm-test", captioned_mono=mono - 0.1, concepts={"person": 0.91, "vehicle": 0.02})


def make_alarm() -> Alarm:
    now = time.time()
    return Alarm(alarm_id="person_at_gate-gate-1764064885123", rule_id="person_at_gate", severity=Severity.alert,
                 camera_id="gate", caption="a man at the gate", captured_at=now - 1, raised_at=now,
                 snapshot_jpeg=b"\xff\xd8")


@pytest.mark.parametrize(
    "call, expected",
    [
        (lambda p: p.publish_caption(make_caption()),
         rf"^{STAMP} gate     caption  a man is walking down the street  \[person 0.91 vehicle 0.02\]  \(\d+ ms\)$"),
        (lambda p: p.publish_caption(make_caption("two\nlines", camera="yard")),
         rf"^{STAMP} yard     caption  two lines  \[person 0.91 vehicle 0.02\]  \(\d+ ms\)$"),
        (lambda p: p.publish_alarm(make_alarm()),
         rf"^{STAMP} gate     ALARM    new alert person_at_gate: a man at the gate  \[id person_at_gate-gate-1764064885123\]$"),
        (lambda p: p.publish_camera_state("gate", CameraState.reconnecting, None),
         rf"^{STAMP} gate     state    reconnecting$"),
    ],
)
def test_each_event_is_one_readable_line(call, expected):
    # given
    out = io.StringIO()
    pub = ConsolePublisher(stream=out)
    pub.start()
    # when
    call(pub)
    pub.close()
    # then
    lines = out.getvalue().splitlines()
    assert len(lines) == 1, lines
    assert re.match(expected, lines[0]), lines[0]


def test_latency_is_capture_to_publish():
    # given
    out = io.StringIO()
    pub = ConsolePublisher(stream=out)
    # when
    pub.publish_caption(make_caption())
    # then
    latency_ms = int(re.search(r"\((\d+) ms\)", out.getvalue()).group(1))
    assert 400 <= latency_ms < 60_000


def test_jsonl_file_gets_one_document_per_event(tmp_path):
    # given
    path = tmp_path / "out" / "events.jsonl"
    pub = ConsolePublisher(stream=io.StringIO(), jsonl_path=path)
    pub.start()
    # when
    pub.publish_caption(make_caption())
    pub.publish_alarm(make_alarm())
    pub.publish_camera_state("gate", CameraState.connected, time.time())
    pub.close()
    # then
    docs = [json.loads(line) for line in path.read_text().splitlines()]
    assert [d["kind"] for d in docs] == ["caption", "alarm", "state"]
    caption, alarm, state = docs
    assert set(caption) == {"kind", "camera", "time", "caption", "frame_id", "frame_time", "latency_ms", "model", "concepts"}
    assert caption["concepts"] == {"person": 0.91, "vehicle": 0.02}
    assert caption["caption"] == "a man is walking down the street"
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d$", caption["time"]), caption["time"]
    assert alarm["id"] == "person_at_gate-gate-1764064885123" and (alarm["type"], alarm["seq"]) == ("new", 0)
    assert alarm["start_time"] is not None and alarm["end_time"] is None
    assert (alarm["rule"], alarm["severity"], alarm["camera"]) == ("person_at_gate", "alert", "gate")
    assert alarm["snapshot"] is None, "the console has no snapshot topic to refer to"
    assert state["state"] == "connected" and state["last_frame_time"] is not None


def test_jsonl_file_is_appended_not_truncated(tmp_path):
    # given
    path = tmp_path / "events.jsonl"
    for _ in range(2):
        pub = ConsolePublisher(stream=io.StringIO(), jsonl_path=path)
        pub.start()
        # when
        pub.publish_caption(make_caption())
        pub.close()
    # then
    assert len(path.read_text().splitlines()) == 2
