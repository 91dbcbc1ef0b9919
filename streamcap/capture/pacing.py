"""FilePacer: plays a video file at its own speed, so a file camera behaves like a live one.

    pace = FilePacer(stop)
    pace(pts_s)      # waits until this packet's or frame's stream time has come; returns at once when late
    pace.restart(duration_s)   # after a rewind: the clip's time starts again where the last loop ended

The clock is the stream's own timestamps, so a reader that skips everything
but key frames still delivers them when a camera would have, one per key-frame
interval. A jump forward (a broken timestamp) or falling more than a second
behind (a loaded box) re-anchors the clock instead of sleeping or bursting.
"""
from __future__ import annotations

import threading
import time

MAX_WAIT_S = 120.0  # longer than any key-frame interval a key-frames-only reader waits out
MAX_BEHIND_S = 1.0


class FilePacer:
    def __init__(self, stop: threading.Event, step_s: float = 0.04) -> None:
        self._stop = stop
        self._step_s = step_s  # for packets without a timestamp
        self._anchor: tuple[float, float] | None = None  # (monotonic, stream time) at the start
        self._last_pts: float | None = None

    def restart(self, duration_s: float | None = None) -> None:
        """Stream time starts again at 0, `duration_s` after the last loop's 0 (a reader that skipped the last
        frames reaches the end early: the next loop must still start on time)."""
        if self._anchor is not None and duration_s:
            self._anchor = (self._anchor[0] + duration_s - self._anchor[1], 0.0)
        else:
            self._anchor = None
        self._last_pts = None

    def __call__(self, pts_s: float | None) -> None:
        if pts_s is None:
            pts_s = (self._last_pts + self._step_s) if self._last_pts is not None else 0.0
        self._last_pts = pts_s if self._last_pts is None else max(self._last_pts, pts_s)
        now = time.monotonic()
        if self._anchor is None:
            self._anchor = (now, pts_s)
            return
        wait_s = self._anchor[0] + (pts_s - self._anchor[1]) - now
        if wait_s > MAX_WAIT_S or wait_s < -MAX_BEHIND_S:
            self._anchor = (now, pts_s)
        elif wait_s > 0:
            self._stop.wait(wait_s)
