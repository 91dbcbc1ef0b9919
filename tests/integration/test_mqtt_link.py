"""The connection to the broker: every state change said once with its reason, a broker that never answers,
two boxes with one device_id, and a second process on a spool folder already in use."""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mqtt_fixtures import free_port, mosquitto, mosquitto_binary, mqtt_config, wait_until  # noqa: F401 (fixtures)
from streamcap.metrics import Metrics
from streamcap.publish import mqtt_link
from streamcap.publish.mqtt import MqttPublisher

pytestmark = pytest.mark.integration

PROC = Path(__file__).with_name("mqtt_publisher_proc.py")
REPO = Path(__file__).resolve().parents[2]
DEADLINE_S = 20


class SilentBroker:
    """A TCP port that accepts connections and never says a word: a hung broker, or not an MQTT port at all."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.server.settimeout(0.2)
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.server.accept()
            except OSError:
                continue
            self.accepted.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for conn in self.accepted:
            conn.close()
        self.server.close()


def mqtt_lines(caplog, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("streamcap") and text in r.getMessage()]


def test_a_broker_that_accepts_tcp_and_never_answers_is_left_after_the_connect_timeout(tmp_path, caplog):
    # given a port that accepts TCP and never answers, and a 30 s keepalive (paho alone waits that long per try)
    silent = SilentBroker()
    metrics = Metrics()
    pub = MqttPublisher(mqtt_config(port=silent.port, spool_dir=str(tmp_path / "spool"), keepalive_s=30,
                                    connect_timeout_s=1, reconnect_min_s=0.5, reconnect_max_s=1), "dev", metrics)
    try:
        with caplog.at_level(logging.INFO, logger="streamcap"):
            # when it runs for 8 s
            pub.start()
            time.sleep(8)
        # then it tried again about every connect timeout + reconnect delay (not once per keepalive) ...
        assert len(silent.accepted) >= 3, f"{len(silent.accepted)} connection attempts in 8 s"
        # ... said why, once, and /healthz shows it
        lines = mqtt_lines(caplog, "did not answer within 1 s")
        assert len(lines) == 1, lines
        mqtt_health = metrics.health()["mqtt"]
        assert mqtt_health["state"] == "connecting" and "no CONNACK within 1 s" in mqtt_health["detail"]
    finally:
        pub.close(timeout_s=1)
        silent.close()


def test_a_hung_broker_that_recovers_is_connected_again_within_seconds(mosquitto, tmp_path, caplog):
    # given a broker that hangs (SIGSTOP: connections are accepted, nothing is answered)
    mosquitto.freeze()
    metrics = Metrics()
    pub = MqttPublisher(mqtt_config(host=mosquitto.host, port=mosquitto.port, spool_dir=str(tmp_path / "spool"),
                                    connect_timeout_s=1, reconnect_min_s=0.5, reconnect_max_s=1), "dev", metrics)
    try:
        with caplog.at_level(logging.INFO, logger="streamcap"):
            pub.start()
            wait_until(lambda: "no CONNACK" in metrics.health()["mqtt"]["detail"], DEADLINE_S, "the timeout in /healthz")
            # when it recovers
            mosquitto.thaw()
            # then the publisher connects, and the log tells the story in one line per change
            assert pub.wait_connected(DEADLINE_S), metrics.health()["mqtt"]
        said = [r.getMessage() for r in caplog.records if r.name == "streamcap.publish.mqtt"]
        assert any(line.startswith("mqtt: connecting to") for line in said), said
        assert sum("did not answer" in line for line in said) == 1, said
        assert any(line.startswith("mqtt: connected to") for line in said), said
    finally:
        pub.close(timeout_s=2)


def test_an_unreachable_broker_is_one_line_naming_the_reason(tmp_path, caplog):
    # given no broker at all on the port
    metrics = Metrics()
    port = free_port()
    pub = MqttPublisher(mqtt_config(port=port, spool_dir=str(tmp_path / "spool"), reconnect_min_s=0.2,
                                    reconnect_max_s=0.5), "dev", metrics)
    try:
        with caplog.at_level(logging.INFO, logger="streamcap"):
            pub.start()
            time.sleep(3)  # several attempts
        lines = mqtt_lines(caplog, "cannot connect to the broker")
        assert len(lines) == 1 and "Connection refused" in lines[0], lines
        assert "Connection refused" in metrics.health()["mqtt"]["detail"]
    finally:
        pub.close(timeout_s=1)


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_two_boxes_with_one_device_id_say_so_in_the_log_and_in_health(mosquitto, tmp_path, caplog, monkeypatch,
                                                                       protocol):
    # given two boxes configured with the same device_id (a copied config), on one broker
    monkeypatch.setattr(mqtt_link, "TAKEOVER_CLEAR_S", 3.0)
    boxes = []
    for name in ("first", "second"):
        metrics = Metrics()
        pub = MqttPublisher(mqtt_config(host=mosquitto.host, port=mosquitto.port, protocol=protocol,
                                        spool_dir=str(tmp_path / name), reconnect_min_s=0.5, reconnect_max_s=1),
                            "gate-box", metrics)
        boxes.append((pub, metrics))
    try:
        with caplog.at_level(logging.INFO, logger="streamcap"):
            # when both run
            for pub, _ in boxes:
                pub.start()
            # then each says another client took its session over, naming the device_id, and /healthz is failed
            for _, metrics in boxes:
                wait_until(lambda: any(p["problem"] == "session_taken_over" for p in metrics.health()["problems"]),
                           DEADLINE_S, "the takeover in /healthz")
                problem = next(p for p in metrics.health()["problems"] if p["problem"] == "session_taken_over")
                assert problem["device_id"] == "gate-box" and problem["status"] == "failed"
                assert metrics.health()["status"] == "failed"
            lines = mqtt_lines(caplog, "device_id 'gate-box'")
            assert 2 <= len(lines) <= 4, lines  # once per box (and once more if it clears and comes back)
            # when the second box goes away
            boxes[1][0].close(timeout_s=1)
            # then the first holds its session and /healthz clears
            wait_until(lambda: not boxes[0][1].health()["problems"], DEADLINE_S, "the takeover to clear")
    finally:
        for pub, _ in boxes:
            pub.close(timeout_s=1)


def test_a_box_restarted_while_its_old_session_hangs_starts_cleanly(mosquitto, tmp_path, caplog):
    # given a box that hung (SIGSTOP: its TCP connection stays open, the broker still holds its session)
    hung = subprocess.Popen([sys.executable, str(PROC), "--port", str(mosquitto.port), "--spool", str(tmp_path / "old"),
                             "--device", "gate-box", "--wait-connected", "--then", "hang"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert hung.stdout.readline().strip() == "connected"
        os.kill(hung.pid, signal.SIGSTOP)
        # when its replacement starts with the same device_id
        metrics = Metrics()
        pub = MqttPublisher(mqtt_config(host=mosquitto.host, port=mosquitto.port, spool_dir=str(tmp_path / "new")),
                            "gate-box", metrics)
        with caplog.at_level(logging.INFO, logger="streamcap"):
            pub.start()
            try:
                # then it connects and stays connected, with no takeover reported
                assert pub.wait_connected(DEADLINE_S), pub.last_error
                time.sleep(3)
                assert pub.connected and metrics.health()["problems"] == []
                assert not mqtt_lines(caplog, "device_id")
            finally:
                pub.close(timeout_s=2)
    finally:
        hung.kill()
        hung.wait(10)
        hung.stdout.close()


def test_a_second_streamcap_on_a_spool_folder_in_use_exits_2_with_one_line(mosquitto, tmp_path):
    # given a publisher process that holds the spool folder
    spool = tmp_path / "spool"
    holder = subprocess.Popen([sys.executable, str(PROC), "--port", str(mosquitto.port), "--spool", str(spool),
                               "--then", "hang"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert holder.stdout.readline().strip() == "spooled 0"
        config = tmp_path / "streamcap.yaml"
        config.write_text(f"cameras: {{}}\nmqtt: {{host: 127.0.0.1, port: {mosquitto.port}, spool_dir: {spool}}}\n")
        # when a second streamcap starts on the same folder
        done = subprocess.run([sys.executable, "-m", "streamcap", "run", "-c", str(config)], cwd=REPO,
                              capture_output=True, text=True, timeout=120)
        # then it refuses to start: exit 2, one line naming the folder and the process that holds it
        assert done.returncode == 2, done.stderr[-2000:]
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and str(spool) in lines[0] and f"pid {holder.pid}" in lines[0], lines
    finally:
        holder.kill()
        holder.wait(10)
        holder.stdout.close()
