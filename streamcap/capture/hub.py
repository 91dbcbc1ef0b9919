"""CaptureHub: cameras -> samplers -> batcher behind one object.

    hub = build_hub(cfg.cameras, max_batch=8, max_wait_ms=50, on_status=status_put)
    hub.start()
    while not stop.is_set():                     # the one inference thread
        batch = hub.next_batch(timeout_s=0.5)    # FrameBatch | None
        if batch: descriptions = captioner.describe([f.image for f in batch.frames])  # caption + concepts per frame
    hub.stop()                                   # closes the batcher, stops and joins every reader
    hub.states()   # {camera_id: CameraState}
    hub.stats()    # {camera_id: CaptureStats}: frames read, reconnects, sampler skips, batcher drops

Each camera's reader thread runs its own sampler and puts accepted frames into
the shared batcher, which keeps the newest frame per camera; nothing here ever
waits on another camera, so a broken camera cannot slow the others.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from streamcap.capture.batcher import Batcher
from streamcap.capture.sampler import FrameSampler, SamplerStats
from streamcap.capture.source import CameraSource, CameraStats
from streamcap.messages import CameraState, Frame, FrameBatch, StatusEvent

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CaptureStats:
    camera: CameraStats
    sampler: SamplerStats
    batcher_drops: int  # sampled frames replaced before the captioner took them


class CaptureHub:
    def __init__(
        self,
        cameras: Mapping[str, CameraSource],
        samplers: Mapping[str, FrameSampler] | None,
        batcher: Batcher,
    ) -> None:
        self.cameras = dict(cameras)
        self.samplers = {camera_id: (samplers or {}).get(camera_id) or FrameSampler(interval_s=0.0) for camera_id in self.cameras}
        self.batcher = batcher
        for camera_id, camera in self.cameras.items():
            camera.on_frame = self._feeder(self.samplers[camera_id])
            camera.wants_frame = self.samplers[camera_id].due

    def _feeder(self, sampler: FrameSampler) -> Callable[[Frame], None]:
        def feed(frame: Frame) -> None:
            if sampler.accept(frame):
                self.batcher.put(frame)

        return feed

    def start(self) -> None:
        for camera in self.cameras.values():
            camera.start()

    def next_batch(self, timeout_s: float) -> FrameBatch | None:
        return self.batcher.next_batch(timeout_s)

    def stop(self, timeout_s: float = 1.5) -> bool:
        """Close the batcher, stop all readers at once and join them within `timeout_s` in all; False if one is stuck.

        A reader stuck inside an OpenCV open or read (a camera that hangs) is left behind rather than
        waited for: shutdown must finish in seconds whatever the cameras do.
        """
        self.batcher.close()
        for camera in self.cameras.values():
            camera.request_stop()
        deadline = time.monotonic() + timeout_s
        return all([camera.stop(max(0.05, deadline - time.monotonic())) for camera in self.cameras.values()])

    def states(self) -> dict[str, CameraState]:
        return {camera_id: camera.state for camera_id, camera in self.cameras.items()}

    def stats(self) -> dict[str, CaptureStats]:
        drops = self.batcher.stats().drops
        return {
            camera_id: CaptureStats(camera.stats(), self.samplers[camera_id].stats(), drops.get(camera_id, 0))
            for camera_id, camera in self.cameras.items()
        }


def build_hub(
    camera_configs: Mapping[str, Any],
    *,
    max_batch: int = 8,
    max_wait_ms: float = 50.0,
    on_status: Callable[[StatusEvent], None] | None = None,
) -> CaptureHub:
    """A hub from {camera_id: CameraConfig-like}; disabled cameras are left out."""
    cameras, samplers = {}, {}
    for camera_id, cfg in camera_configs.items():
        if not getattr(cfg, "enabled", True):
            log.info("camera %r: disabled in the config; not opened", camera_id)
            continue
        cameras[camera_id] = CameraSource.from_config(camera_id, cfg, on_status=on_status)
        samplers[camera_id] = FrameSampler(cfg.caption_interval_s, cfg.scene_change_threshold)
    return CaptureHub(cameras, samplers, Batcher(max_batch, max_wait_ms, on_status=on_status))
