"""Alarm lifecycles over a real mosquitto, across a broker restart; several boxes on one broker."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from mqtt_fixtures import mqtt_config, wait_until  # noqa: F401

from streamcap.messages import Caption
from streamcap.metrics import Metrics
from streamcap.publish.mqtt import MqttPublisher
from streamcap.rules.engine import RuleEngine
from streamcap.rules.schema import Rule

DEADLINE_S = 30
STREAMCAP = Path(sys.executable).with_name("streamcap")


def caption(text: str, at: float, person: float) -> Caption:
    return Caption("gate", int(at), at, time.monotonic(), text, "test", time.monotonic(), {"person": person})


def test_a_lifecycle_ends_at_the_subscriber_even_when_it_ended_while_the_broker_was_down(mosquitto, tmp_path, subscriber_factory):
    # given a persistent QoS 1 subscriber, a publisher and a rule whose alarm ends 5 s after its last match
    sub = subscriber_factory(mosquitto, ["streamcap/box/+/alarm"], qos=1, persistent=True)
    now = [time.time()]
    engine = RuleEngine([Rule.model_validate({"id": "someone", "triggers": [{"trigger": "caption", "concept": "person >= 0.5"}],
                                              "clear_after": "5s", "update_every": "1s"})], clock=lambda: now[0])
    pub = MqttPublisher(mqtt_config(host=mosquitto.host, port=mosquitto.port, spool_dir=str(tmp_path / "spool"),
                                    keepalive_s=5, reconnect_min_s=0.5, reconnect_max_s=1), "box", Metrics())
    pub.start()
    assert pub.wait_connected(DEADLINE_S), pub.last_error
    t0 = now[0]
    for alarm in engine.process(caption("a man at the gate", t0, 0.6)):
        pub.publish_alarm(alarm)
    sub.wait_for(lambda s: len(s.on("/alarm")) == 1, DEADLINE_S, "the new alarm")
    # when the broker dies, the person is seen better, leaves, and the alarm ends, all while it is down
    mosquitto.kill()
    for alarm in engine.process(caption("a man opens the gate", t0 + 2, 0.9)):
        pub.publish_alarm(alarm)
    now[0] = t0 + 8
    ended = engine.tick()
    assert [a.type.value for a in ended] == ["end"]
    for alarm in ended:
        pub.publish_alarm(alarm)
    mosquitto.start()
    # then the subscriber gets new, update and end, in order, one alarm id, seq 0, 1, 2
    sub.wait_for(lambda s: len(s.on("/alarm")) >= 3, DEADLINE_S * 2, "the update and the end after the restart")
    pub.close(timeout_s=5)
    docs = [json.loads(m.payload) for m in sub.on("/alarm")]
    assert [(d["type"], d["seq"]) for d in docs] == [("new", 0), ("update", 1), ("end", 2)]
    assert len({d["id"] for d in docs}) == 1 and docs[1]["concepts"] == {"person": 0.9} and docs[2]["end_time"]


@pytest.fixture
def clip(tmp_path):
    path = tmp_path / "lot.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (320, 180))
    for i in range(20):
        image = np.full((180, 320, 3), 60 + 4 * i, np.uint8)
        cv2.rectangle(image, (i * 12, 50), (i * 12 + 60, 130), (200, 200, 200), -1)
        writer.write(image)
    writer.release()
    return path


def start_box(tmp_path: Path, name: str, mosquitto, clip: Path) -> subprocess.Popen:
    folder = tmp_path / name
    folder.mkdir(exist_ok=True)  # a restart keeps the box's folder, and so its spool
    (folder / "rules.yaml").write_text('- id: anything\n  triggers: [{trigger: caption, regex: "."}]\n')
    (folder / "streamcap.yaml").write_text(textwrap.dedent(f"""\
        device_id: {name}
        cameras:
          gate: {{url: "{clip}", loop: true, caption_interval_s: 2}}
        model: {{backend: torch, max_batch: 1}}
        rules: {{paths: [rules.yaml]}}
        mqtt: {{host: {mosquitto.host}, port: {mosquitto.port}, keepalive_s: 5, spool_dir: spool}}
        outputs: {{console: false}}
        """))
    log = open(folder / "streamcap.log", "wb")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([str(STREAMCAP), "run", "-c", str(folder / "streamcap.yaml")], stdout=log, stderr=subprocess.STDOUT,
                            cwd=folder, env=env)


def test_two_boxes_share_one_broker_without_mixing_topics_entities_or_wills(mosquitto, tmp_path, subscriber_factory, clip):
    sub = subscriber_factory(mosquitto, ["streamcap/#", "homeassistant/#"], qos=1)
    boxes = {name: start_box(tmp_path, name, mosquitto, clip) for name in ("box-a", "box-b")}
    try:
        # given two streamcap processes with their own device ids
        def status(name):
            msgs = sub.on(f"streamcap/{name}/status")
            return msgs[-1].payload.decode() if msgs else None

        wait_until(lambda: status("box-a") == status("box-b") == "online", 120, "both boxes online")
        wait_until(lambda: sub.on("streamcap/box-a/gate/caption") and sub.on("streamcap/box-b/gate/caption"), 120,
                   "captions from both boxes")
        # then each box has its own Home Assistant device and entities, none shared
        configs = {m.topic: json.loads(m.payload) for m in sub.messages if m.topic.startswith("homeassistant/") and m.payload}
        by_box = {name: {c["unique_id"] for t, c in configs.items() if f"/{name}/" in t} for name in boxes}
        assert by_box["box-a"] and by_box["box-b"] and not by_box["box-a"] & by_box["box-b"]
        assert {c["device"]["identifiers"][0] for c in configs.values()} == {"streamcap_box-a", "streamcap_box-b"}
        assert all(c["availability"][0]["topic"] == f"streamcap/{c['device']['identifiers'][0][10:]}/status" for c in configs.values())
        # when one box dies without a goodbye, then only its will fires; the other keeps working
        boxes["box-a"].send_signal(signal.SIGKILL)
        boxes["box-a"].wait(10)
        wait_until(lambda: status("box-a") == "offline", 30, "box-a's last will")
        before = len(sub.on("streamcap/box-b/gate/caption"))
        wait_until(lambda: len(sub.on("streamcap/box-b/gate/caption")) > before, 60, "box-b still captioning")
        assert status("box-b") == "online"
        # and the other stops cleanly: `stopped`, exit 0
        boxes["box-b"].send_signal(signal.SIGTERM)
        assert boxes["box-b"].wait(30) == 0
        wait_until(lambda: status("box-b") == "stopped", 10, "box-b stopped")
    finally:
        for proc in boxes.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def test_an_alarm_left_open_by_a_killed_box_ends_when_the_box_starts_again(mosquitto, tmp_path, subscriber_factory, clip):
    # given a box whose rule matches every caption, so an alarm is open while it runs
    sub = subscriber_factory(mosquitto, ["streamcap/box/gate/alarm"], qos=1, persistent=True)
    proc = start_box(tmp_path, "box", mosquitto, clip)
    try:
        def docs():
            return [json.loads(m.payload) for m in sub.on("/alarm")]

        wait_until(lambda: any(d["type"] == "new" for d in docs()), 120, "the first alarm")
        first = next(d for d in docs() if d["type"] == "new")["id"]
        # when the box is killed without a chance to end it, and started again
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert not any(d["id"] == first and d["type"] == "end" for d in docs())
        proc = start_box(tmp_path, "box", mosquitto, clip)
        # then the alarm it left open ends, marked as ended by the restart, after its last message
        wait_until(lambda: any(d["id"] == first and d["type"] == "end" for d in docs()), 120, "the orphaned alarm's end")
        mine = list({d["seq"]: d for d in docs() if d["id"] == first}.values())  # at-least-once: drop re-sends by seq
        assert [d["seq"] for d in mine] == list(range(len(mine)))
        end = mine[-1]
        assert end["ended_by"] == "restart" and end["end_time"] == mine[-2]["time"] and end["start_time"] == mine[0]["start_time"]
        # and the new run's own alarm ends as the rule decides when it stops cleanly (nothing left for a third start)
        wait_until(lambda: any(d["id"] != first and d["type"] == "new" for d in docs()), 120, "the new run's alarm")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        wait_until(lambda: any(d["id"] != first and d["type"] == "end" for d in docs()), 30, "the new run's end on stop")
        assert all("ended_by" not in d for d in docs() if d["id"] != first)
        from streamcap.publish.spool import AlarmSpool

        with AlarmSpool(tmp_path / "box" / "spool") as spool:
            assert spool.orphaned_alarms() == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
