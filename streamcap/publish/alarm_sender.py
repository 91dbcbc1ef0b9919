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

A message the broker refused (MQTT 5: a PUBACK reason code >= 0x80, e.g. an
ACL denial) is not acknowledged: it stays in the spool, is reported (see
refusals.py), and its topic is set aside, so the messages after it on other
topics (other cameras) still go. Every `retry_refused_s`, and after each
reconnect, the set-aside topics are offered again from their oldest waiting
message, in order; nothing is lost and nothing deleted as delivered.

All state is under one lock: `pump` runs on the sender thread, `disconnected`
on paho's network thread.
"""
from __future__ import annotations

import collections
import logging
import threading
import time

import paho.mqtt.client as mqtt

from streamcap.publish.refusals import PublishRefusals
from streamcap.publish.spool import AlarmSpool, SpoolEntry

log = logging.getLogger(__name__)


class AlarmSender:
    def __init__(self, spool: AlarmSpool, window: int = 1, refusals: PublishRefusals | None = None,
                 retry_refused_s: float = 30.0):
        if window < 1:
            raise ValueError(f"alarm window must be >= 1, got {window}")
        self.spool, self.window = spool, window
        self._refusals, self._retry_refused_s = refusals, retry_refused_s
        self._lock = threading.Lock()
        # seq -> (entry, [(topic, info)]): the snapshot (when there is one), then the alarm message
        self._inflight: collections.OrderedDict[int, tuple[SpoolEntry, list[tuple[str, mqtt.MQTTMessageInfo]]]] = (
            collections.OrderedDict())
        self._last_handed = 0  # spool seq of the last message handed to paho
        self._after_reconnect = False
        self._set_aside: set[str] = set()  # alarm topics the broker refused: skipped until the retry
        self._first_refused = 0  # the oldest refused seq: the retry starts there
        self._retry_at = 0.0
        self.handed = 0  # messages given to paho; exactly once each per process while connected (tests check this)
        self.refused = 0  # refusals seen (each retry of a refused message counts again)

    def disconnected(self) -> None:
        with self._lock:
            self._after_reconnect = True
            self._retry_at = 0.0  # the broker may come back with another ACL: offer the refused again at once
            # QoS 0 messages paho had not written are gone with the connection: hand them again.
            lost = [seq for seq, (entry, _) in self._inflight.items() if entry.qos == 0]
            if lost:
                for seq in lost:
                    del self._inflight[seq]
                self._last_handed = min(self._last_handed, lost[0] - 1)

    def pump(self, client: mqtt.Client | None, connected: bool) -> int:
        """Acknowledge what the broker took and hand what may go next; returns how many were acknowledged."""
        with self._lock:
            done = [seq for seq, (_, sent) in self._inflight.items() if all(published(i) for _, i in sent)]
            delivered = []
            for seq in done:
                entry, sent = self._inflight.pop(seq)
                if not self._refused_any(entry, sent):
                    delivered.append(seq)
            if delivered:
                self.spool.ack_many(delivered)  # one commit for all PUBACKs that arrived together
            if client is None or not connected:
                return len(delivered)
            if self._after_reconnect:
                if self._inflight:
                    return len(delivered)  # paho is re-sending these; nothing may overtake them
                self._after_reconnect = False
            if self._set_aside and not self._inflight and time.monotonic() >= self._retry_at:
                # Offer the refused again, oldest first. Everything between was acknowledged (and so is gone
                # from the spool) or refused too, so nothing is sent twice.
                self._last_handed = min(self._last_handed, self._first_refused - 1)
                self._set_aside.clear()
            room = self.window - len(self._inflight)
            if room > 0:
                for entry in self.spool.peek(after_seq=self._last_handed, limit=room, skip_topics=self._set_aside):
                    sent = _hand(client, entry)
                    if sent is None:
                        break
                    self._inflight[entry.seq] = (entry, sent)
                    self._last_handed = entry.seq
                    self.handed += 1
        return len(delivered)

    def _refused_any(self, entry: SpoolEntry, sent: list[tuple[str, mqtt.MQTTMessageInfo]]) -> bool:
        """Report each publish's verdict; True if the broker refused any (the message then stays in the spool)."""
        if self._refusals is None:
            return False
        verdicts = [(topic, self._refusals.take(info.mid)) for topic, info in sent]
        refusals = [(topic, reason) for topic, reason in verdicts if reason is not None]
        for topic, reason in verdicts:
            if reason is None:
                self._refusals.accepted(topic)
        if not refusals:
            return False
        if not self._set_aside:
            self._first_refused = entry.seq
            self._retry_at = time.monotonic() + self._retry_refused_s
        self._first_refused = min(self._first_refused, entry.seq)
        self._set_aside.add(entry.topic)
        self.refused += 1
        kept = f"alarm {entry.key} stays in the spool and is offered again every {self._retry_refused_s:g} s"
        for topic, reason in refusals:
            self._refusals.refused(topic, reason, kept)
        return True

    @property
    def unconfirmed(self) -> int:
        with self._lock:
            return len(self._inflight)


def _hand(client: mqtt.Client, entry: SpoolEntry) -> list[tuple[str, mqtt.MQTTMessageInfo]] | None:
    """Publish one spooled message (its snapshot first, retained); None if paho did not take it."""
    messages = [(entry.topic, entry.payload, entry.retain)]
    if entry.snapshot_topic and entry.snapshot:
        messages.insert(0, (entry.snapshot_topic, entry.snapshot, True))
    sent = []
    for topic, payload, retain in messages:
        info = client.publish(topic, payload, qos=entry.qos, retain=retain)
        # QoS > 0 and NO_CONN: paho queued it and sends it after reconnecting.
        if not (info.rc == mqtt.MQTT_ERR_SUCCESS or (info.rc == mqtt.MQTT_ERR_NO_CONN and entry.qos > 0)):
            log.debug("mqtt: alarm message %s not handed to paho (%s); retrying", entry.key, mqtt.error_string(info.rc))
            return None
        sent.append((topic, info))
    return sent


def published(info: mqtt.MQTTMessageInfo) -> bool:
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
