"""ConsolePublisher: the default when no broker is configured.

Human-readable lines on stdout, one per caption, alarm or camera state:

    10:01:25.123 gate    caption  a man is walking down the street  [person 0.97 vehicle 0.03]  (412 ms)
    10:01:25.130 gate    ALARM    new alert person_at_gate: a man is walking down the street  [id person_at_gate-gate-1764064885123]
    10:01:58.002 gate    ALARM    end alert person_at_gate: a man is walking down the street  [id person_at_gate-gate-1764064885123]
    10:01:26.000 gate    state    reconnecting

and, optionally, the same events as JSON lines in a file (the documents MQTT
would carry, plus a "kind" field), appended and flushed per line so `tail -f`
and crash-time inspection see everything written so far.
"""
from __future__ import annotations

import json
import os
import sys
import threading
from datetime import datetime
from typing import TextIO

from streamcap.concepts import reported
from streamcap.messages import Alarm, CameraState, Caption
from streamcap.metrics import Metrics
from streamcap.publish.payloads import alarm_doc, caption_doc, state_doc


class ConsolePublisher:
    name = "console"

    def __init__(
        self,
        stream: TextIO | None = None,
        jsonl_path: str | os.PathLike | None = None,
        metrics: Metrics | None = None,
        camera_width: int = 8,
        console: bool = True,
    ) -> None:
        # console=False keeps only the JSON-lines file (outputs.console: false).
        self._stream = (stream if stream is not None else sys.stdout) if console else None
        self._jsonl_path = jsonl_path
        self._jsonl: TextIO | None = None
        self._metrics = metrics if metrics is not None else Metrics()
        self._width = camera_width
        self._lock = threading.Lock()  # lines from several threads must not interleave

    def start(self) -> None:
        if self._jsonl_path is not None:
            os.makedirs(os.path.dirname(os.path.abspath(self._jsonl_path)), exist_ok=True)
            self._jsonl = open(self._jsonl_path, "a", encoding="utf-8")

    def publish_caption(self, caption: Caption) -> None:
        doc = caption_doc(caption)
        shown = reported(caption.concepts, above=0.5)  # a console line: the groups and the categories it is sure of
        concepts = "  [" + " ".join(f"{c} {p:.2f}" for c, p in shown.items()) + "]" if shown else ""
        self._line(caption.camera_id, "caption", f"{_one_line(caption.text)}{concepts}  ({doc['latency_ms']:.0f} ms)")
        self._json("caption", doc)
        self._metrics.captions_published.labels(publisher=self.name).inc()

    def publish_alarm(self, alarm: Alarm) -> None:
        doc = alarm_doc(alarm, None)
        self._line(alarm.camera_id, "ALARM",
                   f"{alarm.type} {alarm.severity} {alarm.rule_id}: {_one_line(alarm.caption)}  [id {alarm.alarm_id}]")
        self._json("alarm", doc)
        self._metrics.alarms_published.labels(publisher=self.name).inc()

    def publish_camera_state(self, camera_id: str, state: CameraState, last_frame_at: float | None = None) -> None:
        self._line(camera_id, "state", str(CameraState(state)))
        self._json("state", state_doc(camera_id, state, last_frame_at))

    def close(self, timeout_s: float = 5.0) -> None:
        with self._lock:
            if self._jsonl is not None:
                self._jsonl.close()
                self._jsonl = None
            if self._stream is not None:
                self._stream.flush()

    def _line(self, camera_id: str, what: str, text: str) -> None:
        stamp = datetime.now().strftime("%H:%M:%S.%f")[:-3]
        line = f"{stamp} {camera_id:<{self._width}} {what:<8} {text}\n"
        if self._stream is None:
            return
        with self._lock:
            self._stream.write(line)
            self._stream.flush()

    def _json(self, kind: str, doc: dict) -> None:
        if self._jsonl is None:
            return
        line = json.dumps({"kind": kind, **doc}, ensure_ascii=False) + "\n"
        with self._lock:
            if self._jsonl is not None:
                self._jsonl.write(line)
                self._jsonl.flush()


def _one_line(text: str) -> str:
    return " ".join(text.split())  # a caption with a newline must still print as one line
