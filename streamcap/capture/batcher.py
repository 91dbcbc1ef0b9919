"""Batcher: dynamic batches across cameras, newest frame per camera.

    batcher = Batcher(max_batch=8, max_wait_ms=50)
    batcher.put(frame)                      # any reader thread; never blocks for long
    batcher.turn_is_near(camera)            # a reader whose sampler asks: decode now, or ...
    batcher.ask(camera)                     # ... only take the camera's place in line
    batcher.wants_refresh(camera, t_mono)   # a reader, before decoding a frame its sampler did not ask for
    batcher.refresh(frame)                  # ... and with it: the waiting frame is replaced, the turn kept
    batch = batcher.next_batch(timeout_s=1) # the inference thread: FrameBatch | None
    batcher.close()                         # wakes next_batch, which then returns None

Each camera has one pending slot (DROP_OLDEST): a newer frame replaces one the
captioner has not taken yet, and the replaced frame is counted as a drop for
that camera. Memory is therefore bounded by the number of cameras however slow
the captioner is, and captions are always about the present.

Under overload the cameras are served in turn: the one served longest ago
first (then the one waiting longest), and a replaced frame keeps its camera's
place in line. Ordering by the last turn rather than by arrival matters when
cameras ask less often than their turn comes round: by arrival, a camera that
asks every 5 s while turns come every 7 s is served either every 5 s or every
10 s, depending on its phase, for as long as the overload lasts.

A frame decoded when its camera asks would wait for its turn and grow old
(128 cameras asking every 5 s of a model that makes 17 captions/s wait ~7 s).
So when the line is longer than the next NEXT_UP_S of turns (at the rate
batches have been taken lately, and at least two batches), a camera asks
without a frame (`ask`): it takes its place and decodes nothing. When its
turn comes within NEXT_UP_S, `wants_refresh` tells its reader to decode the
next key frame (or convert the next frame), which fills the slot (`refresh`);
a camera that waits with a frame older than REFRESH_AFTER_S takes a newer one
the same way. NEXT_UP_S is a little longer than the usual 1 s between a CCTV
stream's key frames, so a camera sees one before its turn. Under overload a
camera thus decodes about one frame per caption made, just before it is
captioned, and the caption is of a frame from the last second. A slot still
without a frame ASK_TIMEOUT_S after its turn came near (the camera stalled) is
given up and counted as a drop, so a dead camera does not hold a place near
the front.

`next_batch` waits up to `timeout_s` for a first frame, then up to `max_wait_ms`
from that frame's arrival for more cameras, and returns as soon as `max_batch`
cameras are pending. Drops are logged and sent to `on_status` as `drop` events,
at most once per `report_every_s` per camera, each with the count since the
last one, so the events add up to the drops exactly (`flush_drop_reports`
hands over what the rate limit held back).
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from streamcap.messages import DropCause, Frame, FrameBatch, FramesDropped, StatusEvent

log = logging.getLogger(__name__)

REFRESH_AFTER_S = 0.5  # a waiting frame older than this is replaced when the camera's turn is near
NEXT_UP_S = 1.2  # how near: a key frame a second comes within it
RATE_WINDOW_S = 5.0  # the take rate that turns NEXT_UP_S into a number of cameras
ASK_TIMEOUT_S = 10.0  # longer than any key-frame interval a key-frames-only camera waits out


@dataclass(frozen=True)
class BatcherStats:
    batches: int
    frames_batched: int
    pending: int  # cameras waiting their turn, with a frame or (asked without one) not yet
    drops: dict[str, int] = field(default_factory=dict)  # per camera
    refreshed: int = 0  # waiting frames replaced by a newer one just before their turn
    asked_without_frame: int = 0  # asks that decoded nothing until their turn was near

    @property
    def mean_batch_size(self) -> float:
        return self.frames_batched / self.batches if self.batches else 0.0


class Batcher:
    def __init__(
        self,
        max_batch: int = 8,
        max_wait_ms: float = 50.0,
        on_status: Callable[[StatusEvent], None] | None = None,
        report_every_s: float = 5.0,
    ) -> None:
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError(f"need max_batch >= 1 and max_wait_ms >= 0, got {max_batch}, {max_wait_ms}")
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.on_status = on_status
        self.report_every_s = report_every_s
        self._cond = threading.Condition()
        self._waiting: dict[str, float] = {}  # camera -> when it took its place in line (with a frame or an ask)
        self._frames: dict[str, Frame] = {}  # the newest frame of each waiting camera that has one
        self._last_turn: dict[str, float] = {}  # camera -> when it was last put in a batch
        self._next_up: frozenset[str] = frozenset()  # read without the lock by readers: replaced, never changed
        self._next_up_size = 2 * max_batch
        self._next_up_since: dict[str, float] = {}
        self._refreshed = 0
        self._asked_without_frame = 0
        self._taken: deque[tuple[float, int]] = deque()  # (when, frames) of the batches of the last RATE_WINDOW_S
        self._drops: dict[str, int] = {}
        self._reported: dict[str, tuple[float, int]] = {}  # camera -> (when, drops then)
        self._closed = False
        self._unsent_at_close: dict[str, int] = {}
        self._batches = 0
        self._frames_batched = 0

    def put(self, frame: Frame) -> None:
        camera = frame.camera_id
        event = None
        with self._cond:
            if self._closed:  # a reader still delivering while the pipeline stops
                self._unsent_at_close[camera] = self._unsent_at_close.get(camera, 0) + 1
                return
            self._frames[camera] = frame
            if camera not in self._waiting:
                self._waiting[camera] = time.monotonic()
                self._update_next_up()
            else:  # it keeps its place in line
                event = self._count_drop(camera)
            self._cond.notify_all()
        self._log_drop(camera, event)

    def ask(self, camera: str) -> None:
        """The camera's sampler asks for a caption, but its turn is not near: take a place in line, decode nothing yet."""
        event = None
        with self._cond:
            if self._closed:
                self._unsent_at_close[camera] = self._unsent_at_close.get(camera, 0) + 1
                return
            self._asked_without_frame += 1
            if camera not in self._waiting:
                self._waiting[camera] = time.monotonic()
                self._update_next_up()
            else:  # an earlier ask still waits: one caption for the two
                event = self._count_drop(camera)
        self._log_drop(camera, event)

    def turn_is_near(self, camera: str) -> bool:
        """Would a frame decoded now for this camera be taken within NEXT_UP_S?"""
        return camera in self._next_up or (camera not in self._waiting and len(self._waiting) < self._next_up_size)

    def _count_drop(self, camera: str) -> FramesDropped | None:
        self._drops[camera] = self._drops.get(camera, 0) + 1
        return self._drop_report(camera)

    def _log_drop(self, camera: str, event: FramesDropped | None) -> None:
        if event is not None:
            # INFO: with many cameras a warning per camera floods the log; the pipeline warns once that the model is behind.
            log.info("camera %r: captioner is behind: asked %d times without a caption since the last report (%d in all); "
                     "the camera keeps its place in line", camera, event.count, self._drops[camera])
            if self.on_status is not None:
                try:
                    self.on_status(event)
                except Exception:
                    log.exception("batcher: status callback failed")

    def wants_refresh(self, camera: str, t_mono: float) -> bool:
        """Is this camera's turn near while it waits without a frame or with an old one? Cheap: readers ask it per frame."""
        if camera not in self._next_up or camera not in self._waiting:
            return False
        frame = self._frames.get(camera)
        return frame is None or t_mono - frame.t_mono >= REFRESH_AFTER_S

    def refresh(self, frame: Frame) -> bool:
        """The frame for a camera's waiting slot, or a newer one than it holds; False if it is not waiting now."""
        camera = frame.camera_id
        with self._cond:
            held = self._frames.get(camera)
            if camera not in self._waiting or self._closed or (held is not None and frame.t_mono <= held.t_mono):
                return False  # its turn came meanwhile: the frame was not asked for, so it is not a drop either
            if held is None:
                self._cond.notify_all()
            else:
                self._refreshed += 1
            self._frames[camera] = frame
        return True

    def _in_turn(self) -> list[str]:
        """Pending cameras in the order they are served: longest since their last turn, then longest waiting."""
        never = float("-inf")
        return sorted(self._waiting, key=lambda camera: (self._last_turn.get(camera, never), self._waiting[camera]))

    def _update_next_up(self) -> None:
        taken_per_s = sum(n for _, n in self._taken) / RATE_WINDOW_S
        self._next_up_size = max(2 * self.max_batch, math.ceil(taken_per_s * NEXT_UP_S))
        self._next_up = frozenset(self._in_turn()[: self._next_up_size])
        now = time.monotonic()
        self._next_up_since = {camera: self._next_up_since.get(camera, now) for camera in self._next_up}

    def _give_up_stalled_asks(self, now: float) -> None:
        """Slots still without a frame ASK_TIMEOUT_S after their turn came near: the camera stalled."""
        stalled = [camera for camera, since in self._next_up_since.items()
                   if now - since > ASK_TIMEOUT_S and camera not in self._frames]
        for camera in stalled:
            del self._waiting[camera]
            self._drops[camera] = self._drops.get(camera, 0) + 1  # reported by the next flush_drop_reports
        if stalled:
            self._update_next_up()

    def _drop_report(self, camera: str) -> FramesDropped | None:
        """The drops since the last report of this camera, at most once per report_every_s (flush() takes the rest)."""
        now = time.monotonic()
        when, drops_then = self._reported.get(camera, (float("-inf"), 0))
        if now - when < self.report_every_s:
            return None
        return self._report(camera, now, drops_then)

    def _report(self, camera: str, now: float, drops_then: int) -> FramesDropped | None:
        total = self._drops.get(camera, 0)
        if total == drops_then:
            return None
        self._reported[camera] = (now, total)
        return FramesDropped("batcher", DropCause.captioner_behind, total - drops_then, camera, time.time())

    def flush_drop_reports(self) -> list[FramesDropped]:
        """Reports for the drops not yet reported (the rate limit holds some back): so that metrics add up exactly."""
        with self._cond:
            now = time.monotonic()
            reports = [self._report(camera, now, self._reported.get(camera, (0.0, 0))[1]) for camera in list(self._drops)]
            reports += [FramesDropped("batcher", DropCause.shutdown, n, camera, time.time()) for camera, n in self._unsent_at_close.items()]
            self._unsent_at_close.clear()
        return [r for r in reports if r is not None]

    def next_batch(self, timeout_s: float) -> FrameBatch | None:
        """Up to max_batch frames (one per camera), or None on timeout or close."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not self._frames and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._give_up_stalled_asks(time.monotonic())
                    return None
                self._cond.wait(remaining)
            if self._closed:
                return None
            first_arrival = min(self._waiting[camera] for camera in self._frames)
            close_at = first_arrival + self.max_wait_s
            while len(self._frames) < self.max_batch and not self._closed:
                remaining = close_at - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            if self._closed:
                return None
            cameras = [camera for camera in self._in_turn() if camera in self._frames][: self.max_batch]
            frames = tuple(self._frames.pop(camera) for camera in cameras)
            for camera in cameras:
                del self._waiting[camera]
            now = time.monotonic()
            for camera in cameras:
                self._last_turn[camera] = now
            self._taken.append((now, len(frames)))
            while self._taken[0][0] < now - RATE_WINDOW_S:
                self._taken.popleft()
            self._update_next_up()
            self._give_up_stalled_asks(now)
            self._batches += 1
            self._frames_batched += len(frames)
        return FrameBatch(frames, time.monotonic())

    def close(self) -> None:
        """Stop batching; the frames still waiting are dropped and counted (cause shutdown)."""
        with self._cond:
            self._closed = True
            for camera in self._waiting:
                self._unsent_at_close[camera] = self._unsent_at_close.get(camera, 0) + 1
            self._waiting.clear()
            self._frames.clear()
            self._cond.notify_all()

    def stats(self) -> BatcherStats:
        with self._cond:
            return BatcherStats(self._batches, self._frames_batched, len(self._waiting), dict(self._drops), self._refreshed,
                                self._asked_without_frame)
