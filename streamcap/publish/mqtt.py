"""MqttPublisher: captions, alarms, snapshots and health to an MQTT broker.

Topics (see payloads.Topics), all under `<prefix>/<device>/`:
    status                retained: online | stopped (clean close) | offline (last will)
    <camera>/caption      JSON, qos_caption (0): best effort, dropped and counted under backlog
    <camera>/alarm        JSON, qos_alarm (1): through the on-disk spool, never lost
    <camera>/snapshot     JPEG bytes, retained, sent just before the alarm that refers to it
    <camera>/state        retained JSON: connected | reconnecting | down ... and last frame time

Alarm delivery. `publish_alarm` writes the alarm to the spool and returns.
One sender thread hands spooled alarms to paho in seq order, at most
`alarm_window` at a time, and deletes each from the spool when its PUBACK
arrives (on_publish). paho keeps unacknowledged QoS 1 messages across
reconnects and re-sends them itself after CONNACK, so the sender hands each
alarm to paho exactly once per process and, after a reconnect, hands nothing
new until those re-sends are acknowledged (a new alarm must not overtake
them). A new process re-sends what the old one left in the spool. So: in
order, nothing lost, nothing re-sent by us after its PUBACK; a crash between
the broker taking an alarm and its PUBACK reaching us means one duplicate,
which consumers drop by the `id` in the payload.
"""
from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt

from streamcap.messages import Alarm, CameraState, Caption, StatusEvent
from streamcap.metrics import Metrics
from streamcap.publish.mqtt_settings import MqttSettings
from streamcap.publish.payloads import (
    STATUS_OFFLINE, STATUS_ONLINE, STATUS_STOPPED, Topics, alarm_doc, caption_doc, state_doc, to_json,
)
from streamcap.publish.spool import AlarmSpool, SpoolEntry

log = logging.getLogger(__name__)

# paho numbers messages 1..65535 for QoS 0 and QoS 1 alike. A caption's
# on_publish could alias an in-flight alarm's mid only after this many caption
# publishes during one alarm's flight; stop captions well before that.
MID_ALIAS_GUARD = 30_000
AUTH_REASONS = ("not authorized", "bad user name or password")


class MqttPublisher:
    name = "mqtt"

    def __init__(
        self,
        settings: MqttSettings,
        metrics: Metrics | None = None,
        on_status: Callable[[StatusEvent], None] | None = None,
    ) -> None:
        self.settings = settings
        self.topics = Topics(settings.prefix, settings.device_id)
        self._metrics = metrics if metrics is not None else Metrics()
        self._on_status = on_status
        self.last_error: str | None = None  # the broker's last refusal, for health and tests
        self._client: mqtt.Client | None = None
        self._spool: AlarmSpool | None = None
        self._sender: threading.Thread | None = None
        self._connected = threading.Event()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._acks: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._connects = 0
        self._logged_refusal: str | None = None
        self._logged_unreachable = False
        self._after_reconnect = False  # set by on_disconnect, cleared by the sender
        # Owned by the sender thread (and by close() once the sender is joined):
        self._inflight: collections.OrderedDict[int, set[int]] = collections.OrderedDict()  # seq -> mids
        self._mid_seq: dict[int, int] = {}
        self._last_handed = 0
        self.alarms_handed = 0  # alarms given to paho; exactly once each per process (tests check this)
        # Caption backlog: MQTTMessageInfo of captions paho has not written yet.
        self._caption_lock = threading.Lock()
        self._pending_captions: collections.deque[mqtt.MQTTMessageInfo] = collections.deque()
        self._captions_sent = 0
        self._captions_lost = False  # set on disconnect; publish_caption resets the backlog
        self._alias_mark: int | None = None  # _captions_sent when the oldest in-flight alarm was handed
        self._states: dict[str, bytes] = {}
        self._states_lock = threading.Lock()

    # --- lifecycle -----------------------------------------------------------
    def start(self) -> None:
        s = self.settings
        self._spool = AlarmSpool(s.spool_dir, s.spool_max_messages, durable=s.spool_durable,
                                 on_drop=self._spool_dropped)
        self._metrics.set_spool_depth(len(self._spool))
        if len(self._spool):
            log.info("mqtt: %d alarm(s) waiting in the spool %s from an earlier run", len(self._spool), s.spool_dir)
        try:
            client = self._make_client()
        except BaseException:
            self._spool.close()
            self._spool = None
            raise
        self._client = client
        self._metrics.set_mqtt_state("connecting", f"{s.host}:{s.port}")
        client.connect_async(s.host, s.port, keepalive=s.keepalive_s)
        client.loop_start()
        self._sender = threading.Thread(target=self._run_sender, name="mqtt-alarms", daemon=True)
        self._sender.start()

    def _make_client(self) -> mqtt.Client:
        s = self.settings
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=s.client_id or "")
        if s.username:
            client.username_pw_set(s.username, s.password)
        if s.tls_enabled:
            try:
                client.tls_set(ca_certs=s.tls_ca, certfile=s.tls_certfile, keyfile=s.tls_keyfile)
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                raise ValueError(
                    f"mqtt.tls: cannot load the certificates (ca={s.tls_ca}, certfile={s.tls_certfile}, "
                    f"keyfile={s.tls_keyfile}): {exc}"
                ) from exc
            client.tls_insecure_set(s.tls_insecure)
        # The broker publishes the will if we vanish without a DISCONNECT.
        client.will_set(self.topics.status, STATUS_OFFLINE, qos=s.qos_status, retain=True)
        client.reconnect_delay_set(s.reconnect_min_s, s.reconnect_max_s)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    def wait_connected(self, timeout_s: float) -> bool:
        return self._connected.wait(timeout_s)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def close(self, timeout_s: float = 5.0) -> None:
        """Flush the spool while the broker takes it (up to timeout_s), publish
        `stopped`, disconnect, and join both threads. What is not acknowledged
        stays in the spool for the next start."""
        deadline = time.monotonic() + timeout_s
        client, spool = self._client, self._spool
        if client is None or spool is None:
            return
        try:
            while len(spool) and self._connected.is_set() and time.monotonic() < deadline:
                time.sleep(0.02)
            self._stop.set()
            self._wake.set()
            if self._sender is not None:
                self._sender.join(max(0.1, deadline - time.monotonic()) + 1.0)
            if self._connected.is_set():
                info = client.publish(self.topics.status, STATUS_STOPPED, qos=self.settings.qos_status, retain=True)
                # PUBACKs arrive in order: once `stopped` is acknowledged, so are
                # the alarms before it, and the final drain below removes them.
                try:
                    info.wait_for_publish(max(0.1, deadline - time.monotonic()))
                except (RuntimeError, ValueError) as exc:
                    log.warning("mqtt: could not publish 'stopped': %s", exc)
            client.disconnect()
        finally:
            client.loop_stop()
            self._drain_acks()
            self._connected.clear()
            self._metrics.set_mqtt_state("disconnected", "closed")
            self._metrics.set_spool_depth(len(spool))
            if len(spool):
                log.warning("mqtt: %d alarm(s) left in the spool %s; they are sent on the next start",
                            len(spool), self.settings.spool_dir)
            spool.close()
            self._client = None
            self._spool = None

    # --- publisher calls (dispatch thread) -------------------------------------
    def publish_caption(self, caption: Caption) -> None:
        client = self._client
        if client is None or not self._connected.is_set():
            self._metrics.drops.labels(stage="publish_mqtt", cause="disconnected").inc()
            return
        with self._caption_lock:
            pending = self._pending_captions
            if self._captions_lost and self.settings.qos_caption == 0:
                # paho discarded unsent QoS 0 packets with the old connection.
                self._captions_lost = False
                pending.clear()
            while pending and _done(pending[0]):
                pending.popleft()
            mark = self._alias_mark
            if len(pending) >= self.settings.max_pending_captions:
                self._metrics.drops.labels(stage="publish_mqtt", cause="backlog").inc()
                return
            if mark is not None and self._captions_sent - mark > MID_ALIAS_GUARD:
                self._metrics.drops.labels(stage="publish_mqtt", cause="alarm_unacked").inc()
                return
            info = client.publish(self.topics.caption(caption.camera_id), to_json(caption_doc(caption)),
                                  qos=self.settings.qos_caption)
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN) or (
                info.rc == mqtt.MQTT_ERR_NO_CONN and self.settings.qos_caption == 0
            ):
                self._metrics.drops.labels(stage="publish_mqtt", cause="disconnected").inc()
                return
            pending.append(info)
            self._captions_sent += 1
        self._metrics.captions_published.labels(publisher=self.name).inc()

    def publish_alarm(self, alarm: Alarm) -> None:
        spool = self._spool
        if spool is None:
            raise RuntimeError("MqttPublisher.publish_alarm called before start() or after close()")
        snapshot_topic = None
        if self.settings.publish_snapshots and alarm.snapshot_jpeg:
            snapshot_topic = self.topics.snapshot(alarm.camera_id)
        payload = to_json(alarm_doc(alarm, snapshot_topic))
        spool.put(alarm.message_id, self.topics.alarm(alarm.camera_id), payload, qos=self.settings.qos_alarm,
                  snapshot_topic=snapshot_topic, snapshot=alarm.snapshot_jpeg if snapshot_topic else None)
        self._metrics.set_spool_depth(len(spool))
        self._wake.set()

    def publish_camera_state(self, camera_id: str, state: CameraState, last_frame_at: float | None = None) -> None:
        payload = to_json(state_doc(camera_id, state, last_frame_at))
        with self._states_lock:
            self._states[camera_id] = payload  # re-sent on every (re)connect
        client = self._client
        if client is not None and self._connected.is_set():
            client.publish(self.topics.state(camera_id), payload, qos=self.settings.qos_status, retain=True)

    # --- paho callbacks (network thread) ---------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        s = self.settings
        if reason_code.is_failure:
            reason = str(reason_code)
            hint = ("; check mqtt.username and mqtt.password" if reason.lower() in AUTH_REASONS
                    else "; check the broker's configuration")
            self.last_error = f"broker {s.host}:{s.port} refused the connection: {reason}{hint}"
            self._metrics.set_mqtt_state("refused", reason)
            if self._logged_refusal != reason:  # once per distinct reason, not every retry
                self._logged_refusal = reason
                log.error("mqtt: %s", self.last_error)
                self._status("error", reason, self.last_error)
            return
        self._logged_refusal = None
        self._logged_unreachable = False
        self.last_error = None
        client.publish(self.topics.status, STATUS_ONLINE, qos=s.qos_status, retain=True)
        with self._states_lock:
            states = list(self._states.items())
        for camera_id, payload in states:
            client.publish(self.topics.state(camera_id), payload, qos=s.qos_status, retain=True)
        self._connects += 1
        if self._connects > 1:
            self._metrics.mqtt_reconnects.inc()
        self._metrics.set_mqtt_state("connected", f"{s.host}:{s.port}")
        log.info("mqtt: connected to %s:%d as %s/%s", s.host, s.port, s.prefix, s.device_id)
        self._status("connected")
        self._connected.set()
        self._wake.set()

    def _on_connect_fail(self, client, userdata) -> None:
        s = self.settings
        self._metrics.set_mqtt_state("connecting", f"{s.host}:{s.port} unreachable")
        if not self._logged_unreachable:
            self._logged_unreachable = True
            # paho does not say why (refused, unreachable, TLS handshake): name what to check.
            what = "host, port and the TLS files" if s.tls_enabled else "host and port (is it a TLS-only port?)"
            log.warning("mqtt: cannot connect to the broker at %s:%d; retrying, alarms are spooled meanwhile; "
                        "check mqtt %s", s.host, s.port, what)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        self._after_reconnect = True
        self._captions_lost = True
        if was_connected:
            self._metrics.set_mqtt_state("disconnected", str(reason_code))
            if not self._stop.is_set():
                log.warning("mqtt: lost the broker (%s); reconnecting, alarms are spooled meanwhile", reason_code)
                self._status("disconnected", str(reason_code))
        self._wake.set()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        # Called with paho's message lock held: only hand the mid over.
        self._acks.put(mid)
        self._wake.set()

    # --- sender thread ----------------------------------------------------------
    def _run_sender(self) -> None:
        while not self._stop.is_set():
            try:
                self._drain_acks()
                self._hand_next()
            except Exception:  # keep sending; the spool still holds everything
                log.exception("mqtt: alarm sender error")
                self._stop.wait(1.0)
            self._wake.wait(0.5)
            self._wake.clear()

    def _drain_acks(self) -> None:
        done: list[int] = []
        while True:
            try:
                mid = self._acks.get_nowait()
            except queue.Empty:
                break
            seq = self._mid_seq.pop(mid, None)
            if seq is None:
                continue  # a caption or a status message
            mids = self._inflight.get(seq)
            if mids is None:
                continue
            mids.discard(mid)
            if not mids:
                del self._inflight[seq]
                done.append(seq)
        spool = self._spool
        if done and spool is not None:
            spool.ack_many(done)  # one commit for all PUBACKs that arrived together
            self._metrics.alarms_published.labels(publisher=self.name).inc(len(done))
            self._metrics.set_spool_depth(len(spool))
        if not self._inflight:
            self._alias_mark = None

    def _hand_next(self) -> None:
        client, spool = self._client, self._spool
        if client is None or spool is None or not self._connected.is_set():
            if self._after_reconnect:
                self._forget_qos0_inflight()
            return
        if self._after_reconnect:
            if self._inflight:
                return  # paho is re-sending these; nothing may overtake them
            self._after_reconnect = False
        room = self.settings.alarm_window - len(self._inflight)
        if room <= 0:
            return
        for entry in spool.peek(after_seq=self._last_handed, limit=room):
            if not self._hand(client, entry):
                break
            self._last_handed = entry.seq

    def _hand(self, client: mqtt.Client, entry: SpoolEntry) -> bool:
        messages = [(entry.topic, entry.payload, entry.retain)]
        if entry.snapshot_topic and entry.snapshot:
            messages.insert(0, (entry.snapshot_topic, entry.snapshot, True))
        mids = set()
        for topic, payload, retain in messages:
            info = client.publish(topic, payload, qos=entry.qos, retain=retain)
            # QoS>0 and NO_CONN: paho queued it and sends it after reconnecting.
            queued = info.rc == mqtt.MQTT_ERR_SUCCESS or (info.rc == mqtt.MQTT_ERR_NO_CONN and entry.qos > 0)
            if not queued:
                log.debug("mqtt: alarm %s not handed to paho (%s); retrying", entry.key, mqtt.error_string(info.rc))
                return False
            mids.add(info.mid)
        if not self._inflight:
            self._alias_mark = self._captions_sent
        self._inflight[entry.seq] = mids
        self.alarms_handed += 1
        for mid in mids:
            self._mid_seq[mid] = entry.seq
        return True

    def _forget_qos0_inflight(self) -> None:
        # paho drops unsent QoS 0 messages on a disconnect (it keeps QoS 1):
        # hand those alarms again after reconnecting.
        if self.settings.qos_alarm != 0 or not self._inflight:
            return
        first_seq = next(iter(self._inflight))
        for mids in self._inflight.values():
            for mid in mids:
                self._mid_seq.pop(mid, None)
        self._inflight.clear()
        self._last_handed = min(self._last_handed, first_seq - 1)

    # --- helpers -------------------------------------------------------------------
    def _spool_dropped(self, n: int) -> None:
        self._metrics.spool_dropped.inc(n)
        self._metrics.drops.labels(stage="spool", cause="full").inc(n)

    def _status(self, kind: str, value: str = "", detail: str = "") -> None:
        if self._on_status is not None:
            try:
                self._on_status(StatusEvent(source=self.name, kind=kind, value=value, detail=detail, at=time.time()))
            except Exception:
                log.exception("mqtt: status callback failed")


def _done(info: mqtt.MQTTMessageInfo) -> bool:
    try:
        return info.is_published()
    except (RuntimeError, ValueError):
        return True  # never queued, so not part of the backlog
