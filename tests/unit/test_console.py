"""ConsolePublisher: readable lines on a stream, optional JSON lines in a file."""
from __future__ import annotations

import io
import json
import re
import time

import pytest

from streamcap.messages import Alarm, CameraState, Caption, Severity
from streamcap.metrics import Metrics
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


def test_a_jsonl_file_on_a_full_disk_fails_health_counts_each_line_and_never_keeps_half_of_one(small_disk, caplog):
    # given a JSON-lines output on a disk with one page (4 KiB) left
    metrics = Metrics()
    path = small_disk.root / "events.jsonl"
    pub = ConsolePublisher(stream=io.StringIO(), jsonl_path=path, metrics=metrics)
    pub.start()
    pub.publish_caption(make_caption())
    small_disk.fill(leave_bytes=4096)
    # when lines longer than what is left come (the first write is cut short, the next find no room)
    for _ in range(3):
        pub.publish_caption(make_caption("a man is walking " * 1000))  # 17 kB each
    # then /healthz is failed naming the file, each lost line is counted, and the file holds only whole lines
    (problem,) = metrics.health()["problems"]
    assert problem["problem"] == "jsonl_unwritable" and problem["path"] == str(path) and problem["status"] == "failed"
    assert metrics.health()["status"] == "failed"
    assert metrics.registry.get_sample_value(
        "streamcap_drops_total", {"stage": "jsonl", "cause": "disk_full", "camera": "gate"}) == 3
    assert [json.loads(line)["kind"] for line in path.read_text().splitlines()] == ["caption"]
    assert sum("cannot write" in r.getMessage() for r in caplog.records) == 1, "one line when it starts failing"
    # when space returns
    small_disk.free()
    pub.publish_caption(make_caption())
    # then it writes again and /healthz clears
    assert metrics.health()["problems"] == [] and len(path.read_text().splitlines()) == 2
    pub.close()


def test_run_refuses_a_jsonl_path_it_cannot_write_with_one_line(tmp_path, capsys):
    # given a config whose JSON-lines file would live under a regular file
    (tmp_path / "not-a-folder").write_text("")
    config = tmp_path / "streamcap.yaml"
    config.write_text(f"cameras: {{}}\noutputs: {{jsonl: {tmp_path / 'not-a-folder' / 'events.jsonl'}}}\n")
    # when
    from streamcap.__main__ import main

    code = main(["run", "-c", str(config)])
    # then exit 2 before anything starts, one line naming the setting and the path
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("streamcap: outputs.jsonl ") and "not-a-folder/events.jsonl" in err[0], err
