"""The running pipeline: threads, bounded queues, one stop order.

    camera readers (in CaptureHub) -> inference thread -> caption queue -> dispatch thread
                                                                          rules -> publishers

- Readers (one per camera) keep only each camera's newest sampled frame; the
  batcher hands the inference thread a batch across cameras.
- The inference thread is the only one that runs the model. It puts each
  captioned frame in the bounded SnapshotStore; captions carry only its id.
- The dispatch thread publishes captions, runs the rules, publishes alarms
  (new, update, end; `tick` ends alarms of cameras that went quiet),
  turns status events into metrics and camera-state messages and swaps in
  rules the watcher's thread has read and compiled (reading a large rule
  file takes seconds; the swap is one dictionary pass). Publishers never
  raise into it.
- The caption queue is bounded: when dispatch falls behind, the oldest
  caption is dropped and counted (alarms are raised from the captions that
  remain, so a backlog delays alarms rather than growing memory without end).

`stop()` is the only place threads are joined: the stop event first (so the
inference loop stops asking for batches), readers next (so nothing new
arrives), then the inference thread finishes its batch and puts the end
sentinel, then dispatch drains the queue up to it and ends the alarms in
progress, then publishers close (stopped status out, spool flushed as far as
the broker allows).
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Callable

import numpy as np

from streamcap.capture.hub import CaptureHub
from streamcap.capture.load import CaptionLoad
from streamcap.masks import CaptionMask
from streamcap.messages import AlarmType, CameraStateChanged, Caption, DecoderChanged, DropCause, StatusEvent
from streamcap.metrics import Metrics
from streamcap.publish.base import PublisherSet
from streamcap.rules.engine import RuleEngine
from streamcap.rules.watch import RuleWatcher
from streamcap.snapshots import SnapshotStore
from streamcap.util.queues import BoundedQueue, Overflow

log = logging.getLogger("streamcap.pipeline")

_END = object()  # the inference thread's last word on the caption queue


class Pipeline:
    def __init__(
        self,
        hub: CaptureHub,
        captioner,  # anything with describe(images) -> list[Description] and model_name
        rules: RuleEngine,
        rule_watcher: RuleWatcher | None,
        publishers: PublisherSet,
        metrics: Metrics,
        status_events: BoundedQueue,
        max_pending_captions: int = 256,
        on_stopped: Callable[[], None] | None = None,
        snapshots: SnapshotStore | None = None,
        on_rules_changed: list[Callable[[list], None]] | None = None,
        caption_masks: dict[str, CaptionMask] | None = None,
    ) -> None:
        self.hub, self.captioner, self.rules, self.rule_watcher = hub, captioner, rules, rule_watcher
        self.snapshots = snapshots if snapshots is not None else SnapshotStore()
        self.publishers, self.metrics, self.status_events = publishers, metrics, status_events
        self.stop_event = threading.Event()
        self._captions = BoundedQueue("captions", max_pending_captions, Overflow.drop_oldest, on_drop=self._caption_dropped)
        self._inference = threading.Thread(target=self._run_inference, name="inference", daemon=True)
        self._dispatch = threading.Thread(target=self._run_dispatch, name="dispatch", daemon=True)
        self._on_stopped = on_stopped
        self.readers_stopped = True  # False after stop() if a camera reader stayed blocked in OpenCV
        self._on_rules_changed = list(on_rules_changed or [])
        self._masks = dict(caption_masks or {})  # camera -> regions the model does not see
        self._frames_counted: dict[str, int] = {}
        self._refreshes_counted = 0
        self._next_stats_sync = 0.0
        self._load = CaptionLoad()
        self._behind_logged = False

    def start(self) -> None:
        self.publishers.start()
        if self.rule_watcher is not None:
            self.rule_watcher.start()
        self._dispatch.start()
        self._inference.start()
        self.hub.start()

    # --- inference thread ------------------------------------------------------
    def _run_inference(self) -> None:
        try:
            while not self.stop_event.is_set():
                batch = self.hub.next_batch(timeout_s=0.5)
                if batch is None:
                    continue
                frames = batch.frames
                self.metrics.batch_size.observe(len(frames))
                try:
                    descriptions = self.captioner.describe([self._model_view(f) for f in frames])
                except Exception:  # noqa: BLE001 - a model failure must not kill the box
                    log.exception("captioning a batch of %d frames failed; skipped", len(frames))
                    for frame in frames:
                        self.metrics.count_drop("inference", DropCause.model_error, 1, frame.camera_id)
                    continue
                done = time.monotonic()
                for frame, description in zip(frames, descriptions):
                    self.snapshots.put(frame)
                    caption = Caption(
                        camera_id=frame.camera_id, frame_id=frame.frame_id, captured_at=frame.captured_at,
                        t_mono=frame.t_mono, text=description.text, model=self.captioner.model_name, captioned_mono=done,
                        concepts=description.concepts,
                    )
                    self.metrics.frames_captioned.labels(frame.camera_id).inc()
                    self.metrics.latency_seconds.labels("capture_to_caption").observe(done - frame.t_mono)
                    self._put_caption(caption)
        finally:
            self._put_end()

    def _model_view(self, frame) -> np.ndarray:
        mask = self._masks.get(frame.camera_id)
        return frame.image if mask is None else mask.apply(frame.image)

    def _put_caption(self, caption: Caption) -> None:
        self._captions.put(caption)  # DROP_OLDEST: when dispatch is behind, the newest caption is the most useful

    def _caption_dropped(self, caption) -> None:
        self.metrics.count_drop("dispatch", DropCause.backlog, 1, getattr(caption, "camera_id", ""))

    def _put_end(self) -> None:
        self._captions.put_last(_END)

    # --- dispatch thread -------------------------------------------------------
    def _run_dispatch(self) -> None:
        while True:
            self._drain_status()
            self._sync_camera_stats()
            if self.rule_watcher is not None:
                try:
                    if self.rule_watcher.apply_ready():
                        for listener in self._on_rules_changed:  # e.g. Home Assistant's entities follow the rules
                            listener(self.rules.rules)
                except Exception:  # noqa: BLE001 - a reload problem keeps the old rules
                    log.exception("rules: reload failed; keeping the rules in force")
            self._publish_alarms(self._run_rules(self.rules.tick))
            try:
                item = self._captions.get(timeout=0.25)
            except queue.Empty:
                continue
            if item is _END:
                self._publish_alarms(self._run_rules(self.rules.end_all))
                self._drain_status()
                return
            self._dispatch_caption(item)

    def _dispatch_caption(self, caption: Caption) -> None:
        self.publishers.publish_caption(caption)
        self.metrics.latency_seconds.labels("caption_to_publish").observe(time.monotonic() - caption.captioned_mono)
        started = time.perf_counter()
        alarms = self._run_rules(lambda: self.rules.process(caption), caption.camera_id)
        self.metrics.observe_rules(time.perf_counter() - started)
        self._publish_alarms(alarms)

    def _run_rules(self, call: Callable[[], list], camera_id: str = "") -> list:
        try:
            return call()
        except Exception:  # noqa: BLE001 - one bad rule evaluation must not stop the rest
            log.exception("rules: evaluation failed%s", f" on a caption of camera {camera_id}" if camera_id else "")
            return []

    def _publish_alarms(self, alarms: list) -> None:
        for alarm in alarms:
            if alarm.type == AlarmType.new:
                self.metrics.alarms_raised.labels(alarm.camera_id, alarm.rule_id).inc()
            self.publishers.publish_alarm(alarm)

    def _drain_status(self) -> None:
        while True:
            try:
                event = self.status_events.get_nowait()
            except queue.Empty:
                return
            self.metrics.observe_status(event)
            if isinstance(event, (CameraStateChanged, DecoderChanged)):  # a decode mode shows with the camera's state
                camera = self.hub.cameras.get(event.camera_id)
                if camera is None:
                    continue
                state = event.state if isinstance(event, CameraStateChanged) else camera.state
                self.publishers.publish_camera_state(event.camera_id, state, camera.stats().last_frame_at)

    def _sync_camera_stats(self) -> None:
        """Readers count frames without touching metrics (they must never block); fold the counts in once a second."""
        now = time.monotonic()
        if now < self._next_stats_sync:
            return
        self._next_stats_sync = now + 1.0
        for report in self.hub.batcher.flush_drop_reports():  # exact within a second, however rate-limited the log is
            self.metrics.observe_status(report)
        self._observe_load(now)
        for camera_id, camera in self.hub.cameras.items():
            stats = camera.stats()
            new = stats.frames_read - self._frames_counted.get(camera_id, 0)
            if new > 0:
                self.metrics.frames_read.labels(camera=camera_id).inc(new)
                self._frames_counted[camera_id] = stats.frames_read
                self.metrics.note_last_frame(camera_id, stats.last_frame_at)

    def _observe_load(self, now: float) -> None:
        """Captions asked for against captions made: the shortfall in /metrics, `degraded` in /healthz when behind."""
        asked = {camera_id: sampler.stats().accepted for camera_id, sampler in self.hub.samplers.items()}
        batcher = self.hub.batcher.stats()
        self._load.update(now, batcher.frames_batched, asked)
        self.metrics.frames_refreshed.inc(batcher.refreshed - self._refreshes_counted)
        self._refreshes_counted = batcher.refreshed
        behind = self._load.behind
        if bool(behind) != self._behind_logged:  # the transitions, not every second's numbers
            if behind:
                log.warning("%s: each camera's newest frame waits its turn; the rest are dropped and counted", behind)
            else:
                log.info("model keeps up again: %.3g captions/s asked, %.3g made", self._load.asked_per_s, self._load.made_per_s)
            self._behind_logged = bool(behind)
        self.metrics.set_caption_load(self._load.asked_per_s, self._load.made_per_s, self._load.cameras_asking, behind)

    # --- shutdown --------------------------------------------------------------
    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop readers, finish the last batch, drain captions, close publishers; join everything."""
        deadline = time.monotonic() + timeout_s
        self.stop_event.set()  # first: the inference loop must not spin on a closed batcher while readers join
        if self.rule_watcher is not None:
            self.rule_watcher.stop(min(2.0, timeout_s / 4))
        self.readers_stopped = self.hub.stop(min(1.5, timeout_s / 4))  # a reader hung in OpenCV is left behind
        self._inference.join(max(0.1, deadline - time.monotonic()))
        self._dispatch.join(max(0.1, deadline - time.monotonic()))
        for thread in (self._inference, self._dispatch):
            if thread.is_alive():
                log.error("%s thread did not stop within %.0f s", thread.name, timeout_s)
        # The last drop counts, here rather than on the dispatch thread: the inference loop may end
        # before hub.stop() has joined the readers, and frames they deliver meanwhile count too.
        for report in self.hub.batcher.flush_drop_reports():
            self.metrics.observe_status(report)
        self.publishers.close(timeout_s=max(1.0, deadline - time.monotonic()))
        if self._on_stopped:
            self._on_stopped()
