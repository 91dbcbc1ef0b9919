"""Config -> publishers: the one place that decides who gets captions and alarms."""
from __future__ import annotations

from collections.abc import Callable
from typing import TextIO

from streamcap.messages import StatusEvent
from streamcap.metrics import Metrics
from streamcap.publish.base import Publisher, PublisherSet
from streamcap.publish.console import ConsolePublisher
from streamcap.publish.mqtt import MqttPublisher
from streamcap.publish.mqtt_settings import MqttSettings


def build_publishers(
    cfg,
    metrics: Metrics,
    on_status: Callable[[StatusEvent], None] | None = None,
    stream: TextIO | None = None,
) -> PublisherSet:
    """From a StreamcapConfig: console and/or JSON lines (`outputs`), MQTT when
    `mqtt` is set. With no broker the console is always on, so a bare config
    still shows what the cameras see."""
    publishers: list[Publisher] = []
    outputs = cfg.outputs
    console = outputs.console or cfg.mqtt is None
    if console or outputs.jsonl is not None:
        publishers.append(ConsolePublisher(stream=stream, jsonl_path=outputs.jsonl, metrics=metrics, console=console))
    if cfg.mqtt is not None:
        publishers.append(MqttPublisher(MqttSettings.from_config(cfg.mqtt, cfg.device_id), metrics, on_status))
    return PublisherSet(publishers, metrics, on_status)
