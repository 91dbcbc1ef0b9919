"""BrokerLink: the state of the connection to the broker, one log line per change with its reason, and two watches.

States are `PublisherState`s (connecting, connected, disconnected, refused)
with a detail that names the reason ("127.0.0.1:1883: [Errno 111] Connection
refused", "no CONNACK within 5 s"). Each change of state or reason is one log
line and shows in /healthz (`mqtt.state`, `mqtt.detail`); a retry that ends
the same way as the last one is quiet.

What paho does not watch for us:
- **CONNACK timeout.** A broker that accepts TCP and never answers leaves
  paho waiting a whole keepalive per attempt. After `connect_timeout_s`
  without a CONNACK the socket is shut down, and paho tries again within
  `reconnect_max_s`.
- **Session taken over.** Another client connecting with our client id
  (almost always a second box with the same `device_id`) makes the broker
  drop us. MQTT 5 lets the broker say so (DISCONNECT 0x8E); mosquitto
  2.0 just closes the connection, as every 3.1.1 broker does, so three
  connections in a row closed within `QUICK_DROP_S` of their CONNACK count as
  the same. It is logged as an error naming the device_id and makes /healthz
  `failed` until a connection has held for `TAKEOVER_CLEAR_S`. A box that
  restarts after a crash is the one taking over its stale session, so it
  starts cleanly.
"""
from __future__ import annotations

import logging
import socket
import sys
import threading
import time
from collections.abc import Callable

from streamcap.config.schema import MqttConfig
from streamcap.messages import PublisherState
from streamcap.metrics import Metrics
from streamcap.publish.mqtt_client import AUTH_REASONS, SESSION_TAKEN_OVER, reason_text

log = logging.getLogger("streamcap.publish.mqtt")

QUICK_DROP_S = 5.0  # a connection closed this soon after CONNACK ...
QUICK_DROPS = 3  # ... this many times in a row: someone else uses our client id
TAKEOVER_CLEAR_S = 60.0  # a connection that holds this long means nobody else does any more
PROBLEM = "session_taken_over"


class BrokerLink:
    def __init__(self, config: MqttConfig, device_id: str, client_id: str, metrics: Metrics,
                 set_state: Callable[[PublisherState, str], None]) -> None:
        self._config, self._device_id, self._client_id = config, device_id, client_id
        self._metrics, self._set_state = metrics, set_state
        self._where = f"{config.host}:{config.port}"
        self._lock = threading.Lock()
        self._logged: tuple[PublisherState, str] | None = None
        self._awaiting: tuple[socket.socket, float] | None = None  # socket opened, no CONNACK yet
        self._connected_at: float | None = None
        self._quick_drops = 0
        self._taken_over_at: float | None = None
        self.last_error: str | None = None  # the broker's last refusal, for health and tests

    # --- paho's network thread ----------------------------------------------------
    def connecting(self) -> None:
        self._change(PublisherState.connecting, self._where, logging.INFO,
                     f"connecting to {self._where} (MQTT {self._config.protocol}) as client id {self._client_id}")

    def socket_opened(self, sock) -> None:
        with self._lock:
            self._awaiting = (sock, time.monotonic())

    def connected(self) -> None:
        with self._lock:
            self._awaiting = None
            self._connected_at = time.monotonic()
        self.last_error = None
        self._change(PublisherState.connected, self._where, logging.INFO,
                     f"connected to {self._where} as {self._config.prefix}/{self._device_id} "
                     f"(MQTT {self._config.protocol})")

    def connect_refused(self, reason_code) -> None:
        with self._lock:
            self._awaiting = None
        reason = str(reason_code)
        hint = "check mqtt.username and mqtt.password" if reason.lower() in AUTH_REASONS else "check the broker's configuration"
        self.last_error = f"broker {self._where} refused the connection: {reason}; {hint}"
        self._change(PublisherState.refused, reason, logging.ERROR, self.last_error)

    def connect_failed(self) -> None:
        """on_connect_fail: paho calls it inside its `except OSError`, so the error is still at hand."""
        with self._lock:
            self._awaiting = None
        exc = sys.exc_info()[1]
        why = str(exc) if exc is not None and str(exc) else "unreachable"
        # The same failure every couple of seconds is one line, not one per attempt.
        what = "host, port and the TLS files" if self._config.tls_enabled else "host and port (is it a TLS-only port?)"
        self._change(PublisherState.connecting, f"{self._where}: {why}", logging.WARNING,
                     f"cannot connect to the broker at {self._where} ({why}); retrying every {self._config.reconnect_max_s:g} s "
                     f"at most, alarms are spooled meanwhile; check mqtt {what}")

    def disconnected(self, reason_code, stopping: bool) -> None:
        now = time.monotonic()
        with self._lock:
            self._awaiting = None
            held = None if self._connected_at is None else now - self._connected_at
            self._connected_at = None
            if held is not None:
                self._quick_drops = self._quick_drops + 1 if held < QUICK_DROP_S else 0
            quick_drops = self._quick_drops
        if stopping:
            return
        if getattr(reason_code, "value", None) == SESSION_TAKEN_OVER:
            self._taken_over(f"another client connected with this box's client id {self._client_id} (the broker "
                             f"says {reason_text(reason_code)})")
        elif held is not None and quick_drops >= QUICK_DROPS:
            # mosquitto 2.0 closes the old connection without a reason, on MQTT 5 too.
            self._taken_over(f"the broker closed {quick_drops} connections in a row within {QUICK_DROP_S:g} s of "
                             f"accepting them: most likely another client uses this box's client id {self._client_id} "
                             "(else the broker rejects something we send: see its log)")
        if held is not None:
            self._change(PublisherState.disconnected, reason_text(reason_code), logging.WARNING,
                         f"lost the broker ({reason_text(reason_code)}); reconnecting, alarms are spooled meanwhile")

    # --- the sender thread, about twice a second -------------------------------------
    def tick(self) -> None:
        now = time.monotonic()
        with self._lock:
            awaiting = self._awaiting
            timed_out = awaiting is not None and now - awaiting[1] > self._config.connect_timeout_s
            if timed_out:
                self._awaiting = None
            cleared = (self._taken_over_at is not None and self._connected_at is not None
                       and now - self._connected_at >= TAKEOVER_CLEAR_S)
            if cleared:
                self._taken_over_at = None
        if timed_out:
            timeout = self._config.connect_timeout_s
            self._change(PublisherState.connecting, f"{self._where}: no CONNACK within {timeout:g} s", logging.WARNING,
                         f"the broker at {self._where} accepted the connection but did not answer within {timeout:g} s "
                         "(a hung broker, or not an MQTT port?); trying again, alarms are spooled meanwhile")
            try:
                # The base class's shutdown, also on a TLS socket: paho's thread sees the connection end and retries.
                socket.socket.shutdown(awaiting[0], socket.SHUT_RDWR)
            except OSError:
                pass  # already closed
        if cleared:
            log.warning("mqtt: the session has held for %g s: no other client uses client id %s any more",
                        TAKEOVER_CLEAR_S, self._client_id)
            self._metrics.set_problem(PROBLEM, None)

    # --- helpers ---------------------------------------------------------------------
    def _taken_over(self, evidence: str) -> None:
        with self._lock:
            first = self._taken_over_at is None
            self._taken_over_at = time.monotonic()
        detail = (f"{evidence}. Is a second box running with device_id '{self._device_id}'? Give each box its own "
                  "device_id; until then both lose messages and share topics")
        if first:
            log.error("mqtt: %s", detail)
        self._metrics.set_problem(PROBLEM, "failed", device_id=self._device_id, client_id=self._client_id,
                                  detail=detail)

    def _change(self, state: PublisherState, reason: str, level: int, message: str | None = None) -> None:
        """Report the state; log it once per change of state or reason."""
        with self._lock:
            fresh = self._logged != (state, reason)
            self._logged = (state, reason)
            if self._taken_over_at is not None and state in (PublisherState.connected, PublisherState.disconnected):
                level = logging.DEBUG  # the takeover is the news; its back-and-forth would flood the log
        self._set_state(state, reason)
        if fresh and message is not None:
            log.log(level, "mqtt: %s", message)
