"""Batcher: batch size, batch window, newest frame per camera under overload."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from streamcap.capture import batcher as batcher_module
from streamcap.capture.batcher import Batcher
from streamcap.messages import DropCause, Frame, StatusEvent

IMAGE = np.zeros((4, 4, 3), np.uint8)


def frame(camera: str, frame_id: int) -> Frame:
    return Frame(camera, frame_id, 0.0, float(frame_id), IMAGE)


@pytest.mark.parametrize(
    ("cameras", "max_batch", "sizes"),
    [
        (5, 3, [3, 2]),
        (4, 4, [4]),
        (1, 8, [1]),
        (9, 2, [2, 2, 2, 2, 1]),
    ],
)
def test_batches_never_exceed_max_batch_and_serve_cameras_oldest_first(cameras, max_batch, sizes):
    # given
    batcher = Batcher(max_batch=max_batch, max_wait_ms=0)
    names = [f"cam{i}" for i in range(cameras)]
    for name in names:
        batcher.put(frame(name, 0))

    # when
    batches = [batcher.next_batch(timeout_s=0.1) for _ in sizes]

    # then
    assert [len(batch.frames) for batch in batches] == sizes
    assert [f.camera_id for batch in batches for f in batch.frames] == names
    assert batcher.next_batch(timeout_s=0.01) is None, "nothing left: times out with None"


def test_batch_waits_within_max_wait_for_more_cameras():
    # given: one camera's frame is pending and a second arrives a little later
    batcher = Batcher(max_batch=2, max_wait_ms=30_000)
    batcher.put(frame("a", 1))
    later = threading.Timer(0.05, batcher.put, args=(frame("b", 1),))
    later.start()

    # when: the window is long, so only a full batch closes it
    batch = batcher.next_batch(timeout_s=1.0)
    later.join()

    # then
    assert [f.camera_id for f in batch.frames] == ["a", "b"]


def test_zero_max_wait_sends_what_is_there_at_once():
    # given
    batcher = Batcher(max_batch=8, max_wait_ms=0)
    batcher.put(frame("a", 1))

    # when
    batch = batcher.next_batch(timeout_s=1.0)

    # then
    assert [f.camera_id for f in batch.frames] == ["a"]


def test_overload_keeps_the_newest_frame_per_camera_and_counts_drops():
    # given: the captioner is busy while two cameras keep delivering
    events: list[StatusEvent] = []
    batcher = Batcher(max_batch=8, max_wait_ms=0, on_status=events.append, report_every_s=3600)
    for i in range(10):
        batcher.put(frame("a", i))
    for i in range(3):
        batcher.put(frame("b", i))

    # when
    batch = batcher.next_batch(timeout_s=0.1)

    # then
    assert [(f.camera_id, f.frame_id) for f in batch.frames] == [("a", 9), ("b", 2)]
    stats = batcher.stats()
    assert stats.drops == {"a": 9, "b": 2}
    assert stats.pending == 0
    assert [(e.camera_id, e.count) for e in events] == [("a", 1), ("b", 1)], "one report per camera per period"
    # and the reports held back by the rate limit come out on flush, so the counts add up exactly
    flushed = batcher.flush_drop_reports()
    assert sorted((e.camera_id, e.count) for e in flushed) == [("a", 8), ("b", 1)]
    assert sum(e.count for e in events + flushed) == sum(stats.drops.values()) == 11
    assert all(e.cause == DropCause.captioner_behind and e.stage == "batcher" for e in events + flushed)
    assert batcher.flush_drop_reports() == []


def test_a_replaced_frame_keeps_its_camera_place_in_line():
    # given: a camera that delivers often must not push the others back
    batcher = Batcher(max_batch=1, max_wait_ms=0)
    for name in ["a", "b", "c"]:
        batcher.put(frame(name, 0))
    batcher.put(frame("a", 1))

    # when
    order = [batcher.next_batch(0.1).frames[0] for _ in range(3)]

    # then
    assert [(f.camera_id, f.frame_id) for f in order] == [("a", 1), ("b", 0), ("c", 0)]


def test_under_overload_the_camera_served_longest_ago_goes_first_whatever_the_arrival_order():
    # given: a was served before b, then b's next frame arrives before a's
    batcher = Batcher(max_batch=1, max_wait_ms=0)
    batcher.put(frame("a", 0))
    batcher.next_batch(0.1)
    batcher.put(frame("b", 0))
    batcher.next_batch(0.1)
    batcher.put(frame("b", 1))
    batcher.put(frame("a", 1))

    # when
    order = [batcher.next_batch(0.1).frames[0].camera_id for _ in range(2)]

    # then: by arrival b would go first, and a camera asking less often than turns come would lose every other turn
    assert order == ["a", "b"]


def test_a_camera_whose_turn_is_near_takes_a_newer_frame_and_keeps_its_turn():
    # given: five cameras waiting with frames taken at t=0, one served per batch, so the next two batches are a and b
    batcher = Batcher(max_batch=1, max_wait_ms=0)
    for name in "abcde":
        batcher.put(frame(name, 0))

    # then: only a camera near its turn whose frame is old enough is asked for a newer one
    assert batcher.wants_refresh("b", 1.0)
    assert not batcher.wants_refresh("b", 0.1), "a frame younger than REFRESH_AFTER_S is fresh enough"
    assert not batcher.wants_refresh("e", 1.0), "e's turn is four batches away: decoding now would be wasted"
    assert not batcher.wants_refresh("z", 1.0), "a camera with nothing waiting asks through its sampler"

    # when b delivers the newer frame
    assert batcher.refresh(frame("b", 1))

    # then b keeps its turn with the newer frame, and the replaced frame is not a drop (nothing asked was lost)
    served = [batcher.next_batch(0.1).frames[0] for _ in range(5)]
    assert [(f.camera_id, f.frame_id) for f in served] == [("a", 0), ("b", 1), ("c", 0), ("d", 0), ("e", 0)]
    stats = batcher.stats()
    assert stats.refreshed == 1 and stats.drops == {}


def test_a_refresh_that_comes_after_the_turn_is_not_queued():
    # given: a's frame was taken while its newer frame was being decoded
    batcher = Batcher(max_batch=1, max_wait_ms=0)
    batcher.put(frame("a", 0))
    batcher.next_batch(0.1)

    # when
    refreshed = batcher.refresh(frame("a", 1))

    # then: it was not asked for by the sampler, so it waits for no turn
    assert not refreshed
    assert batcher.stats().pending == 0 and batcher.stats().refreshed == 0


def test_a_camera_asking_far_from_its_turn_decodes_nothing_until_its_turn_is_near():
    # given: one camera served per batch, so the next two batches are near; three cameras already wait with frames
    batcher = Batcher(max_batch=1, max_wait_ms=0)
    for name in "abc":
        batcher.put(frame(name, 0))

    # when d asks: its turn is three batches away
    near = batcher.turn_is_near("d")
    batcher.ask("d")

    # then it takes its place without a frame, and is not asked to decode one yet
    assert not near
    assert batcher.stats().pending == 4 and batcher.stats().asked_without_frame == 1
    assert not batcher.wants_refresh("d", 5.0)
    assert [batcher.next_batch(0.1).frames[0].camera_id for _ in range(2)] == ["a", "b"]
    # once its turn is near it is asked for a frame, whatever the frame's time; until it has one the others go first
    assert batcher.wants_refresh("d", 0.0)
    assert batcher.next_batch(0.1).frames[0].camera_id == "c"
    assert batcher.next_batch(0.05) is None, "an ask without a frame is not a caption"
    assert batcher.refresh(frame("d", 7))
    assert batcher.next_batch(0.1).frames[0].frame_id == 7
    assert batcher.stats().drops == {} and batcher.stats().refreshed == 0, "filling an ask is neither a drop nor a refresh"


def test_a_second_ask_while_the_first_waits_counts_one_drop():
    # given
    events: list[StatusEvent] = []
    batcher = Batcher(max_batch=1, max_wait_ms=0, on_status=events.append, report_every_s=3600)
    batcher.ask("a")

    # when
    batcher.ask("a")

    # then: two asks, one place in line, one caption at most
    assert batcher.stats().pending == 1 and batcher.stats().drops == {"a": 1}
    reports = events + batcher.flush_drop_reports()
    assert [(e.camera_id, e.count, e.cause) for e in reports] == [("a", 1, DropCause.captioner_behind)]


def test_an_ask_whose_camera_sends_no_frame_after_its_turn_came_near_is_given_up(monkeypatch):
    # given: a camera that asked, then stalled
    monkeypatch.setattr(batcher_module, "ASK_TIMEOUT_S", 0.05)
    batcher = Batcher(max_batch=1, max_wait_ms=0)
    batcher.ask("dead")
    assert batcher.wants_refresh("dead", 0.0)

    # when its turn has been near for longer than the timeout
    time.sleep(0.1)
    batch = batcher.next_batch(0.01)

    # then its place is given up and counted, so it does not hold a place near the front
    assert batch is None
    assert batcher.stats().pending == 0 and batcher.stats().drops == {"dead": 1}
    assert not batcher.wants_refresh("dead", 0.0)
    assert [(e.camera_id, e.count) for e in batcher.flush_drop_reports()] == [("dead", 1)]


def test_pending_frames_are_bounded_by_the_number_of_cameras():
    # given
    batcher = Batcher(max_batch=4, max_wait_ms=0)

    # when
    for i in range(1000):
        batcher.put(frame(f"cam{i % 3}", i))

    # then
    assert batcher.stats().pending == 3
    assert sum(batcher.stats().drops.values()) == 997


def test_close_wakes_a_waiting_consumer():
    # given
    batcher = Batcher(max_batch=4, max_wait_ms=0)
    result: list = []
    consumer = threading.Thread(target=lambda: result.append(batcher.next_batch(timeout_s=60)))
    consumer.start()

    # when
    batcher.close()
    consumer.join(timeout=10)

    # then
    assert not consumer.is_alive(), "close() must wake next_batch"
    assert result == [None]
    batcher.put(frame("a", 1))
    assert batcher.stats().pending == 0, "frames after close are ignored"


@pytest.mark.parametrize(("max_batch", "max_wait_ms"), [(0, 10), (4, -1)])
def test_bad_settings_are_refused(max_batch, max_wait_ms):
    with pytest.raises(ValueError):
        Batcher(max_batch, max_wait_ms)
