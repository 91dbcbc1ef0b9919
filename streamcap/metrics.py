"""Every number streamcap exports, on one private Prometheus registry.

Build one `Metrics` in app.py and hand it to each component. Components touch
only the named attributes below; none of them creates metrics of its own, so
this file is the whole list of what `/metrics` shows:

    frames_read{camera}              counter  frames the reader got from the camera
    frames_captioned{camera}         counter  frames that came out of the model with a caption
    camera_reconnects{camera}        counter  reconnect attempts of a camera source
    camera_state{camera}             enum     connecting|connected|reconnecting|down|stopped
    drops{stage, cause}              counter  anything dropped anywhere (frames, captions, alarms)
    batch_size                       histogram frames per model batch
    latency_seconds{stage}           histogram capture_to_caption, caption_to_publish
    alarms_raised{camera, rule}      counter  alarms the rule engine raised
    captions_published{publisher}    counter  captions handed to a publisher
    alarms_published{publisher}      counter  alarms delivered (MQTT: PUBACK received)
    publish_errors{publisher, call}  counter  exceptions caught around publisher calls
    mqtt_connected                   gauge    1 while the broker session is up
    mqtt_reconnects                  counter  broker connections after the first
    spool_depth                      gauge    alarms waiting in the on-disk spool
    spool_dropped                    counter  alarms dropped because the spool was full

`Metrics` also keeps the little state `/healthz` reports (camera states, last
frame time, MQTT state); `health()` turns it into the JSON document.
"""
from __future__ import annotations

import threading
import time
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram

from streamcap.messages import CameraState, StatusEvent

# Batches rarely exceed 32 frames; latency spans a fast GPU (tens of ms) to a
# loaded 2-core CPU (several seconds).
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def iso_time(ts: float | None) -> str | None:
    """Unix time -> ISO-8601 with the local zone offset, millisecond precision."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="milliseconds")


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # A private registry keeps tests independent and leaves the process
        # collectors of the global one out of the picture.
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.frames_read = Counter("streamcap_frames_read", "Frames read from the camera", ["camera"], registry=r)
        self.frames_captioned = Counter(
            "streamcap_frames_captioned", "Frames captioned by the model", ["camera"], registry=r
        )
        self.camera_reconnects = Counter(
            "streamcap_camera_reconnects", "Camera reconnect attempts", ["camera"], registry=r
        )
        self.camera_state = Enum(
            "streamcap_camera_state", "Camera connection state", ["camera"],
            states=[s.value for s in CameraState], registry=r,
        )
        self.drops = Counter("streamcap_drops", "Items dropped, by stage and cause", ["stage", "cause"], registry=r)
        self.batch_size = Histogram(
            "streamcap_batch_size", "Frames per model batch", buckets=BATCH_BUCKETS, registry=r
        )
        self.latency_seconds = Histogram(
            "streamcap_latency_seconds", "Latency between two pipeline points", ["stage"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.alarms_raised = Counter("streamcap_alarms_raised", "Alarms raised by rules", ["camera", "rule"], registry=r)
        self.captions_published = Counter(
            "streamcap_captions_published", "Captions handed to a publisher", ["publisher"], registry=r
        )
        self.alarms_published = Counter(
            "streamcap_alarms_published", "Alarms delivered by a publisher", ["publisher"], registry=r
        )
        self.publish_errors = Counter(
            "streamcap_publish_errors", "Exceptions caught around publisher calls", ["publisher", "call"], registry=r
        )
        self.mqtt_connected = Gauge("streamcap_mqtt_connected", "1 while connected to the MQTT broker", registry=r)
        self.mqtt_reconnects = Counter("streamcap_mqtt_reconnects", "MQTT connections after the first", registry=r)
        self.spool_depth = Gauge("streamcap_spool_depth", "Alarms waiting in the on-disk spool", registry=r)
        self.spool_dropped = Counter(
            "streamcap_spool_dropped", "Alarms dropped because the spool was full", registry=r
        )
        self._lock = threading.Lock()
        self._cameras: dict[str, dict] = {}
        self._mqtt: dict | None = None  # None: no broker configured
        self._spool_depth = 0

    # --- state for /healthz -------------------------------------------------
    def set_camera_state(self, camera: str, state: CameraState | str) -> None:
        state = CameraState(state)
        self.camera_state.labels(camera=camera).state(state.value)
        with self._lock:
            self._cameras.setdefault(camera, {"last_frame_at": None})["state"] = state.value

    def note_frame(self, camera: str, captured_at: float) -> None:
        self.frames_read.labels(camera=camera).inc()
        self.note_last_frame(camera, captured_at)

    def note_last_frame(self, camera: str, captured_at: float | None) -> None:
        with self._lock:
            self._cameras.setdefault(camera, {"state": CameraState.connecting.value})["last_frame_at"] = captured_at

    def set_mqtt_state(self, state: str, detail: str = "") -> None:
        """`state` is connected, connecting, disconnected or refused; `detail` says why."""
        self.mqtt_connected.set(1 if state == "connected" else 0)
        with self._lock:
            self._mqtt = {"state": state, "detail": detail}

    def set_spool_depth(self, depth: int) -> None:
        self.spool_depth.set(depth)
        with self._lock:
            self._spool_depth = depth

    def observe_status(self, event: StatusEvent) -> None:
        """Fold a side-channel StatusEvent into the metrics.

        Conventions: kind "camera_state" (source=camera, value=CameraState),
        "reconnect" (source=camera), "drop" (source=stage, value=cause).
        Other kinds are ignored here; they are logged by whoever emits them.
        """
        if event.kind == "camera_state":
            self.set_camera_state(event.source, event.value)
        elif event.kind == "reconnect":
            self.camera_reconnects.labels(camera=event.source).inc()
        elif event.kind == "drop":
            self.drops.labels(stage=event.source, cause=event.value or "unknown").inc()

    def health(self) -> dict:
        """ok when every camera is connected and the broker (if any) is up."""
        with self._lock:
            cameras = {
                cam: {"state": info.get("state", CameraState.connecting.value),
                      "last_frame_time": iso_time(info.get("last_frame_at"))}
                for cam, info in sorted(self._cameras.items())
            }
            mqtt = dict(self._mqtt) if self._mqtt is not None else None
            if mqtt is not None:
                mqtt["spool_depth"] = self._spool_depth
        healthy = all(c["state"] == CameraState.connected.value for c in cameras.values())
        healthy = healthy and (mqtt is None or mqtt["state"] == "connected")
        return {
            "status": "ok" if healthy else "degraded",
            "time": iso_time(time.time()),
            "cameras": cameras,
            "mqtt": mqtt,
        }
