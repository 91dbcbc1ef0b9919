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


def counts(metrics, cameras) -> dict[str, float]:
    return {c: metrics.frames_captioned.labels(c)._value.get() for c in cameras}


def test_overloaded_model_serves_every_camera_in_turn_and_says_it_is_behind(tmp_path):
    # given 12 cameras asking 4 captions/s each (48/s) of a model that makes 20/s
    clip = make_clip(tmp_path / "gop1s.mp4", 6, gop=25)
    cameras = [f"cam{i:02d}" for i in range(12)]
    config = StreamcapConfig.model_validate({
        "cameras": {c: {"url": str(clip), "loop": True, "caption_interval_s": 0.25} for c in cameras},
        "model": {"max_batch": 4, "max_wait_ms": 20},
        "outputs": {"console": False},
    })
    app = build(config, captioner=SlowCaptioner(per_frame_s=0.05))
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
    config = StreamcapConfig.model_validate({
        "cameras": {c: {"url": str(clip), "loop": True, "caption_interval_s": 0.5} for c in ("a", "b")},
        "outputs": {"console": False},
    })
    app = build(config, captioner=SlowCaptioner(per_frame_s=0.01))
    app.start()
    try:
        time.sleep(7.0)
        health = app.pipeline.metrics.health()
    finally:
        app.stop()
    # then health is ok and says what is asked and made
    assert health["status"] == "ok", health
    assert health["model"]["behind"] is None and health["model"]["asked_per_s"] == pytest.approx(4, rel=0.3)
