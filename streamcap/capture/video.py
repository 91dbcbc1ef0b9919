"""Open one camera with OpenCV: RTSP/RTSPS, HTTP(S) MJPEG, files, USB, GStreamer.

`open_capture(url, kind, ...)` returns an opened `cv2.VideoCapture` or raises
`OpenError`, whose `permanent` flag says whether retrying can help (a missing
file or a GStreamer pipeline on an OpenCV without GStreamer cannot; a camera
that is off or rebooting can). Messages never contain credentials.

OpenCV traps handled here (see ENVIRONMENT.md):
- RTSP goes over TCP: the FFmpeg backend defaults to TCP, but only while
  OPENCV_FFMPEG_CAPTURE_OPTIONS is unset or names `rtsp_transport`; a value
  without it silently switches to UDP, so `rtsp_transport;tcp` is added to it.
- Open and read timeouts are passed as open parameters; without them a frozen
  camera blocks open() and every read() for 30 s.
- OpenCV serialises all FFmpeg opens in the process behind one lock, so a
  network camera is first asked whether it answers (probe.py), outside that
  lock: a hung camera must not hold up every other camera's (re)connect.
"""
from __future__ import annotations

import logging
import os
import re
import threading
from pathlib import Path

import cv2

from streamcap.camera_kinds import resolve_kind, usb_index
from streamcap.capture.probe import ProbeError, check_answering, explain_rtsp_refusal
from streamcap.util.redact import redact_url

log = logging.getLogger(__name__)

_FFMPEG_OPTIONS = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
_env_lock = threading.Lock()


class OpenError(Exception):
    """A camera could not be opened; `permanent` means retrying cannot help."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


def has_gstreamer() -> bool:
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GStreamer:"):
            return "YES" in line
    return False


def _force_rtsp_tcp() -> None:
    with _env_lock:
        options = os.environ.get(_FFMPEG_OPTIONS)
        if options is not None and "rtsp_transport" not in options:
            # Process-wide and read by FFmpeg at each open, so fix it before the first RTSP open.
            os.environ[_FFMPEG_OPTIONS] = "rtsp_transport;tcp|" + options if options else "rtsp_transport;tcp"
            log.warning("%s had no rtsp_transport (RTSP would silently use UDP); added rtsp_transport;tcp", _FFMPEG_OPTIONS)


def _ffmpeg_params(open_timeout_s: float, read_timeout_s: float) -> list[int]:
    return [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(open_timeout_s * 1000),
        cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(read_timeout_s * 1000),
    ]  # fmt: skip


def open_capture(
    url: str, kind: str, open_timeout_s: float, read_timeout_s: float, stop: threading.Event | None = None
) -> cv2.VideoCapture:
    """An opened capture for `url`, or OpenError with a message that says what to do."""
    kind = resolve_kind(url, kind)
    shown = redact_url(url)
    if kind == "gstreamer":
        if not has_gstreamer():
            raise OpenError(
                "this OpenCV build has no GStreamer support (the opencv-python wheels lack it); "
                "use an rtsp:// or http:// URL, or install an OpenCV built with GStreamer",
                permanent=True,
            )
        cap = cv2.VideoCapture(url, cv2.CAP_GSTREAMER)
    elif kind == "usb":
        cap = cv2.VideoCapture(usb_index(url), cv2.CAP_V4L2)
    elif kind == "file":
        path = Path(url.removeprefix("file://"))
        if not path.is_file():
            raise OpenError(f"video file {path} not found; fix the camera url", permanent=True)
        cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        if not cap.isOpened():
            cap.release()
            raise OpenError(f"cannot decode video file {path} (corrupt or not a video); replace the file or fix the url", permanent=True)
        return cap
    else:  # rtsp, http
        try:
            check_answering(url, kind, open_timeout_s, stop)
        except ProbeError as exc:
            raise OpenError(f"cannot open {shown}: {redact_url(str(exc))}") from None
        if kind == "rtsp":
            _force_rtsp_tcp()
        cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG, _ffmpeg_params(open_timeout_s, read_timeout_s))
        if not cap.isOpened():
            cap.release()
            why = explain_rtsp_refusal(url, open_timeout_s, stop) if url.lower().startswith("rtsp://") else None
            raise OpenError(f"cannot open {shown}: {redact_url(why) if why else 'the camera answered but sent no decodable video'}")
        return cap
    if not cap.isOpened():
        cap.release()
        raise OpenError(f"cannot open {shown} (no such device, or no video)")
    return cap


def file_fps(cap: cv2.VideoCapture, default: float = 25.0) -> float:
    """The clip's frame rate, or `default` when the container does not say (or says nonsense)."""
    fps = cap.get(cv2.CAP_PROP_FPS)
    return fps if 0.5 <= fps <= 240 else default
