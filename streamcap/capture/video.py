"""Open one camera with OpenCV: RTSP/RTSPS, HTTP(S) MJPEG, files, USB, GStreamer (the Jetson decoder too).

`open_capture(url, kind, ...)` returns an opened `cv2.VideoCapture` or raises
`OpenError`, whose `permanent` flag says whether retrying can help (a missing
file or a GStreamer pipeline on an OpenCV without GStreamer cannot; a camera
that is off or rebooting can). Messages never contain credentials.

OpenCV traps handled here (see ENVIRONMENT.md):
- One decoding thread per camera: OpenCV's FFmpeg backend gives every capture
  a pool of one thread per core unless CAP_PROP_N_THREADS says otherwise.
- Key frames only: OpenCV passes `avdiscard;nonkey` from
  OPENCV_FFMPEG_CAPTURE_OPTIONS to the codec's skip_frame, so that variable is
  set per open; opens that need the same value run at once, others wait.
- RTSP goes over TCP: with OPENCV_FFMPEG_CAPTURE_OPTIONS set, FFmpeg uses UDP
  unless it names `rtsp_transport`, so `rtsp_transport;tcp` is added to it.
- Open and read timeouts are passed as open parameters; without them a frozen
  camera blocks open() and every read() for 30 s.
- OpenCV serialises every FFmpeg open in the process behind one lock unless
  OPENCV_FFMPEG_IS_THREAD_SAFE is set (FFmpeg 4 and later is): it is set here,
  so cameras connect in parallel. A network camera is still first asked
  whether it answers (probe.py), so a hung one fails fast.
"""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import cv2

from streamcap.camera_kinds import resolve_kind, usb_index
from streamcap.capture.probe import ProbeError, check_answering, explain_rtsp_refusal
from streamcap.capture.readers import OpenError
from streamcap.util.redact import redact_url

log = logging.getLogger(__name__)

_FFMPEG_OPTIONS = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
os.environ.setdefault("OPENCV_FFMPEG_IS_THREAD_SAFE", "1")
if "OPENCV_LOG_LEVEL" not in os.environ:
    # Without its lock OpenCV warns on every open that it has no lock; cameras' problems are logged by streamcap.
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
_USER_OPTIONS = os.environ.get(_FFMPEG_OPTIONS)  # what the user set, before this module sets it per open
_NO_GSTREAMER = ("this OpenCV build has no GStreamer support (the opencv-python wheels lack it); "
                 "use an rtsp:// or http:// URL, or install an OpenCV built with GStreamer")

__all__ = ["OpenError", "capture_options", "file_fps", "has_gstreamer", "jetson_pipeline", "open_capture"]


def has_gstreamer() -> bool:
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GStreamer:"):
            return "YES" in line
    return False


def capture_options(user: str | None, keyframes: bool) -> str | None:
    """OPENCV_FFMPEG_CAPTURE_OPTIONS for one open: the user's options, over TCP, plus key frames only if asked."""
    parts = [p for p in (user or "").split("|") if p and not p.startswith("avdiscard;")]
    if user is not None and not any(p.startswith("rtsp_transport;") for p in parts):
        parts.insert(0, "rtsp_transport;tcp")  # a value without a transport silently means UDP
    if keyframes:
        if user is None:
            parts.insert(0, "rtsp_transport;tcp")
        parts.append("avdiscard;nonkey")
    return "|".join(parts) if parts or user is not None else None


class _OptionsGate:
    """Lets opens that need the same OPENCV_FFMPEG_CAPTURE_OPTIONS run together; a different value waits."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._value: str | None = None
        self._active = 0

    def __enter__(self):
        return self

    def hold(self, value: str | None) -> "_OptionsGate":
        with self._cond:
            while self._active and self._value != value:
                self._cond.wait()
            if self._active == 0:
                self._value = value
                if value is None:
                    os.environ.pop(_FFMPEG_OPTIONS, None)
                else:
                    os.environ[_FFMPEG_OPTIONS] = value
            self._active += 1
        return self

    def __exit__(self, *exc) -> None:
        with self._cond:
            self._active -= 1
            self._cond.notify_all()


_gate = _OptionsGate()


def _ffmpeg_params(open_timeout_s: float, read_timeout_s: float, threads: int, hardware: bool) -> list[int]:
    params = [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(open_timeout_s * 1000),
        cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(read_timeout_s * 1000),
    ]  # fmt: skip
    if threads > 0:
        params += [cv2.CAP_PROP_N_THREADS, threads]
    if hardware:
        params += [cv2.CAP_PROP_HW_ACCELERATION, cv2.VIDEO_ACCELERATION_ANY]
    return params


def jetson_pipeline(url: str, kind: str, keyframes: bool) -> str:
    """A GStreamer pipeline that decodes `url` on the Jetson's hardware decoder (skip-frames=2: key frames only)."""
    if kind == "rtsp":
        source = f'rtspsrc location="{url}" protocols=tcp latency=0 ! rtph264depay ! h264parse'
    else:
        source = f'filesrc location="{url}" ! qtdemux ! h264parse'
    skip = " skip-frames=2" if keyframes else ""
    return (f"{source} ! nvv4l2decoder{skip} ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert "
            "! video/x-raw,format=BGR ! appsink drop=true max-buffers=1 sync=false")


def open_capture(
    url: str, kind: str, open_timeout_s: float, read_timeout_s: float, stop: threading.Event | None = None, *,
    threads: int = 1, keyframes: bool = False, hardware: bool = False,
) -> cv2.VideoCapture:
    """An opened capture for `url`, or OpenError with a message that says what to do."""
    kind = resolve_kind(url, kind)
    shown = redact_url(url)
    params = _ffmpeg_params(open_timeout_s, read_timeout_s, threads, hardware)
    if kind == "gstreamer":
        if not has_gstreamer():
            raise OpenError(_NO_GSTREAMER, permanent=True)
        cap = cv2.VideoCapture(url, cv2.CAP_GSTREAMER)
    elif kind == "usb":
        cap = cv2.VideoCapture(usb_index(url), cv2.CAP_V4L2)
    elif kind == "file":
        path = Path(url.removeprefix("file://"))
        if not path.is_file():
            raise OpenError(f"video file {path} not found; fix the camera url", permanent=True)
        with _gate.hold(capture_options(_USER_OPTIONS, keyframes)):
            cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, params[4:])
        if not cap.isOpened():
            cap.release()
            raise OpenError(f"cannot decode video file {path} (corrupt or not a video); replace the file or fix the url", permanent=True)
        return cap
    else:  # rtsp, http
        try:
            check_answering(url, kind, open_timeout_s, stop)
        except ProbeError as exc:
            raise OpenError(f"cannot open {shown}: {redact_url(str(exc))}") from None
        with _gate.hold(capture_options(_USER_OPTIONS, keyframes)):
            cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
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
