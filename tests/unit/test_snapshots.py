"""SnapshotStore: bounded in bytes, oldest frames first, so the frames alarms ask for are still there."""
from __future__ import annotations

import logging

import numpy as np

from streamcap.config.schema import StreamcapConfig
from streamcap.messages import Frame
from streamcap.snapshots import SnapshotStore

HD = np.zeros((720, 1280, 3), np.uint8)  # 2.76 MB, as a 720p camera gives


def frame(camera: str, frame_id: int, image=HD) -> Frame:
    return Frame(camera, frame_id, float(frame_id), float(frame_id), image)


def test_160_cameras_of_720p_stay_within_the_byte_budget_and_the_latest_batch_stays_whole(caplog):
    # given the default budget, and 160 cameras captioned 4 times each in batches of 8 (1.77 GB of frames)
    store = SnapshotStore(max_bytes=StreamcapConfig().snapshots.memory_mb << 20)
    cameras = [f"cam{i:03d}" for i in range(160)]
    frame_id = 0
    with caplog.at_level(logging.WARNING):
        for _ in range(4):
            for start in range(0, len(cameras), 8):
                batch = [frame(c, frame_id := frame_id + 1) for c in cameras[start:start + 8]]
                for f in batch:
                    store.put(f)
                # then every alarm of this batch, raised when dispatch reaches its captions, finds its frame
                assert all(store.jpeg(f.camera_id, f.frame_id) is not None for f in batch)
                assert store.bytes <= 256 << 20
    assert store.missed == 0
    # and the newest frames of the most recently captioned cameras are the ones kept
    assert store.latest("cam159") is not None
    assert store.latest("cam000") is None, "the oldest frames went first"
    assert "hold less than one frame per camera" in caplog.text and "snapshots.memory_mb" in caplog.text


def test_within_the_budget_older_frames_go_before_any_camera_loses_its_newest():
    # given room for 5 frames, and 3 cameras
    store = SnapshotStore(per_camera=4, max_bytes=5 * HD.nbytes)
    for i, camera in enumerate(["a", "b", "c", "a", "a", "b"], start=1):
        store.put(frame(camera, i))
    # then the 6th frame pushed out a's oldest, not b's or c's only frame
    assert store.bytes == 5 * HD.nbytes
    assert [store.jpeg("a", i) is not None for i in (1, 4, 5)] == [False, True, True]
    assert store.latest("b")[0].frame_id == 6 and store.latest("c")[0].frame_id == 3


def test_cached_jpegs_count_against_the_budget():
    small = np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)
    store = SnapshotStore(max_bytes=3 * small.nbytes)
    for i in range(1, 4):
        store.put(frame("gate", i, small))
    jpeg = store.jpeg("gate", 3)
    assert jpeg is not None
    assert store.bytes <= 3 * small.nbytes
    assert store.jpeg("gate", 1) is None, "the oldest frame made room for the JPEG"
