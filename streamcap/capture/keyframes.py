"""KeyframeClock: a stream's key-frame interval, measured from the key frames it sends.

    clock = KeyframeClock()
    clock.observe(key=True, pts_s=12.0, t_mono=now)   # every packet or frame whose key flag is known
    clock.interval_s        # median of the last gaps (stream time when it has one), None before two key frames
    clock.late_s(now)       # seconds since the last key frame when that is over LATE_FACTOR intervals, else None

Gaps are taken in stream time (pts) when the stream gives it, so a camera
whose packets arrive in bursts is still measured by its encoder's setting.
"""
from __future__ import annotations

import statistics
from collections import deque

from streamcap.decoder_kinds import DecodeMode

LATE_FACTOR = 10.0  # no key frame for this many intervals is news


class KeyframeClock:
    def __init__(self, window: int = 5) -> None:
        self._gaps: deque[float] = deque(maxlen=window)
        self._last_pts: float | None = None
        self._last_mono: float | None = None
        self._interval: float | None = None

    def observe(self, key: bool | None, pts_s: float | None, t_mono: float) -> None:
        if not key:
            return
        if self._last_mono is not None:
            if pts_s is not None and self._last_pts is not None:
                gap = pts_s - self._last_pts
            elif pts_s is None and self._last_pts is None:  # a stream without timestamps: our clock
                gap = t_mono - self._last_mono
            else:  # the first packet of an RTSP stream may lack one, and came in a burst: no gap to take
                gap = 0.0
            if 0.001 < gap < 3600:  # a repeated key flag (a flush) or a timestamp jump is not an interval
                self._gaps.append(gap)
                self._interval = statistics.median(self._gaps)
        self._last_pts, self._last_mono = pts_s, t_mono

    @property
    def interval_s(self) -> float | None:
        return self._interval

    @property
    def last_key_mono(self) -> float | None:
        return self._last_mono

    def late_s(self, now: float) -> float | None:
        if self._interval is None or self._last_mono is None:
            return None
        waited = now - self._last_mono
        return waited if waited > LATE_FACTOR * self._interval else None


# Hysteresis: key frames only once the interval fits the caption interval (5 % for encoder rounding),
# every frame again only once it clearly does not, so a camera at the edge does not flap between modes.
ENTER_KEYFRAMES = 1.05
LEAVE_KEYFRAMES = 1.25


def choose_mode(current: DecodeMode, interval_s: float | None, caption_interval_s: float | None) -> DecodeMode:
    """The decode mode a camera should be in, given its measured key-frame interval and caption interval."""
    if interval_s is None or caption_interval_s is None:
        return current
    if current == DecodeMode.every_frame and interval_s <= caption_interval_s * ENTER_KEYFRAMES:
        return DecodeMode.keyframes
    if current == DecodeMode.keyframes and interval_s > caption_interval_s * LEAVE_KEYFRAMES:
        return DecodeMode.every_frame
    return current
