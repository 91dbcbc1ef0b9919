"""Frozen messages that flow one way through the pipeline.

CameraSource -Frame-> FrameSampler -Frame-> Batcher -FrameBatch-> captioner
-Caption-> RuleEngine -Alarm-> publishers. Captions also go straight to the
publishers. Status changes travel on a side channel as StatusEvent, never back
up the pipe. Every message carries the camera, the frame id, the wall-clock
capture time and a monotonic timestamp so latency can be measured at each hop.

Captions do not carry their frame: a snapshot is cut from the bounded
`SnapshotStore` by (camera, frame id) only when an alarm needs one, so a
backlog of captions never holds a backlog of full-resolution frames.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from streamcap.util.strenum import StrEnum

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
    concepts: dict[str, float] = field(default_factory=dict)  # concept head probabilities; empty without a head


class Severity(StrEnum):
    alert = "alert"
    detection = "detection"


class AlarmType(StrEnum):
    new = "new"  # a rule started matching on a camera
    update = "update"  # still matching, with a better caption or snapshot
    end = "end"  # has not matched for the rule's clear_after


@dataclass(frozen=True)
class Alarm:
    """One message of an alarm's lifecycle: new, then updates, then end, all with the same id."""

    alarm_id: str  # the event, stable over its lifecycle: "<rule>-<camera>-<start unix ms>"
    rule_id: str
    severity: Severity
    camera_id: str
    caption: str  # the caption this message shows (the best so far for update and end)
    captured_at: float  # when that caption's frame was taken
    raised_at: float  # wall clock when this message was made
    type: AlarmType = AlarmType.new
    rule_title: str = ""  # the rule's alias (what people read), or its id
    seq: int = 0  # 0 for new, then 1, 2, ...: (alarm_id, seq) names one message, for de-duplication
    start_time: float | None = None  # capture time of the first matching caption (default: captured_at)
    end_time: float | None = None  # capture time of the last matching caption; set on end
    concepts: dict[str, float] = field(default_factory=dict)
    snapshot_jpeg: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.start_time is None:
            object.__setattr__(self, "start_time", self.captured_at)

    @property
    def message_id(self) -> str:
        return f"{self.alarm_id}:{self.seq}"


class CameraState(StrEnum):
    connecting = "connecting"
    connected = "connected"
    reconnecting = "reconnecting"
    down = "down"
    stopped = "stopped"


class DropCause(StrEnum):
    """Why something was dropped: the `cause` label of streamcap_drops_total (a closed set)."""

    captioner_behind = "captioner_behind"  # a newer frame of the camera replaced one the model had not taken
    model_error = "model_error"  # the model failed on the batch
    backlog = "backlog"  # a bounded queue was full (DROP_OLDEST)
    disconnected = "disconnected"  # best-effort messages while the broker is away
    spool_full = "spool_full"  # the alarm spool reached its bound, or its disk was full and so was the memory queue
    disk_full = "disk_full"  # a disk was full (the history's, the JSON-lines file's): not written until space returns
    write_error = "write_error"  # a write failed otherwise (the history database, the JSON-lines file)
    shutdown = "shutdown"  # still waiting when streamcap stopped


class PublisherState(StrEnum):
    connecting = "connecting"
    connected = "connected"
    disconnected = "disconnected"
    refused = "refused"  # the broker said no (credentials, ACL)
    failed = "failed"  # cannot work at all (start failed): /healthz is not ok
    closed = "closed"


# Status events travel on the side channel, one frozen type per fact, so that
# whoever consumes them (metrics, camera-state messages) dispatches on the type
# and a count is never mistaken for a state.

@dataclass(frozen=True)
class CameraStateChanged:
    camera_id: str
    state: CameraState
    detail: str
    at: float


@dataclass(frozen=True)
class CameraReconnecting:
    camera_id: str
    attempt: int  # 1 for the first retry after a failure
    detail: str
    at: float


@dataclass(frozen=True)
class FramesDropped:
    """`count` more items dropped since the last event of this (stage, source, cause)."""

    stage: str  # "batcher", "inference", "dispatch", "publish_mqtt", "spool", "history"
    cause: DropCause
    count: int
    camera_id: str = ""  # the camera they belonged to, when there is one
    at: float = 0.0


@dataclass(frozen=True)
class PublisherStatus:
    publisher: str
    state: PublisherState
    detail: str = ""
    at: float = 0.0


@dataclass(frozen=True)
class PublisherError:
    publisher: str
    call: str  # which Publisher method raised
    detail: str
    at: float = 0.0


@dataclass(frozen=True)
class DecoderChanged:
    """How a camera decodes now: after it connects, and when its decode mode changes."""

    camera_id: str
    library: str  # a DecoderLibrary: pyav | opencv
    hardware: str  # a DecoderKind: cpu | nvdec | jetson
    mode: str  # a DecodeMode: keyframes | every_frame
    keyframe_interval_s: float | None  # measured; None until two key frames came
    detail: str = ""
    at: float = 0.0


@dataclass(frozen=True)
class KeyframesLate:
    """A stream sent no key frame for many times its measured key-frame interval."""

    camera_id: str
    waited_s: float
    interval_s: float
    at: float = 0.0


StatusEvent = (CameraStateChanged | CameraReconnecting | FramesDropped | PublisherStatus | PublisherError
               | DecoderChanged | KeyframesLate)
