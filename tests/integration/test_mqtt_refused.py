"""A broker that refuses our publishes (a mosquitto ACL that denies a camera's topics) loses nothing silently.

MQTT 5's PUBACK says "Not authorized" (0x87): the alarm stays in the spool,
/healthz says failed with the topic and the reason code, the other camera's
alarms still go, and once the operator fixes the ACL the kept ones follow in
order. MQTT 3.1.1 cannot say it: the last test shows what that costs.
"""
from __future__ import annotations

import json
import logging
import time

import pytest

from mqtt_fixtures import Mosquitto, _running, mqtt_config, subscriber_factory, wait_until  # noqa: F401 (fixture)
from streamcap.messages import Alarm, Severity
from streamcap.metrics import Metrics
from streamcap.publish.mqtt import MqttPublisher

pytestmark = pytest.mark.integration

DEADLINE_S = 20
# Anonymous clients (ours and the test's subscriber) may do everything but publish the gate camera's alarms
# and snapshots, and (second ACL) the box's status.
ACL_DENY_GATE = """\
topic read streamcap/#
topic write streamcap/dev/status
topic write streamcap/dev/yard/#
topic write streamcap/dev/gate/state
topic write streamcap/dev/gate/caption
"""
ACL_DENY_STATUS = """\
topic read streamcap/#
topic write streamcap/dev/+/alarm
topic write streamcap/dev/+/snapshot
topic write streamcap/dev/+/state
topic write streamcap/dev/+/caption
"""
ACL_ALLOW_ALL = "topic readwrite streamcap/#\n"


@pytest.fixture
def broker_with_acl(mosquitto_binary, request):
    yield from _running(Mosquitto(mosquitto_binary, acl=request.param))


def make_alarm(i: int, camera: str, snapshot: bytes | None = None) -> Alarm:
    now = time.time()
    return Alarm(alarm_id=f"alarm-{i:05d}", rule_id="person_at_gate", severity=Severity.alert, camera_id=camera,
                 caption=f"a person ({i})", captured_at=now, raised_at=now, snapshot_jpeg=snapshot)


def alarm_ids(sub, camera: str) -> list[str]:
    return [json.loads(m.payload)["id"] for m in sub.on(f"/{camera}/alarm")]


def problems(metrics: Metrics, name: str) -> list[dict]:
    return [p for p in metrics.health()["problems"] if p["problem"] == name]


@pytest.mark.parametrize("broker_with_acl", [ACL_DENY_GATE], indirect=True)
def test_refused_alarms_stay_in_the_spool_are_reported_and_go_once_the_acl_allows_them(
        broker_with_acl, tmp_path, subscriber_factory, caplog):
    # given a publisher on a broker whose ACL denies the gate camera's alarms (and snapshots) but not the yard's
    broker = broker_with_acl
    sub = subscriber_factory(broker, ["streamcap/dev/+/alarm"], persistent=True)
    metrics = Metrics()
    pub = MqttPublisher(mqtt_config(host=broker.host, port=broker.port, spool_dir=str(tmp_path / "spool"),
                                    keepalive_s=5, refused_retry_s=1), "dev", metrics)
    pub.start()
    try:
        assert pub.wait_connected(DEADLINE_S), pub.last_error
        # when alarms of both cameras are raised, interleaved
        with caplog.at_level(logging.INFO, logger="streamcap"):
            for i, camera in enumerate(["gate", "yard", "gate", "yard", "gate"]):
                pub.publish_alarm(make_alarm(i, camera, snapshot=b"\xff\xd8jpeg" if i == 0 else None))
            # then the yard's arrive while the gate's are refused, kept and reported
            sub.wait_for(lambda s: len(alarm_ids(s, "yard")) == 2, DEADLINE_S, "the yard's two alarms")
            wait_until(lambda: problems(metrics, "publish_refused"), DEADLINE_S, "the refusal in /healthz")
            time.sleep(2.5)  # two retries, both refused again
        health = metrics.health()
        assert health["status"] == "failed"
        refused_topics = {p["topic"]: p for p in problems(metrics, "publish_refused")}
        assert set(refused_topics) <= {"streamcap/dev/gate/alarm", "streamcap/dev/gate/snapshot"}
        refusal = refused_topics.get("streamcap/dev/gate/alarm") or refused_topics["streamcap/dev/gate/snapshot"]
        assert refusal["reason_code"] == 0x87 and refusal["reason"] == "Not authorized" and refusal["status"] == "failed"
        assert health["mqtt"]["spool_depth"] == 3, "the three refused gate alarms must stay in the spool"
        assert alarm_ids(sub, "gate") == []
        assert metrics.registry.get_sample_value("streamcap_alarms_published_total", {"publisher": "mqtt"}) == 2
        assert metrics.registry.get_sample_value("streamcap_mqtt_refused_total", {"reason": "Not authorized"}) >= 3
        refusal_lines = [r for r in caplog.records if "refused a publish on streamcap/dev/gate/" in r.getMessage()]
        assert 1 <= len(refusal_lines) <= 2, "one line per refused topic, not one per retry"
        # when the operator fixes the ACL (the broker reloads it; our connection stays)
        broker.set_acl(ACL_ALLOW_ALL)
        # then the kept alarms go, in the order they were raised, and /healthz is ok again
        sub.wait_for(lambda s: len(alarm_ids(s, "gate")) >= 3, DEADLINE_S, "the gate's three alarms")
        assert alarm_ids(sub, "gate") == ["alarm-00000", "alarm-00002", "alarm-00004"]
        wait_until(lambda: metrics.health()["status"] == "ok", DEADLINE_S, "/healthz ok again")
        # the subscriber can see the last alarm before its acknowledgement reaches us and leaves the spool
        wait_until(lambda: metrics.health()["mqtt"]["spool_depth"] == 0, DEADLINE_S, "the spool emptied")
    finally:
        pub.close(timeout_s=2)


@pytest.mark.parametrize("broker_with_acl", [ACL_DENY_STATUS], indirect=True)
def test_a_refused_status_message_makes_health_failed_naming_the_topic(broker_with_acl, tmp_path):
    # given a broker whose ACL denies the box's retained status (Home Assistant reads availability from it)
    metrics = Metrics()
    pub = MqttPublisher(mqtt_config(host=broker_with_acl.host, port=broker_with_acl.port,
                                    spool_dir=str(tmp_path / "spool")), "dev", metrics)
    # when it connects and publishes `online`
    pub.start()
    try:
        assert pub.wait_connected(DEADLINE_S), pub.last_error
        wait_until(lambda: problems(metrics, "publish_refused"), DEADLINE_S, "the refusal in /healthz")
        # then
        (refusal,) = problems(metrics, "publish_refused")
        assert refusal["topic"] == "streamcap/dev/status" and refusal["reason_code"] == 0x87
        assert metrics.health()["status"] == "failed"
    finally:
        pub.close(timeout_s=2)


@pytest.mark.parametrize("broker_with_acl", [ACL_DENY_GATE], indirect=True)
def test_with_mqtt_3_1_1_the_broker_acknowledges_a_refused_alarm_and_it_is_lost(broker_with_acl, tmp_path,
                                                                                subscriber_factory):
    # given the same ACL and a publisher on MQTT 3.1.1 (the documented risk of mqtt.protocol: "3.1.1")
    sub = subscriber_factory(broker_with_acl, ["streamcap/dev/+/alarm"])
    metrics = Metrics()
    pub = MqttPublisher(mqtt_config(host=broker_with_acl.host, port=broker_with_acl.port, protocol="3.1.1",
                                    spool_dir=str(tmp_path / "spool")), "dev", metrics)
    pub.start()
    try:
        assert pub.wait_connected(DEADLINE_S), pub.last_error
        # when a gate alarm is raised
        pub.publish_alarm(make_alarm(0, "gate"))
        # then the broker's PUBACK reads as delivered: it leaves the spool and nobody ever gets it
        wait_until(lambda: metrics.health()["mqtt"]["spool_depth"] == 0, DEADLINE_S, "the spool to empty")
        time.sleep(1.0)
        assert sub.on("/alarm") == []
        assert metrics.registry.get_sample_value("streamcap_alarms_published_total", {"publisher": "mqtt"}) == 1
        assert problems(metrics, "publish_refused") == []
    finally:
        pub.close(timeout_s=2)
