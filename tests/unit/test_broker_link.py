"""BrokerLink's decisions from what paho reports (paho's own ReasonCode objects; the broker side is in
tests/integration/test_mqtt_link.py, where mosquitto 2.0 closes a taken-over session without a reason)."""
from __future__ import annotations

import logging

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from streamcap.config.schema import MqttConfig
from streamcap.metrics import Metrics
from streamcap.publish import mqtt_link
from streamcap.publish.mqtt_link import BrokerLink


def make_link(metrics: Metrics) -> BrokerLink:
    return BrokerLink(MqttConfig(host="broker.lan", spool_dir="spool"), "gate-box", "streamcap-gate-box", metrics,
                      lambda state, detail: metrics.set_mqtt_state(state, detail))


def test_a_disconnect_saying_session_taken_over_names_the_device_id_at_once(caplog):
    # given a connected link
    metrics = Metrics()
    link = make_link(metrics)
    link.connected()
    # when the broker says 0x8E
    with caplog.at_level(logging.ERROR):
        link.disconnected(ReasonCode(PacketTypes.DISCONNECT, identifier=0x8E), stopping=False)
    # then
    (problem,) = metrics.health()["problems"]
    assert problem["problem"] == "session_taken_over" and problem["device_id"] == "gate-box"
    assert "Session taken over (0x8E)" in problem["detail"] and "device_id 'gate-box'" in caplog.text
    assert metrics.health()["status"] == "failed"


@pytest.mark.parametrize("held_s, taken_over", [(60.0, False), (1.0, True)])
def test_three_connections_closed_right_after_connack_count_as_a_takeover(monkeypatch, held_s, taken_over):
    # given a link whose connections end after `held_s` each, three times (mosquitto 2.0 gives no reason either way)
    now = [1000.0]
    monkeypatch.setattr(mqtt_link.time, "monotonic", lambda: now[0])
    metrics = Metrics()
    link = make_link(metrics)
    for _ in range(3):
        link.connected()
        now[0] += held_s
        link.disconnected(ReasonCode(PacketTypes.DISCONNECT, identifier=0x80), stopping=False)
    # then only the quick ones are reported
    assert [p["problem"] for p in metrics.health()["problems"]] == (["session_taken_over"] if taken_over else [])
    assert metrics.health()["mqtt"]["state"] == "disconnected"
