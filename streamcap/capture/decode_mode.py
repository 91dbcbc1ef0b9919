"""DecodeSteering: which decode mode a camera's reader is in, and saying so.

    steering = DecodeSteering("gate", caption_interval_s=1.0, keyframes_allowed=True, threads=1, emit=status_put)
    steering.connected(reader)                  # a new connection: every frame until the interval is measured
    lost = steering.steer(reader, clock, now)   # after each packet or frame; a reason to reconnect, or None
    steering.info                               # {"library", "hardware", "mode", "keyframe_interval_s", "threads"}

Key frames only while they come at least as often as captions are due (with
hysteresis, keyframes.choose_mode). A stream whose key frames stop decoding
alone, or that sends none for 10x its interval, is reported and decoded in
full from the next connection on (the frames skipped so far are missing as
references, so the decoder cannot just carry on). Every mode is logged once
with the camera and why, and sent as a DecoderChanged status event.
"""
from __future__ import annotations

import logging
import time
from typing import Callable

from streamcap.capture.keyframes import LATE_FACTOR, KeyframeClock, choose_mode
from streamcap.capture.readers import Reader
from streamcap.decoder_kinds import DecodeMode
from streamcap.messages import DecoderChanged, KeyframesLate, StatusEvent

log = logging.getLogger("streamcap.capture.source")  # one logger for everything a camera says


class DecodeSteering:
    def __init__(self, camera_id: str, caption_interval_s: float | None, keyframes_allowed: bool, threads: int,
                 emit: Callable[[StatusEvent], None], on_mode: Callable[[DecodeMode, float | None], None] | None = None) -> None:
        self.camera_id = camera_id
        self.caption_interval_s = caption_interval_s  # None: every frame is wanted, so never key frames only
        self.keyframes_unusable = not keyframes_allowed  # for good once key frames alone failed on this camera
        self.threads = threads
        self.on_mode = on_mode
        self._emit = emit
        self._info: dict = {}
        self._late_reported = False

    def connected(self, reader: Reader) -> None:
        self._late_reported = False
        self._announce(reader, None, "")

    def report_late(self, waited_s: float, interval_s: float) -> None:
        self._late_reported = True
        log.warning("camera %r: no key frame for %.1f s (%.0fx its measured interval of %.2f s)",
                    self.camera_id, waited_s, waited_s / interval_s, interval_s)
        self._emit(KeyframesLate(self.camera_id, waited_s, interval_s, time.time()))

    def give_up(self, why: str) -> str:
        """Decode every frame from now on: reconnect, since the frames skipped so far are missing as references."""
        self.keyframes_unusable = True
        log.warning("camera %r: cannot decode key frames only (%s); decoding every frame from the next connection",
                    self.camera_id, why)
        return f"switching to every frame ({why})"

    def steer(self, reader: Reader, clock: KeyframeClock, now: float) -> str | None:
        """Key frames only while they come at least as often as captions are due; report a stream late with them.

        Returns why the stream must be reopened, or None."""
        interval = clock.interval_s
        if interval is None:
            return None
        late = clock.late_s(now)
        if late is not None and not self._late_reported:
            self.report_late(late, interval)
            return self.give_up(f"no key frame for {late:.1f} s") if reader.mode == DecodeMode.keyframes else None
        if late is None:
            self._late_reported = False
        wanted = choose_mode(reader.mode, interval, None if self.keyframes_unusable else self.caption_interval_s)
        if wanted != reader.mode:
            self._switch(reader, wanted, clock, self._why(wanted, interval))
        elif self._info.get("keyframe_interval_s") is None:  # measured for the first time: say what it means
            self._announce(reader, interval, self._why(wanted, interval))
        else:
            self._info["keyframe_interval_s"] = round(interval, 3)
        return None

    def _why(self, mode: DecodeMode, interval: float) -> str:
        if self.caption_interval_s is None:
            return f"key frame every {interval:.2f} s; every frame is wanted"
        if self.keyframes_unusable:
            return f"key frame every {interval:.2f} s, but key frames alone do not decode here"
        if mode == DecodeMode.keyframes:
            return f"key frame every {interval:.2f} s, caption every {self.caption_interval_s:g} s"
        return f"key frame every {interval:.2f} s is longer than the caption interval of {self.caption_interval_s:g} s"

    def _switch(self, reader: Reader, mode: DecodeMode, clock: KeyframeClock, why: str) -> None:
        if mode == DecodeMode.keyframes and hasattr(reader, "keyframe_wait_s"):
            # An OpenCV read waits for the next key frame; one that waits 10 intervals is a stream late with them.
            reader.keyframe_wait_s = LATE_FACTOR * (clock.interval_s or 0.0)
        reader.set_mode(mode)
        if self.on_mode is not None:
            self.on_mode(mode, clock.interval_s)
        self._announce(reader, clock.interval_s, why)

    def _announce(self, reader: Reader, interval: float | None, why: str) -> None:
        info = {"library": reader.library.value, "hardware": reader.hardware.value, "mode": reader.mode.value,
                "keyframe_interval_s": None if interval is None else round(interval, 3), "threads": self.threads}
        if info == self._info:
            return
        first = not self._info
        self._info = info
        if first and reader.fallback:
            log.warning("camera %r: %s; decoding on the CPU", self.camera_id, reader.fallback)
        if interval is None:
            log.info("camera %r: decoding with %s on %s, every frame until its key-frame interval is measured",
                     self.camera_id, reader.library.value, reader.hardware.value)
        else:
            log.info("camera %r: decoding %s with %s on %s (%s)", self.camera_id,
                     "key frames only" if reader.mode == DecodeMode.keyframes else "every frame",
                     reader.library.value, reader.hardware.value, why)
        self._emit(DecoderChanged(self.camera_id, info["library"], info["hardware"], info["mode"], info["keyframe_interval_s"],
                                  why, time.time()))

    @property
    def info(self) -> dict:
        """How the camera decodes now (library, hardware, mode, key-frame interval); {} before it connected."""
        return dict(self._info)

