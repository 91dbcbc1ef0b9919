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
the shared batcher, which keeps the newest frame per camera; when the model is
behind, a camera asks without decoding and decodes its frame when its turn is
near (see Batcher); nothing here ever
waits on another camera, so a broken camera cannot slow the others.
"""
from __future__ import annotations

import logging
import time
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from streamcap.capture.batcher import Batcher
from streamcap.capture.sampler import FrameSampler, SamplerStats
from streamcap.capture.source import CameraSource, CameraStats
from streamcap.capture.hardware import box_decoders, resolve_decoder
from streamcap.capture.readers import DecodeSettings, resolve_library
from streamcap.decoder_kinds import DecodeMode, DecoderKind, DecoderLibrary
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
            camera.wants_frame = self._wants(camera_id, self.samplers[camera_id])
            camera.on_decode_mode = self._keyframe_slack(self.samplers[camera_id])

    def _wants(self, camera_id: str, sampler: FrameSampler) -> Callable[[float], bool]:
        """Should the reader decode the frame at `t_mono`? When the sampler asks and the camera's turn is near, or
        when its turn has come near since it asked (see Batcher); an ask while the turn is far off decodes nothing."""
        batcher = self.batcher

        def wants(t_mono: float) -> bool:
            if not sampler.due(t_mono):
                return batcher.wants_refresh(camera_id, t_mono)
            if sampler.needs_frame_to_decide or batcher.turn_is_near(camera_id):
                return True
            sampler.ask(t_mono)
            batcher.ask(camera_id)
            return False

        return wants

    @staticmethod
    def _keyframe_slack(sampler: FrameSampler) -> Callable[[DecodeMode, float | None], None]:
        def changed(mode: DecodeMode, interval_s: float | None) -> None:
            sampler.keyframes(interval_s if mode == DecodeMode.keyframes else None)

        return changed

    def _feeder(self, sampler: FrameSampler) -> Callable[[Frame], None]:
        def feed(frame: Frame) -> None:
            if not sampler.is_due(frame.t_mono) and self.batcher.wants_refresh(frame.camera_id, frame.t_mono):
                self.batcher.refresh(frame)
            elif sampler.accept(frame):
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

    def decoder_info(self, camera_id: str) -> dict:
        """How a camera decodes now (library, hardware, mode, key-frame interval); {} if unknown."""
        camera = self.cameras.get(camera_id)
        return camera.decoder_info if camera is not None else {}

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
    decode: Any = None,
) -> CaptureHub:
    """A hub from {camera_id: CameraConfig-like} and the box's DecodeConfig-like `decode`; disabled cameras are left out."""
    cameras, samplers = {}, {}
    settings = decode_settings(camera_configs, decode)
    for camera_id, cfg in camera_configs.items():
        if not getattr(cfg, "enabled", True):
            log.info("camera %r: disabled in the config; not opened", camera_id)
            continue
        cameras[camera_id] = CameraSource.from_config(camera_id, cfg, on_status=on_status, decode=settings[camera_id])
        samplers[camera_id] = FrameSampler(cfg.caption_interval_s, cfg.scene_change_threshold, phase=cadence_phase(camera_id))
    return CaptureHub(cameras, samplers, Batcher(max_batch, max_wait_ms, on_status=on_status))


def cadence_phase(camera_id: str) -> float:
    """A camera's own phase in its caption cadence, 0..1: spread evenly over cameras, the same on every start."""
    return zlib.crc32(camera_id.encode()) / 2**32


def decode_settings(camera_configs: Mapping[str, Any], decode: Any = None) -> dict[str, DecodeSettings]:
    """Each enabled camera's decoder on this box; a decoder asked for that the box lacks is named once, with the fallback."""
    library = resolve_library(getattr(decode, "library", DecoderLibrary.auto))
    threads = getattr(decode, "threads_per_camera", 1)
    default = getattr(decode, "decoder", DecoderKind.auto)
    wanted = {cid: DecoderKind(getattr(cfg, "decoder", None) or default)
              for cid, cfg in camera_configs.items() if getattr(cfg, "enabled", True)}
    available = box_decoders(library) if any(k != DecoderKind.cpu for k in wanted.values()) else {}
    settings, fallbacks = {}, {}
    for camera_id, requested in wanted.items():
        kind, why = resolve_decoder(requested, available, library)
        if why is not None:
            fallbacks.setdefault((requested.value, why), []).append(camera_id)
        settings[camera_id] = DecodeSettings(library, kind, threads)
    for (requested, why), names in fallbacks.items():
        log.warning("decoder %s asked for (camera %s), but %s; decoding on the CPU", requested, ", ".join(map(repr, names)), why)
    if settings:
        kinds = sorted({s.hardware.value for s in settings.values()})
        log.info("decoding with %s, %s per camera, on %s", library.value,
                 f"{threads} thread" + ("s" if threads != 1 else "") if threads else "FFmpeg's default threads", ", ".join(kinds))
    return settings
