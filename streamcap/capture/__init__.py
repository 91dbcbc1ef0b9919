"""Cameras in, batches of fresh frames out: CameraSource -> FrameSampler -> Batcher (CaptureHub)."""
from streamcap.capture.batcher import Batcher, BatcherStats
from streamcap.capture.hub import CaptureHub, CaptureStats, build_hub
from streamcap.capture.sampler import FrameSampler, SamplerStats
from streamcap.capture.source import CameraSource, CameraStats

__all__ = [
    "Batcher",
    "BatcherStats",
    "CameraSource",
    "CameraStats",
    "CaptureHub",
    "CaptureStats",
    "FrameSampler",
    "SamplerStats",
    "build_hub",
]
