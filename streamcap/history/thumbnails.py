"""Thumbnails: a small JPEG per segment start and per alarm, in one folder bounded in bytes.

A busy camera can begin a segment every few seconds; `PictureSchedule` takes
at most one picture per camera every `interval_s`, and a segment that begins
sooner shows the camera's previous picture (so the folder holds hours, not
minutes, of a busy box).

Files are named by what they show (`s<segment id>.jpg`, `a<alarm id>.jpg`),
written whole (temporary file, then rename) so a reader never sees half an
image, and deleted oldest first when the folder passes `max_bytes` or a file
passes the retention age. The folder's content is read once at start; after
that this object is the only writer and keeps the running total.
"""
from __future__ import annotations

import collections
import logging
import os
import re
import time
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

WIDTH = 320  # px: a result card on the page (about 8 kB a picture at this size and quality)
QUALITY = 65
_NAME = re.compile(r"^[as][A-Za-z0-9_.:-]{1,200}\.jpg$")


def is_thumbnail_name(name: str) -> bool:
    return bool(_NAME.match(name))


def segment_name(segment_id: int) -> str:
    return f"s{segment_id}.jpg"


def alarm_name(alarm_id: str) -> str | None:
    name = f"a{alarm_id}.jpg"
    return name if _NAME.match(name) and "/" not in alarm_id else None


def _natural(name: str) -> list:
    """s9.jpg before s10.jpg: written in the same clock tick, the smaller id is the older."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def encode(image: np.ndarray, width: int = WIDTH, quality: int = QUALITY) -> bytes | None:
    """A BGR image scaled down to `width` px as JPEG, or None if OpenCV cannot encode it."""
    if image.shape[1] > width:
        height = max(1, round(image.shape[0] * width / image.shape[1]))
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return jpeg.tobytes() if ok else None


def from_jpeg(data: bytes, width: int = WIDTH) -> bytes | None:
    """A full-size JPEG (an alarm snapshot) as a thumbnail."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return encode(image, width) if image is not None else None


class PictureSchedule:
    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._last: dict[str, tuple[int, float]] = {}  # camera -> (segment id, start) of its last picture

    def assign(self, segment) -> bool:
        """True when `segment` gets its own picture; otherwise it shows the camera's last one (segment.picture)."""
        last = self._last.get(segment.camera_id)
        if last is not None and 0 <= segment.start - last[1] < self.interval_s:
            segment.picture = last[0]
            return False
        segment.picture = None
        return True

    def took(self, segment) -> None:
        self._last[segment.camera_id] = (segment.key, segment.start)

    def forget(self) -> None:
        self._last.clear()


class ThumbnailFolder:
    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder, self.max_bytes = Path(folder), max_bytes
        self.folder.mkdir(parents=True, exist_ok=True)
        self._files: collections.OrderedDict[str, tuple[int, float]] = collections.OrderedDict()  # name -> (bytes, mtime)
        self.total = 0
        found = []
        for entry in os.scandir(self.folder):
            if entry.is_file() and _NAME.match(entry.name):
                stat = entry.stat()
                found.append((stat.st_mtime_ns, _natural(entry.name), entry.name, stat.st_size))
            elif entry.name.startswith(".tmp-"):
                Path(entry.path).unlink(missing_ok=True)  # a write cut short by a crash
        for mtime_ns, _, name, size in sorted(found):
            self._files[name] = (size, mtime_ns / 1e9)
            self.total += size

    def path(self, name: str) -> Path | None:
        """The file of a thumbnail name, if the name is one of ours (never a path outside the folder)."""
        return self.folder / name if _NAME.match(name) else None

    def save(self, name: str, jpeg: bytes) -> None:
        """Write `name`; raises OSError (a full disk, say) with nothing half-written left behind."""
        target = self.path(name)
        if target is None:
            raise ValueError(f"not a thumbnail name: {name!r}")
        temporary = self.folder / f".tmp-{name}"
        try:
            temporary.write_bytes(jpeg)
            os.replace(temporary, target)
        except OSError:
            temporary.unlink(missing_ok=True)
            raise
        old = self._files.pop(name, None)
        if old is not None:
            self.total -= old[0]
        self._files[name] = (len(jpeg), time.time())
        self.total += len(jpeg)
        self._shrink(self.max_bytes)

    def prune(self, older_than: float) -> int:
        """Delete thumbnails written before `older_than` (unix time); returns how many."""
        count = 0
        while self._files:
            name, (_, mtime) = next(iter(self._files.items()))
            if mtime >= older_than:
                break
            self._delete_oldest()
            count += 1
        return count

    def _shrink(self, limit: int) -> None:
        while self.total > limit and self._files:
            self._delete_oldest()

    def _delete_oldest(self) -> None:
        name, (size, _) = self._files.popitem(last=False)
        self.total -= size
        try:
            (self.folder / name).unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("history: cannot delete thumbnail %s: %s", name, exc)
