"""Decoding only what is captioned: key frames only on H.264 clips with a known key-frame interval, the fallbacks.

Clips are made here by Debian's ffmpeg (libx264) with a fixed GOP and no scene-cut key frames, so the key
frames are exactly where the test says; every test runs with PyAV and with the OpenCV fallback.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import pytest

from _clips import make_clip

from streamcap.capture import CameraSource
from streamcap.capture.hub import decode_settings
from streamcap.capture.readers import DecodeSettings, open_reader, pyav_available
from streamcap.config.schema import CameraConfig, DecodeConfig
from streamcap.decoder_kinds import DecodeMode, DecoderKind, DecoderLibrary
from streamcap.messages import DecoderChanged, KeyframesLate

LIBRARIES = [
    pytest.param(DecoderLibrary.pyav, marks=pytest.mark.skipif(not pyav_available(), reason="PyAV not installed (pip install av)")),
    DecoderLibrary.opencv,
]
WAIT_S = 30.0  # generous: the box is shared


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("gop-clips")
    return {
        "gop1s": make_clip(folder / "gop1s.mp4", 4, gop=25),  # key frames at 0, 1, 2, 3 s
        "gop2s": make_clip(folder / "gop2s.mp4", 6, gop=50),  # key frames every 2 s
        # five key frames 0.2 s apart, then none for 7 s: a camera that stops sending key frames
        "keys_stop": make_clip(folder / "keys_stop.mp4", 8, key_times="0,0.2,0.4,0.6,0.8"),
    }


@pytest.fixture
def cameras():
    started: list[CameraSource] = []

    def make(*args, **kwargs) -> CameraSource:
        camera = CameraSource(*args, **kwargs)
        started.append(camera)
        camera.start()
        return camera

    yield make
    for camera in started:
        assert camera.stop(5.0), f"camera {camera.camera_id} reader did not stop"


def wait_for(condition, what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.02)


@pytest.mark.parametrize("library", LIBRARIES)
def test_keyframes_mode_decodes_only_the_key_frames_at_their_timestamps(clips, library):
    # given a 4 s clip at 25 fps with a key frame every second
    reader = open_reader(str(clips["gop1s"]), "file", DecodeSettings(library=library))
    try:
        # when it is read in keyframes mode to the end
        reader.set_mode(DecodeMode.keyframes)
        decoded = []
        while (item := reader.read(lambda t: True)) is not None:
            if item.decoded:
                decoded.append(item)
    finally:
        reader.release()

    # then only the four key frames came out of the decoder, each at its own time, each converted
    assert [round(d.pts_s, 3) for d in decoded] == [0.0, 1.0, 2.0, 3.0]
    assert all(d.key for d in decoded), "every decoded frame is a key frame"
    assert reader.frames_decoded == 4, f"the decoder made {reader.frames_decoded} frames; the other 96 must be skipped before it"
    assert all(d.image is not None and d.image.shape == (180, 320, 3) for d in decoded)
    if library == DecoderLibrary.pyav:
        assert reader.packets_skipped == 96, "PyAV never hands the non-key packets to the decoder"


@pytest.mark.parametrize("library", LIBRARIES)
def test_switching_to_key_frames_in_the_middle_of_a_file_keeps_delivering_key_frames(clips, library):
    # given a reader that decoded every frame for a second and a half
    reader = open_reader(str(clips["gop1s"]), "file", DecodeSettings(library=library))
    try:
        while (item := reader.read(lambda t: False)) is None or item.pts_s is None or item.pts_s < 1.5:
            assert item is not None, "the clip ended early"
        # when it switches to key frames only
        reader.set_mode(DecodeMode.keyframes)
        after = [reader.read(lambda t: True) for _ in range(2)]
    finally:
        reader.release()

    # then key frames keep coming (a reopened OpenCV capture starts the file again rather than seek past its end)
    decoded = [a for a in after if a is not None and a.decoded]
    assert decoded and all(d.key and d.image is not None for d in decoded), after


@pytest.mark.parametrize("library", LIBRARIES)
def test_every_frame_mode_converts_only_the_frames_wanted(clips, library):
    # given the same clip, read in every-frame mode with a sampler that wants one frame in 25
    reader = open_reader(str(clips["gop1s"]), "file", DecodeSettings(library=library))
    asked = []
    try:
        items = []
        while (item := reader.read(lambda t: (asked.append(t) or len(asked) % 25 == 1))) is not None:
            if item.decoded:
                items.append(item)
    finally:
        reader.release()

    # then every frame was decoded, and only the wanted ones converted to BGR
    assert len(items) == 100
    assert sum(item.image is not None for item in items) == 4
    assert [round(i.pts_s, 2) for i in items if i.key] == [0.0, 1.0, 2.0, 3.0], "key frames are told apart"


@pytest.mark.parametrize("library", LIBRARIES)
def test_camera_switches_to_key_frames_when_they_come_as_often_as_captions(clips, cameras, library):
    # given a file camera captioned once a second whose stream has a key frame every second
    events, delivered = [], []
    camera = cameras("gop1", str(clips["gop1s"]), loop=True, caption_interval_s=1.0, decode=DecodeSettings(library=library),
                     on_status=events.append, on_frame=delivered.append)

    # when it has run long enough to measure the interval
    wait_for(lambda: camera.decoder_info.get("mode") == DecodeMode.keyframes, "key frames only")
    count = len(delivered)
    wait_for(lambda: len(delivered) >= count + 3, "three frames in keyframes mode")

    # then it decodes key frames only, says so, and the frames keep the clip's pace (one per second)
    info = camera.decoder_info
    assert (info["library"], info["hardware"], info["mode"]) == (library, "cpu", "keyframes")
    assert info["keyframe_interval_s"] == pytest.approx(1.0, abs=0.01)
    changes = [e for e in events if isinstance(e, DecoderChanged)]
    assert changes[-1].mode == "keyframes" and "key frame every 1.00 s" in changes[-1].detail
    gaps = [b.t_mono - a.t_mono for a, b in zip(delivered[count:], delivered[count + 1:])]
    assert all(0.5 < gap < 1.5 for gap in gaps), f"key frames arrive a second apart on a paced file: {gaps}"


@pytest.mark.parametrize("library", LIBRARIES)
def test_camera_decodes_every_frame_when_key_frames_are_further_apart_than_captions(clips, cameras, caplog, library):
    # given a stream with a key frame every 2 s and a caption wanted every 0.5 s
    caplog.set_level(logging.INFO, logger="streamcap.capture.source")
    delivered = []
    camera = cameras("gop2", str(clips["gop2s"]), loop=True, caption_interval_s=0.5, decode=DecodeSettings(library=library),
                     on_frame=delivered.append)

    # when the interval has been measured
    wait_for(lambda: camera.decoder_info.get("keyframe_interval_s") is not None, "the key-frame interval")

    # then it stays on every frame and says why, naming the camera
    assert camera.decoder_info["mode"] == "every_frame"
    assert camera.decoder_info["keyframe_interval_s"] == pytest.approx(2.0, abs=0.01)
    lines = [r.getMessage() for r in caplog.records if "decoding every frame" in r.getMessage()]
    assert any("'gop2'" in line and "longer than the caption interval of 0.5 s" in line for line in lines), lines


@pytest.mark.parametrize("library", LIBRARIES)
def test_a_stream_that_stops_sending_key_frames_is_reported_and_decoded_in_full(clips, cameras, caplog, library):
    # given a stream with key frames 0.2 s apart for its first second, then none, captioned twice a second
    events, delivered = [], []
    camera = cameras("late", str(clips["keys_stop"]), caption_interval_s=0.5, decode=DecodeSettings(library=library),
                     on_status=events.append, on_frame=delivered.append)

    # when no key frame has come for ten times the interval
    wait_for(lambda: any(isinstance(e, KeyframesLate) for e in events), "the late key frames to be reported")
    count = len(delivered)
    wait_for(lambda: len(delivered) >= count + 2, "frames after the report")

    # then it was reported with the measured interval, and the camera decodes every frame from then on
    late = next(e for e in events if isinstance(e, KeyframesLate))
    assert late.interval_s == pytest.approx(0.2, abs=0.01) and late.waited_s >= 2.0
    assert camera.decoder_info["mode"] == "every_frame"
    assert any("'late'" in r.getMessage() and "no key frame for" in r.getMessage() for r in caplog.records)


def test_a_decoder_the_box_lacks_is_named_once_with_the_cpu_fallback(caplog):
    # given cameras that ask for NVDEC and the Jetson decoder on a box with neither, and one left to the box default
    caplog.set_level(logging.INFO, logger="streamcap.capture.hub")
    configs = {
        "gate": CameraConfig(url="rtsp://10.0.0.1/a", decoder="nvdec"),
        "yard": CameraConfig(url="rtsp://10.0.0.2/a", decoder="nvdec"),
        "lane": CameraConfig(url="rtsp://10.0.0.3/a", decoder="jetson"),
        "door": CameraConfig(url="rtsp://10.0.0.4/a"),
    }
    if Path("/dev/nvidiactl").exists():
        pytest.skip("this box has an NVIDIA device: NVDEC would not fall back")

    # when the decoders are resolved at start
    settings = decode_settings(configs, DecodeConfig(decoder="auto"))

    # then every camera decodes on the CPU, and each decoder asked for is named once with its cameras and the reason
    assert {s.hardware for s in settings.values()} == {DecoderKind.cpu}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings
    assert any("nvdec asked for (camera 'gate', 'yard')" in w and "no NVIDIA GPU" in w and "CPU" in w for w in warnings)
    assert any("jetson asked for (camera 'lane')" in w and "nvv4l2decoder" in w for w in warnings)


@pytest.mark.skipif(not pyav_available(), reason="PyAV not installed (pip install av)")
def test_nvdec_that_cannot_open_falls_back_to_the_cpu_with_one_line(clips, cameras, caplog):
    # given a camera told to use NVDEC on a box where CUDA cannot be opened
    if Path("/dev/nvidiactl").exists():
        pytest.skip("this box has an NVIDIA device")
    caplog.set_level(logging.INFO, logger="streamcap.capture.source")
    delivered = []
    camera = cameras("gpu", str(clips["gop1s"]), loop=True, decode=DecodeSettings(DecoderLibrary.pyav, DecoderKind.nvdec),
                     on_frame=delivered.append)

    # when it runs
    wait_for(lambda: len(delivered) >= 3, "frames decoded on the CPU")

    # then it decodes on the CPU and said why, once
    assert camera.decoder_info["hardware"] == "cpu"
    lines = [r.getMessage() for r in caplog.records if "NVDEC cannot decode" in r.getMessage()]
    assert len(lines) == 1 and "'gpu'" in lines[0] and "decoding on the CPU" in lines[0]


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("threads", [1, 0])
def test_sixteen_cameras_use_one_decoding_thread_each(clips, cameras, library, threads):
    # given the threads of this process outside Python (FFmpeg's and OpenCV's own) before
    if threads == 0 and (os.cpu_count() or 1) < 2:
        pytest.skip("FFmpeg's default is one thread on a one-core box: no pool to compare with")

    def native_threads() -> int:
        return len(list(Path("/proc/self/task").iterdir())) - threading.active_count()

    before = native_threads()
    # when 16 cameras decode at once, on one thread each (the default) or on FFmpeg's own choice (threads_per_camera: 0)
    decode = DecodeSettings(library=library, threads=threads)
    started = [cameras(f"cam{i}", str(clips["gop1s"]), loop=True, caption_interval_s=1.0, decode=decode) for i in range(16)]
    wait_for(lambda: all(c.stats().frames_read >= 5 for c in started), "every camera decoding")
    extra = native_threads() - before
    readers = [t for t in threading.enumerate() if t.name.startswith("camera-cam")]

    # then each camera decodes on its own reader thread; FFmpeg's default would add a pool per camera
    assert len(readers) == 16
    if threads == 1:
        assert extra < 8, f"{extra} threads outside Python for 16 cameras decoding on one thread each"
    else:
        assert extra >= 16, f"FFmpeg's default threading added only {extra} threads: the check above would not see a pool"
