"""SnapshotStore: the last few captioned frames of each camera, for alarm snapshots and the live page.

The inference thread puts every frame it captions; the dispatch thread asks
for the JPEG of (camera, frame id) when an alarm wants a snapshot, and the web
page asks for a camera's newest frame. At most `per_camera` frames are kept
per camera (DROP_OLDEST), so memory is bounded by the number of cameras, not
by how far dispatch has fallen behind. A frame already dropped means no
snapshot for that alarm (counted), never a snapshot of another moment.
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


class SnapshotStore:
    def __init__(self, per_camera: int = 4):
        if per_camera < 1:
            raise ValueError(f"per_camera must be >= 1, got {per_camera}")
        self.per_camera = per_camera
        self._lock = threading.Lock()
        self._frames: dict[str, OrderedDict[int, Frame]] = {}
        self._jpegs: dict[tuple[str, int, int], bytes] = {}  # (camera, frame id, width or 0) -> JPEG
        self.missed = 0  # snapshots asked for frames already dropped

    def put(self, frame: Frame) -> None:
        with self._lock:
            frames = self._frames.setdefault(frame.camera_id, OrderedDict())
            frames[frame.frame_id] = frame
            while len(frames) > self.per_camera:
                old_id, _ = frames.popitem(last=False)
                for width in (0, THUMBNAIL_WIDTH):
                    self._jpegs.pop((frame.camera_id, old_id, width), None)

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
                if frame_id in self._frames.get(camera_id, {}):
                    self._jpegs[(camera_id, frame_id, width)] = data
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
