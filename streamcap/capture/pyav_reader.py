"""PyAVReader: FFmpeg through PyAV, one decoding thread, key frames only when they suffice.

PyAV runs FFmpeg's demuxing and decoding without the GIL and hands over one
packet at a time, each with its key flag, so the reader sees every key frame
(and so measures the stream's key-frame interval) while deciding per packet
whether to decode it at all. In `keyframes` mode the codec also skips non-key
frames (`skip_frame = NONKEY`), and a key frame the sampler does not want is
not decoded either.

Timeouts are FFmpeg's own socket options (`timeout` for RTSP, `rw_timeout` for
HTTP), not PyAV's `timeout=`: that one is an interrupt callback which takes
the GIL on every I/O poll of every camera.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import av

from streamcap.capture.probe import ProbeError, check_answering, explain_rtsp_refusal
from streamcap.capture.readers import DecodeSettings, Decoded, KeyframesUnusable, OpenError, Pace, ReadError, Wants
from streamcap.decoder_kinds import DecodeMode, DecoderKind, DecoderLibrary
from streamcap.util.redact import redact_url

log = logging.getLogger(__name__)

# Stream analysis at connect: enough for an H.264/H.265 camera whose SDP carries its parameter sets,
# short enough that connecting costs half a second (FFmpeg's default reads up to 5 s, and the frames it
# buffered meanwhile come out at once, already old).
_ANALYZE = {"analyzeduration": "500000", "probesize": "500000"}


def _options(kind: str, settings: DecodeSettings) -> dict[str, str]:
    micros = str(int(settings.read_timeout_s * 1_000_000))
    if kind == "rtsp":
        return {"rtsp_transport": "tcp", "timeout": micros, **_ANALYZE}
    if kind == "http":
        return {"rw_timeout": micros, **_ANALYZE}
    return {}


# Skipped non-key packets are not handed back one by one (25 a second per camera), only this often, so
# the camera can still tell a stream that stopped sending key frames.
HEARTBEAT_S = 0.25


class PyAVReader:
    library = DecoderLibrary.pyav

    def __init__(self, container, url: str, kind: str, hardware: DecoderKind, fallback: str | None, threads: int) -> None:
        self._container = container
        self._stream = container.streams.video[0]
        self.url, self.kind = url, kind
        self.hardware, self.fallback = hardware, fallback
        self.mode = DecodeMode.every_frame
        self.frames_decoded = 0
        self.packets_skipped = 0
        self._await_key = False  # back to every_frame: decoding restarts at the next key frame
        self._failed_keys = 0
        self._returned_at = 0.0
        self._ready: list[Decoded] = []
        codec = self._stream.codec_context
        codec.thread_count = threads  # 0 = FFmpeg's own choice: a thread per core, per camera
        self._packets = container.demux(self._stream)

    @classmethod
    def open(cls, url: str, kind: str, settings: DecodeSettings, stop: threading.Event | None = None) -> PyAVReader:
        shown = redact_url(url)
        if kind == "file":
            path = Path(url.removeprefix("file://"))
            if not path.is_file():
                raise OpenError(f"video file {path} not found; fix the camera url", permanent=True)
            url = str(path)
        elif kind in ("rtsp", "http"):
            try:
                check_answering(url, kind, settings.open_timeout_s, stop)  # a hung camera is caught here, in slices
            except ProbeError as exc:
                raise OpenError(f"cannot open {shown}: {redact_url(str(exc))}") from None
        options = _options(kind, settings)
        fallback = None
        if settings.hardware == DecoderKind.nvdec:
            try:
                from av.codec.hwaccel import HWAccel

                return cls(av.open(url, options=options, hwaccel=HWAccel("cuda", allow_software_fallback=False)),
                           url, kind, DecoderKind.nvdec, None, settings.threads)
            except Exception as exc:  # noqa: BLE001 - any failure of the hardware path falls back to the CPU
                fallback = f"NVDEC cannot decode this stream ({type(exc).__name__}: {redact_url(str(exc))})"
        try:
            container = av.open(url, options=options)
        except av.error.FFmpegError as exc:
            if kind == "file":
                raise OpenError(f"cannot decode video file {url} ({exc.strerror}); replace the file or fix the url", permanent=True) from None
            why = explain_rtsp_refusal(url, settings.open_timeout_s, stop) if kind == "rtsp" else None
            raise OpenError(f"cannot open {shown}: {redact_url(why or str(exc.strerror or exc))}") from None
        if not container.streams.video:
            container.close()
            raise OpenError(f"{shown} has no video stream", permanent=kind == "file")
        return cls(container, url, kind, DecoderKind.cpu, fallback, settings.threads)

    def set_mode(self, mode: DecodeMode) -> None:
        if mode == self.mode:
            return
        self.mode = mode
        self._stream.codec_context.skip_frame = "NONKEY" if mode == DecodeMode.keyframes else "DEFAULT"
        # The frames skipped so far are missing as references: start again from a key frame.
        self._await_key = mode == DecodeMode.every_frame
        self._failed_keys = 0

    def read(self, wants: Wants, pace: Pace | None = None) -> Decoded | None:
        """The next decoded frame or skipped packet; None at the end of a file."""
        while not self._ready:
            try:
                packet = next(self._packets)
            except (StopIteration, av.error.EOFError):
                if self.kind == "file":
                    return None
                raise ReadError("the stream ended (camera closed the connection)") from None
            except av.error.FFmpegError as exc:
                if self.kind == "file":
                    return None
                raise ReadError(f"read failed ({exc.strerror or exc}: stream ended or connection lost)") from None
            key = bool(packet.is_keyframe)
            pts_s = float(packet.pts * packet.time_base) if packet.pts is not None and packet.time_base else None
            if pace is not None and packet.size:
                pace(pts_s)
            now = time.monotonic()
            if packet.size and (self.mode == DecodeMode.keyframes or self._await_key):
                if not key and now - self._returned_at < HEARTBEAT_S:
                    self.packets_skipped += 1  # skipped here, without a round trip through the camera's loop
                    continue
                if not key or (self.mode == DecodeMode.keyframes and not wants(now)):
                    self.packets_skipped += 1
                    self._returned_at = now
                    return Decoded(now, pts_s, key, decoded=False)
                self._await_key = False
            self._decode(packet, key, wants)
            if packet.size and not self._ready:
                self._returned_at = now
                return Decoded(now, pts_s, key, decoded=False)  # e.g. the decoder holds it back for reordering
        self._returned_at = time.monotonic()
        return self._ready.pop(0)

    def _decode(self, packet, key: bool, wants: Wants) -> None:
        try:
            frames = packet.decode()
        except av.error.FFmpegError as exc:
            frames = []
            if self.mode == DecodeMode.keyframes and key:
                self._failed_keys += 1
                if self._failed_keys >= 3:
                    raise KeyframesUnusable(f"its key frames do not decode alone ({exc.strerror or exc})") from None
            return
        if self.mode == DecodeMode.keyframes and key:
            if not frames:
                self._failed_keys += 1
                if self._failed_keys >= 3:
                    raise KeyframesUnusable("its key frames give no picture when decoded alone")
            else:
                self._failed_keys = 0
        for frame in frames:
            t = time.monotonic()
            self.frames_decoded += 1
            # In keyframes mode the sampler already said yes before the packet was decoded.
            want = self.mode == DecodeMode.keyframes or wants(t)
            image = frame.to_ndarray(format="bgr24") if want else None
            self._ready.append(Decoded(t, frame.time, bool(frame.key_frame), True, image))

    @property
    def duration_s(self) -> float | None:
        duration = self._container.duration  # in AV_TIME_BASE (microseconds)
        return duration / 1_000_000 if duration else None

    def rewind(self) -> bool:
        try:
            self._container.seek(0)
        except av.error.FFmpegError:
            return False
        self._stream.codec_context.flush_buffers()
        self._packets = self._container.demux(self._stream)
        self._ready.clear()
        self._await_key = False
        return True

    def release(self) -> None:
        try:
            self._container.close()
        except Exception:  # noqa: BLE001 - closing a broken stream must not hide why it broke
            log.debug("closing %s failed", redact_url(self.url), exc_info=True)
