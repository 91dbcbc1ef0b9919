"""Home Assistant MQTT discovery: streamcap shows up in Home Assistant with no custom integration.

One HA device per streamcap box (its device_id). Per camera:
    sensor         <camera> caption     state: the latest caption; attributes: the caption JSON (time, latency, concepts)
    binary_sensor  <camera> camera      connectivity: ON while the camera is connected
    image          <camera> snapshot    the latest alarm snapshot (JPEG on the snapshot topic)
Per rule and each camera it watches:
    binary_sensor  <rule> <camera>      ON from the alarm's `new` to its `end`; device class `problem` for alert rules

Every entity is available while the box's status topic says `online` (and
unavailable on `stopped` or the `offline` last will). Configs are retained,
published on every connect, and follow rule reloads: an entity whose rule or
camera is gone is removed (an empty retained config), as are all of them on
request (`streamcap ha remove -c CONFIG`). The topics they read are the ones
the README documents; nothing here is published only for HA.

The alarm topic is shared by the rules of a camera; each rule's binary_sensor
template renders nothing for the other rules' messages, which HA ignores
("payload not for this entity").
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from streamcap import __version__
from streamcap.messages import Severity
from streamcap.publish.payloads import STATUS_ONLINE, Topics
from streamcap.rules.engine import camera_matches
from streamcap.rules.schema import Rule

log = logging.getLogger(__name__)

HA_STATE_MAX = 255  # Home Assistant refuses longer states


@dataclass(frozen=True)
class DiscoveryMessage:
    topic: str
    config: dict

    @property
    def payload(self) -> bytes:
        return json.dumps(self.config, separators=(",", ":"), sort_keys=True).encode()


def _device(device_id: str) -> dict:
    return {
        "identifiers": [f"streamcap_{device_id}"],
        "name": f"streamcap {device_id}",
        "manufacturer": "streamcap",
        "model": "CCTV captioner",
        "sw_version": __version__,
    }


def _availability(topics: Topics) -> list[dict]:
    # `stopped` (a clean exit) must read as unavailable too, not be ignored.
    return [{"topic": topics.status, "value_template": f"{{{{ 'online' if value == '{STATUS_ONLINE}' else 'offline' }}}}",
             "payload_available": "online", "payload_not_available": "offline"}]


def discovery_messages(prefix: str, topics: Topics, device_id: str, cameras: Iterable[str], rules: Iterable[Rule]) -> list[DiscoveryMessage]:
    """Every retained config streamcap publishes for this box, in a stable order."""
    device, availability = _device(device_id), _availability(topics)
    base = {"device": device, "availability": availability, "availability_mode": "all"}
    messages = []
    cameras = list(cameras)

    def add(component: str, object_id: str, config: dict) -> None:
        unique = f"streamcap_{device_id}_{object_id}"
        messages.append(DiscoveryMessage(f"{prefix}/{component}/{device_id}/{object_id}/config",
                                         {**base, "unique_id": unique, "object_id": unique, **config}))

    for camera in cameras:
        add("sensor", f"{camera}_caption", {
            "name": f"{camera} caption",
            "icon": "mdi:cctv",
            "state_topic": topics.caption(camera),
            "value_template": f"{{{{ value_json.caption[:{HA_STATE_MAX}] }}}}",
            "json_attributes_topic": topics.caption(camera),
        })
        add("binary_sensor", f"{camera}_camera", {
            "name": f"{camera} camera",
            "device_class": "connectivity",
            "state_topic": topics.state(camera),
            "value_template": "{{ 'ON' if value_json.state == 'connected' else 'OFF' }}",
            "json_attributes_topic": topics.state(camera),
        })
        add("image", f"{camera}_snapshot", {
            "name": f"{camera} snapshot",
            "image_topic": topics.snapshot(camera),
            "content_type": "image/jpeg",
        })
    for rule in rules:
        if not rule.enabled:
            continue
        for camera in cameras:
            if not camera_matches(rule.cameras, camera):
                continue
            config = {
                "name": f"{rule.title} {camera}",
                "state_topic": topics.alarm(camera),
                # Other rules' messages on this camera's alarm topic render "" and are ignored by HA.
                "value_template": (f"{{% if value_json.rule == '{rule.id}' %}}"
                                   "{{ 'OFF' if value_json.type == 'end' else 'ON' }}{% endif %}"),
                "icon": "mdi:alarm-light" if rule.severity == Severity.alert else "mdi:account-eye",
            }
            if rule.severity == Severity.alert:
                config["device_class"] = "problem"
            add("binary_sensor", f"{rule.id}_{camera}", config)
    return messages


class HomeAssistantDiscovery:
    """Publishes the configs on every connect and keeps them in step with the rules."""

    def __init__(self, prefix: str, topics: Topics, device_id: str, cameras: Iterable[str], rules: Iterable[Rule]):
        self.prefix, self.topics, self.device_id, self.cameras = prefix, topics, device_id, list(cameras)
        self._messages = discovery_messages(prefix, topics, device_id, self.cameras, rules)
        self._publish = None

    @property
    def topics_published(self) -> list[str]:
        return [m.topic for m in self._messages]

    def attach(self, publisher) -> None:
        """Publish through `publisher` (an MqttPublisher), now and on every reconnect."""
        self._publish = publisher.publish_retained
        publisher.on_connected.append(lambda _: self.publish_all())

    def publish_all(self) -> None:
        if self._publish is None:
            return
        for message in self._messages:
            self._publish(message.topic, message.payload)
        log.info("home assistant: %d discovery configs under %s/", len(self._messages), self.prefix)

    def rules_changed(self, rules: Iterable[Rule]) -> None:
        fresh = discovery_messages(self.prefix, self.topics, self.device_id, self.cameras, rules)
        gone = set(self.topics_published) - {m.topic for m in fresh}
        before = {m.topic: m.config for m in self._messages}  # by topic: one pass, however many rules
        changed = [m for m in fresh if before.get(m.topic) != m.config]
        self._messages = fresh
        if self._publish is None:
            return
        for topic in sorted(gone):
            self._publish(topic, b"")  # an empty retained config removes the entity
        for message in changed:
            self._publish(message.topic, message.payload)
        if gone or changed:
            log.info("home assistant: %d configs updated, %d removed after a rule change", len(changed), len(gone))


def removal_messages(messages: Iterable[DiscoveryMessage]) -> Mapping[str, bytes]:
    return {m.topic: b"" for m in messages}
