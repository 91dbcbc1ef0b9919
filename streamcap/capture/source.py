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

Decoding (readers.py): one decoding thread per camera, PyAV where installed,
else OpenCV. Given `caption_interval_s`, the camera measures its stream's
key-frame interval from the first key frames and, when it is no longer than
the caption interval, decodes key frames only (every caption then falls on a
key frame); otherwise every frame is decoded and only due frames converted.
Key frames that stop decoding alone, or a stream that sends no key frame for
10x its interval, switch it back to every frame with one log line. The mode is
logged, sent as a DecoderChanged status event and kept in `decoder_info`.

Shutdown order matters: the reader thread releases its own decoder after its
loop ends, so `stop()` only sets the stop event and joins; a capture is never
released while another thread is inside a read (with OpenCV that aborts the process).
"""
from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from streamcap.camera_kinds import resolve_kind
from streamcap.capture.decode_mode import DecodeSteering
from streamcap.capture.keyframes import KeyframeClock
from streamcap.capture.pacing import FilePacer
from streamcap.capture.readers import (
    DecodeSettings, KeyframesLateError, KeyframesUnusable, OpenError, ReadError, Reader, open_reader,
)
from streamcap.decoder_kinds import DecodeMode
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
        caption_interval_s: float | None = None,
        decode: DecodeSettings | None = None,
        keyframes_allowed: bool = True,
        on_decode_mode: Callable[[DecodeMode, float | None], None] | None = None,
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
        self.caption_interval_s = caption_interval_s  # None: every frame is wanted, so never key frames only
        self.keyframes_allowed = keyframes_allowed
        base = decode or DecodeSettings()
        self.decode = DecodeSettings(base.library, base.hardware, base.threads, open_timeout_s, read_timeout_s)
        self._steering = DecodeSteering(camera_id, caption_interval_s, keyframes_allowed, self.decode.threads, self._emit,
                                        on_decode_mode)
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

    @property
    def on_decode_mode(self) -> Callable[[DecodeMode, float | None], None] | None:
        """Told when the decode mode changes (the hub lets its sampler take key frames a little early)."""
        return self._steering.on_mode

    @on_decode_mode.setter
    def on_decode_mode(self, callback: Callable[[DecodeMode, float | None], None] | None) -> None:
        self._steering.on_mode = callback

    @classmethod
    def from_config(cls, camera_id: str, cfg: Any, **kwargs: Any) -> CameraSource:
        """Build from any object with CameraConfig's field names (url, kind, loop, *_s)."""
        fields = ("kind", "loop", "open_timeout_s", "read_timeout_s", "reconnect_initial_s", "reconnect_max_s",
                  "caption_interval_s")
        options = {name: getattr(cfg, name) for name in fields} | {"keyframes_allowed": getattr(cfg, "keyframes_only", True)}
        return cls(camera_id, cfg.url, **(options | kwargs))

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
                log.error("camera %r: reader still blocked in its decoder after stop; leaving it open", self.camera_id)
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
                reader = open_reader(self.url, self.kind, self.decode, self._stop)
            except OpenError as exc:
                if exc.permanent:
                    self._set_state(CameraState.down, str(exc))
                    return
                self._wait_to_retry(CameraState.down, str(exc))
                continue
            try:
                lost = self._read_until_lost(reader)
            except OpenError as exc:  # reopening in another decode mode failed
                lost = str(exc)
            finally:
                reader.release()  # on this thread, so never during a read
            if lost is None:
                return
            self._wait_to_retry(CameraState.reconnecting, lost)

    def _wait_to_retry(self, state: CameraState, why: str) -> None:
        delay = self._backoff.next_delay()
        self._set_state(state, f"{why}; retrying in {delay:.1f} s")
        self._emit(CameraReconnecting(self.camera_id, self._reconnects + 1, f"{why}; next attempt in {delay:.1f} s", time.time()))
        if not self._stop.wait(delay):
            self._reconnects += 1

    def _read_until_lost(self, reader: Reader) -> str | None:
        """Read until the stream fails (returns why) or stop/end of file (returns None)."""
        is_file = self.kind == "file"
        pace = FilePacer(self._stop) if is_file else None
        clock = KeyframeClock()
        self._steering.connected(reader)
        connected_mono: float | None = None
        rewound = False  # a read right after a rewind must succeed, or the file is broken
        while not self._stop.is_set():
            try:
                item = reader.read(self._wants, pace)
            except KeyframesUnusable as exc:
                if isinstance(exc, KeyframesLateError) and clock.interval_s:
                    self._steering.report_late(exc.waited_s, clock.interval_s)
                return self._steering.give_up(str(exc))
            except ReadError as exc:
                return str(exc)
            if item is None:  # end of the file (or a file that does not decode)
                if connected_mono is not None and reader.duration_s:
                    pace(reader.duration_s)  # a reader that skipped the last frames waits out the clip's end
                    if (lost := self._steering.steer(reader, clock, time.monotonic())) is not None:
                        return lost
                if connected_mono is None:
                    self._set_state(CameraState.down, "cannot decode any frame of the video file; replace the file or fix the url")
                    return None
                if not self.loop:
                    self._set_state(CameraState.stopped, "end of file (loop is off)")
                    return None
                if not rewound and reader.rewind():
                    rewound = True
                    self._loops += 1
                    pace.restart(reader.duration_s)
                    continue
                return "cannot restart the video file from the beginning"
            clock.observe(item.key, item.pts_s, item.t_mono)
            if item.decoded:
                rewound = False
                if connected_mono is None:
                    connected_mono = item.t_mono
                    self._set_state(CameraState.connected, self.display_url)
                elif self._backoff.attempt and item.t_mono - connected_mono > STABLE_AFTER_S:
                    self._backoff.reset()
                if item.image is not None:
                    self._deliver(item.image, item.t_mono)
                else:
                    self._count(item.t_mono)
            lost = self._steering.steer(reader, clock, item.t_mono)
            if lost is not None:
                return lost
        return None

    def _wants(self, t_mono: float) -> bool:
        return self.wants_frame is None or self.wants_frame(t_mono)

    @property
    def decoder_info(self) -> dict:
        """How this camera decodes now (library, hardware, mode, key-frame interval); {} before it connected."""
        return self._steering.info

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
