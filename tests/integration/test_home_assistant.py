"""streamcap in a real Home Assistant: its discovery configs become entities HA accepts, and they live.

A real streamcap app (a generated clip, a stand-in captioner, real rules, the real MQTT publisher)
publishes to the mosquitto a real Home Assistant 2024.3 listens on; the entities are read back over
HA's REST API. Skips with a reason without mosquitto or the HA venv (bash tests/integration/ha_setup.sh).
"""
from __future__ import annotations

import io
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from ha_fixtures import ha_installed, ha_mosquitto, home_assistant_module  # noqa: F401 (fixtures)

from streamcap.app import build
from streamcap.config.load import load_config
from streamcap.model.decoding import Description

pytestmark = pytest.mark.integration
WAIT_S = 90.0
STREAMCAP = Path(sys.executable).with_name("streamcap")


class Visitor:
    """Stands in for the model: a person while `present` is set, else an empty yard."""

    model_name = "fake"

    def __init__(self):
        self.present = threading.Event()

    def describe(self, frames):
        if self.present.is_set():
            return [Description("a man opens the gate", {"person": 0.96, "vehicle": 0.02}) for _ in frames]
        return [Description("an empty yard at night", {"person": 0.03, "vehicle": 0.02}) for _ in frames]


@pytest.fixture
def clip(tmp_path):
    path = tmp_path / "yard.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 180))
    for i in range(30):
        image = np.full((180, 320, 3), 50, np.uint8)
        cv2.circle(image, (20 + i * 9, 90), 20, (220, 220, 220), -1)
        writer.write(image)
    writer.release()
    return path


def write_config(tmp_path: Path, broker, clip: Path) -> Path:
    (tmp_path / "rules.yaml").write_text(textwrap.dedent("""\
        - id: visitor
          alias: Visitor at the gate
          cameras: [gate]
          triggers: [{trigger: caption, concept: "person >= 0.7"}]
          clear_after: 2s
          severity: alert
        """))
    path = tmp_path / "streamcap.yaml"
    path.write_text(textwrap.dedent(f"""\
        device_id: yard-box
        cameras:
          gate: {{url: "{clip}", loop: true, caption_interval_s: 0.5}}
        rules: {{paths: [rules.yaml], reload: false}}
        mqtt: {{host: {broker.host}, port: {broker.port}, keepalive_s: 5, spool_dir: spool}}
        outputs: {{console: false}}
        """))
    return path


def test_home_assistant_shows_the_box_its_camera_and_its_rule_from_new_to_end(ha_mosquitto, home_assistant_module, tmp_path, clip):
    ha = home_assistant_module
    config = load_config(write_config(tmp_path, ha_mosquitto, clip))
    visitor = Visitor()
    app = build(config, captioner=visitor, console_stream=io.StringIO())
    app.start()
    try:
        # then the entities appear, all on one device for the box
        caption_id = ha.wait_for_entity("streamcap_yard-box_gate_caption", WAIT_S)
        camera_id = ha.wait_for_entity("streamcap_yard-box_gate_camera", WAIT_S)
        image_id = ha.wait_for_entity("streamcap_yard-box_gate_snapshot", WAIT_S)
        rule_id = ha.wait_for_entity("streamcap_yard-box_visitor_gate", WAIT_S)
        devices = [d for d in ha.device_registry() if ["mqtt", "streamcap_yard-box"] in d["identifiers"]]
        assert len(devices) == 1 and devices[0]["name"] == "streamcap yard-box"
        # the caption sensor carries the caption and its concepts, the camera is connected
        state = ha.wait_for_state(caption_id, lambda s: s["state"] == "an empty yard at night", WAIT_S)
        assert state["attributes"]["concepts"] == {"person": 0.03, "vehicle": 0.02}
        ha.wait_for_state(camera_id, "on", WAIT_S)
        assert ha.state(rule_id)["state"] in ("off", "unknown")
        # when a visitor comes, the rule's binary sensor is on while they are there, with the snapshot in the image entity
        ha.wait_subscribed("streamcap/yard-box/gate/alarm", WAIT_S)
        visitor.present.set()
        ha.wait_for_state(caption_id, lambda s: s["state"] == "a man opens the gate", WAIT_S)
        ha.wait_for_state(rule_id, "on", WAIT_S)
        assert ha.state(rule_id)["attributes"]["device_class"] == "problem"
        ha.wait_for(lambda: ha.state(image_id)["state"] not in ("unknown", "unavailable"), WAIT_S, "a snapshot image")
        jpeg, content_type = ha.get_bytes(ha.state(image_id)["attributes"]["entity_picture"])
        assert content_type.startswith("image/jpeg") and cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR) is not None
        # and off once the visitor has been gone for clear_after
        visitor.present.clear()
        ha.wait_for_state(caption_id, lambda s: s["state"] == "an empty yard at night", WAIT_S)
        ha.wait_for_state(rule_id, "off", WAIT_S)
    finally:
        app.stop()
    # a clean stop makes every entity unavailable (status `stopped`), not stale
    for entity in (caption_id, camera_id, rule_id):
        ha.wait_for_state(entity, "unavailable", WAIT_S)
    # and `streamcap ha remove` takes them out of Home Assistant
    removed = subprocess.run([str(STREAMCAP), "ha", "remove", "-c", str(tmp_path / "streamcap.yaml")],
                             capture_output=True, text=True, timeout=60)
    assert removed.returncode == 0, removed.stderr
    assert "removed 4 discovery configs of device yard-box" in removed.stdout, removed.stdout
    ha.wait_for(lambda: all(ha.state(e) is None for e in (caption_id, camera_id, image_id, rule_id)), WAIT_S, "the entities removed")
    errors = [line for line in ha.log_text().splitlines() if "ERROR" in line and "yard-box" in line]
    assert not errors, errors
