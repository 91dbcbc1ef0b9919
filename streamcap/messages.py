"""Frozen messages that flow one way through the pipeline.

CameraSource -Frame-> FrameSampler -Frame-> Batcher -FrameBatch-> captioner
-Caption-> RuleEngine -Alarm-> publishers. Captions also go straight to the
publishers. Status changes travel on a side channel as StatusEvent, never back
up the pipe. Every message carries the camera, the frame id, the wall-clock
capture time and a monotonic timestamp so latency can be measured at each hop.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np


@dataclass(frozen=True, eq=False)
class Frame:
    camera_id: str
    frame_id: int  # per camera, increasing
    captured_at: float  # time.time() when the reader got it
    t_mono: float  # time.monotonic() when the reader got it
    image: np.ndarray = field(repr=False)  # BGR uint8 (H, W, 3)


@dataclass(frozen=True)
class FrameBatch:
    frames: tuple[Frame, ...]
    formed_mono: float  # when the batcher closed the batch


@dataclass(frozen=True)
class Caption:
    camera_id: str
    frame_id: int
    captured_at: float
    t_mono: float
    text: str
    model: str
    captioned_mono: float  # when the caption left the model
    frame: Frame | None = field(default=None, repr=False, compare=False)  # for snapshots


class Severity(StrEnum):
    alert = "alert"
    detection = "detection"


@dataclass(frozen=True)
class Alarm:
    alarm_id: str  # unique and stable: "<rule>-<camera>-<unix ms>"
    rule_id: str
    severity: Severity
    camera_id: str
    caption: str
    captured_at: float
    raised_at: float
    snapshot_jpeg: bytes | None = field(default=None, repr=False)


class CameraState(StrEnum):
    connecting = "connecting"
    connected = "connected"
    reconnecting = "reconnecting"
    down = "down"
    stopped = "stopped"


@dataclass(frozen=True)
class StatusEvent:
    source: str  # camera id, "mqtt", "batcher", ...
    kind: str  # "camera_state", "drop", "reconnect", "error", ...
    value: str = ""
    detail: str = ""
    at: float = 0.0  # time.time()
