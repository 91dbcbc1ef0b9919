"""Overload: cameras ask for more captions than the model makes. Cameras are served in turn, the shortfall is counted
and /healthz says why it is degraded. The model is a stand-in that takes a fixed time per frame, so its rate is known."""
from __future__ import annotations

import statistics
import time

import pytest
from _clips import make_clip

from streamcap.app import build
from streamcap.config.schema import StreamcapConfig
from streamcap.model.decoding import Description


class SlowCaptioner:
    """A deliberately slow model: `per_frame_s` per frame whatever the batch, so it makes 1 / per_frame_s captions/s."""

    model_name = "slow"

    def __init__(self, per_frame_s: float) -> None:
        self.per_frame_s = per_frame_s

    def describe(self, frames):
        time.sleep(self.per_frame_s * len(frames))
        return [Description("a car drives past", {}) for _ in frames]


def looping_cameras(clip, cameras, interval_s: float, captioner, **model):
    """The real app with these cameras all playing `clip` in a loop, captioned by `captioner`, no outputs."""
    config = StreamcapConfig.model_validate({
        "cameras": {c: {"url": str(clip), "loop": True, "caption_interval_s": interval_s} for c in cameras},
        "model": model,
        "outputs": {"console": False},
    })
    return build(config, captioner=captioner)


def counts(metrics, cameras) -> dict[str, float]:
    return {c: metrics.frames_captioned.labels(c)._value.get() for c in cameras}


def test_overloaded_model_serves_every_camera_in_turn_and_says_it_is_behind(tmp_path):
    # given 12 cameras asking 4 captions/s each (48/s) of a model that makes 20/s
    clip = make_clip(tmp_path / "gop1s.mp4", 6, gop=25)
    cameras = [f"cam{i:02d}" for i in range(12)]
    app = looping_cameras(clip, cameras, 0.25, SlowCaptioner(per_frame_s=0.05), max_batch=4, max_wait_ms=20)
    metrics = app.pipeline.metrics

    # when it runs past the load window
    app.start()
    try:
        time.sleep(6.0)  # every camera connected, the load window filled
        before = counts(metrics, cameras)
        time.sleep(8.0)
        after = counts(metrics, cameras)
        health = metrics.health()
    finally:
        app.stop()

    # then each camera got its share, within 20 % of the mean
    served = {c: after[c] - before[c] for c in cameras}
    mean = statistics.mean(served.values())
    assert mean > 0
    assert all(abs(n - mean) <= 0.2 * mean for n in served.values()), f"captions per camera: {served}"
    # and the box says it is degraded because the model is behind, with the numbers
    assert health["status"] == "degraded"
    assert health["reason"].startswith("model behind: 12 cameras ask"), health.get("reason")
    model = health["model"]
    assert model["asked_per_s"] == pytest.approx(48, rel=0.2) and model["made_per_s"] < 0.9 * model["asked_per_s"]
    # and the shortfall shows in /metrics, with every frame not taken counted as a drop
    assert metrics.caption_shortfall._value.get() > 10
    dropped = sum(s.value for m in metrics.registry.collect() if m.name == "streamcap_drops" for s in m.samples
                  if s.name.endswith("_total") and s.labels["cause"] == "captioner_behind")
    assert dropped > 0


def test_a_model_that_keeps_up_is_not_reported_behind(tmp_path):
    # given 2 cameras asking 2 captions/s each of a model that makes 100/s
    clip = make_clip(tmp_path / "gop1s.mp4", 6, gop=25)
    app = looping_cameras(clip, ("a", "b"), 0.5, SlowCaptioner(per_frame_s=0.01))
    app.start()
    try:
        time.sleep(7.0)
        health = app.pipeline.metrics.health()
    finally:
        app.stop()
    # then health is ok and says what is asked and made
    assert health["status"] == "ok", health
    assert health["model"]["behind"] is None and health["model"]["asked_per_s"] == pytest.approx(4, rel=0.3)


def captioned_within(metrics, seconds: float) -> tuple[float, float]:
    """(captions so far, of which captioned within `seconds` of their frame's capture), from the latency histogram."""
    samples = {(s.name, s.labels.get("le")): s.value for m in metrics.registry.collect() if m.name == "streamcap_latency_seconds"
               for s in m.samples if s.labels.get("stage") == "capture_to_caption"}
    return samples[("streamcap_latency_seconds_count", None)], samples[("streamcap_latency_seconds_bucket", str(seconds))]


def test_a_camera_captioned_less_often_than_it_asks_is_captioned_on_a_fresh_frame(tmp_path):
    # given 24 cameras with a key frame a second asking a caption every 4 s (6/s) of a model that makes 4/s, so each
    # camera's turn comes every ~6 s: the frame it asked with would be up to 4 s old by then
    clip = make_clip(tmp_path / "gop1s.mp4", 8, gop=25)
    cameras = [f"cam{i:02d}" for i in range(24)]
    app = looping_cameras(clip, cameras, 4.0, SlowCaptioner(per_frame_s=0.25), max_batch=2, max_wait_ms=20)
    metrics = app.pipeline.metrics

    # when it runs past the first turns
    app.start()
    try:
        time.sleep(8.0)
        count_before, fresh_before = captioned_within(metrics, 2.5)
        time.sleep(14.0)
        count_after, fresh_after = captioned_within(metrics, 2.5)
        asked_without_frame = app.pipeline.hub.batcher.stats().asked_without_frame
    finally:
        app.stop()
    refreshed = metrics.frames_refreshed._value.get()

    # then cameras far from their turn asked without decoding, cameras near it decoded their next key frame (or took a
    # newer one), and nearly every caption is of a frame under 2.5 s old
    captions = count_after - count_before
    assert captions >= 40, f"the model should be kept busy: {captions} captions in 14 s"
    assert (fresh_after - fresh_before) / captions >= 0.9, f"{fresh_after - fresh_before:.0f} of {captions:.0f} within 2.5 s"
    assert asked_without_frame > 0
    assert refreshed > 0, "the extra decoding shows in /metrics"
