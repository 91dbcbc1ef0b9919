"""A site's central history: deploy/postgres/ fed from a running box's MQTT captions and alarms, in a real
PostgreSQL (started by the test as a non-root user on a free loopback port) and a real mosquitto."""
from __future__ import annotations

import io
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import pytest

from mqtt_fixtures import free_port, wait_until
from streamcap.app import build
from streamcap.config.schema import StreamcapConfig
from streamcap.model.decoding import Description

REPO = Path(__file__).resolve().parents[2]
POSTGRES = REPO / "deploy" / "postgres"


def postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name), reverse=True)
    if found:
        return found[0].parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


class Postgres:
    """One PostgreSQL server in a private folder, run as a non-root user, killed by PID."""

    def __init__(self, bindir: Path, user: pwd.struct_passwd | None) -> None:
        self.bindir, self.user = bindir, user
        self.dir = Path(tempfile.mkdtemp(prefix="streamcap-postgres-"))
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.proc: subprocess.Popen | None = None

    def _run_as(self) -> dict:
        return {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []} if self.user else {}

    def start(self) -> "Postgres":
        if self.user is not None:
            os.chown(self.dir, self.user.pw_uid, self.user.pw_gid)
        data = self.dir / "data"
        subprocess.run([self.bindir / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"],
                       check=True, capture_output=True, **self._run_as())
        log = open(self.dir / "postgres.log", "wb")
        self.proc = subprocess.Popen(
            [self.bindir / "postgres", "-D", data, "-p", str(self.port), "-k", self.dir, "-c", "listen_addresses=127.0.0.1",
             "-c", "fsync=off"], stdout=log, stderr=subprocess.STDOUT, **self._run_as())
        log.close()
        wait_until(lambda: self.proc.poll() is not None or subprocess.run(
            [self.bindir / "pg_isready", "-h", "127.0.0.1", "-p", str(self.port)], capture_output=True).returncode == 0,
            30, "PostgreSQL to accept connections", interval_s=0.2)
        assert self.proc.poll() is None, (self.dir / "postgres.log").read_text()
        return self

    def psql(self, *args: str, sql: str | None = None) -> str:
        command = [self.bindir / "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", self.url, *args]
        if sql is not None:
            command += ["-c", sql]
        return subprocess.run(command, check=True, capture_output=True, text=True).stdout

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def postgres():
    bindir = postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (apt-get install -y postgresql)")
    for tool in ("jq", "mosquitto_sub"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (apt-get install -y jq mosquitto-clients)")
    user = None
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no postgres user to run PostgreSQL as")
    server = Postgres(bindir, user)
    try:
        yield server.start()
    finally:
        server.stop()


class VanAtTheGate:
    model_name = "fake"

    def describe(self, frames):
        return [Description("a white van parked in front of the gate", {"person": 0.02, "vehicle": 0.93}) for _ in frames]


def test_a_central_postgresql_fed_from_mqtt_finds_what_every_box_saw(tmp_path, mosquitto, postgres):
    # given the schema in a real PostgreSQL and the documented pipeline running against a real broker
    postgres.psql("-f", str(POSTGRES / "schema.sql"))
    env = {**os.environ, "MQTT_HOST": "127.0.0.1", "MQTT_PORT": str(mosquitto.port), "PGURL": postgres.url,
           "MQTT_CLIENT_ID": "history-sink-test", "MQTT_PREFIX": "acme/streamcap", "PATH": f"{postgres.bindir}{os.pathsep}{os.environ['PATH']}"}
    sink = subprocess.Popen([POSTGRES / "mqtt-to-postgres.sh"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    clip = tmp_path / "gate.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    for i in range(10):
        writer.write(np.full((120, 160, 3), 60 + i, np.uint8))
    writer.release()
    rules = tmp_path / "rules.yaml"
    rules.write_text("- id: vehicle_at_gate\n  cameras: [gate]\n  triggers: [{trigger: caption, any: ['@vehicle']}]\n")
    config = StreamcapConfig.model_validate({
        "device_id": "site-a-box1",
        "cameras": {"gate": {"url": str(clip), "loop": True, "caption_interval_s": 0.3}},
        "rules": {"paths": [str(rules)], "reload": False},
        "mqtt": {"host": "127.0.0.1", "port": mosquitto.port, "prefix": "acme/streamcap", "spool_dir": str(tmp_path / "spool"),
                 "homeassistant": {"enabled": False}},
        "outputs": {"console": False},
        "history": {"enabled": False},
    })
    app = None
    try:
        time.sleep(1.0)  # the sink subscribes before the box publishes
        assert sink.poll() is None, sink.communicate()
        app = build(config, captioner=VanAtTheGate(), console_stream=io.StringIO())
        app.start()
        # when the box captions and alarms for a while
        count = lambda kind: int(postgres.psql(sql=f"SELECT count(*) FROM streamcap_events WHERE kind = '{kind}'"))  # noqa: E731
        wait_until(lambda: count("caption") >= 5 and count("alarm") >= 1, 60, "captions and an alarm in PostgreSQL",
                   interval_s=0.3)
        # then a full-text search finds them, with the box and camera taken from the topic
        rows = postgres.psql(sql="SELECT device, camera, kind, caption FROM streamcap_search('white vans', interval '1 hour')")
        device, camera, kind, caption = rows.splitlines()[0].split("|")
        assert (device, camera, caption) == ("site-a-box1", "gate", "a white van parked in front of the gate")
        assert kind in ("caption", "alarm")
        alarm = json.loads(postgres.psql(sql="SELECT doc FROM streamcap_events WHERE kind = 'alarm' ORDER BY id LIMIT 1"))
        assert alarm["rule"] == "vehicle_at_gate" and alarm["type"] == "new"
        # and a hostile payload is stored as text, never run as SQL
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="hostile")
        client.connect("127.0.0.1", mosquitto.port)
        client.loop_start()
        hostile = "x'); DROP TABLE streamcap_events; --"
        client.publish("acme/streamcap/intruder/gate/caption", json.dumps(
            {"camera": "gate", "time": "2026-01-01T00:00:00+00:00", "caption": hostile}), qos=1).wait_for_publish(10)
        client.loop_stop()
        client.disconnect()
        wait_until(lambda: postgres.psql(sql="SELECT count(*) FROM streamcap_events WHERE device = 'intruder'").strip() == "1",
                   30, "the hostile message stored", interval_s=0.3)
        assert postgres.psql(sql="SELECT caption FROM streamcap_events WHERE device = 'intruder'").strip() == hostile
    finally:
        if app is not None:
            app.stop()
        os.killpg(sink.pid, signal.SIGTERM)  # the pipeline's own process group: mosquitto_sub, jq, psql
        sink.communicate(timeout=10)
