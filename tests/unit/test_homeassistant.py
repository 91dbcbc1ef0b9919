"""Home Assistant discovery configs: one device per box, the documented topics, entities that follow the rules."""
from __future__ import annotations

from streamcap.publish.homeassistant import HomeAssistantDiscovery, discovery_messages
from streamcap.publish.payloads import Topics
from streamcap.rules.schema import Rule

TOPICS = Topics("site", "box1")


def rule(rule_id, cameras=("*",), severity="alert", **extra):
    return Rule.model_validate({"id": rule_id, "cameras": list(cameras), "severity": severity,
                                "triggers": [{"trigger": "caption", "any": ["@person"]}], **extra})


def configs(cameras=("gate", "lot"), rules=()):
    return {m.topic: m.config for m in discovery_messages("homeassistant", TOPICS, "box1", cameras, rules)}


def test_each_camera_gets_a_caption_sensor_a_connectivity_sensor_and_a_snapshot_image():
    found = configs()
    assert sorted(found) == [
        "homeassistant/binary_sensor/box1/gate_camera/config", "homeassistant/binary_sensor/box1/lot_camera/config",
        "homeassistant/image/box1/gate_snapshot/config", "homeassistant/image/box1/lot_snapshot/config",
        "homeassistant/sensor/box1/gate_caption/config", "homeassistant/sensor/box1/lot_caption/config",
    ]
    caption = found["homeassistant/sensor/box1/gate_caption/config"]
    assert caption["state_topic"] == caption["json_attributes_topic"] == "site/box1/gate/caption"
    assert found["homeassistant/binary_sensor/box1/gate_camera/config"]["device_class"] == "connectivity"
    assert found["homeassistant/image/box1/gate_snapshot/config"]["image_topic"] == "site/box1/gate/snapshot"
    # one device per box, unavailable whenever the box is not `online`
    assert {c["device"]["identifiers"][0] for c in found.values()} == {"streamcap_box1"}
    assert all(c["availability"][0]["topic"] == "site/box1/status" for c in found.values())
    assert len({c["unique_id"] for c in found.values()}) == len(found)


def test_a_rule_gets_one_binary_sensor_per_camera_it_watches_with_its_severity():
    found = configs(rules=[rule("intruder", ["gate*"]), rule("visitor", severity="detection", alias="Visitor")])
    intruder = found["homeassistant/binary_sensor/box1/intruder_gate/config"]
    assert intruder["state_topic"] == "site/box1/gate/alarm" and intruder["device_class"] == "problem"
    assert "homeassistant/binary_sensor/box1/intruder_lot/config" not in found, "lot is not in gate*"
    visitor = found["homeassistant/binary_sensor/box1/visitor_lot/config"]
    assert "device_class" not in visitor and visitor["name"] == "Visitor lot"
    assert "value_json.rule == 'visitor'" in visitor["value_template"]
    assert all("disabled" not in t for t in configs(rules=[rule("disabled", enabled=False)]))


def test_a_rule_change_removes_the_entities_that_are_gone_and_publishes_the_new_ones():
    sent = []

    class Publisher:
        on_connected: list = []

        def publish_retained(self, topic, payload):
            sent.append((topic, payload))

    discovery = HomeAssistantDiscovery("homeassistant", TOPICS, "box1", ["gate"], [rule("old")])
    discovery.attach(Publisher())
    discovery.publish_all()
    assert len(sent) == 4
    sent.clear()
    discovery.rules_changed([rule("new")])
    assert ("homeassistant/binary_sensor/box1/old_gate/config", b"") in sent, "an empty retained config removes it"
    assert [t for t, p in sent if p] == ["homeassistant/binary_sensor/box1/new_gate/config"]
