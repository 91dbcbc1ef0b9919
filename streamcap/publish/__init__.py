"""Publishers: where captions, alarms and camera states go (MQTT, console, JSON lines)."""
from streamcap.publish.base import Publisher, PublisherSet
from streamcap.publish.console import ConsolePublisher
from streamcap.publish.mqtt import MqttPublisher
from streamcap.publish.spool import AlarmSpool, SpoolLockedError

__all__ = ["AlarmSpool", "ConsolePublisher", "MqttPublisher", "Publisher", "PublisherSet",
           "SpoolLockedError"]
