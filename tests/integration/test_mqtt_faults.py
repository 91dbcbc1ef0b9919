"""Broker and publisher faults: every alarm arrives exactly once and in order.

The subscriber keeps a persistent session (clean_session=False, QoS 1) on a
broker with persistence on, so alarms the publisher delivers while the
subscriber is still reconnecting wait for it at the broker.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mqtt_fixtures import (  # noqa: F401 (fixtures)
    mosquitto, mosquitto_binary, subscriber_factory, wait_until,
)
from streamcap.messages import Alarm, Severity
from streamcap.metrics import Metrics
from streamcap.publish.mqtt import MqttPublisher
from mqtt_fixtures import mqtt_config

pytestmark = pytest.mark.integration

PROC = Path(__file__).with_name("mqtt_publisher_proc.py")
DEADLINE_S = 60


def make_alarm(i: int) -> Alarm:
    now = time.time()
    return Alarm(alarm_id=f"alarm-{i:05d}", rule_id="person_at_gate", severity=Severity.alert, camera_id="gate",
                 caption=f"a person at the gate ({i})", captured_at=now, raised_at=now)


def first_deliveries(sub) -> list[str]:
    """Alarm ids in arrival order, without the broker's own re-deliveries.

    A message the broker re-delivers after its restart carries DUP; that is
    the protocol's at-least-once, not us. A repeat without DUP would be our
    publisher sending an alarm twice, and stays in the list to fail the test.
    """
    seen: set[str] = set()
    ids = []
    for m in sub.on("/alarm"):
        alarm_id = json.loads(m.payload)["id"]
        if m.dup and alarm_id in seen:
            continue
        seen.add(alarm_id)
        ids.append(alarm_id)
    return ids


def first_delivery_docs(sub) -> list[dict]:
    """The alarm messages in arrival order, without the broker's re-deliveries (DUP) of a message already seen."""
    seen: set[tuple[str, int]] = set()
    docs = []
    for m in sub.on("/alarm"):
        doc = json.loads(m.payload)
        key = (doc["id"], doc["seq"])
        if m.dup and key in seen:
            continue
        seen.add(key)
        docs.append(doc)
    return docs


def _without_adjacent_repeats(ids: list[str]) -> list[str]:
    return [x for i, x in enumerate(ids) if i == 0 or ids[i - 1] != x]


def run_proc(broker, spool: Path, *args: str, timeout_s: float = DEADLINE_S) -> str:
    done = subprocess.run(
        [sys.executable, str(PROC), "--port", str(broker.port), "--spool", str(spool), *args],
        capture_output=True, text=True, timeout=timeout_s,
    )
    assert done.returncode == 0, f"publisher process failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.parametrize("outage", ["stop", "freeze_then_kill"])
def test_broker_restart_mid_run_loses_and_repeats_nothing(mosquitto, tmp_path, subscriber_factory, outage):
    # given
    sub = subscriber_factory(mosquitto, ["streamcap/dev/+/alarm"], qos=1, persistent=True)
    metrics = Metrics()
    settings = mqtt_config(host=mosquitto.host, port=mosquitto.port, keepalive_s=5,
                            spool_dir=str(tmp_path / "spool"), reconnect_min_s=1, reconnect_max_s=1)
    pub = MqttPublisher(settings, "dev", metrics)
    pub.start()
    assert pub.wait_connected(DEADLINE_S), pub.last_error
    sent: list[str] = []
    total = 300

    def produce() -> None:  # the dispatch thread raising alarms at its own pace
        for i in range(total):
            pub.publish_alarm(make_alarm(i))
            sent.append(f"alarm-{i:05d}")
            time.sleep(0.005)

    producer = threading.Thread(target=produce)
    try:
        producer.start()
        # when: the broker goes away while alarms flow, and comes back while they still flow
        wait_until(lambda: len(sent) >= 40, DEADLINE_S, "the first alarms")
        if outage == "stop":
            mosquitto.stop()
        else:
            # A hung broker leaves an alarm handed over but never acknowledged;
            # after the kill, paho must re-send it and we must not send it again.
            mosquitto.freeze()
            wait_until(lambda: metrics.health()["mqtt"]["spool_depth"] >= 10, DEADLINE_S, "alarms piling up")
            mosquitto.kill()
        wait_until(lambda: not pub.connected, DEADLINE_S, "the publisher to notice")
        outage_start = len(sent)
        wait_until(lambda: len(sent) >= outage_start + 60, DEADLINE_S, "alarms raised during the outage")
        mosquitto.start()
        producer.join(DEADLINE_S)
        # then
        wait_until(lambda: metrics.health()["mqtt"]["spool_depth"] == 0, DEADLINE_S, "the spool to drain")
        sub.wait_for(lambda s: len(set(first_deliveries(s))) >= total, DEADLINE_S, f"{total} alarms at the subscriber")
        received = first_deliveries(sub)
        assert pub.alarms_handed == total, "each alarm must be handed to the client exactly once"
        if outage == "stop":
            assert received == sent
        else:
            # A broker killed after forwarding an alarm but before its PUBACK
            # gets that alarm again from paho's re-send: one repeat, in place.
            assert _without_adjacent_repeats(received) == sent
            assert len(received) - len(sent) <= 1, received
        assert metrics.registry.get_sample_value("streamcap_mqtt_reconnects_total") >= 1
        assert metrics.registry.get_sample_value("streamcap_alarms_published_total", {"publisher": "mqtt"}) == total
    finally:
        producer.join(DEADLINE_S)
        pub.close(timeout_s=2)


@pytest.mark.parametrize("first_run_ends", ["close", "kill"])
def test_alarms_spooled_while_the_broker_is_down_survive_publisher_restarts(
    mosquitto, tmp_path, subscriber_factory, first_run_ends
):
    # given: a subscriber whose session outlives the broker's absence
    sub = subscriber_factory(mosquitto, ["streamcap/dev/+/alarm"], qos=1, persistent=True)
    spool = tmp_path / "spool"
    mosquitto.stop()
    # when: one publisher process spools 20 alarms and ends (cleanly or killed) ...
    if first_run_ends == "close":
        out = run_proc(mosquitto, spool, "--alarms", "20", "--first", "0", "--close-timeout", "1")
        assert "closed depth=20" in out, out
    else:
        proc = subprocess.Popen(
            [sys.executable, str(PROC), "--port", str(mosquitto.port), "--spool", str(spool),
             "--alarms", "20", "--first", "0", "--then", "hang"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        try:
            assert proc.stdout.readline().strip() == "spooled 20"
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(DEADLINE_S)
            proc.stdout.close()
    # ... a second spools 10 more, still without a broker (and, on start, the end of the 20 the first left open) ...
    out = run_proc(mosquitto, spool, "--alarms", "10", "--first", "20", "--close-timeout", "1")
    assert "closed depth=50" in out, out
    # ... and a third starts once the broker is back (and ends the second's 10)
    mosquitto.start()
    out = run_proc(mosquitto, spool, "--wait-connected", "--close-timeout", "30")
    # then every alarm arrives, in order, each followed later by the end its restart sent
    assert "closed depth=0" in out, out
    sub.wait_for(lambda s: len(first_deliveries(s)) >= 60, DEADLINE_S, "60 alarm messages at the subscriber")
    messages = [(doc["id"], doc["type"], doc.get("ended_by")) for doc in first_delivery_docs(sub)]
    first, second = [f"alarm-{i:05d}" for i in range(20)], [f"alarm-{i:05d}" for i in range(20, 30)]
    assert messages == ([(a, "new", None) for a in first] + [(a, "end", "restart") for a in first]
                        + [(a, "new", None) for a in second] + [(a, "end", "restart") for a in second])


def test_close_returns_and_keeps_the_alarm_when_the_broker_hangs(mosquitto, tmp_path):
    # given: a broker that accepted the connection and then stopped answering
    metrics = Metrics()
    settings = mqtt_config(host=mosquitto.host, port=mosquitto.port, keepalive_s=60,
                            spool_dir=str(tmp_path / "spool"))
    pub = MqttPublisher(settings, "dev", metrics)
    pub.start()
    assert pub.wait_connected(DEADLINE_S), pub.last_error
    mosquitto.freeze()
    pub.publish_alarm(make_alarm(1))
    # when
    closer = threading.Thread(target=pub.close, kwargs={"timeout_s": 1})
    closer.start()
    closer.join(DEADLINE_S)
    # then
    assert not closer.is_alive(), "close() must not wait for a hung broker beyond its timeout"
    assert metrics.health()["mqtt"]["spool_depth"] == 1, "the unacknowledged alarm stays for the next start"


def test_long_outage_keeps_the_newest_alarms_and_counts_the_dropped(mosquitto, tmp_path, subscriber_factory):
    # given: a spool of 5 and a broker that is down
    sub = subscriber_factory(mosquitto, ["streamcap/dev/+/alarm"], qos=1, persistent=True)
    metrics = Metrics()
    settings = mqtt_config(host=mosquitto.host, port=mosquitto.port, keepalive_s=5,
                            spool_dir=str(tmp_path / "spool"), spool_max_messages=5,
                            reconnect_min_s=1, reconnect_max_s=1)
    pub = MqttPublisher(settings, "dev", metrics)
    mosquitto.stop()
    pub.start()
    try:
        # when
        for i in range(12):
            pub.publish_alarm(make_alarm(i))
        mosquitto.start()
        # then
        wait_until(lambda: metrics.health()["mqtt"]["spool_depth"] == 0, DEADLINE_S, "the spool to drain")
        sub.wait_for(lambda s: len(first_deliveries(s)) >= 5, DEADLINE_S, "the 5 kept alarms")
        assert first_deliveries(sub) == [f"alarm-{i:05d}" for i in range(7, 12)]
        assert metrics.registry.get_sample_value("streamcap_spool_dropped_total") == 7
        assert metrics.registry.get_sample_value("streamcap_drops_total", {"stage": "spool", "cause": "spool_full", "camera": ""}) == 7
    finally:
        pub.close(timeout_s=2)
