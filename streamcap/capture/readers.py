"""A camera's decoder: what the reader thread asks for frames, whichever library decodes them.

    reader = open_reader(url, kind, settings, stop)   # PyAV where installed, else OpenCV; raises OpenError
    item = reader.read(wants, pace)  # Decoded | None (end of file); raises ReadError when the stream fails
    reader.set_mode(DecodeMode.keyframes)             # skip what is not a key frame, before decoding it
    reader.release()

Both readers decode on one thread (the camera's reader thread, never a pool
sized to the machine) and convert a frame to BGR only when `wants(t_mono)` says
the sampler will take it. In `keyframes` mode the packets that are not key
frames never reach the decoder, and a key frame that is not due is skipped too.

`DecodeSettings.hardware` is what the box offers for this camera (see
hardware.py); a reader that cannot use it decodes on the CPU and says why in
`fallback` (logged once by the camera).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from streamcap.decoder_kinds import DecodeMode, DecoderKind, DecoderLibrary

Wants = Callable[[float], bool]  # the sampler's rate gate: is a frame at this monotonic time due?
Pace = Callable[[float | None], None]  # waits until a file's stream time has come (pacing.FilePacer)


class OpenError(Exception):
    """A camera could not be opened; `permanent` means retrying cannot help."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class ReadError(Exception):
    """The stream failed while reading (connection lost, camera hung); the message says which."""


class KeyframesUnusable(ReadError):
    """Key frames alone do not decode on this stream; decode every frame instead."""


class KeyframesLateError(KeyframesUnusable):
    """A read in keyframes mode waited `waited_s` without a key frame (readers that cannot see packets)."""

    def __init__(self, waited_s: float) -> None:
        super().__init__(f"no key frame for {waited_s:.1f} s")
        self.waited_s = waited_s


@dataclass(frozen=True)
class Decoded:
    """One step of a stream: a decoded frame, or a packet skipped before decoding (`decoded` False)."""

    t_mono: float  # when it came out of the demuxer or decoder
    pts_s: float | None  # stream time, when the stream says
    key: bool | None  # a key frame (None: this reader cannot tell)
    decoded: bool = True
    image: np.ndarray | None = None  # BGR, only for frames `wants` took


@dataclass(frozen=True)
class DecodeSettings:
    library: DecoderLibrary = DecoderLibrary.auto
    hardware: DecoderKind = DecoderKind.cpu  # resolved for this box: cpu, nvdec or jetson (never auto)
    threads: int = 1  # FFmpeg decoding threads; 0 = FFmpeg's default, one per core (only to compare with)
    open_timeout_s: float = 5.0
    read_timeout_s: float = 3.0


class Reader(Protocol):
    library: DecoderLibrary
    hardware: DecoderKind  # what it decodes on (cpu after a fallback)
    mode: DecodeMode
    fallback: str | None  # why it is not on the hardware asked for, or None
    frames_decoded: int  # frames that came out of the decoder
    packets_skipped: int  # packets never decoded (keyframes mode)

    def read(self, wants: Wants, pace: Pace | None = None) -> Decoded | None: ...

    def set_mode(self, mode: DecodeMode) -> None: ...

    @property
    def duration_s(self) -> float | None: ...  # a file's length, for pacing its loops

    def rewind(self) -> bool: ...

    def release(self) -> None: ...


def pyav_available() -> bool:
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_library(library: DecoderLibrary | str) -> DecoderLibrary:
    """The library `auto` stands for here: PyAV when installed, else OpenCV."""
    library = DecoderLibrary(library)
    if library == DecoderLibrary.auto:
        return DecoderLibrary.pyav if pyav_available() else DecoderLibrary.opencv
    return library


def open_reader(url: str, kind: str, settings: DecodeSettings, stop: threading.Event | None = None) -> Reader:
    """An opened reader for `url`, or OpenError (with `permanent` set when retrying cannot help)."""
    library = resolve_library(settings.library)
    if settings.hardware == DecoderKind.jetson or kind in ("usb", "gstreamer"):
        library = DecoderLibrary.opencv  # GStreamer pipelines and V4L2 devices go through OpenCV
    if library == DecoderLibrary.pyav:
        from streamcap.capture.pyav_reader import PyAVReader

        return PyAVReader.open(url, kind, settings, stop)
    from streamcap.capture.opencv_reader import OpenCVReader

    return OpenCVReader.open(url, kind, settings, stop)
