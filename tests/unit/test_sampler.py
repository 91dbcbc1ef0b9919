"""FrameSampler: caption rate per camera and the scene-change gate, on real clips."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from streamcap.capture.hub import cadence_phase
from streamcap.capture.sampler import FrameSampler, SamplerStats, scene_difference, thumbnail
from streamcap.messages import Frame

VIDEOS = Path(os.environ.get("STREAMCAP_DATA", Path(__file__).resolve().parents[3] / "shared" / "data")) / "videos"


def clip_frames(name: str, seconds: float, every_s: float = 0.0) -> list[Frame]:
    """Frames of a shared clip with t_mono from the clip's timeline (exactly every_s apart if given)."""
    path = VIDEOS / name
    if not path.is_file():
        pytest.skip(f"{path} not found; set STREAMCAP_DATA to the folder with videos/")
    cap = cv2.VideoCapture(str(path))
    try:
        fps = cap.get(cv2.CAP_PROP_FPS)
        stride = max(1, round(every_s * fps))
        frames = []
        for index in range(int(seconds * fps)):
            if not cap.grab():
                break
            if index % stride == 0:
                ok, image = cap.retrieve()
                assert ok, f"cannot decode frame {index} of {path}"
                t_mono = len(frames) * every_s if every_s else index / fps
                frames.append(Frame("cam", index, 0.0, t_mono, image))
        return frames
    finally:
        cap.release()


def synthetic(count: int, fps: float) -> list[Frame]:
    image = np.zeros((8, 8, 3), np.uint8)
    return [Frame("cam", i, 0.0, 100.0 + i / fps, image) for i in range(count)]


@pytest.mark.parametrize(
    ("fps", "seconds", "interval_s", "expected"),
    [
        (12.5, 10, 1.0, 10),  # not 9: the cadence is fixed, frames do not drift it
        (30.0, 10, 1.0, 10),
        (30.0, 10, 0.5, 20),
        (5.0, 10, 2.0, 5),
        (10.0, 3, 0.0, 30),  # interval 0: every frame
        (1.0, 5, 0.25, 5),  # a camera slower than the interval: every frame, no burst
    ],
)
def test_interval_gate_gives_one_frame_per_interval(fps, seconds, interval_s, expected):
    # given
    sampler = FrameSampler(interval_s=interval_s)
    frames = synthetic(int(fps * seconds), fps)

    # when
    accepted = [frame for frame in frames if sampler.accept(frame)]

    # then
    assert len(accepted) == expected, f"{fps} fps for {seconds} s at {interval_s} s"
    stats = sampler.stats()
    assert stats.offered == len(frames)
    assert stats.skipped_interval == len(frames) - expected
    assert stats.skipped_scene == 0


def test_cameras_started_together_ask_at_their_own_phase_after_the_first_frame():
    # given: four cameras at 10 fps, one caption every 2 s, started at the same moment
    phases = [cadence_phase(f"cam{i:03d}") for i in range(4)]
    samplers = [FrameSampler(interval_s=2.0, phase=phase) for phase in phases]
    frames = synthetic(100, 10.0)

    # when
    accepted = [[frame.t_mono - frames[0].t_mono for frame in frames if sampler.accept(frame)] for sampler in samplers]

    # then: each takes its first frame at once, its second (1 + phase) intervals later, then one per interval
    for times, phase in zip(accepted, phases):
        assert times[0] == 0.0
        assert times[1] == pytest.approx(2.0 * (1 + phase), abs=0.1)
        assert all(b - a == pytest.approx(2.0, abs=0.1) for a, b in zip(times[1:], times[2:]))
    # and their phases differ, so they no longer ask in the same tenth of a second
    assert len({round(times[1], 1) for times in accepted}) == 4, accepted


def test_due_checks_the_rate_before_a_frame_is_converted():
    # given: a sampler that has just accepted a frame at t=100
    sampler = FrameSampler(interval_s=1.0)
    first = synthetic(1, 10.0)[0]
    assert sampler.accept(first)

    # when
    early, on_time = sampler.due(100.5), sampler.due(101.0)

    # then: the declined frame counts as offered and skipped, the due one is left to accept()
    assert (early, on_time) == (False, True)
    assert sampler.stats() == SamplerStats(offered=2, accepted=1, skipped_interval=1, skipped_scene=0)


def test_interval_gate_on_a_real_clip_restarts_cadence_after_a_stall():
    # given: 8 s of the car park at 12.5 fps, then the camera stalls for 5 s
    frames = clip_frames("car-detection.mp4", seconds=8)
    sampler = FrameSampler(interval_s=1.0)
    late = Frame("cam", 999, 0.0, frames[-1].t_mono + 5.0, frames[-1].image)
    after = Frame("cam", 1000, 0.0, late.t_mono + 0.5, frames[-1].image)

    # when
    accepted = [frame.frame_id for frame in frames if sampler.accept(frame)]
    late_ok, after_ok = sampler.accept(late), sampler.accept(after)

    # then
    assert accepted == [0, 13, 25, 38, 50, 63, 75, 88]
    assert late_ok, "the first frame after a stall is due at once"
    assert not after_ok, "and the cadence restarts from it instead of bursting"


@pytest.mark.parametrize(
    ("clip", "min_skip", "max_skip"),
    [
        ("ir-night-yard.mp4", 0.9, 1.0),  # nearly static: only the clock overlay changes
        ("car-detection.mp4", 0.0, 0.6),  # cars drive through
    ],
)
def test_scene_change_gate_skips_static_scenes_and_keeps_moving_ones(clip, min_skip, max_skip):
    # given: one frame per second of a real fixed camera
    frames = clip_frames(clip, seconds=20, every_s=1.0)
    sampler = FrameSampler(interval_s=1.0, scene_change_threshold=0.005)

    # when
    accepted = [frame for frame in frames if sampler.accept(frame)]

    # then
    stats = sampler.stats()
    assert accepted[0] is frames[0], "the first frame is always captioned"
    assert stats.accepted + stats.skipped_scene == len(frames)
    assert min_skip <= stats.scene_skip_ratio <= max_skip, f"{clip}: skipped {stats.skipped_scene}/{len(frames)}"


def test_scene_gate_compares_with_the_last_captioned_frame_so_drift_adds_up():
    # given: brightness creeps up by 0.004 per frame, each step below the 0.01 threshold
    sampler = FrameSampler(interval_s=0.0, scene_change_threshold=0.01)
    frames = [Frame("cam", i, 0.0, float(i), np.full((64, 64, 3), 100 + i, np.uint8)) for i in range(10)]

    # when
    accepted = [frame.frame_id for frame in frames if sampler.accept(frame)]

    # then: 3/255 = 0.0118 >= 0.01, so every third step is a change
    assert accepted == [0, 3, 6, 9]


def test_max_interval_forces_a_caption_of_a_static_scene():
    # given
    frames = clip_frames("ir-night-yard.mp4", seconds=12, every_s=1.0)
    sampler = FrameSampler(interval_s=1.0, scene_change_threshold=0.005, max_interval_s=5.0)

    # when
    accepted = [frame.frame_id // 30 for frame in frames if sampler.accept(frame)]

    # then
    assert accepted == [0, 5, 10]


def test_thumbnail_difference_is_zero_for_the_same_frame_and_one_for_black_vs_white():
    # given
    black = np.zeros((360, 640, 3), np.uint8)
    white = np.full((360, 640, 3), 255, np.uint8)

    # when / then
    assert thumbnail(black).shape == (32, 32)
    assert scene_difference(thumbnail(black), thumbnail(black)) == 0.0
    assert scene_difference(thumbnail(black), thumbnail(white)) == pytest.approx(1.0)


@pytest.mark.parametrize(("interval_s", "threshold"), [(-1.0, 0.0), (1.0, 1.5), (1.0, -0.1)])
def test_bad_settings_are_refused(interval_s, threshold):
    with pytest.raises(ValueError):
        FrameSampler(interval_s, threshold)
