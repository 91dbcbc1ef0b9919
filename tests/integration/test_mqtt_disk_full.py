"""The alarm spool on a real filesystem that fills up (an 8 MiB tmpfs, root only) with a real mosquitto.

A full disk never loses an alarm that fits in the memory queue, says so in
/healthz (degraded, `spool_full`), counts exactly what the memory queue could
not hold, and delivers everything, in order, once the broker and the space
are back.
"""
from __future__ import annotations

import json
import time

import pytest

from mqtt_fixtures import mosquitto, mosquitto_binary, mqtt_config, subscriber_factory, wait_until  # noqa: F401
from streamcap.messages import Alarm, Severity
from streamcap.metrics import Metrics
from streamcap.publish.mqtt import MqttPublisher

pytestmark = pytest.mark.integration

DEADLINE_S = 30


def make_alarm(i: int) -> Alarm:
    now = time.time()
    return Alarm(alarm_id=f"alarm-{i:05d}", rule_id="person_at_gate", severity=Severity.alert, camera_id="gate",
                 caption=f"a person at the gate ({i})", captured_at=now, raised_at=now,
                 snapshot_jpeg=b"\xff\xd8" + bytes(i % 251 for _ in range(20_000)))


def received_ids(sub) -> list[str]:
    seen, ids = set(), []
    for m in sub.on("/alarm"):
        alarm_id = json.loads(m.payload)["id"]
        if m.dup and alarm_id in seen:
            continue  # the broker's own re-delivery
        seen.add(alarm_id)
        ids.append(alarm_id)
    return ids


def spool_problem(metrics: Metrics) -> dict | None:
    return next((p for p in metrics.health()["problems"] if p["problem"] == "spool_full"), None)


def spool_full_drops(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value(
        "streamcap_drops_total", {"stage": "spool", "cause": "spool_full", "camera": ""}) or 0


@pytest.fixture
def publisher(small_disk, mosquitto):
    made = []

    def make(memory: int) -> tuple[MqttPublisher, Metrics]:
        metrics = Metrics()
        pub = MqttPublisher(mqtt_config(host=mosquitto.host, port=mosquitto.port, keepalive_s=5,
                                        spool_dir=str(small_disk.root / "spool"), spool_memory_messages=memory,
                                        reconnect_min_s=0.5, reconnect_max_s=1), "dev", metrics)
        made.append(pub)
        pub.start()
        assert pub.wait_connected(DEADLINE_S), pub.last_error
        return pub, metrics

    yield make
    for pub in made:
        pub.close(timeout_s=2)


def test_a_full_disk_with_the_broker_down_loses_nothing_and_delivery_resumes_by_itself(
        small_disk, mosquitto, subscriber_factory, publisher):
    # given a box delivering alarms
    sub = subscriber_factory(mosquitto, ["streamcap/dev/+/alarm"], qos=1, persistent=True)
    pub, metrics = publisher(memory=100)
    for i in range(5):
        pub.publish_alarm(make_alarm(i))
    sub.wait_for(lambda s: len(received_ids(s)) == 5, DEADLINE_S, "the first 5 alarms")
    # when the broker goes away and the spool's disk fills up
    mosquitto.stop()
    wait_until(lambda: not pub.connected, DEADLINE_S, "the publisher to notice")
    small_disk.fill()
    for i in range(5, 40):
        pub.publish_alarm(make_alarm(i))
    # then /healthz names the state, and nothing is counted as dropped (it all waits in memory)
    problem = spool_problem(metrics)
    assert problem is not None and problem["status"] == "degraded" and problem["state"] == "full"
    assert problem["in_memory"] == 35 and problem["dropped"] == 0
    assert "disk is full" in problem["detail"]
    assert spool_full_drops(metrics) == 0
    # when space returns, and then the broker
    small_disk.free()
    wait_until(lambda: spool_problem(metrics) is None, DEADLINE_S, "the spool to be writable again")
    mosquitto.start()
    # then every alarm arrives, in the order raised, and the spool is empty
    sub.wait_for(lambda s: len(received_ids(s)) >= 40, DEADLINE_S, "all 40 alarms")
    assert received_ids(sub) == [f"alarm-{i:05d}" for i in range(40)]
    wait_until(lambda: metrics.health()["mqtt"]["spool_depth"] == 0, DEADLINE_S, "the spool to drain")
    assert metrics.registry.get_sample_value("streamcap_alarms_published_total", {"publisher": "mqtt"}) == 40


def test_with_the_broker_up_alarms_go_straight_from_memory_and_only_the_overflow_is_dropped(
        small_disk, mosquitto, subscriber_factory, publisher):
    # given a full disk and room for 10 alarm messages in memory
    sub = subscriber_factory(mosquitto, ["streamcap/dev/+/alarm"], qos=1, persistent=True)
    pub, metrics = publisher(memory=10)
    small_disk.fill()
    # when alarms come while the broker is up: they are delivered from memory
    for i in range(5):
        pub.publish_alarm(make_alarm(i))
    sub.wait_for(lambda s: len(received_ids(s)) == 5, DEADLINE_S, "5 alarms delivered from memory")
    assert spool_problem(metrics)["state"] == "full"
    # and 25 more while the broker is also down
    mosquitto.stop()
    wait_until(lambda: not pub.connected, DEADLINE_S, "the publisher to notice")
    for i in range(5, 30):
        pub.publish_alarm(make_alarm(i))
    # then exactly the 15 the memory queue could not hold are counted
    assert spool_full_drops(metrics) == 15 and spool_problem(metrics)["dropped"] == 15
    # and the 10 newest arrive once the broker is back, even with the disk still full
    mosquitto.start()
    sub.wait_for(lambda s: len(received_ids(s)) >= 15, DEADLINE_S, "the kept alarms")
    assert received_ids(sub) == [f"alarm-{i:05d}" for i in [*range(5), *range(20, 30)]]
    assert metrics.health()["status"] == "degraded", "the disk is still full"
    small_disk.free()
    wait_until(lambda: metrics.health()["status"] == "ok", DEADLINE_S, "/healthz ok once the disk has room")
