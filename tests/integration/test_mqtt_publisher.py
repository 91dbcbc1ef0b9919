"""MqttPublisher against a real mosquitto, checked by a real subscriber."""
from __future__ import annotations

import json
import logging
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mqtt_fixtures import (  # noqa: F401 (fixtures)
    MQTT_TEST_USERS, mosquitto, mosquitto_auth, mosquitto_binary, mosquitto_tls, subscriber_factory, wait_until,
)
from streamcap.messages import Alarm, CameraState, Caption, Severity
from streamcap.metrics import Metrics
from streamcap.publish.mqtt import MqttPublisher, PublisherUnavailable, preflight
from mqtt_fixtures import mqtt_config
from streamcap.publish.spool import AlarmSpool

pytestmark = pytest.mark.integration

PROC = Path(__file__).with_name("mqtt_publisher_proc.py")
ISO = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d$"
DEADLINE_S = 20


def settings_for(broker, tmp_path, **kw):
    return mqtt_config(host=broker.host, port=broker.port, prefix="sc",
                        spool_dir=str(tmp_path / "spool"), keepalive_s=5, **kw)


@pytest.fixture
def publisher_factory(tmp_path):
    made: list[MqttPublisher] = []

    def make(broker, metrics: Metrics | None = None, **kw) -> MqttPublisher:
        pub = MqttPublisher(settings_for(broker, tmp_path, **kw), "dev", metrics or Metrics())
        pub.start()
        made.append(pub)
        return pub

    try:
        yield make
    finally:
        for pub in made:
            pub.close(timeout_s=2)


def make_caption(text="a man is walking down the street", camera="gate") -> Caption:
    now, mono = time.time(), time.monotonic()
    return Caption(camera_id=camera, frame_id=42, captured_at=now - 0.3, t_mono=mono - 0.3, text=text,
                   model="resnet-lstm-test", captioned_mono=mono,
                   concepts={"person": 0.97, "vehicle": 0.04, "animal": 0.0, "fire": 0.001})


def make_alarm(i: int, snapshot: bytes | None = None) -> Alarm:
    now = time.time()
    return Alarm(alarm_id=f"alarm-{i:05d}", rule_id="person_at_gate", severity=Severity.alert, camera_id="gate",
                 caption="a man at the gate", captured_at=now - 1, raised_at=now, snapshot_jpeg=snapshot)


def test_online_status_is_retained(mosquitto, publisher_factory, subscriber_factory):
    # given
    pub = publisher_factory(mosquitto)
    assert pub.wait_connected(DEADLINE_S), pub.last_error
    # when: a subscriber arrives after the fact
    sub = subscriber_factory(mosquitto, ["sc/dev/status"])
    # then
    sub.wait_for(lambda s: s.on("/status"), DEADLINE_S, "the retained status")
    first = sub.on("/status")[0]
    assert (first.payload, first.retain) == (b"online", True)


def test_caption_is_json_with_the_documented_fields(mosquitto, publisher_factory, subscriber_factory):
    # given
    sub = subscriber_factory(mosquitto, ["sc/dev/+/caption"])
    metrics = Metrics()
    pub = publisher_factory(mosquitto, metrics)
    assert pub.wait_connected(DEADLINE_S), pub.last_error
    # when
    pub.publish_caption(make_caption())
    # then
    sub.wait_for(lambda s: s.on("/caption"), DEADLINE_S, "a caption")
    msg = sub.on("/caption")[0]
    assert msg.topic == "sc/dev/gate/caption"
    doc = json.loads(msg.payload)
    assert set(doc) == {"camera", "time", "caption", "frame_id", "frame_time", "latency_ms", "model", "concepts"}
    assert doc["concepts"] == {"person": 0.97, "vehicle": 0.04, "animal": 0.0, "fire": 0.001}, "the concept head's probabilities ride along"
    assert (doc["camera"], doc["caption"], doc["frame_id"], doc["model"]) == (
        "gate", "a man is walking down the street", 42, "resnet-lstm-test")
    assert re.match(ISO, doc["time"]) and re.match(ISO, doc["frame_time"]), doc
    assert 300 <= doc["latency_ms"] < 60_000
    assert metrics.registry.get_sample_value("streamcap_captions_published_total", {"publisher": "mqtt"}) == 1


def test_alarm_arrives_with_qos1_after_its_snapshot(mosquitto, publisher_factory, subscriber_factory):
    # given
    sub = subscriber_factory(mosquitto, ["sc/dev/+/alarm", "sc/dev/+/snapshot"], qos=1)
    metrics = Metrics()
    pub = publisher_factory(mosquitto, metrics)
    jpeg = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 40 + b"\xff\xd9"
    # when
    pub.publish_alarm(make_alarm(1, snapshot=jpeg))
    # then
    sub.wait_for(lambda s: s.on("/alarm"), DEADLINE_S, "the alarm")
    topics = [m.topic for m in sub.messages]
    assert topics == ["sc/dev/gate/snapshot", "sc/dev/gate/alarm"], "the snapshot must be there before the alarm"
    snapshot, alarm = sub.messages
    assert snapshot.payload == jpeg
    assert alarm.qos == 1
    doc = json.loads(alarm.payload)
    assert set(doc) >= {"id", "rule", "severity", "camera", "caption", "time", "snapshot"}
    assert (doc["id"], doc["rule"], doc["severity"], doc["camera"]) == (
        "alarm-00001", "person_at_gate", "alert", "gate")
    assert doc["snapshot"] == {"topic": "sc/dev/gate/snapshot", "alarm_id": "alarm-00001", "seq": 0}
    assert (doc["type"], doc["seq"]) == ("new", 0) and re.match(ISO, doc["start_time"]) and doc["end_time"] is None
    wait_until(lambda: metrics.health()["mqtt"]["spool_depth"] == 0, DEADLINE_S, "the spool to empty after PUBACK")
    assert metrics.registry.get_sample_value("streamcap_alarms_published_total", {"publisher": "mqtt"}) == 1


def test_alarm_without_snapshots_enabled_has_no_snapshot(mosquitto, publisher_factory, subscriber_factory):
    # given
    sub = subscriber_factory(mosquitto, ["sc/dev/#"], qos=1)
    pub = publisher_factory(mosquitto, publish_snapshots=False)
    # when
    pub.publish_alarm(make_alarm(2, snapshot=b"\xff\xd8jpeg"))
    # then
    sub.wait_for(lambda s: s.on("/alarm"), DEADLINE_S, "the alarm")
    assert sub.on("/snapshot") == []
    assert json.loads(sub.on("/alarm")[0].payload)["snapshot"] is None


def test_camera_state_is_retained_and_resent_on_connect(mosquitto, publisher_factory, subscriber_factory):
    # given: the state is set before the broker session exists
    pub = publisher_factory(mosquitto)
    pub.publish_camera_state("yard", CameraState.reconnecting, time.time() - 5)
    assert pub.wait_connected(DEADLINE_S), pub.last_error
    # when
    sub = subscriber_factory(mosquitto, ["sc/dev/+/state"])
    # then
    sub.wait_for(lambda s: s.on("yard/state"), DEADLINE_S, "the retained camera state")
    msg = sub.on("yard/state")[-1]
    doc = json.loads(msg.payload)
    assert msg.retain and doc["state"] == "reconnecting" and re.match(ISO, doc["last_frame_time"]), doc


def test_clean_close_publishes_stopped(mosquitto, tmp_path, subscriber_factory):
    # given
    pub = MqttPublisher(settings_for(mosquitto, tmp_path), "dev", Metrics())
    pub.start()
    assert pub.wait_connected(DEADLINE_S), pub.last_error
    # when
    pub.close(timeout_s=5)
    # then: a newcomer sees the retained `stopped`, not the will
    sub = subscriber_factory(mosquitto, ["sc/dev/status"])
    sub.wait_for(lambda s: s.on("/status"), DEADLINE_S, "the retained status")
    assert [m.payload for m in sub.on("/status")] == [b"stopped"]


def test_killed_publisher_reads_offline(mosquitto, tmp_path, subscriber_factory):
    # given
    sub = subscriber_factory(mosquitto, ["streamcap/dev/status"])
    proc = subprocess.Popen(
        [sys.executable, str(PROC), "--port", str(mosquitto.port), "--spool", str(tmp_path / "spool"),
         "--wait-connected", "--then", "hang"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "connected", proc.stderr.read() if proc.poll() else ""
        sub.wait_for(lambda s: [m.payload for m in s.on("/status")] == [b"online"], DEADLINE_S, "online")
        # when
        proc.send_signal(signal.SIGKILL)
        proc.wait(DEADLINE_S)
        # then
        sub.wait_for(lambda s: len(s.on("/status")) == 2, DEADLINE_S, "the last will")
        assert [m.payload for m in sub.on("/status")] == [b"online", b"offline"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()


def test_username_and_password_are_accepted(mosquitto_auth, publisher_factory, subscriber_factory):
    # given
    (user, password), = MQTT_TEST_USERS.items()
    sub = subscriber_factory(mosquitto_auth, ["sc/dev/status"], username=user, password=password)
    # when
    pub = publisher_factory(mosquitto_auth, username=user, password=password)
    # then
    assert pub.wait_connected(DEADLINE_S), pub.last_error
    sub.wait_for(lambda s: s.on("/status"), DEADLINE_S, "online")


def test_tls_with_a_client_certificate(mosquitto_tls, publisher_factory, subscriber_factory):
    # given
    pki = mosquitto_tls.pki
    sub = subscriber_factory(mosquitto_tls, ["sc/dev/+/alarm"], qos=1, tls=True)
    # when
    pub = publisher_factory(mosquitto_tls, tls_ca=str(pki["ca.crt"]), tls_certfile=str(pki["client.crt"]),
                            tls_keyfile=str(pki["client.key"]))
    pub.publish_alarm(make_alarm(3))
    # then
    assert pub.wait_connected(DEADLINE_S), pub.last_error
    sub.wait_for(lambda s: s.on("/alarm"), DEADLINE_S, "the alarm over TLS")
    assert json.loads(sub.on("/alarm")[0].payload)["id"] == "alarm-00003"


def test_wrong_password_is_one_clear_error_without_the_password(mosquitto_auth, publisher_factory, caplog):
    # given
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-pass-77133"
    metrics = Metrics()
    # when
    pub = publisher_factory(mosquitto_auth, metrics, username="streamcap", password=wrong, reconnect_min_s=1,
                            reconnect_max_s=1)
    wait_until(lambda: pub.last_error is not None, DEADLINE_S, "the broker's refusal")
    wait_until(lambda: metrics.registry.get_sample_value("streamcap_mqtt_connected") == 0, DEADLINE_S, "gauge")
    time.sleep(2.5)  # let paho retry; the refusal must still be logged once
    # then
    assert not pub.connected
    assert "refused the connection" in pub.last_error and "mqtt.password" in pub.last_error, pub.last_error
    assert f"{mosquitto_auth.host}:{mosquitto_auth.port}" in pub.last_error
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert metrics.health()["mqtt"]["state"] == "refused"
    assert wrong not in caplog.text
    assert wrong not in repr(pub.config)


def test_captions_are_dropped_and_counted_while_the_broker_is_away(mosquitto, publisher_factory):
    # given
    metrics = Metrics()
    pub = publisher_factory(mosquitto, metrics)
    assert pub.wait_connected(DEADLINE_S), pub.last_error
    mosquitto.stop()
    wait_until(lambda: not pub.connected, DEADLINE_S, "the publisher to notice the broker is gone")
    # when
    for _ in range(3):
        pub.publish_caption(make_caption())
    # then
    assert metrics.registry.get_sample_value(
        "streamcap_drops_total", {"stage": "publish_mqtt", "cause": "disconnected", "camera": "gate"}) == 3
    assert metrics.health()["status"] == "degraded"


def test_caption_backlog_is_bounded_and_drops_are_counted(mosquitto, publisher_factory, subscriber_factory):
    # given: QoS 1 captions, so a hung broker leaves them unacknowledged
    sub = subscriber_factory(mosquitto, ["sc/dev/+/caption"], qos=1)
    metrics = Metrics()
    pub = publisher_factory(mosquitto, metrics, qos_caption=1, max_pending_captions=5)
    assert pub.wait_connected(DEADLINE_S), pub.last_error
    mosquitto.freeze()
    # when
    for i in range(20):
        pub.publish_caption(make_caption(f"caption {i}"))
    # then
    published = lambda: metrics.registry.get_sample_value(  # noqa: E731
        "streamcap_captions_published_total", {"publisher": "mqtt"})
    assert published() == 5
    assert metrics.registry.get_sample_value("streamcap_drops_total", {"stage": "publish_mqtt", "cause": "backlog", "camera": "gate"}) == 15
    # and when the broker answers again, the backlog clears and captions flow
    mosquitto.thaw()
    sub.wait_for(lambda s: len(s.on("/caption")) == 5, DEADLINE_S, "the 5 queued captions")
    wait_until(lambda: (pub.publish_caption(make_caption("after")), published())[1] == 6, DEADLINE_S,
               "a caption accepted after the backlog cleared")
    sub.wait_for(lambda s: len(s.on("/caption")) == 6, DEADLINE_S, "the caption sent after the thaw")
    assert [json.loads(m.payload)["caption"] for m in sub.on("/caption")] == [
        "caption 0", "caption 1", "caption 2", "caption 3", "caption 4", "after"]


def test_missing_tls_file_fails_preflight_and_a_failed_start_still_spools_alarms(tmp_path):
    # given TLS pointing at a file that is not there
    settings = mqtt_config(spool_dir=str(tmp_path / "spool"), tls_ca=str(tmp_path / "no-such-ca.pem"))
    # then the check before start names it in one line
    with pytest.raises(PublisherUnavailable, match=r"mqtt.tls: cannot load the certificates \(ca=.*no-such-ca.pem\)"):
        preflight(settings)
    # and a publisher started anyway says failed, keeps its spool, and alarms still reach the disk
    metrics = Metrics()
    pub = MqttPublisher(settings, "dev", metrics)
    with pytest.raises(PublisherUnavailable):
        pub.start()
    assert metrics.health()["status"] == "failed" and metrics.health()["mqtt"]["state"] == "failed"
    pub.publish_alarm(make_alarm(1))
    pub.close(timeout_s=1)
    with AlarmSpool(tmp_path / "spool") as spool:
        assert [e.key for e in spool.peek(limit=5)] == ["alarm-00001:0"]
