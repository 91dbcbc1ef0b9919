"""SnapshotStore: the last few captioned frames of each camera, for alarm snapshots and the live page.

The inference thread puts every frame it captions; the dispatch thread asks
for the JPEG of (camera, frame id) when an alarm wants a snapshot, and the web
page asks for a camera's newest frame. At most `per_camera` frames are kept
per camera, and at most `max_bytes` in all (frames and cached JPEGs): beyond
it the oldest frame of any camera goes first, a camera's newest last. An alarm
asks for the frame of a caption just dispatched, which is among the newest,
so oldest-first keeps what alarms need (160 cameras of 720p at 4 frames each
would be 1.7 GB; the default budget is 256 MB). A frame already dropped means
no snapshot for that alarm (counted), never a snapshot of another moment.
JPEGs are encoded on demand and cached, so a frame nobody asks for costs
nothing but its slot.
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict

import cv2

from streamcap.messages import Frame

log = logging.getLogger(__name__)

JPEG_QUALITY = 85
THUMBNAIL_WIDTH = 480  # the live page's tiles
DEFAULT_MAX_BYTES = 256 << 20


class SnapshotStore:
    def __init__(self, per_camera: int = 4, max_bytes: int = DEFAULT_MAX_BYTES):
        if per_camera < 1 or max_bytes < 1:
            raise ValueError(f"per_camera and max_bytes must be >= 1, got {per_camera}, {max_bytes}")
        self.per_camera, self.max_bytes = per_camera, max_bytes
        self._lock = threading.Lock()
        self._frames: dict[str, OrderedDict[int, Frame]] = {}
        self._order: OrderedDict[tuple[str, int], None] = OrderedDict()  # every kept frame, oldest first
        self._jpegs: dict[tuple[str, int, int], bytes] = {}  # (camera, frame id, width or 0) -> JPEG
        self.bytes = 0  # frames' pixels and cached JPEGs
        self.missed = 0  # snapshots asked for frames already dropped
        self._warned_small = False

    def put(self, frame: Frame) -> None:
        with self._lock:
            frames = self._frames.setdefault(frame.camera_id, OrderedDict())
            frames[frame.frame_id] = frame
            self._order[(frame.camera_id, frame.frame_id)] = None
            self.bytes += frame.image.nbytes
            while len(frames) > self.per_camera:
                self._forget(frame.camera_id, next(iter(frames)))
            self._shrink(keep=(frame.camera_id, frame.frame_id))

    def _shrink(self, keep: tuple[str, int]) -> None:
        """Free bytes until the store fits max_bytes (lock held): frames older than their camera's newest
        first, then cached JPEGs, then cameras' newest frames, oldest first; never `keep`."""
        while self.bytes > self.max_bytes:
            victim = next((key for key in self._order if key != keep and key[1] != next(reversed(self._frames[key[0]]))), None)
            if victim is None:
                jpeg = next((key for key in self._jpegs if key[:2] != keep), None)
                if jpeg is not None:
                    self.bytes -= len(self._jpegs.pop(jpeg))
                    continue
                victim = next((key for key in self._order if key != keep), None)
                if victim is None:
                    return  # one frame larger than the budget: kept, alone
                if not self._warned_small:
                    self._warned_small = True
                    log.warning("snapshots: %d MB hold less than one frame per camera; alarms may miss snapshots "
                                "(raise snapshots.memory_mb)", self.max_bytes >> 20)
            self._forget(*victim)

    def _forget(self, camera_id: str, frame_id: int) -> None:
        frame = self._frames[camera_id].pop(frame_id)
        del self._order[(camera_id, frame_id)]
        self.bytes -= frame.image.nbytes
        for width in (0, THUMBNAIL_WIDTH):
            self.bytes -= len(self._jpegs.pop((camera_id, frame_id, width), b""))

    def jpeg(self, camera_id: str, frame_id: int, width: int = 0) -> bytes | None:
        """The frame as JPEG (scaled to `width` px if given), or None if it is no longer kept."""
        with self._lock:
            frame = self._frames.get(camera_id, {}).get(frame_id)
            cached = self._jpegs.get((camera_id, frame_id, width))
            if frame is None:
                self.missed += 1
                return None
        if cached is not None:
            return cached
        data = _encode(frame, width)
        if data is not None:
            with self._lock:
                key = (camera_id, frame_id, width)
                if frame_id in self._frames.get(camera_id, {}) and key not in self._jpegs:
                    self._jpegs[key] = data
                    self.bytes += len(data)
                    self._shrink(keep=(camera_id, frame_id))
        return data

    def frame(self, camera_id: str, frame_id: int) -> Frame | None:
        """The frame itself while it is kept (the history encodes its own thumbnail size from it)."""
        with self._lock:
            return self._frames.get(camera_id, {}).get(frame_id)

    def latest(self, camera_id: str, width: int = THUMBNAIL_WIDTH) -> tuple[Frame, bytes] | None:
        """The newest kept frame of a camera and its JPEG, or None before the first caption."""
        with self._lock:
            frames = self._frames.get(camera_id)
            if not frames:
                return None
            frame = next(reversed(frames.values()))
        data = self.jpeg(camera_id, frame.frame_id, width)
        return (frame, data) if data is not None else None


def _encode(frame: Frame, width: int) -> bytes | None:
    image = frame.image
    if width and image.shape[1] > width:
        height = round(image.shape[0] * width / image.shape[1])
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        log.warning("%s: could not encode frame %d as JPEG", frame.camera_id, frame.frame_id)
        return None
    return jpeg.tobytes()
