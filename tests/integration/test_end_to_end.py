"""The whole product with real parts: RTSP cameras -> shipped model -> rules -> mosquitto -> a subscriber."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mqtt_fixtures import wait_until
from streamcap.app import build
from streamcap.config.schema import StreamcapConfig

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
# Flickr8k-trained captioners see people everywhere (the still bottle reads as "children playing"),
# so the rule asks for what only the hall shows: someone walking through.
PERSON_RULE = """
- id: person_walking
  cameras: ["*"]
  triggers:
    - trigger: caption
      any: [walking, walks, walk]
      min_matches: 2      # two of the last three captions: one odd caption does not raise an alarm
      window: 3
  cooldown: 1h
  severity: alert
  snapshot: true
"""


def _payloads(subscriber, suffix):
    return [json.loads(m.payload) for m in subscriber.on(suffix)]


def test_rtsp_to_mqtt_alarm_for_people_and_none_for_the_still_bottle(rtsp_server, mosquitto, subscriber_factory, tmp_path):
    # given two RTSP cameras: people walking through a room, and a bottle on a table where nothing happens
    people = rtsp_server("one-by-one-person-detection.mp4")
    bottle = rtsp_server("bottle-detection.mp4")
    rules = tmp_path / "rules.yaml"
    rules.write_text(PERSON_RULE)
    config = StreamcapConfig.model_validate({
        "device_id": "e2e",
        "cameras": {
            "hall": {"url": people.url, "caption_interval_s": 1.0},
            "shelf": {"url": bottle.url, "caption_interval_s": 1.0},
        },
        "model": {"backend": "torch", "max_batch": 2},
        "rules": {"paths": [str(rules)]},
        "mqtt": {"host": mosquitto.host, "port": mosquitto.port, "prefix": "sc", "spool_dir": str(tmp_path / "spool")},
        "outputs": {"console": False},
    })
    subscriber = subscriber_factory(mosquitto, ["sc/e2e/#"])
    app = build(config)
    # when the pipeline runs until the people camera raised an alarm and both cameras were captioned a while
    app.start()
    try:
        wait_until(lambda: subscriber.on("hall/alarm") and len(subscriber.on("shelf/caption")) >= 12, 150,
                   "an alarm from hall and a dozen captions from shelf")
    finally:
        app.stop()
    # then captions arrived for both cameras with the documented fields
    hall_captions = _payloads(subscriber, "hall/caption")
    assert hall_captions and {"camera", "time", "caption", "frame_time", "latency_ms", "model"} <= set(hall_captions[0])
    # and the alarm names the rule, the camera and the caption, with its snapshot
    alarm = _payloads(subscriber, "hall/alarm")[0]
    assert alarm["rule"] == "person_walking" and alarm["camera"] == "hall" and alarm["severity"] == "alert"
    assert subscriber.on("hall/snapshot")[0].payload[:2] == b"\xff\xd8"  # a JPEG
    # and the still bottle raised nothing
    shelf_captions = [c["caption"] for c in _payloads(subscriber, "shelf/caption")]
    assert not subscriber.on("shelf/alarm"), f"false alarm; shelf captions were {shelf_captions}"
    # and the retained status ends as a clean stop
    assert subscriber.on("sc/e2e/status")[-1].payload == b"stopped"


def test_streamcap_run_stops_cleanly_on_sigterm(mosquitto, subscriber_factory, shared_data, tmp_path):
    # given `streamcap run` on a looping video file, publishing to a real broker
    config = tmp_path / "streamcap.yaml"
    config.write_text(f"""
device_id: box
cameras:
  yard:
    url: {shared_data / "videos" / "car-detection.mp4"}
    loop: true
    caption_interval_s: 0.5
model:
  backend: torch
mqtt:
  host: {mosquitto.host}
  port: {mosquitto.port}
  prefix: sc
  spool_dir: {tmp_path / "spool"}
""")
    subscriber = subscriber_factory(mosquitto, ["sc/box/#"])
    proc = subprocess.Popen([sys.executable, "-m", "streamcap", "run", "-c", str(config)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: len(subscriber.on("yard/caption")) >= 3 or proc.poll() is not None, 120, "three captions")
        assert proc.poll() is None, proc.stderr.read()
        assert subscriber.on("sc/box/status")[-1].payload == b"online"
        # when it gets SIGTERM
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # then it exits 0 after publishing `stopped`, with the camera joined before exit
    assert proc.returncode == 0, err[-2000:]
    wait_until(lambda: subscriber.on("sc/box/status")[-1].payload == b"stopped", 10, "stopped status")
    assert "camera 'yard': stopped" in err


def test_demo_runs_offline_on_the_embedded_sample_stream(tmp_path):
    # the README's first command: no camera, no broker, no network
    env = {**os.environ, "STREAMCAP_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "streamcap", "demo", "--duration", "20"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    captions = [line for line in result.stdout.splitlines() if " caption " in line]
    assert len(captions) >= 3, result.stdout
    assert any(" ALARM " in line for line in result.stdout.splitlines()), result.stdout
