"""ConsolePublisher: the default when no broker is configured.

Human-readable lines on stdout, one per caption, alarm or camera state:

    10:01:25.123 gate    caption  a man is walking down the street  [person 0.97 vehicle 0.03]  (412 ms)
    10:01:25.130 gate    ALARM    new alert person_at_gate: a man is walking down the street  [id person_at_gate-gate-1764064885123]
    10:01:58.002 gate    ALARM    end alert person_at_gate: a man is walking down the street  [id person_at_gate-gate-1764064885123]
    10:01:26.000 gate    state    reconnecting

and, optionally, the same events as JSON lines in a file (the documents MQTT
would carry, plus a "kind" field), each line written whole with one write(2)
so `tail -f` and crash-time inspection see everything written so far. A line
the disk cannot take (full, I/O error) is cut back out, never left half
written; it is counted (`streamcap_drops_total{stage="jsonl",
cause="disk_full"}`, or `write_error` for any other error), /healthz is `failed` while the file cannot be
written (`jsonl_unwritable`, with the path and the error), and the log says so
once when it starts and once when it ends. `preflight_jsonl` checks the file
can be opened before streamcap starts.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import sys
import threading
from datetime import datetime
from typing import TextIO

from streamcap.concepts import reported
from streamcap.messages import Alarm, CameraState, Caption, DropCause
from streamcap.metrics import Metrics
from streamcap.publish.base import PublisherUnavailable
from streamcap.publish.payloads import alarm_doc, caption_doc, state_doc

log = logging.getLogger(__name__)

PROBLEM = "jsonl_unwritable"


def preflight_jsonl(path: str | os.PathLike) -> None:
    """PublisherUnavailable (one line) unless the JSON-lines file can be opened for appending."""
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644))
    except OSError as exc:
        user = "" if os.geteuid() == 0 else " (running as a user: e.g. ~/.local/state/streamcap/events.jsonl)"
        raise PublisherUnavailable(f"outputs.jsonl {path}: cannot write there ({exc.strerror or exc}); give a "
                                   f"writable file{user}, or remove outputs.jsonl") from None


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
        self._jsonl: int | None = None  # file descriptor, O_APPEND
        self._jsonl_error: str | None = None  # why the last line could not be written
        self._metrics = metrics if metrics is not None else Metrics()
        self._width = camera_width
        self._lock = threading.Lock()  # lines from several threads must not interleave

    def start(self) -> None:
        if self._jsonl_path is not None:
            os.makedirs(os.path.dirname(os.path.abspath(self._jsonl_path)), exist_ok=True)
            self._jsonl = os.open(self._jsonl_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def publish_caption(self, caption: Caption) -> None:
        doc = caption_doc(caption)
        shown = reported(caption.concepts, above=0.5)  # a console line: the groups and the categories it is sure of
        concepts = "  [" + " ".join(f"{c} {p:.2f}" for c, p in shown.items()) + "]" if shown else ""
        self._line(caption.camera_id, "caption", f"{_one_line(caption.text)}{concepts}  ({doc['latency_ms']:.0f} ms)")
        self._json("caption", doc, caption.camera_id)
        self._metrics.captions_published.labels(publisher=self.name).inc()

    def publish_alarm(self, alarm: Alarm) -> None:
        doc = alarm_doc(alarm, None)
        self._line(alarm.camera_id, "ALARM",
                   f"{alarm.type} {alarm.severity} {alarm.rule_id}: {_one_line(alarm.caption)}  [id {alarm.alarm_id}]")
        self._json("alarm", doc, alarm.camera_id)
        self._metrics.alarms_published.labels(publisher=self.name).inc()

    def publish_camera_state(self, camera_id: str, state: CameraState, last_frame_at: float | None = None) -> None:
        self._line(camera_id, "state", str(CameraState(state)))
        self._json("state", state_doc(camera_id, state, last_frame_at), camera_id)

    def close(self, timeout_s: float = 5.0) -> None:
        with self._lock:
            if self._jsonl is not None:
                os.close(self._jsonl)
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

    def _json(self, kind: str, doc: dict, camera_id: str) -> None:
        if self._jsonl is None:
            return
        line = (json.dumps({"kind": kind, **doc}, ensure_ascii=False) + "\n").encode()
        with self._lock:
            fd = self._jsonl
            if fd is None:
                return
            end = os.lseek(fd, 0, os.SEEK_END)
            try:
                written = os.write(fd, line)
                if written != len(line):
                    raise OSError(errno.ENOSPC, f"only {written} of {len(line)} bytes written (No space left on device?)")
            except OSError as exc:
                try:
                    os.ftruncate(fd, end)  # a half line would break every reader of the file
                except OSError:
                    pass
                self._unwritable(exc)
                cause = DropCause.disk_full if exc.errno in (errno.ENOSPC, errno.EDQUOT) else DropCause.write_error
                self._metrics.count_drop("jsonl", cause, 1, camera_id)
                return
            if self._jsonl_error is not None:
                self._writable()

    def _unwritable(self, exc: OSError) -> None:
        error = exc.strerror or str(exc)
        if error != self._jsonl_error:
            log.error("outputs.jsonl %s: cannot write (%s); events are not recorded there until it can",
                      self._jsonl_path, error)
        self._jsonl_error = error
        self._metrics.set_problem(PROBLEM, "failed", path=str(self._jsonl_path), error=error,
                                  detail=f"outputs.jsonl {self._jsonl_path}: cannot write ({error}); events are "
                                         "not recorded there (counted in streamcap_drops_total{stage=\"jsonl\"})")

    def _writable(self) -> None:
        log.warning("outputs.jsonl %s: writing again", self._jsonl_path)
        self._jsonl_error = None
        self._metrics.set_problem(PROBLEM, None)


def _one_line(text: str) -> str:
    return " ".join(text.split())  # a caption with a newline must still print as one line
