"""A real mosquitto per test, plus a paho subscriber that records what arrives.

Load from conftest.py with `pytest_plugins = ["tests.integration.mqtt_fixtures"]`
(or `from tests.integration.mqtt_fixtures import *`).

The broker binds 127.0.0.1 on a free port, keeps its state in a private
directory (persistence on, so a persistent subscriber session and its queued
QoS 1 messages survive `restart()`), logs to `mosquitto.log` there, and is
killed by PID in teardown. Tests skip with a reason when mosquitto is missing.
"""
from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

START_TIMEOUT_S = 15.0


def find_mosquitto() -> str | None:
    # Debian installs it in /usr/sbin, which a non-root PATH may lack.
    return shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.02) -> None:
    """Poll until predicate() holds; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


def make_test_pki(directory: Path) -> dict[str, Path]:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate."""
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=streamcap-test-ca",
        "-keyout", "ca.key", "-out", "ca.crt")
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name, cn in (("server", "127.0.0.1"), ("client", "streamcap-test-client")):
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}", "-keyout", f"{name}.key",
            "-out", f"{name}.csr")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-out", f"{name}.crt", "-extfile", "san.ext")
    return {name: directory / name for name in
            ("ca.crt", "server.crt", "server.key", "client.crt", "client.key")}


class Mosquitto:
    def __init__(self, binary: str, users: dict[str, str] | None = None, port: int | None = None,
                 tls: bool = False, acl: str | None = None) -> None:
        self.binary = binary
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.users = users or {}
        self.dir = Path(tempfile.mkdtemp(prefix="streamcap-mosquitto-"))
        self.log_path = self.dir / "mosquitto.log"
        self.proc: subprocess.Popen | None = None
        self._log_file = None
        # TLS with client certificates required: paths under "ca.crt", "client.crt", ...
        self.pki = make_test_pki(self.dir) if tls else None
        self.acl = acl  # mosquitto acl_file text: which topics clients may read and write
        self._write_config()

    def _write_config(self) -> None:
        lines = [
            f"listener {self.port} {self.host}",
            "persistence true",
            f"persistence_location {self.dir}/",
            # Save after every change, so even a SIGKILL keeps subscriptions
            # (and their queued messages) for the restarted broker.
            "autosave_on_changes true",
            "autosave_interval 1",
            "max_queued_messages 100000",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
        ]
        if self.pki is not None:
            lines += [f"cafile {self.pki['ca.crt']}", f"certfile {self.pki['server.crt']}",
                      f"keyfile {self.pki['server.key']}", "require_certificate true"]
        if self.users:
            pwfile = self.dir / "passwd"
            pwfile.touch()
            for user, password in self.users.items():
                subprocess.run(["mosquitto_passwd", "-b", str(pwfile), user, password], check=True,
                               capture_output=True)
            pwfile.chmod(0o600)
            lines += ["allow_anonymous false", f"password_file {pwfile}"]
        else:
            lines.append("allow_anonymous true")
        if self.acl is not None:
            (self.dir / "acl").write_text(self.acl)
            lines.append(f"acl_file {self.dir / 'acl'}")
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        if os.geteuid() == 0:
            # Started as root, mosquitto drops to the user `mosquitto`, which
            # must own the password file (0600) and the persistence directory.
            try:
                user = pwd.getpwnam("mosquitto")
            except KeyError:
                return
            for path in [self.dir, *self.dir.iterdir()]:
                os.chown(path, user.pw_uid, user.pw_gid)

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "mosquitto already running"
        self._log_file = open(self.log_path, "ab")
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=self._log_file,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                socket.create_connection((self.host, self.port), timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(f"mosquitto did not listen on {self.port}: {self.log_tail()}")
                time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM: mosquitto saves its persistence file and closes every session."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        self._end(signal.SIGKILL)

    def freeze(self) -> None:
        """SIGSTOP: connections stay open but nothing is read or acknowledged (a hung broker)."""
        assert self.proc is not None and self.proc.poll() is None, "mosquitto is not running"
        os.kill(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, "mosquitto is not running"
        os.kill(self.proc.pid, signal.SIGCONT)

    def set_acl(self, text: str) -> None:
        """Rewrite the ACL and make the running broker reload it (SIGHUP), as an operator fixing it would."""
        acl = self.dir / "acl"
        acl.write_text(text)
        if os.geteuid() == 0:
            with contextlib.suppress(KeyError):
                user = pwd.getpwnam("mosquitto")
                os.chown(acl, user.pw_uid, user.pw_gid)
        assert self.proc is not None and self.proc.poll() is None, "mosquitto is not running"
        os.kill(self.proc.pid, signal.SIGHUP)

    def restart(self) -> None:
        self.stop()
        self.start()

    def _end(self, sig: int) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, sig)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def cleanup(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class Received:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool  # set by the broker when it re-delivers (e.g. after its restart)


@dataclass
class Subscriber:
    """A paho client in the test that records every message it gets.

    persistent=True uses a fixed client id and clean_session=False, so the
    broker queues QoS 1 messages while this subscriber is cut off (e.g. across
    a broker restart) and delivers them when it is back.
    """
    broker: Mosquitto
    topics: list[str]
    qos: int = 1
    persistent: bool = False
    username: str | None = None
    password: str | None = None
    tls: bool = False  # use the broker's test PKI (CA + client certificate)
    messages: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        client_id = f"test-sub-{os.getpid()}-{id(self):x}"
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=not self.persistent)
        if self.username:
            self.client.username_pw_set(self.username, self.password)
        if self.tls:
            pki = self.broker.pki
            self.client.tls_set(ca_certs=str(pki["ca.crt"]), certfile=str(pki["client.crt"]),
                                keyfile=str(pki["client.key"]))
        self.client.reconnect_delay_set(1, 1)  # come back quickly after a broker restart
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message

    def start(self) -> "Subscriber":
        self.client.connect(self.broker.host, self.broker.port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise AssertionError(f"subscriber not subscribed: {self.broker.log_tail()}")
        return self

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            return
        client.subscribe([(t, self.qos) for t in self.topics])

    def _on_message(self, client, userdata, msg) -> None:
        with self._lock:
            self.messages.append(Received(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain), bool(msg.dup)))

    def on(self, topic_suffix: str) -> list[Received]:
        with self._lock:
            return [m for m in self.messages if m.topic.endswith(topic_suffix)]

    def wait_for(self, predicate: Callable[["Subscriber"], bool], timeout_s: float, what: str) -> None:
        wait_until(lambda: predicate(self), timeout_s, what)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _running(broker: "Mosquitto"):
    """Start a broker for one test and always kill it (by PID) and remove its files after."""
    try:
        broker.start()
        yield broker
    finally:
        broker.cleanup()


@pytest.fixture
def mosquitto_binary() -> str:
    binary = find_mosquitto()
    if binary is None:
        pytest.skip("mosquitto is not installed (apt-get install -y mosquitto mosquitto-clients)")
    return binary


@pytest.fixture
def mosquitto(mosquitto_binary):
    yield from _running(Mosquitto(mosquitto_binary))


MQTT_TEST_USERS = {"streamcap": "gate-secret-8413"}


@pytest.fixture
def mosquitto_auth(mosquitto_binary):
    """A broker that accepts only MQTT_TEST_USERS (password file owned by mosquitto, 0600)."""
    yield from _running(Mosquitto(mosquitto_binary, users=MQTT_TEST_USERS))


@pytest.fixture
def mosquitto_tls(mosquitto_binary):
    """A TLS-only broker that requires a client certificate from its test CA."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed; it makes the test certificates")
    yield from _running(Mosquitto(mosquitto_binary, tls=True))


@pytest.fixture
def subscriber_factory():
    made: list[Subscriber] = []

    def make(broker: Mosquitto, topics: list[str], **kwargs) -> Subscriber:
        sub = Subscriber(broker, topics, **kwargs)
        made.append(sub)
        return sub.start()

    try:
        yield make
    finally:
        for sub in made:
            sub.stop()


def mqtt_config(tls_ca=None, tls_certfile=None, tls_keyfile=None, tls_insecure=False, use_tls=False, **fields):
    """A real MqttConfig from flat test arguments (`tls_ca=...` for the nested `tls:` block)."""
    from streamcap.config.schema import MqttConfig

    fields.setdefault("host", "127.0.0.1")
    if tls_ca or tls_certfile or use_tls:
        fields["tls"] = {"ca": tls_ca, "certfile": tls_certfile, "keyfile": tls_keyfile, "insecure": tls_insecure}
    return MqttConfig.model_validate(fields)
