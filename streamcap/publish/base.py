"""What a publisher is, and the guard that keeps a failing one from hurting the pipeline.

The dispatch thread talks to one `PublisherSet`. Each call fans out to every
publisher inside its own try/except: a broken publisher is logged (rate
limited), counted in `publish_errors{publisher, call}` and reported as an
"error" StatusEvent, and the next publisher still runs. Nothing raises back
into the pipeline (house style, example 7).
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Protocol, runtime_checkable

from streamcap.messages import Alarm, CameraState, Caption, PublisherError, PublisherState, StatusEvent
from streamcap.metrics import Metrics

log = logging.getLogger(__name__)

LOG_EVERY_S = 30.0  # a publisher failing on every frame logs once per this, with a count


class PublisherUnavailable(RuntimeError):
    """A publisher cannot work with this config; the message is one line saying what to fix (`run` exits 2)."""


@runtime_checkable
class Publisher(Protocol):
    name: str

    def start(self) -> None:
        """Connect or open outputs. Must not block on an unreachable broker."""

    def publish_caption(self, caption: Caption) -> None:
        """Best effort: may drop under backlog (and count the drop)."""

    def publish_alarm(self, alarm: Alarm) -> None:
        """Must not lose the alarm once this returns (spool, file, ...)."""

    def publish_camera_state(self, camera_id: str, state: CameraState, last_frame_at: float | None) -> None:
        """The latest state of a camera; older states may be skipped."""

    def close(self, timeout_s: float = 5.0) -> None:
        """Flush what can be flushed within timeout_s, then release everything."""


class PublisherSet:
    """Fans each call out to several publishers; never raises."""

    def __init__(
        self,
        publishers: Iterable[Publisher],
        metrics: Metrics,
        on_status: Callable[[StatusEvent], None] | None = None,
    ) -> None:
        self.publishers = list(publishers)
        self._metrics = metrics
        self._on_status = on_status
        self._lock = threading.Lock()
        self._last_log: dict[tuple[str, str], float] = {}
        self._suppressed: dict[tuple[str, str], int] = {}

    def start(self) -> None:
        """Start each publisher; one that cannot start is reported `failed` (so /healthz is not ok) and the rest run."""
        for pub in self.publishers:
            try:
                pub.start()
            except Exception as exc:
                name = getattr(pub, "name", type(pub).__name__)
                log.error("publisher %s: cannot start: %s", name, exc)
                self._metrics.set_publisher_state(name, PublisherState.failed, str(exc))
                self._report(pub, "start", exc)

    def publish_caption(self, caption: Caption) -> None:
        self._each("publish_caption", caption)

    def publish_alarm(self, alarm: Alarm) -> None:
        self._each("publish_alarm", alarm)

    def publish_camera_state(self, camera_id: str, state: CameraState, last_frame_at: float | None = None) -> None:
        self._each("publish_camera_state", camera_id, state, last_frame_at)

    def close(self, timeout_s: float = 5.0) -> None:
        self._each("close", timeout_s)

    def _each(self, call: str, *args) -> None:
        for pub in self.publishers:
            try:
                getattr(pub, call)(*args)
            except Exception as exc:  # a publisher must never stop the pipeline
                self._report(pub, call, exc)

    def _report(self, pub: Publisher, call: str, exc: Exception) -> None:
        name = getattr(pub, "name", type(pub).__name__)
        try:
            self._metrics.publish_errors.labels(publisher=name, call=call).inc()
            key = (name, call)
            now = time.monotonic()
            with self._lock:
                last = self._last_log.get(key)
                if last is not None and now - last < LOG_EVERY_S:
                    self._suppressed[key] = self._suppressed.get(key, 0) + 1
                    quiet = True
                else:
                    self._last_log[key] = now
                    quiet = False
                    suppressed = self._suppressed.pop(key, 0)
            if not quiet:
                more = f" ({suppressed} more since the last report)" if suppressed else ""
                log.error("publisher %s: %s failed: %s: %s%s", name, call, type(exc).__name__, exc, more,
                          exc_info=exc if last is None else None)
            if self._on_status is not None:
                self._on_status(PublisherError(name, call, f"{type(exc).__name__}: {exc}", time.time()))
        except Exception:  # reporting itself must not raise either
            log.exception("publisher %s: error while reporting a failure", name)
