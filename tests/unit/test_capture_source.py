"""CameraSource on video files: pacing, loop, end of file, corrupt files, the 1-slot buffer."""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import cv2
import pytest

from streamcap.capture import Batcher, CameraSource, CaptureHub, FrameSampler, build_hub
from streamcap.camera_kinds import resolve_kind
from streamcap.capture.video import has_gstreamer
from streamcap.messages import CameraState, CameraStateChanged, StatusEvent

VIDEOS = Path(os.environ.get("STREAMCAP_DATA", Path(__file__).resolve().parents[3] / "shared" / "data")) / "videos"
WAIT_S = 30.0  # generous: the box is shared with a training job


def wait_for(condition, timeout_s: float = WAIT_S, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory) -> Path:
    """The first 8 frames of a real shared clip, at 25 fps (0.32 s), so loops come quickly."""
    source = VIDEOS / "car-detection.mp4"
    if not source.is_file():
        pytest.skip(f"{source} not found; set STREAMCAP_DATA to the folder with videos/")
    path = tmp_path_factory.mktemp("clips") / "short.mp4"
    cap = cv2.VideoCapture(str(source))
    writer = None
    try:
        for _ in range(8):
            ok, image = cap.read()
            assert ok
            if writer is None:
                writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (image.shape[1], image.shape[0]))
            writer.write(image)
    finally:
        cap.release()
        writer.release()
    return path


@pytest.fixture
def cameras():
    started: list[CameraSource] = []
    yield started
    for camera in started:
        camera.stop()


def start(cameras: list, *args, **kwargs) -> CameraSource:
    camera = CameraSource(*args, **kwargs)
    cameras.append(camera)
    camera.start()
    return camera


@pytest.mark.parametrize(
    ("url", "kind", "expected"),
    [
        ("rtsp://u:p@10.0.0.5/stream", "auto", "rtsp"),
        ("rtsps://cam/x", "auto", "rtsp"),
        ("http://cam/mjpeg", "auto", "http"),
        ("https://cam/mjpeg", "auto", "http"),
        ("0", "auto", "usb"),
        ("/dev/video2", "auto", "usb"),
        ("videotestsrc ! videoconvert ! appsink", "auto", "gstreamer"),
        ("/clips/yard.mp4", "auto", "file"),
        ("file:///clips/yard.mp4", "auto", "file"),
        ("/clips/yard.mp4", "file", "file"),
    ],
)
def test_kind_is_inferred_from_the_url(url, kind, expected):
    assert resolve_kind(url, kind) == expected


def test_file_camera_with_loop_keeps_delivering_past_the_end(cameras, short_clip):
    # given
    camera = start(cameras, "yard", str(short_clip), loop=True)

    # when
    wait_for(lambda: camera.stats().frames_read > 20, what="frames past the end of an 8-frame clip")

    # then
    stats = camera.stats()
    assert stats.state == CameraState.connected
    assert stats.loops >= 2
    frame = camera.read_latest(timeout_s=5)
    assert frame.camera_id == "yard" and frame.image.shape == (432, 768, 3)


def test_file_camera_without_loop_stops_at_the_end(cameras, short_clip):
    # given
    events: list[StatusEvent] = []
    camera = start(cameras, "yard", str(short_clip), loop=False, on_status=events.append)

    # when
    wait_for(lambda: camera.state == CameraState.stopped, what="end of file")

    # then
    assert camera.stats().frames_read == 8
    assert camera.detail.startswith("end of file")
    assert [e.state.value for e in events if isinstance(e, CameraStateChanged)] == ["connecting", "connected", "stopped"]


def test_unread_frames_are_overwritten_and_counted_as_drops(cameras, short_clip):
    # given: nobody reads while the clip plays
    camera = start(cameras, "yard", str(short_clip), loop=True)
    wait_for(lambda: camera.stats().frames_read >= 10, what="10 frames")

    # when
    frame = camera.read_latest()

    # then: only the newest frame was kept
    stats = camera.stats()
    assert frame.frame_id >= 9
    assert frame.frame_id <= stats.drops <= stats.frames_read - 1, "every frame before the newest was dropped"


def test_frames_carry_increasing_ids_and_timestamps(cameras, short_clip):
    # given
    camera = start(cameras, "yard", str(short_clip), loop=True)

    # when
    frames = [camera.read_latest(timeout_s=10) for _ in range(5)]

    # then
    ids = [f.frame_id for f in frames]
    assert ids == sorted(ids) and len(set(ids)) == 5
    assert all(a.t_mono < b.t_mono for a, b in zip(frames, frames[1:]))


def test_corrupt_file_puts_only_that_camera_down(cameras, short_clip, tmp_path, caplog):
    # given: garbage bytes with a video name next to a good camera
    garbage = tmp_path / "broken.mp4"
    garbage.write_bytes(os.urandom(64 * 1024))
    good = start(cameras, "good", str(short_clip), loop=True)
    caplog.set_level(logging.WARNING, logger="streamcap.capture")

    # when
    bad = start(cameras, "broken_cam", str(garbage))
    wait_for(lambda: bad.state == CameraState.down, what="the corrupt camera to go down")
    frames_then = good.stats().frames_read
    wait_for(lambda: good.stats().frames_read > frames_then + 10, what="the good camera to keep reading")

    # then
    assert "cannot decode video file" in bad.detail and str(garbage) in bad.detail
    lines = [r.getMessage() for r in caplog.records if "broken_cam" in r.getMessage()]
    assert any("down" in line and "broken.mp4" in line for line in lines), lines
    assert good.state == CameraState.connected


def test_missing_file_is_down_for_good(cameras, tmp_path):
    # given
    camera = start(cameras, "gone", str(tmp_path / "nope.mp4"))

    # when
    wait_for(lambda: camera.state == CameraState.down, what="down")

    # then
    assert "not found" in camera.detail
    assert camera.stats().reconnects == 0, "retrying a missing file cannot help"


@pytest.mark.skipif(has_gstreamer(), reason="this OpenCV has GStreamer; the message is for builds without it")
def test_gstreamer_pipeline_without_gstreamer_says_so(cameras):
    # given
    camera = start(cameras, "gst", "videotestsrc ! videoconvert ! appsink")

    # when
    wait_for(lambda: camera.state == CameraState.down, what="down")

    # then
    assert "no GStreamer support" in camera.detail


def test_stop_joins_the_reader_and_reports_stopped(short_clip):
    # given
    events: list[StatusEvent] = []
    camera = CameraSource("yard", str(short_clip), loop=True, on_status=events.append)
    camera.start()
    wait_for(lambda: camera.state == CameraState.connected, what="connected")

    # when
    joined = camera.stop()

    # then
    assert joined
    assert camera.state == CameraState.stopped
    assert events[-1].state == CameraState.stopped


def test_hub_batches_sampled_frames_from_several_cameras(short_clip, tmp_path):
    # given: two good file cameras at 5 captions/s and a broken one
    garbage = tmp_path / "broken.mp4"
    garbage.write_bytes(b"\x00not a video" * 1000)
    cams = {name: CameraSource(name, str(short_clip), loop=True) for name in ("a", "b")}
    cams["c"] = CameraSource("c", str(garbage))
    hub = CaptureHub(cams, {name: FrameSampler(interval_s=0.2) for name in cams}, Batcher(max_batch=4, max_wait_ms=20))
    hub.start()
    try:
        # when
        seen: dict[str, int] = {}
        deadline = time.monotonic() + WAIT_S
        while min(seen.get("a", 0), seen.get("b", 0)) < 3 and time.monotonic() < deadline:
            batch = hub.next_batch(timeout_s=1.0)
            for f in batch.frames if batch else ():
                seen[f.camera_id] = seen.get(f.camera_id, 0) + 1
        states = hub.states()
    finally:
        assert hub.stop()

    # then
    assert set(seen) == {"a", "b"} and min(seen.values()) >= 3, seen
    assert states["c"] == CameraState.down
    stats = hub.stats()
    assert stats["a"].sampler.skipped_interval > 0, "25 fps sampled at 5/s skips frames"
    assert stats["a"].sampler.offered == stats["a"].camera.frames_read, "every frame read passed the sampler"
    assert all(s.camera.state == CameraState.stopped for s in stats.values())


def test_build_hub_from_camera_configs(short_clip):
    # given
    from streamcap.config.schema import CameraConfig

    configs = {
        "yard": CameraConfig(url=str(short_clip), loop=True, caption_interval_s=0.5, scene_change_threshold=0.01),
        "off": CameraConfig(url=str(short_clip), enabled=False),
    }

    # when
    hub = build_hub(configs, max_batch=2, max_wait_ms=10)

    # then
    assert list(hub.cameras) == ["yard"], "disabled cameras are not opened"
    camera, sampler = hub.cameras["yard"], hub.samplers["yard"]
    assert (camera.kind, camera.loop) == ("file", True)
    assert (sampler.interval_s, sampler.scene_change_threshold) == (0.5, 0.01)
    assert hub.batcher.max_batch == 2


@pytest.mark.parametrize(
    ("user", "keyframes", "expected"),
    [
        (None, False, None),  # unset: OpenCV's own default is TCP
        ("analyzeduration;200000", False, "rtsp_transport;tcp|analyzeduration;200000"),
        ("", False, "rtsp_transport;tcp"),
        ("rtsp_transport;udp", False, "rtsp_transport;udp"),  # an explicit choice is respected
        (None, True, "rtsp_transport;tcp|avdiscard;nonkey"),  # key frames only, still over TCP
        ("rtsp_transport;udp|avdiscard;all", True, "rtsp_transport;udp|avdiscard;nonkey"),
        ("avdiscard;nonkey", False, "rtsp_transport;tcp"),  # the mode is the camera's to choose, per open
    ],
)
def test_opencv_ffmpeg_options_keep_tcp_and_carry_the_decode_mode(user, keyframes, expected):
    # given
    from streamcap.capture.video import capture_options

    # when
    options = capture_options(user, keyframes)

    # then
    assert options == expected
