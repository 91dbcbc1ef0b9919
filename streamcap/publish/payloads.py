"""Topic names and JSON documents, shared by every publisher so MQTT and the
console/JSON-lines output describe a caption or an alarm the same way.

Topics (house style): `<prefix>/<device>/status` and, per camera,
`<prefix>/<device>/<camera>/{caption,alarm,snapshot,state}`.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

from streamcap.concepts import reported
from streamcap.messages import Alarm, CameraState, Caption
from streamcap.metrics import iso_time

STATUS_ONLINE = "online"
STATUS_STOPPED = "stopped"  # clean shutdown
STATUS_OFFLINE = "offline"  # the last will: the broker publishes it when we vanish


@dataclass(frozen=True)
class Topics:
    prefix: str
    device: str

    @property
    def status(self) -> str:
        return f"{self.prefix}/{self.device}/status"

    def camera(self, camera_id: str, leaf: str) -> str:
        return f"{self.prefix}/{self.device}/{camera_id}/{leaf}"

    def caption(self, camera_id: str) -> str:
        return self.camera(camera_id, "caption")

    def alarm(self, camera_id: str) -> str:
        return self.camera(camera_id, "alarm")

    def snapshot(self, camera_id: str) -> str:
        return self.camera(camera_id, "snapshot")

    def state(self, camera_id: str) -> str:
        return self.camera(camera_id, "state")


def caption_doc(caption: Caption, now: float | None = None, now_mono: float | None = None) -> dict:
    """latency_ms runs from frame capture to this call (capture -> publish).

    `concepts` has every group and the categories at or above 0.1 (`streamcap.concepts.reported`).
    """
    now = time.time() if now is None else now
    now_mono = time.monotonic() if now_mono is None else now_mono
    return {
        "camera": caption.camera_id,
        "time": iso_time(now),
        "caption": caption.text,
        "frame_id": caption.frame_id,
        "frame_time": iso_time(caption.captured_at),
        "latency_ms": round((now_mono - caption.t_mono) * 1000.0, 1),
        "model": caption.model,
        "concepts": reported(caption.concepts),
    }


def alarm_doc(alarm: Alarm, snapshot_topic: str | None) -> dict:
    """One lifecycle message: `type` new, update or end, all with the alarm's `id`.

    `seq` counts the messages of one alarm (0 for new), so (id, seq) lets
    consumers drop the rare duplicate that at-least-once delivery allows.
    `snapshot` names the topic holding the JPEG and the message it belongs
    to, or is null when this message published none. `end_time` (the last
    matching caption) is null until the end message.
    """
    return {
        "id": alarm.alarm_id,
        "type": str(alarm.type),
        "seq": alarm.seq,
        "rule": alarm.rule_id,
        "title": alarm.rule_title or alarm.rule_id,
        "severity": str(alarm.severity),
        "camera": alarm.camera_id,
        "caption": alarm.caption,
        "concepts": reported(alarm.concepts),
        "time": iso_time(alarm.raised_at),
        "frame_time": iso_time(alarm.captured_at),
        "start_time": iso_time(alarm.start_time),
        "end_time": iso_time(alarm.end_time),
        "snapshot": None if snapshot_topic is None else {"topic": snapshot_topic, "alarm_id": alarm.alarm_id, "seq": alarm.seq},
    }


def restart_end_doc(last: dict, now: float | None = None) -> dict:
    """The `end` of an alarm that a killed process left open, made from its last message at the next start.

    `end_time` is when that last message was made (the last moment the alarm
    was known to hold); `ended_by: "restart"` tells it from an end the rule decided.
    """
    return {**last, "type": "end", "seq": last["seq"] + 1, "time": iso_time(time.time() if now is None else now),
            "end_time": last["time"], "snapshot": None, "ended_by": "restart"}


def state_doc(camera_id: str, state: CameraState | str, last_frame_at: float | None, now: float | None = None) -> dict:
    return {
        "camera": camera_id,
        "state": str(CameraState(state)),
        "last_frame_time": iso_time(last_frame_at),
        "time": iso_time(time.time() if now is None else now),
    }


def to_json(doc: dict) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
