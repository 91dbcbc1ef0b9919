"""`streamcap ha remove` leaves nothing of the box on a real broker: discovery configs, status, states, snapshots."""
from __future__ import annotations

import time

import pytest

from mqtt_fixtures import mosquitto, mosquitto_binary, subscriber_factory, wait_until  # noqa: F401 (fixtures)
from streamcap.__main__ import main
from streamcap.config.load import load_config
from streamcap.messages import Alarm, CameraState, Severity
from streamcap.metrics import Metrics
from streamcap.publish.homeassistant import HomeAssistantDiscovery
from streamcap.publish.mqtt import MqttPublisher

pytestmark = pytest.mark.integration


def retained_topics(subscriber_factory, broker) -> set[str]:
    sub = subscriber_factory(broker, ["#"])
    time.sleep(1.0)  # retained messages come right after SUBACK
    return {m.topic for m in sub.messages if m.retain and m.payload}


def test_ha_remove_clears_the_discovery_configs_and_the_retained_status_state_and_snapshot(
        mosquitto, tmp_path, subscriber_factory, capsys):
    # given a box that ran: discovery configs, `stopped` status, its camera's state and an alarm snapshot retained
    config_path = tmp_path / "streamcap.yaml"
    config_path.write_text(f"device_id: yard-box\ncameras: {{gate: {{url: 'rtsp://127.0.0.1:1/x'}}}}\n"
                           f"mqtt: {{host: {mosquitto.host}, port: {mosquitto.port}, spool_dir: spool}}\n")
    config = load_config(config_path)
    metrics = Metrics()
    pub = MqttPublisher(config.mqtt, config.device_id, metrics)
    HomeAssistantDiscovery("homeassistant", pub.topics, config.device_id, ["gate"], []).attach(pub)
    pub.start()
    assert pub.wait_connected(20), pub.last_error
    pub.publish_camera_state("gate", CameraState.connected, time.time())
    now = time.time()
    pub.publish_alarm(Alarm(alarm_id="a-1", rule_id="visitor", severity=Severity.alert, camera_id="gate",
                            caption="a man at the gate", captured_at=now, raised_at=now, snapshot_jpeg=b"\xff\xd8jpeg"))
    wait_until(lambda: metrics.health()["mqtt"]["spool_depth"] == 0, 20, "the alarm delivered")
    pub.close(timeout_s=2)
    # and another box on the same broker
    other = subscriber_factory(mosquitto, ["streamcap/other-box/#"])
    other.client.publish("streamcap/other-box/status", "online", qos=1, retain=True).wait_for_publish(5)
    before = retained_topics(subscriber_factory, mosquitto)
    assert {"streamcap/yard-box/status", "streamcap/yard-box/gate/state", "streamcap/yard-box/gate/snapshot"} <= before
    assert any(t.startswith("homeassistant/") and "/yard-box/" in t for t in before)
    # when
    code = main(["ha", "remove", "-c", str(config_path)])
    # then nothing of the box is left, and the other box is untouched
    assert code == 0
    out = capsys.readouterr().out
    assert "discovery configs of device yard-box" in out and "3 retained status, state and snapshot topics" in out, out
    assert retained_topics(subscriber_factory, mosquitto) == {"streamcap/other-box/status"}
