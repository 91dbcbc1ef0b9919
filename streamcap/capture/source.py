"""CameraSource: one reader thread per camera that keeps only the newest frame.

    cam = CameraSource("gate", "rtsp://user:pw@10.0.0.5/stream", read_timeout_s=3)
    cam.start()
    frame = cam.read_latest(timeout_s=1.0)   # Frame | None; pops the 1-slot buffer
    cam.state, cam.detail, cam.stats()        # CameraState, why, CameraStats
    cam.stop()                                # joins the reader, which then releases

Frames go either to `on_frame` (a callable run on the reader thread, as the
CaptureHub does: sampler -> batcher) or, without it, to a 1-slot buffer with
DROP_OLDEST: a frame overwritten before anyone read it counts as a drop.
`wants_frame(t_mono)`, if given, is asked first: frames it declines are
counted and skipped without the BGR conversion (half the cost of a read).

The reader opens the camera, reads, and on any failure reconnects with
exponential backoff and jitter, forever. A read that blocks for read_timeout_s
(FFmpeg's interrupt returns it then) means a hung camera: the connection is
dropped and reopened. A video file is paced at its own fps so it behaves like a
live camera, and restarts from the beginning when `loop` is set. Errors that
retrying cannot fix (missing or corrupt file, GStreamer pipeline without
GStreamer) put the camera `down` for good. Every state change is logged with
the camera id and a redacted URL and sent as a StatusEvent to `on_status`.
Both callbacks run on the reader thread and must not block (use put_nowait on
a queue): a blocking callback would stall this camera, never the others.

Shutdown order matters: the reader thread releases its own capture after its
loop ends, so `stop()` only sets the stop event and joins; a capture is never
released while another thread is inside `cap.read()` (that aborts the process).
"""
from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import cv2

from streamcap.camera_kinds import resolve_kind
from streamcap.capture.video import OpenError, file_fps, open_capture
from streamcap.messages import CameraReconnecting, CameraState, CameraStateChanged, Frame, StatusEvent
from streamcap.util.backoff import Backoff
from streamcap.util.redact import redact_url

log = logging.getLogger(__name__)

StatusCallback = Callable[[StatusEvent], None]
FrameCallback = Callable[[Frame], None]

# A connection must deliver frames this long before the backoff starts again
# from its initial delay, so a camera that flaps every second is not hammered.
STABLE_AFTER_S = 10.0


@dataclass(frozen=True)
class CameraStats:
    camera_id: str
    state: CameraState
    detail: str
    frames_read: int
    drops: int  # frames overwritten in the 1-slot buffer before being read
    reconnects: int  # open attempts after the first
    loops: int  # times a looping file restarted
    last_frame_at: float | None  # time.time() of the newest frame
    seconds_since_frame: float | None


class CameraSource:
    def __init__(
        self,
        camera_id: str,
        url: str,
        *,
        kind: str = "auto",
        loop: bool = False,
        open_timeout_s: float = 5.0,
        read_timeout_s: float = 3.0,
        reconnect_initial_s: float = 0.5,
        reconnect_max_s: float = 2.0,
        on_status: StatusCallback | None = None,
        on_frame: FrameCallback | None = None,
        wants_frame: Callable[[float], bool] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.camera_id = camera_id
        self.url = url
        self.kind = resolve_kind(url, kind)
        self.loop = loop
        self.open_timeout_s = open_timeout_s
        self.read_timeout_s = read_timeout_s
        self.on_status = on_status
        self.on_frame = on_frame
        self.wants_frame = wants_frame
        self._backoff = Backoff(reconnect_initial_s, reconnect_max_s, rng=rng)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._state = CameraState.stopped
        self._detail = "not started"
        self._next_frame_id = 0
        self._frames_read = 0
        self._drops = 0
        self._reconnects = 0
        self._loops = 0
        self._sink_errors = 0
        self._last_frame_at: float | None = None
        self._last_frame_mono: float | None = None

    @classmethod
    def from_config(cls, camera_id: str, cfg: Any, **kwargs: Any) -> CameraSource:
        """Build from any object with CameraConfig's field names (url, kind, loop, *_s)."""
        fields = ("kind", "loop", "open_timeout_s", "read_timeout_s", "reconnect_initial_s", "reconnect_max_s")
        return cls(camera_id, cfg.url, **{name: getattr(cfg, name) for name in fields}, **kwargs)

    @property
    def display_url(self) -> str:
        return redact_url(self.url)

    @property
    def state(self) -> CameraState:
        return self._state

    @property
    def detail(self) -> str:
        return self._detail

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"camera {self.camera_id!r} already started")
        self._stop.clear()
        self._set_state(CameraState.connecting, self.display_url)
        self._thread = threading.Thread(target=self._run, name=f"camera-{self.camera_id}", daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        """Ask the reader to stop without waiting (stop many cameras at once, then join)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()

    def stop(self, timeout_s: float | None = None) -> bool:
        """Stop and join the reader; False if it is still blocked after `timeout_s`."""
        self.request_stop()
        thread, self._thread = self._thread, None
        if thread is not None:
            # Worst case the reader is inside an open or a read, each bounded by its timeout.
            thread.join(timeout_s if timeout_s is not None else self.open_timeout_s + 2 * self.read_timeout_s + 2.0)
            if thread.is_alive():
                log.error("camera %r: reader still blocked in OpenCV after stop; leaving its capture open", self.camera_id)
                self._thread = thread
                return False
        self._set_state(CameraState.stopped, "stopped")
        return True

    def read_latest(self, timeout_s: float = 0.0) -> Frame | None:
        """Take the newest frame, waiting up to `timeout_s` for one; None if none came."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._latest is None and not self._stop.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            frame, self._latest = self._latest, None
            return frame

    def stats(self) -> CameraStats:
        last = self._last_frame_mono
        return CameraStats(
            camera_id=self.camera_id,
            state=self._state,
            detail=self._detail,
            frames_read=self._frames_read,
            drops=self._drops,
            reconnects=self._reconnects,
            loops=self._loops,
            last_frame_at=self._last_frame_at,
            seconds_since_frame=None if last is None else time.monotonic() - last,
        )

    # -- reader thread -------------------------------------------------------

    def _run(self) -> None:
        try:
            self._connect_forever()
        except Exception as exc:  # a bug must not kill the camera silently
            log.exception("camera %r: reader crashed", self.camera_id)
            self._set_state(CameraState.down, f"internal error: {redact_url(str(exc))}")

    def _connect_forever(self) -> None:
        while not self._stop.is_set():
            try:
                cap = open_capture(self.url, self.kind, self.open_timeout_s, self.read_timeout_s, self._stop)
            except OpenError as exc:
                if exc.permanent:
                    self._set_state(CameraState.down, str(exc))
                    return
                self._wait_to_retry(CameraState.down, str(exc))
                continue
            try:
                lost = self._read_until_lost(cap)
            finally:
                cap.release()  # on this thread, so never during a read
            if lost is None:
                return
            self._wait_to_retry(CameraState.reconnecting, lost)

    def _wait_to_retry(self, state: CameraState, why: str) -> None:
        delay = self._backoff.next_delay()
        self._set_state(state, f"{why}; retrying in {delay:.1f} s")
        self._emit(CameraReconnecting(self.camera_id, self._reconnects + 1, f"{why}; next attempt in {delay:.1f} s", time.time()))
        if not self._stop.wait(delay):
            self._reconnects += 1

    def _read_until_lost(self, cap: cv2.VideoCapture) -> str | None:
        """Read until the stream fails (returns why) or stop/end of file (returns None)."""
        is_file = self.kind == "file"
        period_s = 1.0 / file_fps(cap) if is_file else 0.0
        network = self.kind in ("rtsp", "http")
        connected_mono: float | None = None
        next_due = time.monotonic()
        rewound = False  # a read right after a rewind must succeed, or the file is broken
        while not self._stop.is_set():
            started = time.monotonic()
            ok = cap.grab()
            grabbed_mono = time.monotonic()
            took_s = grabbed_mono - started
            if not ok:
                if is_file:
                    if connected_mono is None:
                        self._set_state(CameraState.down, "cannot decode any frame of the video file; replace the file or fix the url")
                        return None
                    if not self.loop:
                        self._set_state(CameraState.stopped, "end of file (loop is off)")
                        return None
                    if not rewound and cap.set(cv2.CAP_PROP_POS_FRAMES, 0):
                        rewound = True
                        self._loops += 1
                        continue
                    return "cannot restart the video file from the beginning"
                return "read failed (stream ended or connection lost)"
            if network and took_s >= self.read_timeout_s:
                # FFmpeg hands back a stale frame when its read timeout fires.
                return f"no frame for {took_s:.1f} s (camera hung)"
            rewound = False
            if connected_mono is None:
                connected_mono = time.monotonic()
                self._set_state(CameraState.connected, self.display_url)
            elif self._backoff.attempt and time.monotonic() - connected_mono > STABLE_AFTER_S:
                self._backoff.reset()
            # Converting to BGR is about half the cost of reading a frame, so frames the
            # sampler will not take are grabbed (decoded) but never converted.
            if self.wants_frame is None or self.wants_frame(grabbed_mono):
                ok, image = cap.retrieve()
                if ok and image is not None:
                    self._deliver(image, grabbed_mono)
            else:
                self._count(grabbed_mono)
            if period_s:
                next_due += period_s
                wait_s = next_due - time.monotonic()
                if wait_s > 0:
                    self._stop.wait(wait_s)
                elif wait_s < -1.0:  # fell far behind (loaded box): don't burst to catch up
                    next_due = time.monotonic()
        return None

    def _count(self, grabbed_mono: float) -> None:
        self._next_frame_id += 1
        self._frames_read += 1
        self._last_frame_at = time.time()
        self._last_frame_mono = grabbed_mono

    def _deliver(self, image, grabbed_mono: float) -> None:
        frame = Frame(self.camera_id, self._next_frame_id, time.time(), grabbed_mono, image)
        self._count(grabbed_mono)
        if self.on_frame is not None:
            try:
                self.on_frame(frame)
            except Exception:
                self._sink_errors += 1
                if self._sink_errors == 1 or self._sink_errors % 1000 == 0:
                    log.exception("camera %r: frame consumer failed (%d times)", self.camera_id, self._sink_errors)
            return
        with self._cond:
            if self._latest is not None:
                self._drops += 1
            self._latest = frame
            self._cond.notify_all()

    # -- status --------------------------------------------------------------

    def _set_state(self, state: CameraState, detail: str) -> None:
        if state == self._state and detail == self._detail:
            return
        changed = state != self._state
        self._state, self._detail = state, detail
        if not changed:  # e.g. the next retry of a camera that is still down
            log.info("camera %r: still %s: %s", self.camera_id, state.value, detail)
            return
        level = logging.WARNING if state in (CameraState.down, CameraState.reconnecting) else logging.INFO
        log.log(level, "camera %r: %s: %s", self.camera_id, state.value, detail)
        self._emit(CameraStateChanged(self.camera_id, state, detail, time.time()))

    def _emit(self, event: StatusEvent) -> None:
        if self.on_status is None:
            return
        try:
            self.on_status(event)
        except Exception:
            log.exception("camera %r: status callback failed", self.camera_id)
