"""HistoryRecorder: the history's one writer, fed like a publisher so the pipeline never waits on the disk.

The dispatch thread hands it each caption and alarm message (it is one of the
PublisherSet's publishers); `publish_*` only puts the message in a bounded
queue (DROP_NEWEST: the history keeps an unbroken past, and a burst beyond
`max_pending` is refused and counted as drops{stage="history", cause="backlog"}).

One thread, `history`, takes what is queued in batches, groups captions into
segments (segments.py) and writes each batch in one transaction, then saves
the thumbnails of the segments it began (from the SnapshotStore's copy of the
frame, while it is still kept) and of alarms. Retention (store.py) runs on the
same thread once a minute.

A full disk pauses writing: the batch is rolled back, `/healthz` says
`degraded` with the reason, and what is not written is counted
(cause="disk_full"); every RETRY_S a batch is tried again, and writing resumes
by itself when space returns. Segments open when writing stopped stay as they
were last written; the next caption of each camera begins a new one.
"""
from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from pathlib import Path

from streamcap.history import store as db
from streamcap.history import thumbnails
from streamcap.history.segments import Segmenter
from streamcap.messages import Alarm, Caption, DropCause
from streamcap.metrics import Metrics
from streamcap.util.queues import BoundedQueue, Overflow

log = logging.getLogger("streamcap.history")

_STOP = object()
BATCH_MAX = 1000  # messages per transaction
BATCH_WINDOW_S = 0.2  # after the first message, gather for this long: fewer, larger transactions
RETRY_S = 2.0  # while paused, a batch is tried for real this often
PRUNE_EVERY_S = 60.0
SIZES_EVERY_S = 10.0
HOLD_S = 30.0  # a held caption (a change seen once) is written when its camera said nothing else for this long
LOG_EVERY_S = 30.0
STAGE = "history"


class HistoryRecorder:
    name = "history"

    def __init__(self, config, metrics: Metrics, snapshots=None) -> None:
        self.config, self.metrics, self.snapshots = config, metrics, snapshots
        self.folder = Path(config.path)
        self._queue = BoundedQueue("history", config.max_pending, Overflow.drop_newest, on_drop=self._refused)
        self._thread = threading.Thread(target=self._run, name="history", daemon=True)
        self._segmenter = Segmenter(config.concept_threshold, config.max_new_words, config.segment_max_s)
        self._pictures = thumbnails.PictureSchedule(config.thumbnail_interval_s) if config.thumbnails else None
        self._store: db.HistoryStore | None = None
        self._thumbs: thumbnails.ThumbnailFolder | None = None
        self._paused_since: float | None = None
        self._unwritten_while_paused = 0
        self._next_try = 0.0
        self._next_prune = 0.0
        self._next_sizes = 0.0
        self._last_error_log = 0.0
        self._alarm_thumbs: set[str] = set()  # alarms whose thumbnail is saved (bounded: cleared with retention)

    # --- Publisher (called on the dispatch thread: never blocks) -----------------------------
    def start(self) -> None:
        self.metrics.set_history_state("starting")
        self._thread.start()

    def publish_caption(self, caption: Caption) -> None:
        self._queue.put(caption)

    def publish_alarm(self, alarm: Alarm) -> None:
        self._queue.put(alarm)

    def publish_camera_state(self, camera_id, state, last_frame_at=None) -> None:
        pass

    def close(self, timeout_s: float = 5.0) -> None:
        if not self._thread.is_alive():
            return
        self._queue.put_last(_STOP)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.error("history: the writer did not finish within %.1f s; %d message(s) not written", timeout_s, len(self._queue))

    @property
    def paused(self) -> bool:
        return self._paused_since is not None

    # --- the writer thread ----------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._open()
            while True:
                batch = self._take()
                stopping = bool(batch) and batch[-1] is _STOP
                items = batch[:-1] if stopping else batch
                if items or stopping:
                    self._write(items, final=stopping)
                self._housekeeping()
                if stopping:
                    return
        except Exception:  # noqa: BLE001 - the history must never take the box down
            log.exception("history: the writer stopped on an unexpected error; captions are no longer recorded")
            self.metrics.set_history_state("failed", "the writer stopped on an unexpected error (see the log)")
            self._drain(DropCause.write_error)
        finally:
            if self._store is not None:
                try:
                    self._store.conn.close()
                except sqlite3.Error:
                    pass

    def _open(self) -> None:
        try:
            conn = db.open_for_writing(self.folder)
            self._store = db.HistoryStore(conn)
            if self.config.thumbnails:
                self._thumbs = thumbnails.ThumbnailFolder(self.folder / "thumbnails", self.config.thumbnail_max_mb * 1_000_000)
        except (sqlite3.Error, OSError) as exc:
            self._store = None
            self._failed(exc, "cannot open the history database")
            return
        self.metrics.set_history_state("writing")
        log.info("history: recording in %s", self.folder / db.DB_NAME)

    def _take(self) -> list:
        try:
            first = self._queue.get(timeout=1.0)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + BATCH_WINDOW_S
        while len(batch) < BATCH_MAX and batch[-1] is not _STOP:
            remaining = deadline - time.monotonic()
            try:
                batch.append(self._queue.get(timeout=max(0.0, remaining)) if remaining > 0 else self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _write(self, items: list, final: bool = False) -> None:
        now = time.monotonic()
        if self._store is None:
            if now < self._next_try:
                self._drop(items, DropCause.write_error)
                return
            self._open()
            if self._store is None:
                self._drop(items, DropCause.write_error)
                return
        if self._paused_since is not None and now < self._next_try:
            self._unwritten_while_paused += len(items)
            self._drop(items, DropCause.disk_full)
            held = self._segmenter.forget() if final else 0  # stopping: the captions it held go unwritten too
            if held:
                self.metrics.count_drop(STAGE, DropCause.disk_full, held)
            return
        store, conn = self._store, self._store.conn
        try:
            conn.execute("BEGIN")
            began, written = record(store, self._segmenter, items, final=final, pictures=self._pictures)
            conn.execute("COMMIT")
        except (sqlite3.Error, OSError) as exc:
            db.rollback(conn)
            lost_held = self._segmenter.forget()  # held from earlier batches: not written either
            if self._pictures is not None:
                self._pictures.forget()
            if lost_held:
                self.metrics.count_drop(STAGE, DropCause.disk_full if db.is_disk_full(exc) else DropCause.write_error, lost_held)
            try:
                store.forget_cached_keys()
            except sqlite3.Error:
                pass
            if db.is_disk_full(exc):
                self._pause(len(items))
                self._drop(items, DropCause.disk_full)
            else:
                self._failed(exc, "a write failed")
                self._drop(items, DropCause.write_error)
            return
        captions = sum(isinstance(i, Caption) for i in items)
        self.metrics.history_written.labels("caption").inc(written)
        self.metrics.history_written.labels("alarm").inc(len(items) - captions)
        if self._paused_since is not None:
            log.info("history: writing again after %.0f s; %d message(s) were not written meanwhile",
                     time.monotonic() - self._paused_since, self._unwritten_while_paused)
            self._paused_since, self._unwritten_while_paused = None, 0
        self.metrics.set_history_state("writing")
        self._save_thumbnails(began, [i for i in items if isinstance(i, Alarm) and i.snapshot_jpeg
                                      and i.alarm_id not in self._alarm_thumbs])

    def _save_thumbnails(self, began: list, alarms: list[Alarm]) -> None:
        if self._thumbs is None:
            return
        for segment in began:
            frame = self.snapshots.frame(segment.camera_id, segment.frame_id) if self.snapshots is not None else None
            if frame is None:
                self.metrics.count_drop("history_thumbnail", DropCause.backlog, 1, segment.camera_id)
                continue
            self._save(thumbnails.segment_name(segment.key), thumbnails.encode(frame.image), segment.camera_id)
        for alarm in alarms:
            name = thumbnails.alarm_name(alarm.alarm_id)
            if name is not None and self._save(name, thumbnails.from_jpeg(alarm.snapshot_jpeg), alarm.camera_id):
                self._alarm_thumbs.add(alarm.alarm_id)

    def _save(self, name: str, jpeg: bytes | None, camera_id: str) -> bool:
        if jpeg is None:
            return False
        try:
            self._thumbs.save(name, jpeg)
        except OSError as exc:
            cause = DropCause.disk_full if db.is_disk_full(exc) else DropCause.write_error
            self.metrics.count_drop("history_thumbnail", cause, 1, camera_id)
            return False
        self.metrics.history_written.labels("thumbnail").inc()
        return True

    def _pause(self, count: int) -> None:
        now = time.monotonic()
        self._next_try = now + RETRY_S
        if self._paused_since is None:
            self._paused_since = now
            self._unwritten_while_paused = 0
            log.error("history: the disk is full at %s; history paused (the pipeline goes on, what is not written is counted "
                      "in streamcap_drops_total{stage=\"history\",cause=\"disk_full\"}); it resumes when space returns", self.folder)
            self.metrics.set_history_state("paused", f"the disk is full at {self.folder}")
        self._unwritten_while_paused += count

    def _failed(self, exc: BaseException, what: str) -> None:
        self._next_try = time.monotonic() + RETRY_S
        now = time.monotonic()
        if now - self._last_error_log >= LOG_EVERY_S:
            self._last_error_log = now
            log.error("history: %s in %s: %s: %s", what, self.folder, type(exc).__name__, exc)
        self.metrics.set_history_state("failed", f"{what}: {exc}")

    def _drop(self, items: list, cause: DropCause) -> None:
        per_camera: dict[str, int] = {}
        for item in items:
            camera = getattr(item, "camera_id", "")
            per_camera[camera] = per_camera.get(camera, 0) + 1
        for camera, count in per_camera.items():
            self.metrics.count_drop(STAGE, cause, count, camera)

    def _refused(self, item) -> None:
        self.metrics.count_drop(STAGE, DropCause.backlog, 1, getattr(item, "camera_id", ""))

    def _drain(self, cause: DropCause) -> None:
        """After a fatal error: count (and release) whatever still arrives, until stopped."""
        while True:
            try:
                item = self._queue.get(timeout=1.0)
            except queue.Empty:
                continue
            if item is _STOP:
                return
            self._drop([item], cause)

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if self._store is None or self._paused_since is not None:
            return
        if now >= self._next_prune:
            self._next_prune = now + PRUNE_EVERY_S
            c = self.config
            try:
                if not self._store.prune(time.time(), c.raw_days, c.retain_days, c.max_size_mb * 1_000_000, c.segment_max_s):
                    self._next_prune = now + 1.0  # more to delete: go on soon, between batches
            except sqlite3.Error as exc:
                if not db.is_disk_full(exc):
                    self._failed(exc, "retention failed")
            if self._thumbs is not None:
                self._thumbs.prune(time.time() - c.retain_days * 86400)
            if len(self._alarm_thumbs) > 10_000:
                self._alarm_thumbs.clear()  # an alarm that outlives this gets at most one more thumbnail
        if now >= self._next_sizes:
            self._next_sizes = now + SIZES_EVERY_S
            self.metrics.history_bytes.labels("database").set(_file_bytes(self.folder))
            self.metrics.history_bytes.labels("thumbnails").set(self._thumbs.total if self._thumbs is not None else 0)


def record(store: db.HistoryStore, segmenter: Segmenter, items, raw: bool = True, final: bool = False,
           pictures: thumbnails.PictureSchedule | None = None) -> tuple[list, int]:
    """Write captions (each into its segment) and alarm messages, inside the caller's transaction.

    Returns the segments that began here and want their own thumbnail (every one without `pictures`),
    and how many captions were written:
    a caption the segmenter holds (a change seen once) is written with the camera's next caption, or
    once HOLD_S of caption time passed without one, or when `final`. `raw=False` keeps segments only,
    as retention leaves days older than raw_days (benchmarks build long histories that way).
    """
    placed, latest = [], None
    for item in items:
        if isinstance(item, Caption):
            placed += segmenter.add(item.camera_id, item.captured_at, item.text, item.concepts, item.frame_id, item.model)
            latest = item.captured_at if latest is None else max(latest, item.captured_at)
        elif isinstance(item, Alarm):
            store.upsert_alarm(item)
    if final or latest is not None:
        placed += segmenter.flush(None if final else latest - HOLD_S)
    began, touched, rows = [], {}, []
    for p in placed:
        segment = p.segment
        if p.began:
            own = pictures.assign(segment) if pictures is not None else True
            segment.key = store.insert_segment(segment)
            if own:
                began.append(segment)
                if pictures is not None:
                    pictures.took(segment)
        touched[id(segment)] = segment
        if raw:
            said = p.caption
            rows.append((segment.key, db.to_ms(said.at), p.variant, said.text if p.variant is None else None,
                         store.concept_bytes(said.concepts)))
    store.update_segments(touched.values())
    store.insert_captions(rows)
    return began, len(placed)


def _file_bytes(folder: Path) -> int:
    total = 0
    for suffix in ("", "-wal", "-shm"):
        try:
            total += (folder / (db.DB_NAME + suffix)).stat().st_size
        except OSError:
            pass
    return total
