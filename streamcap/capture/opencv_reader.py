"""OpenCVReader: the fallback decoder where PyAV is not installed, as frugal as OpenCV allows.

One FFmpeg thread per camera (CAP_PROP_N_THREADS), grab() for every frame and
retrieve() (the BGR conversion) only for the frames the sampler takes. OpenCV
gives no packets, so key frames are told by the decoded picture type, and
`keyframes` mode means reopening with `avdiscard;nonkey` (the codec skips the
other frames before decoding them); a read may then wait a whole key-frame
interval, so its timeout grows by that much. On a Jetson the capture is a
GStreamer pipeline through nvv4l2decoder, whose `skip-frames=2` does the same.
"""
from __future__ import annotations

import threading
import time

import cv2

from streamcap.capture.readers import DecodeSettings, Decoded, KeyframesLateError, OpenError, Pace, ReadError, Wants
from streamcap.capture.video import has_gstreamer, jetson_pipeline, open_capture
from streamcap.decoder_kinds import DecodeMode, DecoderKind, DecoderLibrary

_I_FRAME = ord("I")


class OpenCVReader:
    library = DecoderLibrary.opencv

    def __init__(self, url: str, kind: str, settings: DecodeSettings, stop: threading.Event | None) -> None:
        self.url, self.kind, self.settings, self._stop = url, kind, settings, stop
        self.hardware = settings.hardware
        self.fallback: str | None = None
        self.mode = DecodeMode.keyframes if settings.hardware == DecoderKind.jetson else DecodeMode.every_frame
        self.frames_decoded = 0
        self.packets_skipped = 0  # OpenCV does not say how many frames its decoder skipped
        self.keyframe_wait_s = 0.0  # how long a read may wait for a key frame in keyframes mode
        self._cap: cv2.VideoCapture | None = None

    @classmethod
    def open(cls, url: str, kind: str, settings: DecodeSettings, stop: threading.Event | None = None) -> OpenCVReader:
        reader = cls(url, kind, settings, stop)
        reader._open()
        return reader

    @property
    def read_timeout_s(self) -> float:
        extra = self.keyframe_wait_s if self.mode == DecodeMode.keyframes else 0.0
        return self.settings.read_timeout_s + extra

    def _open(self) -> None:
        s, keyframes = self.settings, self.mode == DecodeMode.keyframes
        if self.hardware == DecoderKind.jetson:
            if not has_gstreamer():
                self.hardware, self.fallback = DecoderKind.cpu, "this OpenCV has no GStreamer for the Jetson decoder"
                self.mode = DecodeMode.every_frame
            elif self.kind in ("rtsp", "file"):
                self._cap = open_capture(jetson_pipeline(self.url, self.kind, keyframes), "gstreamer", s.open_timeout_s,
                                         self.read_timeout_s, self._stop)
                return
        self._cap = open_capture(self.url, self.kind, s.open_timeout_s, self.read_timeout_s, self._stop,
                                 threads=s.threads, keyframes=keyframes, hardware=self.hardware == DecoderKind.nvdec)
        if self.hardware == DecoderKind.nvdec and not self._cap.get(cv2.CAP_PROP_HW_ACCELERATION):
            self.hardware, self.fallback = DecoderKind.cpu, "this OpenCV's FFmpeg has no hardware decoder for the stream"

    def set_mode(self, mode: DecodeMode) -> None:
        if mode == self.mode:
            return
        self.release()
        self.mode = mode
        # A file starts again from its beginning (OpenCV's seek decodes its way forward, and with the
        # non-key frames discarded it runs off the end); the pacer takes the clip's clock from there.
        self._open()  # OpenError propagates: the camera reconnects as after any lost stream

    def read(self, wants: Wants, pace: Pace | None = None) -> Decoded | None:
        """The next decoded frame; None at the end of a file (or a file that does not decode)."""
        started = time.monotonic()
        ok = self._cap.grab()
        now = time.monotonic()
        if not ok:
            if self.kind == "file":
                return None
            if self.mode == DecodeMode.keyframes and now - started >= self.read_timeout_s * 0.9:
                raise KeyframesLateError(now - started)
            raise ReadError("read failed (stream ended or connection lost)")
        if self.kind in ("rtsp", "http") and now - started >= self.read_timeout_s:
            # FFmpeg hands back a stale frame when its read timeout fires.
            raise ReadError(f"no frame for {now - started:.1f} s (camera hung)")
        self.frames_decoded += 1
        pts_ms = self._cap.get(cv2.CAP_PROP_POS_MSEC)
        if pace is not None:
            pace(pts_ms / 1000.0)
            now = time.monotonic()
        if self.mode == DecodeMode.keyframes:
            key = True
        elif self.kind in ("usb", "gstreamer") or self.hardware == DecoderKind.jetson:
            key = None
        else:
            key = self._cap.get(cv2.CAP_PROP_FRAME_TYPE) == _I_FRAME
        image = None
        if wants(now):
            ok, image = self._cap.retrieve()
            image = image if ok else None
        return Decoded(now, pts_ms / 1000.0 if pts_ms or key else None, key, True, image)

    @property
    def duration_s(self) -> float | None:
        frames, fps = self._cap.get(cv2.CAP_PROP_FRAME_COUNT), self._cap.get(cv2.CAP_PROP_FPS)
        return frames / fps if frames > 0 and 0.5 <= fps <= 240 else None

    def rewind(self) -> bool:
        return bool(self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0))

    def release(self) -> None:
        if self._cap is not None:
            self._cap.release()  # on the reader thread, so never during a read
            self._cap = None


__all__ = ["OpenCVReader", "OpenError"]
