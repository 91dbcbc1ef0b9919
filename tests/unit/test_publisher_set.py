"""PublisherSet: a failing publisher is logged, counted and reported, and the others still run."""
from __future__ import annotations

import logging
import time

import pytest

from streamcap.messages import Alarm, CameraState, Caption, Severity
from streamcap.metrics import Metrics
from streamcap.publish.base import Publisher, PublisherSet
from streamcap.publish.console import ConsolePublisher


class Recording:
    name = "recording"

    def __init__(self) -> None:
        self.calls: list[str] = []

    def start(self) -> None:
        self.calls.append("start")

    def publish_caption(self, caption) -> None:
        self.calls.append(f"caption:{caption.text}")

    def publish_alarm(self, alarm) -> None:
        self.calls.append(f"alarm:{alarm.alarm_id}")

    def publish_camera_state(self, camera_id, state, last_frame_at) -> None:
        self.calls.append(f"state:{camera_id}:{state}")

    def close(self, timeout_s: float = 5.0) -> None:
        self.calls.append("close")


class Broken(Recording):
    name = "broken"

    def __getattribute__(self, item):
        if item in {"start", "publish_caption", "publish_alarm", "publish_camera_state", "close"}:
            def fail(*args):
                raise ConnectionError(f"{item} exploded")
            return fail
        return super().__getattribute__(item)


def caption() -> Caption:
    now, mono = time.time(), time.monotonic()
    return Caption("gate", 1, now, mono, "a dog", "m", mono)


def alarm() -> Alarm:
    return Alarm("r-gate-1", "r", Severity.alert, "gate", "a dog", time.time(), time.time())


@pytest.mark.parametrize(
    "call, expected",
    [
        (lambda s: s.start(), "start"),
        (lambda s: s.publish_caption(caption()), "caption:a dog"),
        (lambda s: s.publish_alarm(alarm()), "alarm:r-gate-1"),
        (lambda s: s.publish_camera_state("gate", CameraState.down), "state:gate:down"),
        (lambda s: s.close(1.0), "close"),
    ],
)
def test_a_broken_publisher_does_not_stop_the_others(call, expected):
    # given
    metrics, events, good = Metrics(), [], Recording()
    pubs = PublisherSet([Broken(), good], metrics, on_status=events.append)
    # when
    call(pubs)  # must not raise
    # then
    assert good.calls == [expected]
    call_name = expected.split(":")[0]
    call_name = {"caption": "publish_caption", "alarm": "publish_alarm", "state": "publish_camera_state"}.get(
        call_name, call_name)
    assert metrics.registry.get_sample_value(
        "streamcap_publish_errors_total", {"publisher": "broken", "call": call_name}) == 1
    assert [(e.publisher, e.call) for e in events] == [("broken", call_name)]
    assert "exploded" in events[0].detail
    if call_name == "start":  # a publisher that cannot start is failed, and so is the box's health
        assert metrics.health()["status"] == "failed" and metrics.health()["publishers"]["broken"]["state"] == "failed"


def test_repeated_failures_are_logged_once_per_interval_but_all_counted(caplog):
    # given
    metrics = Metrics()
    pubs = PublisherSet([Broken()], metrics)
    # when
    for _ in range(50):
        pubs.publish_caption(caption())
    # then
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert "publisher broken: publish_caption failed: ConnectionError" in errors[0].getMessage()
    assert metrics.registry.get_sample_value(
        "streamcap_publish_errors_total", {"publisher": "broken", "call": "publish_caption"}) == 50


def test_shipped_publishers_satisfy_the_protocol(tmp_path):
    from streamcap.config.schema import MqttConfig
    from streamcap.publish.mqtt import MqttPublisher

    assert isinstance(ConsolePublisher(), Publisher)
    assert isinstance(MqttPublisher(MqttConfig(host="127.0.0.1", spool_dir=str(tmp_path)), "dev"), Publisher)


def test_jsonl_only_console_writes_nothing_to_the_stream(tmp_path):
    # given
    import io
    out = io.StringIO()
    pub = ConsolePublisher(stream=out, jsonl_path=tmp_path / "e.jsonl", console=False)
    pub.start()
    # when
    pub.publish_caption(caption())
    pub.close()
    # then
    assert out.getvalue() == ""
    assert len((tmp_path / "e.jsonl").read_text().splitlines()) == 1
