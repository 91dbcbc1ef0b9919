"""Frames cut from the shared CCTV clips, as the shared `cctv_clips/Frames/` were made.

A frame is named `<clip>_<frameindex>.jpg` (e.g. `street-parked-cars_00057.jpg`): the frame with that
0-based index when `videos/<clip>.mp4` is decoded sequentially with OpenCV (`cv2.VideoCapture`, `read()`
in order; no seeking, so the index never depends on key frames or the container's time stamps). The
frame is scaled (INTER_AREA) so that its long side is at most 640 px and written as a JPEG of quality 92.
Files that already exist in the output folder are kept as they are (and not decoded again). The result is
deterministic for a given video and OpenCV build. The project's own captioned frames (data/cctv_extra/)
are cut this way when training loads them, so no image is ever copied into the repository.
"""
from __future__ import annotations

import os
import re
from collections import defaultdict
from pathlib import Path

import cv2

MAX_SIDE = 640
JPEG_QUALITY = 92
_NAME = re.compile(r"^(?P<clip>[A-Za-z0-9][A-Za-z0-9.-]*)_(?P<index>\d+)\.jpg$")


def parse_name(name: str) -> tuple[str, int]:
    """`road-elevated_00354.jpg` -> (`road-elevated`, 354); ValueError for anything else."""
    match = _NAME.match(name)
    if not match:
        raise ValueError(f"{name!r} is not a frame name <clip>_<frameindex>.jpg")
    return match["clip"], int(match["index"])


def scale_frame(frame, max_side: int = MAX_SIDE):
    """Scale a BGR frame down (never up) so that its long side is at most `max_side`."""
    h, w = frame.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1:
        return frame
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


def _write_jpeg(path: Path, frame) -> None:
    ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError(f"could not encode {path.name}")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data.tobytes())
    os.replace(tmp, path)  # never leave a half-written JPEG under the final name


def extract_frames(names: list[str], videos_dir: Path, out_dir: Path) -> dict[str, Path]:
    """Write each named frame to `out_dir/<name>` unless it is already there; return name -> path for all.

    Raises FileNotFoundError if a clip's video is missing and ValueError for a bad name or an index past
    the end of its clip (nothing is written for that clip's missing frames then; earlier clips are kept).
    """
    videos_dir, out_dir = Path(videos_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Path] = {}
    wanted: dict[str, dict[int, str]] = defaultdict(dict)
    for name in names:
        clip, index = parse_name(name)
        path = out_dir / name
        result[name] = path
        if not path.is_file():
            wanted[clip][index] = name
    for clip in sorted(wanted):
        video = videos_dir / f"{clip}.mp4"
        if not video.is_file():
            raise FileNotFoundError(f"{video}: no video for {len(wanted[clip])} frame(s) of {clip}")
        todo = wanted[clip]
        last = max(todo)
        cap = cv2.VideoCapture(str(video))
        if not cap.isOpened():
            raise RuntimeError(f"{video}: OpenCV cannot open it")
        try:
            index = 0
            while index <= last:
                ok, frame = cap.read()
                if not ok:
                    missing = sorted(todo[i] for i in todo if i >= index)
                    raise ValueError(f"{video} has only {index} frames; cannot extract {', '.join(missing)}")
                if index in todo:
                    _write_jpeg(out_dir / todo[index], scale_frame(frame))
                index += 1
        finally:
            cap.release()
    return result
