"""FrameSampler: which of a camera's frames are worth captioning.

    sampler = FrameSampler(interval_s=1.0, scene_change_threshold=0.02, phase=0.3)
    if sampler.accept(frame): batcher.put(frame)
    sampler.due(t_mono)  # the rate gate alone, before paying for the frame's BGR conversion
    sampler.is_due(t_mono)  # the same, counting nothing
    sampler.ask(t_mono)  # a due moment accepted before its frame is decoded (the camera's turn is far off)
    sampler.stats()  # SamplerStats: offered, accepted, skipped_interval, skipped_scene

One sampler per camera, called from that camera's reader thread. Two gates:
1. Rate: at most one frame per `interval_s` (by the frame's t_mono), on a fixed
   cadence so a 12.5 fps camera at 1 s gives one frame per second, not 0.92.
2. Scene change (when `scene_change_threshold` > 0): a due frame whose small
   greyscale thumbnail differs from the last *accepted* one by less than the
   threshold (mean absolute difference, 0..1) is skipped. Comparing with the
   last accepted frame, not the previous one, lets slow drift add up to a
   change. `max_interval_s` forces a caption now and then even if nothing moves.
The thumbnail is only computed for due frames, so the gate costs about a
millisecond per interval, not per frame.

Cameras started together would ask together, every interval, and a model that
keeps up on average would still face all of them at once: 128 cameras asking
every 5 s of a model making 26 captions/s waited up to 3 s each burst. So
each camera's cadence has its own `phase` (0..1 of an interval): the first
frame is taken at once, the second (1 + phase) intervals later, then one an
interval.

A camera that decodes key frames only calls `keyframes(interval_s)`: a key
frame then counts as due up to half a key-frame interval early, since key
frames come on the encoder's clock, not ours; without that slack a key frame
a millisecond early would wait a whole interval for the next.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from streamcap.messages import Frame

THUMB_SIZE = 32  # small enough to ignore sensor noise, big enough to see a person at a gate


@dataclass(frozen=True)
class SamplerStats:
    offered: int
    accepted: int
    skipped_interval: int  # not due yet
    skipped_scene: int  # due, but nearly identical to the last captioned frame

    @property
    def scene_skip_ratio(self) -> float:
        """Share of due frames the scene-change gate saved from the captioner."""
        due = self.accepted + self.skipped_scene
        return self.skipped_scene / due if due else 0.0


def thumbnail(image: np.ndarray) -> np.ndarray:
    """A (THUMB_SIZE, THUMB_SIZE) float32 greyscale thumbnail in 0..1."""
    small = cv2.resize(image, (THUMB_SIZE, THUMB_SIZE), interpolation=cv2.INTER_AREA)
    if small.ndim == 3:
        small = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
    return small.astype(np.float32) / 255.0


def scene_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two thumbnails, 0 (same) .. 1."""
    return float(np.abs(a - b).mean())


class FrameSampler:
    def __init__(
        self,
        interval_s: float = 1.0,
        scene_change_threshold: float = 0.0,
        max_interval_s: float | None = None,
        phase: float = 0.0,
    ) -> None:
        if interval_s < 0 or not 0 <= scene_change_threshold <= 1 or not 0 <= phase < 1:
            raise ValueError(f"need interval_s >= 0, 0 <= scene_change_threshold <= 1 and 0 <= phase < 1, "
                             f"got {interval_s}, {scene_change_threshold}, {phase}")
        self.interval_s = interval_s
        self.phase = phase
        self.scene_change_threshold = scene_change_threshold
        self.max_interval_s = max_interval_s
        self.early_s = 0.0  # a frame this much before its due time still counts (key frames only)
        self.last_difference: float | None = None  # of the last due frame, for tuning the threshold
        self._next_due: float | None = None
        self._last_thumb: np.ndarray | None = None
        self._last_accepted_mono: float | None = None
        self._offered = self._accepted = self._skipped_interval = self._skipped_scene = 0

    def due(self, t_mono: float) -> bool:
        """The rate gate alone, for a frame not yet converted; a frame that is not due is counted as skipped."""
        if not self.is_due(t_mono):
            self._offered += 1
            self._skipped_interval += 1
            return False
        return True

    def is_due(self, t_mono: float) -> bool:
        """The rate gate, counting nothing."""
        return self._next_due is None or t_mono >= self._next_due - self.early_s

    def accept(self, frame: Frame) -> bool:
        """True if `frame` should be captioned; updates the counters either way."""
        now = frame.t_mono
        if not self.due(now):
            return False
        self._next_cadence(now)
        if self.scene_change_threshold > 0 and not self._scene_changed(frame, now):
            self._skipped_scene += 1
            return False
        self._accepted += 1
        self._last_accepted_mono = now
        return True

    @property
    def needs_frame_to_decide(self) -> bool:
        """The scene-change gate looks at the frame: such a sampler cannot ask before one is decoded."""
        return self.scene_change_threshold > 0

    def ask(self, t_mono: float) -> None:
        """Accept a due moment without its frame (one is decoded later, when the camera's turn is near)."""
        self._next_cadence(t_mono)
        self._accepted += 1
        self._last_accepted_mono = t_mono

    def _next_cadence(self, now: float) -> None:
        self._offered += 1
        self._next_due = now + self.interval_s * (1 + self.phase) if self._next_due is None else self._next_due + self.interval_s
        if self._next_due <= now + self.early_s:  # a stall or a slow camera: restart the cadence from here
            self._next_due = now + self.interval_s

    def keyframes(self, keyframe_interval_s: float | None) -> None:
        """The camera decodes key frames only, one every `keyframe_interval_s` (None: every frame again)."""
        self.early_s = min(keyframe_interval_s, self.interval_s) / 2 if keyframe_interval_s else 0.0

    def _scene_changed(self, frame: Frame, now: float) -> bool:
        thumb = thumbnail(frame.image)
        if self._last_thumb is not None:
            self.last_difference = scene_difference(thumb, self._last_thumb)
            overdue = self.max_interval_s is not None and now - self._last_accepted_mono >= self.max_interval_s
            if self.last_difference < self.scene_change_threshold and not overdue:
                return False
        self._last_thumb = thumb
        return True

    def stats(self) -> SamplerStats:
        return SamplerStats(self._offered, self._accepted, self._skipped_interval, self._skipped_scene)
