"""CaptionLoad: do the cameras ask for more captions than the model makes?

    load = CaptionLoad()
    load.update(now, asked_total, made_total, asking_cameras)   # once a second, from cumulative counts
    load.asked_per_s, load.made_per_s, load.shortfall_per_s
    load.behind   # "model behind: 48 cameras ask 48 captions/s, the model makes 24", or None

`asked` counts the frames the samplers passed on (due, and changed enough),
`made` the frames the batcher handed to the model, both over the last
`window_s`. The model is behind when it makes less than `behind_ratio` of what
is asked; the batcher then keeps each camera's newest frame and serves the
cameras in turn, and /healthz says `degraded` with this line.
"""
from __future__ import annotations

from collections import deque

WINDOW_S = 10.0
BEHIND_RATIO = 0.9


class CaptionLoad:
    def __init__(self, window_s: float = WINDOW_S, behind_ratio: float = BEHIND_RATIO) -> None:
        self.window_s = window_s
        self.behind_ratio = behind_ratio
        self._samples: deque[tuple[float, int, int, dict[str, int]]] = deque()
        self.asked_per_s = 0.0
        self.made_per_s = 0.0
        self.cameras_asking = 0

    def update(self, now: float, made_total: int, asked_by_camera: dict[str, int]) -> None:
        """`made_total`: frames given to the model so far; `asked_by_camera`: frames each sampler passed on so far."""
        self._samples.append((now, sum(asked_by_camera.values()), made_total, dict(asked_by_camera)))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window_s:
            self._samples.popleft()
        first, last = self._samples[0], self._samples[-1]
        span = last[0] - first[0]
        if span <= 0:
            return
        self.asked_per_s = (last[1] - first[1]) / span
        self.made_per_s = (last[2] - first[2]) / span
        self.cameras_asking = sum(1 for camera, n in last[3].items() if n > first[3].get(camera, 0))

    @property
    def shortfall_per_s(self) -> float:
        return max(0.0, self.asked_per_s - self.made_per_s)

    @property
    def judged(self) -> bool:
        """Enough history to say: half a window at least."""
        return len(self._samples) >= 2 and self._samples[-1][0] - self._samples[0][0] >= self.window_s / 2

    @property
    def behind(self) -> str | None:
        if not self.judged or self.asked_per_s <= 0 or self.made_per_s >= self.behind_ratio * self.asked_per_s:
            return None
        return (f"model behind: {self.cameras_asking} camera{'s' if self.cameras_asking != 1 else ''} ask "
                f"{self.asked_per_s:.3g} captions/s, the model makes {self.made_per_s:.3g}")
