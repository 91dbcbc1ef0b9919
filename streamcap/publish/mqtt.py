"""MqttPublisher: captions, alarms, snapshots and health to an MQTT broker.

Topics (see payloads.Topics), all under `<prefix>/<device>/`:
    status                retained: online | stopped (clean close) | offline (last will)
    <camera>/caption      JSON, qos_caption (0): best effort, dropped and counted under backlog
    <camera>/alarm        JSON lifecycle messages (new, update, end), qos_alarm (1): through the on-disk spool, never lost
    <camera>/snapshot     JPEG bytes, retained, sent just before the alarm message that refers to it
    <camera>/state        retained JSON: connected | reconnecting | down ... and last frame time

`publish_alarm` writes the message to the spool and returns; the sender
thread delivers the spool in order (see alarm_sender.py), keeps what the
broker refuses (refusals.py) and keeps the spool trying while its disk is full
(spool.py). `preflight()` checks what can be checked before start (the spool
folder is writable and no other process holds it, the TLS files are readable
certificates) so a box that cannot deliver alarms refuses to start instead of
looking healthy. How we connect is mqtt_client.py; the connection's states,
the CONNACK timeout and a session taken over are mqtt_link.py. Reconnects back
off to at most `reconnect_max_s` (2 s by default), so alarms flow again within
seconds of the broker returning.
"""
from __future__ import annotations

import collections
import json
import logging
import os
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt

from streamcap.config.schema import MqttConfig
from streamcap.messages import (
    Alarm, AlarmType, CameraState, Caption, DropCause, PublisherState, PublisherStatus, StatusEvent,
)
from streamcap.metrics import Metrics
from streamcap.publish.alarm_sender import AlarmSender, published
from streamcap.publish.base import PublisherUnavailable
from streamcap.publish.mqtt_client import build_client, connect_args
from streamcap.publish.mqtt_link import BrokerLink
from streamcap.publish.payloads import (
    STATUS_OFFLINE, STATUS_ONLINE, STATUS_STOPPED, Topics, alarm_doc, caption_doc, restart_end_doc, state_doc, to_json,
)
from streamcap.publish.refusals import PublishRefusals
from streamcap.publish.spool import AlarmSpool, SpoolState, SpoolStatus, spool_owner

log = logging.getLogger(__name__)

__all__ = ["MqttPublisher", "PublisherUnavailable", "preflight"]

WATCHED_MAX = 1000  # retained messages (status, states, discovery) whose acknowledgement is still to be read


def preflight(config: MqttConfig) -> None:
    """Raise PublisherUnavailable unless the spool folder is writable and ours, and the TLS files load."""
    spool = Path(config.spool_dir)
    try:
        spool.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=spool, prefix=".write-test-") as probe:
            probe.write(b"x")
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as exc:
        user = "" if os.geteuid() == 0 else " (running as a user: give a folder of yours, e.g. ~/.local/state/streamcap/spool)"
        raise PublisherUnavailable(
            f"mqtt.spool_dir {spool}: cannot write there ({exc.strerror or exc}); alarms wait in this folder "
            f"while the broker is away: give a writable folder on a real disk{user}") from None
    owner = spool_owner(spool)
    if owner is not None:
        pid = f" (pid {owner})" if owner else ""
        raise PublisherUnavailable(
            f"mqtt.spool_dir {spool}: another streamcap process{pid} is using it; stop that one, or give each "
            "instance its own mqtt.spool_dir (and its own device_id)")
    tls = config.tls
    if tls is None:
        return
    try:
        context = ssl.create_default_context(cafile=str(tls.ca) if tls.ca else None)
        if tls.certfile:
            context.load_cert_chain(str(tls.certfile), str(tls.keyfile) if tls.keyfile else None)
    except (OSError, ssl.SSLError, ValueError) as exc:
        which = ", ".join(f"{k}={v}" for k, v in (("ca", tls.ca), ("certfile", tls.certfile), ("keyfile", tls.keyfile)) if v)
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc) or type(exc).__name__
        raise PublisherUnavailable(f"mqtt.tls: cannot load the certificates ({which}): {reason}; "
                                   "give readable PEM files") from None


class MqttPublisher:
    name = "mqtt"

    def __init__(self, config: MqttConfig, device_id: str, metrics: Metrics | None = None,
                 on_status: Callable[[StatusEvent], None] | None = None) -> None:
        self.config = config
        self.device_id = device_id
        self.topics = Topics(config.prefix, device_id)
        self._metrics = metrics if metrics is not None else Metrics()
        self._on_status = on_status
        self.client_id = config.client_id_for(device_id)
        self.link = BrokerLink(config, device_id, self.client_id, self._metrics, self._set_state)
        self.refusals = PublishRefusals(self._metrics, self.client_id)
        self._client: mqtt.Client | None = None
        self._spool: AlarmSpool | None = None
        self._sender: AlarmSender | None = None
        self._sender_thread: threading.Thread | None = None
        self._connected = threading.Event()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._connects = 0
        self._watched: collections.deque[tuple[str, mqtt.MQTTMessageInfo]] = collections.deque(maxlen=WATCHED_MAX)
        self._watched_lock = threading.Lock()
        # Caption backlog: MQTTMessageInfo of captions paho has not written yet.
        self._caption_lock = threading.Lock()
        self._pending_captions: collections.deque[mqtt.MQTTMessageInfo] = collections.deque()
        self._captions_lost = False  # set on disconnect: paho dropped unsent QoS 0 captions
        self._states: dict[str, bytes] = {}
        self._states_lock = threading.Lock()
        self.on_connected: list[Callable[[MqttPublisher], None]] = []  # run on every (re)connect: discovery

    @property
    def alarms_handed(self) -> int:
        return self._sender.handed if self._sender is not None else 0

    @property
    def last_error(self) -> str | None:
        """The broker's last refusal of our connection, for health and tests."""
        return self.link.last_error

    # --- lifecycle -----------------------------------------------------------
    def start(self) -> None:
        """Open the spool first (from then on no alarm is lost), then connect without blocking."""
        c = self.config
        self._spool = AlarmSpool(c.spool_dir, c.spool_max_messages, durable=c.spool_durable, on_drop=self._spool_dropped,
                                 memory_max=c.spool_memory_messages, on_state=self._spool_state)
        self._sender = AlarmSender(self._spool, c.alarm_window, self.refusals, c.refused_retry_s)
        self._end_orphaned_alarms()
        self._metrics.set_spool_depth(len(self._spool))
        if len(self._spool):
            log.info("mqtt: %d alarm message(s) waiting in the spool %s from an earlier run", len(self._spool), c.spool_dir)
        try:
            client = self._make_client()
        except Exception as exc:
            # The spool stays open: alarms keep reaching the disk while /healthz says failed.
            self._set_state(PublisherState.failed, str(exc))
            raise
        self._client = client
        self.link.connecting()
        client.connect_async(**connect_args(c))
        client.loop_start()
        self._sender_thread = threading.Thread(target=self._run_sender, name="mqtt-alarms", daemon=True)
        self._sender_thread.start()

    def _end_orphaned_alarms(self) -> None:
        """End, in spool order, the alarms an earlier process was killed before ending (this process knows nothing of them)."""
        orphans = self._spool.orphaned_alarms()
        for alarm_id, topic, payload in orphans:
            try:
                doc = restart_end_doc(json.loads(payload))
            except (ValueError, KeyError, TypeError):
                log.error("mqtt: spool %s: unreadable open alarm %s; forgetting it", self.config.spool_dir, alarm_id)
                self._spool.forget_open_alarm(alarm_id)
                continue
            self._spool.put(f"{alarm_id}:{doc['seq']}", topic, to_json(doc), qos=self.config.qos_alarm, alarm=(alarm_id, False))
        if orphans:
            log.warning("mqtt: %d alarm(s) were left open by a run that stopped without ending them; "
                        "sending their end (ended_by: restart)", len(orphans))

    def _make_client(self) -> mqtt.Client:
        client = build_client(self.config, self.client_id)
        # The broker publishes the will if we vanish without a DISCONNECT.
        client.will_set(self.topics.status, STATUS_OFFLINE, qos=self.config.qos_status, retain=True)
        client.on_connect = self._on_connect
        client.on_connect_fail = lambda *_: self.link.connect_failed()
        client.on_socket_open = lambda _client, _userdata, sock: self.link.socket_opened(sock)
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    def wait_connected(self, timeout_s: float) -> bool:
        return self._connected.wait(timeout_s)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def close(self, timeout_s: float = 5.0) -> None:
        """Flush the spool while the broker takes it (up to timeout_s), publish `stopped`,
        disconnect, and join both threads. What is not acknowledged stays in the spool for the next start."""
        deadline = time.monotonic() + timeout_s
        client, spool, sender = self._client, self._spool, self._sender
        if spool is None:
            return
        try:
            while client is not None and len(spool) and self._connected.is_set() and time.monotonic() < deadline:
                self._wake.set()
                time.sleep(0.02)
            self._stop.set()
            self._wake.set()
            if self._sender_thread is not None:
                self._sender_thread.join(max(0.1, deadline - time.monotonic()) + 1.0)
            if client is not None and self._connected.is_set():
                info = self._publish_watched(client, self.topics.status, STATUS_STOPPED)
                # PUBACKs arrive in order: once `stopped` is acknowledged, so are the alarms before it.
                try:
                    info.wait_for_publish(max(0.1, deadline - time.monotonic()))
                except (RuntimeError, ValueError) as exc:
                    log.warning("mqtt: could not publish 'stopped': %s", exc)
            if client is not None:
                client.disconnect()
        finally:
            if client is not None:
                client.loop_stop()
            if sender is not None:
                sender.pump(None, False)  # the last acknowledgements
            self._connected.clear()
            self._set_state(PublisherState.closed, "closed")
            self._metrics.set_spool_depth(len(spool))
            on_disk = len(spool) - spool.status.in_memory  # those in memory: the spool says what became of them
            if on_disk:
                log.warning("mqtt: %d alarm message(s) left in the spool %s; they are sent on the next start",
                            on_disk, self.config.spool_dir)
            spool.close()
            self._client = self._spool = self._sender = None

    # --- publisher calls (dispatch thread) -------------------------------------
    def publish_caption(self, caption: Caption) -> None:
        client = self._client
        if client is None or not self._connected.is_set():
            self._metrics.count_drop("publish_mqtt", DropCause.disconnected, 1, caption.camera_id)
            return
        qos = self.config.qos_caption
        with self._caption_lock:
            pending = self._pending_captions
            if self._captions_lost and qos == 0:
                self._captions_lost = False
                pending.clear()
            while pending and _written(pending[0]):
                pending.popleft()
            if len(pending) >= self.config.max_pending_captions:
                self._metrics.count_drop("publish_mqtt", DropCause.backlog, 1, caption.camera_id)
                return
            info = client.publish(self.topics.caption(caption.camera_id), to_json(caption_doc(caption)), qos=qos)
            if info.rc != mqtt.MQTT_ERR_SUCCESS and not (info.rc == mqtt.MQTT_ERR_NO_CONN and qos > 0):
                self._metrics.count_drop("publish_mqtt", DropCause.disconnected, 1, caption.camera_id)
                return
            pending.append(info)
        self._metrics.captions_published.labels(publisher=self.name).inc()

    def publish_alarm(self, alarm: Alarm) -> None:
        spool = self._spool
        if spool is None:
            raise RuntimeError("MqttPublisher.publish_alarm called before start() or after close()")
        snapshot_topic = None
        if self.config.publish_snapshots and alarm.snapshot_jpeg:
            snapshot_topic = self.topics.snapshot(alarm.camera_id)
        payload = to_json(alarm_doc(alarm, snapshot_topic))
        spool.put(alarm.message_id, self.topics.alarm(alarm.camera_id), payload, qos=self.config.qos_alarm,
                  snapshot_topic=snapshot_topic, snapshot=alarm.snapshot_jpeg if snapshot_topic else None,
                  alarm=(alarm.alarm_id, alarm.type != AlarmType.end))
        self._metrics.set_spool_depth(len(spool))
        self._wake.set()

    def publish_camera_state(self, camera_id: str, state: CameraState, last_frame_at: float | None = None) -> None:
        payload = to_json(state_doc(camera_id, state, last_frame_at))
        with self._states_lock:
            self._states[camera_id] = payload  # re-sent on every (re)connect
        client = self._client
        if client is not None and self._connected.is_set():
            self._publish_watched(client, self.topics.state(camera_id), payload)

    def publish_retained(self, topic: str, payload: bytes | str, qos: int | None = None) -> None:
        """A retained message outside the alarm path (Home Assistant discovery); an empty payload deletes it."""
        client = self._client
        if client is not None:
            self._publish_watched(client, topic, payload, qos)

    def _publish_watched(self, client: mqtt.Client, topic: str, payload: bytes | str,
                         qos: int | None = None) -> mqtt.MQTTMessageInfo:
        """Publish a retained message whose refusal, if the broker refuses it, is reported like an alarm's."""
        info = client.publish(topic, payload, qos=self.config.qos_status if qos is None else qos, retain=True)
        with self._watched_lock:
            self._watched.append((topic, info))
        return info

    def _read_watched(self) -> None:
        """The verdicts of retained messages the broker has acknowledged since the last look."""
        with self._watched_lock:
            done = [(topic, info) for topic, info in self._watched if published(info)]
            if done:
                self._watched = collections.deque(((t, i) for t, i in self._watched if not published(i)),
                                                  maxlen=WATCHED_MAX)
        for topic, info in done:
            reason = self.refusals.take(info.mid)
            if reason is None:
                self.refusals.accepted(topic)
            else:
                self.refusals.refused(topic, reason, "it is sent again on the next connection")

    # --- paho callbacks (network thread) ---------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.link.connect_refused(reason_code)
            return
        self._publish_watched(client, self.topics.status, STATUS_ONLINE)
        with self._states_lock:
            states = list(self._states.items())
        for camera_id, payload in states:
            self._publish_watched(client, self.topics.state(camera_id), payload)
        for callback in list(self.on_connected):
            try:
                callback(self)
            except Exception:  # noqa: BLE001 - a discovery hook must not break the connection
                log.exception("mqtt: on-connect hook failed")
        self._connects += 1
        if self._connects > 1:
            self._metrics.mqtt_reconnects.inc()
        self.link.connected()
        self._connected.set()
        self._wake.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        # The state first: whoever sees `connected` false must also see why in /healthz.
        self.link.disconnected(reason_code, stopping=self._stop.is_set())
        self._connected.clear()
        if self._sender is not None:
            self._sender.disconnected()
        with self._caption_lock:
            self._captions_lost = True
        self._wake.set()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        # Called before paho marks the message published: its owner finds the verdict when it looks.
        self.refusals.note(mid, reason_code)
        self._wake.set()

    # --- sender thread ----------------------------------------------------------
    def _run_sender(self) -> None:
        while not self._stop.is_set():
            try:
                sender, spool = self._sender, self._spool
                if sender is not None and spool is not None:
                    spool.retry()  # a no-op unless its disk was full
                    acked = sender.pump(self._client, self._connected.is_set())
                    if acked:
                        self._metrics.alarms_published.labels(publisher=self.name).inc(acked)
                        self._metrics.set_spool_depth(len(spool))
                self.link.tick()
                self._read_watched()
            except Exception:  # keep sending; the spool still holds everything
                log.exception("mqtt: alarm sender error")
                self._stop.wait(1.0)
            self._wake.wait(0.5)
            self._wake.clear()

    # --- helpers -------------------------------------------------------------------
    def _spool_dropped(self, n: int) -> None:
        self._metrics.spool_dropped.inc(n)
        self._metrics.count_drop("spool", DropCause.spool_full, n)

    def _spool_state(self, status: SpoolStatus) -> None:
        """The spool's disk filled up or has room again (the spool itself logs the change)."""
        if status.state is SpoolState.ok:
            self._metrics.set_problem("spool_full", None)
        else:
            detail = (f"mqtt.spool_dir {self.config.spool_dir}: {status.detail}; {status.in_memory} alarm message(s) wait "
                      f"in memory (at most {self.config.spool_memory_messages}), {status.dropped} dropped; free space "
                      "there and they go to disk by themselves")
            self._metrics.set_problem("spool_full", "degraded", state=str(status.state), in_memory=status.in_memory,
                                      dropped=status.dropped, detail=detail)

    def _set_state(self, state: PublisherState, detail: str = "") -> None:
        self._metrics.set_mqtt_state(state, detail)
        if self._on_status is not None:
            try:
                self._on_status(PublisherStatus(self.name, state, detail, time.time()))
            except Exception:
                log.exception("mqtt: status callback failed")


def _written(info: mqtt.MQTTMessageInfo) -> bool:
    try:
        return info.is_published()
    except (RuntimeError, ValueError):
        return True  # never queued, so not part of the backlog
