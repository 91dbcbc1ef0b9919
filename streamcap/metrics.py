"""Every number streamcap exports, on one private Prometheus registry.

Build one `Metrics` in app.py and hand it to each component. Components touch
only the named attributes below; none of them creates metrics of its own, so
this file is the whole list of what `/metrics` shows:

    frames_read{camera}              counter  frames the reader got from the camera
    frames_captioned{camera}         counter  frames that came out of the model with a caption
    camera_reconnects{camera}        counter  reconnect attempts of a camera source
    camera_state{camera}             enum     connecting|connected|reconnecting|down|stopped
    camera_decode_mode{camera}       enum     keyframes|every_frame
    camera_decoder{camera, library, hardware}  gauge  1 for what decodes the camera now (pyav|opencv, cpu|nvdec|jetson)
    camera_keyframe_interval_seconds{camera}  gauge  the stream's key-frame interval, measured
    keyframes_late{camera}           counter  times a stream sent no key frame for 10x its interval
    captions_asked_per_second        gauge    frames the samplers passed on, over the last 10 s
    captions_made_per_second         gauge    frames the model took, over the last 10 s
    caption_shortfall_per_second     gauge    asked - made: the cameras' frames the model could not take
                                              (each one is counted in drops{cause="captioner_behind"})
    frames_refreshed                 counter  waiting frames replaced by a newer one just before their camera's turn
                                              (the extra decoding an overloaded model costs)
    drops{stage, cause, camera}      counter  anything dropped anywhere (frames, captions, alarms); cause is a DropCause
    rules_seconds                    histogram time to run every rule on one caption
    batch_size                       histogram frames per model batch (1 to model.max_batch's 256)
    http_refused{reason}             counter  HTTP connections refused (caps, slow or oversized request heads)
    latency_seconds{stage}           histogram capture_to_caption, caption_to_publish
    alarms_raised{camera, rule}      counter  alarms the rule engine raised
    captions_published{publisher}    counter  captions handed to a publisher
    alarms_published{publisher}      counter  alarms delivered (MQTT: PUBACK received)
    publish_errors{publisher, call}  counter  exceptions caught around publisher calls
    publisher_state{publisher}       enum     connecting|connected|disconnected|refused|failed|closed
    mqtt_connected                   gauge    1 while the broker session is up
    mqtt_reconnects                  counter  broker connections after the first
    spool_depth                      gauge    alarms waiting in the on-disk spool
    spool_dropped                    counter  alarms dropped because the spool was full
    mqtt_refused{reason}             counter  publishes the broker refused (MQTT 5 reason code, e.g. "Not authorized")
    history_written{kind}            counter  captions and alarm messages written to the history database
    history_bytes{part}              gauge    bytes the history uses: database, thumbnails
    history_state                    enum     starting|writing|paused|failed|off (paused: the disk is full)

Every label set is bounded: stages and causes are closed sets, cameras and
rules come from the config. Status events from the side channel are folded
in by `observe_status`, which dispatches on the event's type.

`Metrics` also keeps the little state `/healthz` reports (camera states and
decoders, last frame time, publisher states, slow rules, the caption load,
the history's state, named problems); `health()` turns it into the JSON
document: `ok`, `degraded` (a camera or the broker is away, rules are slow,
the model makes fewer captions than the cameras ask: then `reason` says so,
the history is not being written: a full disk, or the spool's disk is full) or
`failed` (a publisher cannot work at all, the broker refuses our publishes,
another client took our session, an output cannot write: alarms or records are
not leaving). Problems are set and cleared by the component that knows
(`set_problem`), each with the fields a person needs to fix it.
"""
from __future__ import annotations

import threading
import time
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram

from streamcap.decoder_kinds import DecodeMode
from streamcap.messages import (
    CameraReconnecting, CameraState, CameraStateChanged, DecoderChanged, DropCause, FramesDropped, KeyframesLate,
    PublisherError, PublisherState, PublisherStatus, StatusEvent,
)
from streamcap.util.bounded_http import Refusal

# Powers of two up to model.max_batch's upper bound; latency spans a fast GPU
# (tens of ms) to a loaded 2-core CPU (several seconds).
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
RULES_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0)
SLOW_RULES_S = 0.1  # all rules on one caption taking longer than this is news for /healthz
SLOW_RULES_WINDOW_S = 60.0


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
        self.camera_decode_mode = Enum("streamcap_camera_decode_mode", "Key frames only, or every frame decoded", ["camera"],
                                       states=[m.value for m in DecodeMode], registry=r)
        self.camera_decoder = Gauge("streamcap_camera_decoder", "1 for the library and hardware decoding the camera now",
                                    ["camera", "library", "hardware"], registry=r)
        self.camera_keyframe_interval = Gauge("streamcap_camera_keyframe_interval_seconds",
                                              "The stream's key-frame interval, measured", ["camera"], registry=r)
        self.keyframes_late = Counter("streamcap_keyframes_late", "Times a stream sent no key frame for 10x its interval",
                                      ["camera"], registry=r)
        self.captions_asked = Gauge("streamcap_captions_asked_per_second", "Frames the samplers passed on, last 10 s",
                                    registry=r)
        self.captions_made = Gauge("streamcap_captions_made_per_second", "Frames the model took, last 10 s", registry=r)
        self.caption_shortfall = Gauge("streamcap_caption_shortfall_per_second",
                                       "Frames per second the model could not take (asked - made)", registry=r)
        self.frames_refreshed = Counter("streamcap_frames_refreshed", "Waiting frames replaced by a newer one just "
                                        "before their camera's turn (model behind)", registry=r)
        self.drops = Counter("streamcap_drops", "Items dropped, by stage, cause and camera", ["stage", "cause", "camera"], registry=r)
        self.rules_seconds = Histogram("streamcap_rules_seconds", "Time to run every rule on one caption",
                                       buckets=RULES_BUCKETS, registry=r)
        self.publisher_state = Enum("streamcap_publisher_state", "Publisher state", ["publisher"],
                                    states=[s.value for s in PublisherState], registry=r)
        self.batch_size = Histogram(
            "streamcap_batch_size", "Frames per model batch", buckets=BATCH_BUCKETS, registry=r
        )
        self.latency_seconds = Histogram(
            "streamcap_latency_seconds", "Latency between two pipeline points", ["stage"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.http_refused = Counter("streamcap_http_refused", "HTTP connections refused, by reason", ["reason"], registry=r)
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
        self.mqtt_refused = Counter(
            "streamcap_mqtt_refused", "Publishes the broker refused (MQTT 5 reason code)", ["reason"], registry=r
        )
        self.history_written = Counter("streamcap_history_written", "Captions and alarm messages written to the history",
                                       ["kind"], registry=r)
        self.history_bytes = Gauge("streamcap_history_bytes", "Bytes the history uses on disk", ["part"], registry=r)
        self.history_state = Enum("streamcap_history_state", "History writer state",
                                  states=["starting", "writing", "paused", "failed", "off"], registry=r)
        self._history: dict | None = None  # None: no history on this box
        self._lock = threading.Lock()
        self._problems: dict[tuple[str, str], dict] = {}  # (problem, subject) -> status and fields
        self._cameras: dict[str, dict] = {}
        self._publishers: dict[str, dict] = {}  # only those that report a state (MQTT); console does not
        self._spool_depth = 0
        self._model_load: dict = {}
        self._slow_rules_until = 0.0
        self._slowest_rules_s = 0.0

    # --- state for /healthz -------------------------------------------------
    def set_camera_state(self, camera: str, state: CameraState | str) -> None:
        state = CameraState(state)
        self.camera_state.labels(camera=camera).state(state.value)
        with self._lock:
            self._cameras.setdefault(camera, {"last_frame_at": None})["state"] = state.value

    def set_decoder(self, event: DecoderChanged) -> None:
        camera = event.camera_id
        with self._lock:
            info = self._cameras.setdefault(camera, {"state": CameraState.connecting.value, "last_frame_at": None})
            previous = info.get("decoder")
            info["decoder"] = {"library": event.library, "hardware": event.hardware, "mode": event.mode,
                               "keyframe_interval_s": event.keyframe_interval_s}
        if previous and (previous["library"], previous["hardware"]) != (event.library, event.hardware):
            self.camera_decoder.labels(camera, previous["library"], previous["hardware"]).set(0)
        self.camera_decoder.labels(camera, event.library, event.hardware).set(1)
        self.camera_decode_mode.labels(camera=camera).state(event.mode)
        if event.keyframe_interval_s is not None:
            self.camera_keyframe_interval.labels(camera=camera).set(event.keyframe_interval_s)

    def set_caption_load(self, asked_per_s: float, made_per_s: float, cameras_asking: int, behind: str | None) -> None:
        self.captions_asked.set(asked_per_s)
        self.captions_made.set(made_per_s)
        self.caption_shortfall.set(max(0.0, asked_per_s - made_per_s))
        with self._lock:
            self._model_load = {"asked_per_s": round(asked_per_s, 2), "made_per_s": round(made_per_s, 2),
                                "cameras_asking": cameras_asking, "behind": behind}

    def note_last_frame(self, camera: str, captured_at: float | None) -> None:
        with self._lock:
            self._cameras.setdefault(camera, {"state": CameraState.connecting.value})["last_frame_at"] = captured_at

    def set_publisher_state(self, publisher: str, state: PublisherState | str, detail: str = "") -> None:
        state = PublisherState(state)
        self.publisher_state.labels(publisher=publisher).state(state.value)
        if publisher == "mqtt":
            self.mqtt_connected.set(1 if state == PublisherState.connected else 0)
        with self._lock:
            self._publishers[publisher] = {"state": state.value, "detail": detail}

    def set_mqtt_state(self, state: PublisherState | str, detail: str = "") -> None:
        self.set_publisher_state("mqtt", state, detail)

    def count_drop(self, stage: str, cause: DropCause, count: int = 1, camera: str = "") -> None:
        self.drops.labels(stage=stage, cause=DropCause(cause).value, camera=camera).inc(count)

    def count_http_refused(self, reason: Refusal) -> None:
        self.http_refused.labels(reason=Refusal(reason).value).inc()

    def observe_rules(self, seconds: float) -> None:
        self.rules_seconds.observe(seconds)
        if seconds >= SLOW_RULES_S:
            with self._lock:
                self._slow_rules_until = time.monotonic() + SLOW_RULES_WINDOW_S
                self._slowest_rules_s = max(self._slowest_rules_s, seconds)

    def set_spool_depth(self, depth: int) -> None:
        self.spool_depth.set(depth)
        with self._lock:
            self._spool_depth = depth

    def set_problem(self, problem: str, status: str | None, subject: str = "", **fields) -> None:
        """Name a condition that keeps /healthz from ok ("degraded" or "failed"), with what a person needs to fix
        it; status None clears it. `subject` tells apart several of one kind (e.g. the refused topic)."""
        if status not in (None, "degraded", "failed"):
            raise ValueError(f"problem status must be degraded or failed, not {status!r}")
        with self._lock:
            if status is None:
                self._problems.pop((problem, subject), None)
            else:
                self._problems[(problem, subject)] = {"problem": problem, "status": status, **fields}

    def set_history_state(self, state: str, detail: str = "") -> None:
        """`paused` (disk full) and `failed` make /healthz degraded: the history is not being written."""
        self.history_state.state(state)
        with self._lock:
            self._history = {"state": state, "detail": detail}

    def observe_status(self, event: StatusEvent) -> None:
        """Fold a side-channel status event into the metrics, by its type."""
        if isinstance(event, CameraStateChanged):
            self.set_camera_state(event.camera_id, event.state)
        elif isinstance(event, CameraReconnecting):
            self.camera_reconnects.labels(camera=event.camera_id).inc()
        elif isinstance(event, FramesDropped):
            self.count_drop(event.stage, event.cause, event.count, event.camera_id)
        elif isinstance(event, DecoderChanged):
            self.set_decoder(event)
        elif isinstance(event, KeyframesLate):
            self.keyframes_late.labels(camera=event.camera_id).inc()
        elif isinstance(event, PublisherStatus):
            self.set_publisher_state(event.publisher, event.state, event.detail)
        elif isinstance(event, PublisherError):
            self.publish_errors.labels(publisher=event.publisher, call=event.call).inc()

    def health(self) -> dict:
        """ok when every camera is connected, every publisher up and the rules quick; failed when a publisher cannot work."""
        with self._lock:
            cameras = {
                cam: {"state": info.get("state", CameraState.connecting.value),
                      "last_frame_time": iso_time(info.get("last_frame_at")), "decoder": info.get("decoder")}
                for cam, info in sorted(self._cameras.items())
            }
            publishers = {name: dict(info) for name, info in sorted(self._publishers.items())}
            mqtt = dict(publishers["mqtt"]) if "mqtt" in publishers else None
            if mqtt is not None:
                mqtt["spool_depth"] = self._spool_depth
            slow = time.monotonic() < self._slow_rules_until
            rules = {"slow": slow, "slowest_ms": round(self._slowest_rules_s * 1000, 1)}
            problems = [dict(p) for _, p in sorted(self._problems.items())]
            model = dict(self._model_load) or None
            history = dict(self._history) if self._history is not None else None
        behind = model.get("behind") if model else None
        history_down = history is not None and history["state"] in ("paused", "failed")
        if (any(p["state"] == PublisherState.failed.value for p in publishers.values())
                or any(p["status"] == "failed" for p in problems)):
            status = "failed"
        elif (all(c["state"] == CameraState.connected.value for c in cameras.values())
              and all(p["state"] == PublisherState.connected.value for p in publishers.values()) and not slow
              and not behind and not history_down and not problems):
            status = "ok"
        else:
            status = "degraded"
        doc = {"status": status, "time": iso_time(time.time()), "cameras": cameras, "mqtt": mqtt,
               "publishers": publishers, "rules": rules, "model": model, "history": history, "problems": problems}
        if behind:
            doc["reason"] = behind
        elif history_down:
            doc["reason"] = f"history {history['state']}: {history['detail']}"
        return doc
