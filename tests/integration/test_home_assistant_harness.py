"""The Home Assistant harness itself, proven with hand-written MQTT discovery messages.

One real Home Assistant (ha_fixtures.home_assistant_module) on one real mosquitto serves the
whole module; each test uses its own unique_ids and topics. Skips with a reason when
mosquitto or the Home Assistant venv (bash tests/integration/ha_setup.sh) is missing.
"""
from __future__ import annotations

import json
import os
import threading

import paho.mqtt.client as mqtt
import pytest
from ha_fixtures import ha_installed, ha_mosquitto, home_assistant_module  # noqa: F401 (fixtures)

pytestmark = pytest.mark.integration

PREFIX = "homeassistant"
BASE = "streamcap/test_box"
DEVICE = {"identifiers": ["streamcap_test_box"], "name": "Test Box", "manufacturer": "streamcap",
          "model": "harness test", "sw_version": "0.0.0"}
AVAILABILITY = {"availability_topic": f"{BASE}/status", "payload_available": "online",
                "payload_not_available": "offline"}
WAIT_S = 90.0  # per step; HA on a loaded 2-core machine can stall for many seconds


def config_topic(component: str, object_id: str) -> str:
    return f"{PREFIX}/{component}/test_box/{object_id}/config"


@pytest.fixture(scope="module")
def ha(home_assistant_module):
    return home_assistant_module


class Publisher:
    def __init__(self, broker) -> None:
        self._connected = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"ha-harness-pub-{os.getpid()}")
        self.client.on_connect = lambda c, u, f, rc, p: rc.is_failure or self._connected.set()
        self.client.connect(broker.host, broker.port, keepalive=30)
        self.client.loop_start()
        if not self._connected.wait(15):
            raise AssertionError(f"publisher did not connect: {broker.log_tail()}")

    def __call__(self, topic: str, payload: bytes | str | dict, retain: bool = False) -> None:
        if isinstance(payload, dict):
            payload = json.dumps(payload)
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(15)
        assert info.is_published(), f"publish to {topic} not acknowledged"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture(scope="module")
def publish(ha_mosquitto):
    publisher = Publisher(ha_mosquitto)
    yield publisher
    publisher.close()


@pytest.fixture(scope="module")
def box_online(ha, publish):
    publish(AVAILABILITY["availability_topic"], "online", retain=True)


def discovery_error_line(ha, topic: str) -> str:
    return ha.wait_log(f"when processing MQTT discovery message topic: '{topic}'", WAIT_S)


def test_home_assistant_is_up_with_mqtt(ha):
    config = ha.api("GET", "/api/config")
    assert config["state"] == "RUNNING" and config["version"] == "2024.3.3"
    assert "mqtt" in config["components"]
    entries = ha.api("GET", "/api/config/config_entries/entry")
    assert [e["state"] for e in entries if e["domain"] == "mqtt"] == ["loaded"]
    print(f"Home Assistant ready after {ha.startup_s} s ({ha.timings})")


def test_sensor_appears_updates_and_goes_unavailable(ha, publish, box_online):
    state_topic, attributes_topic = f"{BASE}/cam1/caption", f"{BASE}/cam1/attributes"
    publish(config_topic("sensor", "cam1_caption"), {
        "name": "Cam1 caption", "unique_id": "test_box_cam1_caption", "state_topic": state_topic,
        "json_attributes_topic": attributes_topic, "icon": "mdi:cctv", "device": DEVICE, **AVAILABILITY,
    }, retain=True)
    entity_id = ha.wait_for_entity("test_box_cam1_caption", WAIT_S)
    assert entity_id == "sensor.test_box_cam1_caption"
    # "unavailable" until the retained "online" arrives on the availability topic, then
    # "unknown": available, no caption yet.
    state = ha.wait_for_state(entity_id, "unknown", WAIT_S)
    assert state["attributes"]["friendly_name"] == "Test Box Cam1 caption"

    # The entity and its device are in the registries.
    entry = next(e for e in ha.entity_registry() if e["entity_id"] == entity_id)
    device = next(d for d in ha.device_registry() if d["id"] == entry["device_id"])
    assert device["identifiers"] == [["mqtt", "streamcap_test_box"]]
    assert (device["name"], device["manufacturer"], device["model"]) == ("Test Box", "streamcap", "harness test")

    # A non-retained state, once HA's subscription is in place, is not lost.
    ha.wait_subscribed(state_topic, WAIT_S)
    publish(state_topic, "a person walks past a parked car")
    ha.wait_for_state(entity_id, "a person walks past a parked car", WAIT_S)

    ha.wait_subscribed(attributes_topic, WAIT_S)
    publish(attributes_topic, {"confidence": 0.87, "frame": 12})
    state = ha.wait_for_state(entity_id, lambda s: s["attributes"].get("confidence") == 0.87, WAIT_S)
    assert state["attributes"]["frame"] == 12 and state["state"] == "a person walks past a parked car"

    publish(AVAILABILITY["availability_topic"], "offline", retain=True)
    ha.wait_for_state(entity_id, "unavailable", WAIT_S)
    publish(AVAILABILITY["availability_topic"], "online", retain=True)
    ha.wait_for_state(entity_id, "a person walks past a parked car", WAIT_S)


def test_binary_sensor_follows_a_value_template_on_json(ha, publish, box_online):
    state_topic = f"{BASE}/cam1/person"
    publish(config_topic("binary_sensor", "cam1_person"), {
        "name": "Cam1 person", "unique_id": "test_box_cam1_person", "state_topic": state_topic,
        "value_template": "{{ 'ON' if value_json.person else 'OFF' }}", "payload_on": "ON",
        "payload_off": "OFF", "device_class": "occupancy", "device": DEVICE, **AVAILABILITY,
    }, retain=True)
    entity_id = ha.wait_for_entity("test_box_cam1_person", WAIT_S)
    assert ha.state(entity_id)["attributes"]["device_class"] == "occupancy"
    # Retained: delivered even if it lands before HA's subscription.
    publish(state_topic, {"person": True, "count": 2}, retain=True)
    ha.wait_for_state(entity_id, "on", WAIT_S)
    publish(state_topic, {"person": False, "count": 0}, retain=True)
    ha.wait_for_state(entity_id, "off", WAIT_S)


def test_image_entity_serves_the_published_jpeg(ha, publish, box_online):
    cv2 = pytest.importorskip("cv2")
    import numpy as np

    frame = np.zeros((48, 64, 3), np.uint8)
    frame[:, :32] = (0, 0, 255)
    ok, encoded = cv2.imencode(".jpg", frame)
    assert ok
    jpeg = encoded.tobytes()
    image_topic = f"{BASE}/cam1/snapshot"
    publish(config_topic("image", "cam1_snapshot"), {
        "name": "Cam1 snapshot", "unique_id": "test_box_cam1_snapshot", "image_topic": image_topic,
        "content_type": "image/jpeg", "device": DEVICE, **AVAILABILITY,
    }, retain=True)
    entity_id = ha.wait_for_entity("test_box_cam1_snapshot", WAIT_S)
    assert entity_id.startswith("image.")
    publish(image_topic, jpeg, retain=True)
    state = ha.wait_for_state(entity_id, lambda s: s["state"] not in ("unknown", "unavailable"), WAIT_S)
    body, content_type = ha.get_bytes(state["attributes"]["entity_picture"])
    assert content_type == "image/jpeg"
    assert body == jpeg


@pytest.mark.parametrize(("object_id", "bad", "reason"), [
    ("bad_type", {"expire_after": "soon"}, "expected int for dictionary value @ data['expire_after']"),
    ("bad_device_class", {"device_class": "caption"}, "data['device_class']"),
    ("bad_topic", {"state_topic": "streamcap/+/caption/#/x"}, "data['state_topic']"),
])
def test_config_home_assistant_rejects_makes_no_entity_and_is_logged(ha, publish, object_id, bad, reason):
    topic = config_topic("sensor", object_id)
    unique_id = f"test_box_{object_id}"
    publish(topic, {"name": object_id, "unique_id": unique_id, "state_topic": f"{BASE}/{object_id}",
                    "device": DEVICE, **bad}, retain=True)
    line = discovery_error_line(ha, topic)
    assert "ERROR" in line and reason in line, line
    # The error is logged once the config has been handled: no entity came of it, or will.
    assert ha.entity_id_for(unique_id) is None
    assert not [s for s in ha.states() if s["attributes"].get("friendly_name", "").endswith(object_id)]
    publish(topic, b"", retain=True)


def test_invalid_json_config_is_logged(ha, publish):
    publish(config_topic("sensor", "bad_json"), '{"name": "bad json", "unique_id": ', retain=True)
    line = ha.wait_log("Unable to parse JSON bad_json", WAIT_S)
    assert "WARNING" in line
    assert ha.entity_id_for("test_box_bad_json") is None
    publish(config_topic("sensor", "bad_json"), b"", retain=True)


def test_unknown_keys_are_dropped_silently(ha, publish, box_online):
    """HA 2024.3's discovery schemas drop keys they don't know (vol.REMOVE_EXTRA): a typo in a
    key name is NOT rejected, so tests must check the entity's behaviour, not just its existence."""
    topic = config_topic("sensor", "cam1_typo")
    publish(topic, {"name": "Cam1 typo", "unique_id": "test_box_cam1_typo", "state_topic": f"{BASE}/cam1/typo",
                    "json_atributes_topic": f"{BASE}/cam1/typo_attributes", "device": DEVICE, **AVAILABILITY},
            retain=True)
    ha.wait_for_entity("test_box_cam1_typo", WAIT_S)
    ha.wait_subscribed(f"{BASE}/cam1/typo", WAIT_S)
    log = ha.log_text()
    assert f"discovery message topic: '{topic}'" not in log
    assert f"Subscribing to {BASE}/cam1/typo_attributes," not in log  # the misspelt key did nothing
    publish(topic, b"", retain=True)


def test_empty_retained_config_removes_the_entity(ha, publish, box_online):
    topic = config_topic("sensor", "cam1_removed")
    publish(topic, {"name": "Cam1 removed", "unique_id": "test_box_cam1_removed",
                    "state_topic": f"{BASE}/cam1/removed", "device": DEVICE, **AVAILABILITY}, retain=True)
    entity_id = ha.wait_for_entity("test_box_cam1_removed", WAIT_S)
    publish(topic, b"", retain=True)
    ha.wait_for(lambda: ha.state(entity_id) is None, WAIT_S, f"{entity_id} to leave /api/states")
    ha.wait_for(lambda: ha.entity_id_for("test_box_cam1_removed") is None, WAIT_S,
                f"{entity_id} to leave the entity registry")
