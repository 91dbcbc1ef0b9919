"""AlarmSender: spooled alarm messages to paho, in order, each deleted only once the broker took it.

Every alarm message (new, update, end) is in the spool before `publish_alarm`
returns. The sender thread calls `pump` whenever something happened (a new
alarm, a PUBACK, a reconnect): it first deletes from the spool the messages
whose `MQTTMessageInfo` says published (QoS 1: the broker's PUBACK arrived),
then hands the next ones to paho in spool order, at most `window` unconfirmed
at a time.

paho keeps unacknowledged QoS 1 messages across reconnects and re-sends them
itself after CONNACK, so each message is handed to paho exactly once per
process and, after a reconnect, nothing new is handed until those re-sends
are acknowledged: a new alarm must never overtake an older one. paho drops
unsent QoS 0 messages with a lost connection, so those are handed again. A
new process re-sends whatever the old one left in the spool. So: in order,
nothing lost; a crash between the broker taking a message and its PUBACK
reaching us means one duplicate, which consumers drop by (id, seq).

All state is under one lock: `pump` runs on the sender thread, `disconnected`
on paho's network thread.
"""
from __future__ import annotations

import collections
import logging
import threading

import paho.mqtt.client as mqtt

from streamcap.publish.spool import AlarmSpool, SpoolEntry

log = logging.getLogger(__name__)


class AlarmSender:
    def __init__(self, spool: AlarmSpool, window: int = 1):
        if window < 1:
            raise ValueError(f"alarm window must be >= 1, got {window}")
        self.spool, self.window = spool, window
        self._lock = threading.Lock()
        self._inflight: collections.OrderedDict[int, list[mqtt.MQTTMessageInfo]] = collections.OrderedDict()
        self._qos: dict[int, int] = {}
        self._last_handed = 0  # spool seq of the last message handed to paho
        self._after_reconnect = False
        self.handed = 0  # messages given to paho; exactly once each per process while connected (tests check this)

    def disconnected(self) -> None:
        with self._lock:
            self._after_reconnect = True
            # QoS 0 messages paho had not written are gone with the connection: hand them again.
            lost = [seq for seq in self._inflight if self._qos[seq] == 0]
            if lost:
                for seq in lost:
                    del self._inflight[seq]
                    del self._qos[seq]
                self._last_handed = min(self._last_handed, lost[0] - 1)

    def pump(self, client: mqtt.Client | None, connected: bool) -> int:
        """Acknowledge what the broker took and hand what may go next; returns how many were acknowledged."""
        with self._lock:
            done = [seq for seq, infos in self._inflight.items() if all(_published(i) for i in infos)]
            for seq in done:
                del self._inflight[seq]
                del self._qos[seq]
            if done:
                self.spool.ack_many(done)  # one commit for all PUBACKs that arrived together
            if client is None or not connected:
                return len(done)
            if self._after_reconnect:
                if self._inflight:
                    return len(done)  # paho is re-sending these; nothing may overtake them
                self._after_reconnect = False
            room = self.window - len(self._inflight)
            if room > 0:
                for entry in self.spool.peek(after_seq=self._last_handed, limit=room):
                    infos = _hand(client, entry)
                    if infos is None:
                        break
                    self._inflight[entry.seq] = infos
                    self._qos[entry.seq] = entry.qos
                    self._last_handed = entry.seq
                    self.handed += 1
        return len(done)

    @property
    def unconfirmed(self) -> int:
        with self._lock:
            return len(self._inflight)


def _hand(client: mqtt.Client, entry: SpoolEntry) -> list[mqtt.MQTTMessageInfo] | None:
    """Publish one spooled message (its snapshot first, retained); None if paho did not take it."""
    messages = [(entry.topic, entry.payload, entry.retain)]
    if entry.snapshot_topic and entry.snapshot:
        messages.insert(0, (entry.snapshot_topic, entry.snapshot, True))
    infos = []
    for topic, payload, retain in messages:
        info = client.publish(topic, payload, qos=entry.qos, retain=retain)
        # QoS > 0 and NO_CONN: paho queued it and sends it after reconnecting.
        if not (info.rc == mqtt.MQTT_ERR_SUCCESS or (info.rc == mqtt.MQTT_ERR_NO_CONN and entry.qos > 0)):
            log.debug("mqtt: alarm message %s not handed to paho (%s); retrying", entry.key, mqtt.error_string(info.rc))
            return None
        infos.append(info)
    return infos


def _published(info: mqtt.MQTTMessageInfo) -> bool:
    """Has the broker acknowledged this message (QoS 1), or has paho written it (QoS 0)?

    A QoS 1 message published while the connection is down keeps rc=NO_CONN
    for good, even after paho re-sent it on reconnect and the PUBACK set its
    flag, and `is_published()` raises for any rc > 0; so the flag is read
    directly for that case (paho 2.x keeps it in `_published` under `_condition`).
    """
    if info.rc == mqtt.MQTT_ERR_NO_CONN and hasattr(info, "_published"):
        with info._condition:
            return bool(info._published)
    try:
        return info.is_published()
    except (RuntimeError, ValueError):
        return False
