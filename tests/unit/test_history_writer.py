"""The history writer: a bounded queue that never blocks the dispatch thread, drops counted, thumbnails bounded."""
from __future__ import annotations

import sqlite3
import threading
import time

import cv2
import numpy as np
import pytest

from streamcap.config.schema import HistoryConfig
from streamcap.history.query import History
from streamcap.history.store import DB_NAME
from streamcap.history import thumbnails
from streamcap.history.thumbnails import ThumbnailFolder
from streamcap.history.writer import HistoryRecorder
from streamcap.messages import Alarm, Caption, Frame, Severity
from streamcap.metrics import Metrics
from streamcap.snapshots import SnapshotStore


BASE = time.time() - 3600  # recent: retention keeps it


def caption(i: int, camera="gate", text=None, at=None) -> Caption:
    return Caption(camera, i, at if at is not None else BASE + i, 0.0, text or f"scene {i // 10} on the road",
                   "test-model", 0.0, {"person": 0.1 * (i // 10 % 2 * 9)})


def sample(metrics: Metrics, name: str, **labels) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def wait(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def test_a_burst_beyond_the_queue_never_blocks_and_every_caption_is_written_or_counted(tmp_path):
    # given a recorder whose writer is held up: another process keeps the database locked
    metrics = Metrics()
    recorder = HistoryRecorder(HistoryConfig(path=tmp_path, max_pending=100, thumbnails=False), metrics)
    recorder.start()
    wait(lambda: (tmp_path / DB_NAME).exists() and recorder.metrics.health()["history"]["state"] == "writing", 10, "open")
    blocker = sqlite3.connect(tmp_path / DB_NAME, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        # when the dispatch thread hands it a burst of 5,000 captions
        started = time.monotonic()
        for i in range(5000):
            recorder.publish_caption(caption(i))
        burst_s = time.monotonic() - started
        assert len(recorder._queue) <= 100, "the queue stays within its bound"
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    recorder.close(timeout_s=30)
    # then every caption was either written or counted as dropped (backlog), per camera
    written = sample(metrics, "streamcap_history_written_total", kind="caption")
    dropped = sample(metrics, "streamcap_drops_total", stage="history", cause="backlog", camera="gate")
    assert dropped >= 5000 - 100 - 1000, f"the burst overflowed the bound (burst took {burst_s:.2f} s)"
    assert written + dropped == 5000, (written, dropped)
    stored = sum(s["count"] for s in History(tmp_path).summary("gate", since=BASE - 10, until=BASE + 1e5)["segments"])
    assert stored == written


def test_the_dispatch_thread_is_never_held_by_a_stuck_writer(tmp_path):
    # given a writer that cannot get the database for its busy timeout
    recorder = HistoryRecorder(HistoryConfig(path=tmp_path, max_pending=50, thumbnails=False), Metrics())
    recorder.start()
    wait(lambda: recorder.metrics.health()["history"]["state"] == "writing", 10, "open")
    blocker = sqlite3.connect(tmp_path / DB_NAME, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    done = threading.Event()

    def dispatch():
        for i in range(2000):
            recorder.publish_caption(caption(i))
        done.set()

    try:
        thread = threading.Thread(target=dispatch)
        thread.start()
        # then the dispatch thread finishes its 2,000 captions while the database is still locked
        assert done.wait(10), "publish_caption waited on the disk"
        assert recorder._thread.is_alive()
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        thread.join()
        recorder.close(timeout_s=30)


def frame(camera: str, frame_id: int, shade: int) -> Frame:
    image = np.full((360, 640, 3), shade, np.uint8)
    cv2.putText(image, str(frame_id), (40, 200), cv2.FONT_HERSHEY_SIMPLEX, 4, (255, 255, 255), 8)
    return Frame(camera, frame_id, BASE + frame_id, 0.0, image)


def test_a_thumbnail_for_each_segment_start_and_each_alarm(tmp_path):
    # given captioned frames in the snapshot store, as the inference thread leaves them
    snapshots = SnapshotStore(per_camera=100)
    metrics = Metrics()
    recorder = HistoryRecorder(HistoryConfig(path=tmp_path), metrics, snapshots)
    recorder.start()
    for i in range(30):
        snapshots.put(frame("gate", i, 40 + i))
        recorder.publish_caption(caption(i))  # a new scene every 10 captions: 3 segments
    ok, jpeg = cv2.imencode(".jpg", np.full((720, 1280, 3), 90, np.uint8))
    recorder.publish_alarm(Alarm("someone-gate-1", "someone", Severity.alert, "gate", "a man", BASE + 10, BASE + 10,
                                 snapshot_jpeg=jpeg.tobytes()))
    recorder.close(timeout_s=30)
    # then
    history = History(tmp_path)
    segments = history.summary("gate", since=BASE - 10, until=BASE + 1e5)["segments"]
    assert len(segments) == 3 and all(s["thumbnail"] == f"s{s['id']}.jpg" for s in segments)
    thumb = cv2.imread(str(history.thumbnail_path(segments[1]["thumbnail"])))
    assert thumb.shape[1] == thumbnails.WIDTH, "scaled down"
    assert abs(int(thumb[5, 5, 0]) - 50) <= 3, "the frame where the second segment began"
    alarm = cv2.imread(str(history.thumbnail_path("asomeone-gate-1.jpg")))
    assert alarm.shape[:2] == (round(thumbnails.WIDTH * 720 / 1280), thumbnails.WIDTH)
    assert sample(metrics, "streamcap_history_written_total", kind="thumbnail") == 4


def test_a_segment_whose_frame_is_gone_has_no_thumbnail_and_that_is_counted(tmp_path):
    metrics = Metrics()
    recorder = HistoryRecorder(HistoryConfig(path=tmp_path), metrics, SnapshotStore())
    recorder.start()
    recorder.publish_caption(caption(1))
    recorder.close(timeout_s=30)
    assert History(tmp_path).search("")[0]["thumbnail"] is None
    assert sample(metrics, "streamcap_drops_total", stage="history_thumbnail", cause="backlog", camera="gate") == 1


def test_the_thumbnail_folder_is_bounded_and_deletes_the_oldest_first(tmp_path):
    # given a folder of 10 kB
    folder = ThumbnailFolder(tmp_path, max_bytes=10_000)
    for i in range(12):
        folder.save(f"s{i}.jpg", bytes(1500))
    # then it keeps the newest six (9,000 bytes)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"s{i}.jpg" for i in range(6, 12))
    assert folder.total == 9000
    # and a new ThumbnailFolder on the same files goes on from them, oldest first
    again = ThumbnailFolder(tmp_path, max_bytes=4000)
    again.save("s12.jpg", bytes(1500))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s11.jpg", "s12.jpg"]
    assert again.total == 3000
    with pytest.raises(ValueError):
        again.save("../escape.jpg", b"x")


def test_a_busy_camera_gets_at_most_one_thumbnail_per_interval_and_later_segments_show_it(tmp_path):
    # given segments beginning every 10 s and one picture per camera every 25 s
    snapshots = SnapshotStore(per_camera=100)
    recorder = HistoryRecorder(HistoryConfig(path=tmp_path, thumbnail_interval_s=25), Metrics(), snapshots)
    recorder.start()
    for i in range(60):
        snapshots.put(frame("gate", i, 40 + i))
        recorder.publish_caption(caption(i))
    recorder.close(timeout_s=30)
    # then segments 0 s, 30 s have their own picture; 10 s, 20 s show the one of 0 s; 40 s, 50 s the one of 30 s
    segments = History(tmp_path).summary("gate", since=BASE - 10, until=BASE + 1e5)["segments"]
    assert [s["thumbnail"] for s in segments] == [f"s{segments[i]['id']}.jpg" for i in (0, 0, 0, 3, 3, 3)]
    assert sorted(p.name for p in (tmp_path / "thumbnails").iterdir()) == sorted(
        f"s{segments[i]['id']}.jpg" for i in (0, 3))


@pytest.mark.parametrize("state, status", [("writing", "ok"), ("starting", "ok"), ("paused", "degraded"),
                                           ("failed", "degraded")])
def test_health_says_when_the_history_is_not_being_written(state, status):
    metrics = Metrics()
    metrics.set_history_state(state, "the disk is full at /x" if state == "paused" else "")
    health = metrics.health()
    assert health["status"] == status and health["history"]["state"] == state
    assert ("the disk is full at /x" in health.get("reason", "")) is (state == "paused")
    assert metrics.registry.get_sample_value("streamcap_history_state", {"streamcap_history_state": state}) == 1
