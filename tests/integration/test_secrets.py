"""Secrets never leak: camera and MQTT passwords, right or wrong, appear in no output streamcap makes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from mqtt_fixtures import MQTT_TEST_USERS, free_port, wait_until

STREAMCAP = Path(sys.executable).with_name("streamcap")
CAMERA_PASSWORD = "cam-Pa55-7c2e91"
WRONG_CAMERA_PASSWORD = "not-the-Pa55-4b1"
WRONG_MQTT_PASSWORD = "wrong-mqtt-9d0f3a"
MQTT_USER, MQTT_PASSWORD = next(iter(MQTT_TEST_USERS.items()))


def forms(secret: str) -> list[str]:
    return [secret, urllib.parse.quote(secret), secret.encode().hex()]


def write_config(folder: Path, rtsp, mosquitto, http_port: int, broken: bool = False) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "rules.yaml").write_text('- id: anything\n  triggers: [{trigger: caption, regex: "."}]\n')
    config = folder / "streamcap.yaml"
    config.write_text(textwrap.dedent(f"""\
        device_id: secrets
        cameras:
          gate: {{url: "rtsp://admin:${{CAMERA_PASSWORD}}@127.0.0.1:{rtsp.port}/stream", caption_interval_s: 1}}
          yard: {{url: "rtsp://admin:{WRONG_CAMERA_PASSWORD}@127.0.0.1:{rtsp.port}/stream", open_timeout_s: 2{", caption_interval_s: -1" if broken else ""}}}
        model: {{backend: torch, max_batch: 2}}
        rules: {{paths: [rules.yaml]}}
        mqtt: {{host: 127.0.0.1, port: {mosquitto.port}, username: {MQTT_USER}, password: "${{MQTT_PASSWORD}}", spool_dir: spool}}
        outputs: {{console: true, jsonl: events.jsonl}}
        http: {{enabled: true, port: {http_port}}}
        """))
    return config


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode(errors="replace")


@pytest.mark.parametrize("mqtt_password", [MQTT_PASSWORD, WRONG_MQTT_PASSWORD], ids=["right-mqtt-password", "wrong-mqtt-password"])
def test_no_password_reaches_logs_outputs_payloads_metrics_health_the_page_or_errors(
        tmp_path, rtsp_server, mosquitto_auth, subscriber_factory, mqtt_password):
    rtsp = rtsp_server(pattern=True, user="admin", password=CAMERA_PASSWORD, digest=True)
    sub = subscriber_factory(mosquitto_auth, ["#"], username=MQTT_USER, password=MQTT_PASSWORD)
    http_port = free_port()
    config = write_config(tmp_path / "box", rtsp, mosquitto_auth, http_port)
    env = {**os.environ, "CAMERA_PASSWORD": CAMERA_PASSWORD, "MQTT_PASSWORD": mqtt_password}
    seen: dict[str, str] = {}
    proc = subprocess.Popen([str(STREAMCAP), "-v", "run", "-c", str(config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=config.parent, env=env, text=True)
    try:
        base = f"http://127.0.0.1:{http_port}"
        wait_until(lambda: _up(base), 120, "the http server")
        wait_until(lambda: '"caption"' in fetch(base + "/api/state") and json.loads(fetch(base + "/api/state"))["cameras"][0]["caption"],
                   120, "a caption of the camera with the right password")
        time.sleep(3)  # the wrong-password camera has failed a few times by now
        for path in ("/", "/api/state", "/metrics", "/healthz", "/cameras/gate/frame.jpg"):
            seen[f"http {path}"] = fetch(base + path)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    seen["stdout"], seen["stderr (the log, at debug level)"] = out, err
    seen["json lines"] = (config.parent / "events.jsonl").read_text()
    seen["mqtt payloads and topics"] = "\n".join(f"{m.topic} {m.payload.decode(errors='replace')}" for m in sub.messages)
    show = subprocess.run([str(STREAMCAP), "config", "show", str(config)], capture_output=True, text=True, env=env, timeout=60)
    seen["config show"] = show.stdout + show.stderr
    broken = write_config(tmp_path / "broken", rtsp, mosquitto_auth, http_port, broken=True)
    check = subprocess.run([str(STREAMCAP), "config", "check", str(broken)], capture_output=True, text=True, env=env, timeout=60)
    assert check.returncode == 2 and "caption_interval_s" in check.stderr
    seen["config check errors"] = check.stdout + check.stderr
    # the run really exercised both credentials: the right camera captioned, the wrong one was refused
    assert "401" in err or "Unauthorized" in err, "the wrong camera password was tried"
    if mqtt_password == MQTT_PASSWORD:
        assert any(m.topic.endswith("/gate/caption") for m in sub.messages)
    else:
        assert "not authorized" in err.lower() or "bad user name or password" in err.lower()
    for secret in (CAMERA_PASSWORD, WRONG_CAMERA_PASSWORD, MQTT_PASSWORD, WRONG_MQTT_PASSWORD):
        for where, text in seen.items():
            for form in forms(secret):
                assert form not in text, f"{secret!r} ({form!r}) appears in {where}"


def _up(base: str) -> bool:
    try:
        fetch(base + "/healthz")
        return True
    except OSError:
        return False
