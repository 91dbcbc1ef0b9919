"""A real Home Assistant per test (or per module), wired to the test's real mosquitto.

Install it once with `bash tests/integration/ha_setup.sh` (its own venv under .cache/,
or $STREAMCAP_HA_VENV); tests skip with that hint when it is missing.

Fixtures (import the ones you use, and those they depend on, into the test module or a
conftest, like mqtt_fixtures; all of them depend on `ha_installed`, which skips):
- `home_assistant`: a Home Assistant on the `mosquitto` fixture's broker, for one test.
- `home_assistant_factory`: `make(broker)` for a given Mosquitto (per test; stopped after it).
- `ha_mosquitto` + `home_assistant_module`: one broker (it logs subscriptions, for
  wait_subscribed) and one Home Assistant for a whole test module. HA took 3-5 s to be ready
  here; allow far more on a loaded machine (STREAMCAP_HA_START_TIMEOUT, default 600 s).

Each instance gets a fresh config dir: configuration.yaml with http on 127.0.0.1 (free port),
api, config and logger (MQTT at debug level), and the MQTT integration pre-seeded as a config
entry in .storage/core.config_entries (discovery on, prefix "homeassistant"). `hass --skip-pip`
runs in its own process group with its own log; start() returns once the REST API answers, an
owner was created through onboarding (its access token is used for the API), HA is RUNNING and
the MQTT entry is loaded, connected and subscribed to the discovery topics. Teardown sends
SIGTERM to the PID, then SIGKILL to the process group, and removes the directory (kept when
STREAMCAP_HA_KEEP=1, for reading its log).
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from mqtt_fixtures import Mosquitto, _running, find_mosquitto, free_port

REPO = Path(__file__).resolve().parents[2]
HA_VERSION = "2024.3.3"  # what ha_setup.sh installs
DISCOVERY_PREFIX = "homeassistant"
# Home Assistant is slow to start on a busy 2-core machine; both can be raised from outside.
START_TIMEOUT_S = float(os.environ.get("STREAMCAP_HA_START_TIMEOUT", "600"))
STOP_TIMEOUT_S = float(os.environ.get("STREAMCAP_HA_STOP_TIMEOUT", "60"))
HTTP_TIMEOUT_S = 30.0
SETUP_HINT = "bash tests/integration/ha_setup.sh"

T = TypeVar("T")


def ha_venv() -> Path:
    return Path(os.environ.get("STREAMCAP_HA_VENV", REPO / ".cache" / "ha-venv"))


def ha_missing_reason() -> str | None:
    """Why Home Assistant cannot run here (None when it can)."""
    venv = ha_venv()
    marker = venv / ".streamcap-ha-ready"
    if not (venv / "bin" / "hass").is_file() or not marker.is_file():
        return f"Home Assistant is not installed in {venv} (make it with: {SETUP_HINT})"
    installed = marker.read_text().splitlines()[:1]
    if installed != [f"homeassistant=={HA_VERSION}"]:
        return f"{venv} has {installed or 'an unknown version'}, not homeassistant=={HA_VERSION} (run: {SETUP_HINT})"
    return None


class HAError(RuntimeError):
    """An API call failed (retried while Home Assistant is starting)."""


class HAStartFailed(RuntimeError):
    """Home Assistant cannot come up as configured: stop waiting at once."""


# Lines in HA's log that mean the start has failed for good (our config is at fault).
_FATAL_START_LINES = ("Activating recovery mode", "Invalid config for")


class _WebSocket:
    """Just enough of a websocket client (RFC 6455, text frames, no extensions) for HA's API."""

    def __init__(self, host: str, port: int, path: str, timeout_s: float) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout_s)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        self._buffer = b""
        while b"\r\n\r\n" not in self._buffer:
            self._buffer += self._recv_some()
        head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 101"):
            raise HAError(f"websocket upgrade refused: {head[:200]!r}")

    def _recv_some(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise HAError("websocket closed by Home Assistant")
        return chunk

    def _read(self, n: int) -> bytes:
        while len(self._buffer) < n:
            self._buffer += self._recv_some()
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        n = len(payload)
        header = bytes([0x80 | opcode])
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", n)
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def send_json(self, message: dict) -> None:
        self._send_frame(0x1, json.dumps(message).encode())

    def receive_json(self) -> Any:
        message = b""
        while True:
            first, second = self._read(2)
            opcode, n = first & 0x0F, second & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", self._read(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", self._read(8))
            mask = self._read(4) if second & 0x80 else None
            payload = self._read(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == 0x8:
                raise HAError(f"websocket closed by Home Assistant: {payload!r}")
            if opcode == 0x9:
                self._send_frame(0xA, payload)  # pong
                continue
            if opcode in (0x1, 0x0):
                message += payload
                if first & 0x80:
                    return json.loads(message)

    def close(self) -> None:
        try:
            self._send_frame(0x8, struct.pack("!H", 1000))
        except OSError:
            pass
        self.sock.close()


class HomeAssistant:
    """One `hass` process with a private config dir, talking to one Mosquitto."""

    def __init__(self, broker: Mosquitto, venv: Path | None = None,
                 discovery_prefix: str = DISCOVERY_PREFIX) -> None:
        self.broker = broker
        self.venv = venv or ha_venv()
        self.discovery_prefix = discovery_prefix
        self.host = "127.0.0.1"
        self.port = free_port()
        self.url = f"http://{self.host}:{self.port}"
        self.client_id = f"{self.url}/"
        self.dir = Path(tempfile.mkdtemp(prefix="streamcap-ha-"))
        self.config_dir = self.dir / "config"
        self.log_path = self.dir / "home-assistant.log"
        self.stdout_path = self.dir / "hass.stdout.log"
        self.proc: subprocess.Popen | None = None
        self.token: str | None = None
        self._refresh_token: str | None = None
        self._token_expires = 0.0
        self.mqtt_entry_id = uuid.uuid4().hex
        self.timings: dict[str, float] = {}  # seconds from Popen: http, onboarded, running, mqtt (= ready)
        self._stdout = None
        self._write_config()

    # ---- config dir -------------------------------------------------------------------
    def _write_config(self) -> None:
        self.config_dir.mkdir(parents=True)
        # Every location field is set, so Home Assistant never looks its location up online.
        (self.config_dir / "configuration.yaml").write_text(f"""\
homeassistant:
  name: streamcap test
  latitude: 52.37
  longitude: 4.89
  elevation: 0
  unit_system: metric
  time_zone: UTC
  currency: EUR
  country: NL
  language: en
http:
  server_host: {self.host}
  server_port: {self.port}
api:
config:
logger:
  default: warning
  logs:
    homeassistant.bootstrap: info
    homeassistant.setup: info
    # debug: "Subscribing to <topic>" lines (wait_subscribed) and every received message.
    homeassistant.components.mqtt: debug
""")
        storage = self.config_dir / ".storage"
        storage.mkdir()
        # The storage format of homeassistant/config_entries.py (STORAGE_VERSION 1) and the
        # entry data of the MQTT config flow (homeassistant/components/mqtt/config_flow.py).
        entry = {
            "entry_id": self.mqtt_entry_id,
            "version": 1,
            "minor_version": 1,
            "domain": "mqtt",
            "title": self.broker.host,
            "data": {
                "broker": self.broker.host,
                "port": self.broker.port,
                "discovery": True,
                "discovery_prefix": self.discovery_prefix,
            },
            "options": {},
            "pref_disable_new_entities": False,
            "pref_disable_polling": False,
            "source": "user",
            "unique_id": None,
            "disabled_by": None,
        }
        (storage / "core.config_entries").write_text(json.dumps(
            {"version": 1, "minor_version": 1, "key": "core.config_entries", "data": {"entries": [entry]}},
            indent=2))

    # ---- process ----------------------------------------------------------------------
    def start(self, timeout_s: float = START_TIMEOUT_S) -> "HomeAssistant":
        assert self.proc is None, "Home Assistant already started"
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
        env["PATH"] = f"{self.venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
        self._stdout = open(self.stdout_path, "ab")
        started = time.monotonic()
        self.proc = subprocess.Popen(
            [str(self.venv / "bin" / "hass"), "--config", str(self.config_dir), "--skip-pip",
             "--log-file", str(self.log_path), "--log-no-color"],
            stdin=subprocess.DEVNULL, stdout=self._stdout, stderr=subprocess.STDOUT, env=env,
            cwd=self.dir, start_new_session=True)
        deadline = started + timeout_s

        def step(name: str, predicate: Callable[[], Any], what: str) -> Any:
            result = self._poll(predicate, deadline, what, during_start=True)
            self.timings[name] = round(time.monotonic() - started, 1)
            return result

        try:
            step("http", self._onboarding_answers, "the HTTP API (GET /api/onboarding)")
            self._onboard()
            self.timings["onboarded"] = round(time.monotonic() - started, 1)
            step("running", lambda: self.api("GET", "/api/config").get("state") == "RUNNING",
                 "Home Assistant to be RUNNING")
            step("mqtt", self._mqtt_ready, "the MQTT integration to load, connect and subscribe to discovery")
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def startup_s(self) -> float | None:
        return self.timings.get("mqtt")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM (HA stops cleanly), SIGKILL to the group after STOP_TIMEOUT_S; no process left behind."""
        proc = self.proc
        if proc is not None:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    pass
            # The group has the PID as its id (start_new_session); it also takes any child left.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait(10)
        if self._stdout is not None:
            self._stdout.close()
            self._stdout = None

    def cleanup(self) -> None:
        self.stop()
        if os.environ.get("STREAMCAP_HA_KEEP") == "1":
            print(f"Home Assistant dir kept: {self.dir}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    # ---- start steps ------------------------------------------------------------------
    def _onboarding_answers(self) -> bool:
        try:
            status, _ = self._request("GET", "/api/onboarding", auth=False, timeout=5)
        except OSError:
            return False
        return status == 200

    def _onboard(self) -> None:
        """Create the owner through onboarding (as the frontend does) and take its tokens."""
        status, body = self._request("POST", "/api/onboarding/users", auth=False, body={
            "client_id": self.client_id, "name": "Streamcap Test", "username": "streamcap-test",
            "password": "streamcap-test-8413", "language": "en"})
        if status != 200:
            raise HAError(f"onboarding user step answered {status}: {body!r}")
        self._token_grant({"grant_type": "authorization_code", "code": body["auth_code"],
                           "client_id": self.client_id})

    def _token_grant(self, form: dict[str, str]) -> None:
        status, body = self._request("POST", "/auth/token", auth=False, form=form)
        if status != 200:
            raise HAError(f"/auth/token answered {status}: {body!r}")
        self.token = body["access_token"]
        self._refresh_token = body.get("refresh_token", self._refresh_token)
        self._token_expires = time.monotonic() + float(body.get("expires_in", 1800))

    def _mqtt_ready(self) -> bool:
        entries = self.api("GET", "/api/config/config_entries/entry")
        entry = next((e for e in entries if e.get("entry_id") == self.mqtt_entry_id), None)
        if entry is None:
            raise HAStartFailed(f"the MQTT config entry {self.mqtt_entry_id} was not loaded from "
                                f".storage/core.config_entries\n{self.diagnostics()}")
        if entry.get("state") in ("setup_error", "migration_error", "failed_unload"):
            raise HAStartFailed(f"the MQTT config entry is in state {entry.get('state')}: "
                                f"{entry.get('reason')}\n{self.diagnostics()}")
        if entry.get("state") != "loaded":
            return False
        log = self.log_text()
        return (f"Connected to MQTT server {self.broker.host}:{self.broker.port}" in log
                and f"Subscribing to {self.discovery_prefix}/+/+/config," in log)

    # ---- HTTP -------------------------------------------------------------------------
    def _auth_header(self) -> dict[str, str]:
        if self.token is None:
            raise HAError("no access token yet")
        if self._refresh_token and time.monotonic() > self._token_expires - 120:
            self._token_grant({"grant_type": "refresh_token", "refresh_token": self._refresh_token,
                               "client_id": self.client_id})
        return {"Authorization": f"Bearer {self.token}"}

    def _request(self, method: str, path: str, auth: bool = True, body: Any = None,
                 form: dict[str, str] | None = None, raw: bool = False,
                 timeout: float = HTTP_TIMEOUT_S) -> tuple[int, Any]:
        headers = self._auth_header() if auth else {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        elif form is not None:
            data = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        url = path if path.startswith("http") else self.url + path
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status, payload, ctype = response.status, response.read(), response.headers.get("Content-Type", "")
        except urllib.error.HTTPError as err:
            status, payload, ctype = err.code, err.read(), err.headers.get("Content-Type", "")
        if raw:
            return status, (payload, ctype)
        if "json" in ctype and payload:
            return status, json.loads(payload)
        return status, payload.decode(errors="replace")

    def api(self, method: str, path: str, body: Any = None) -> Any:
        """An authenticated REST call; raises HAError unless it answers 200/201."""
        status, payload = self._request(method, path, body=body)
        if status not in (200, 201):
            raise HAError(f"{method} {path} answered {status}: {payload!r}")
        return payload

    def get_bytes(self, path: str) -> tuple[bytes, str]:
        """GET with the token (e.g. an image entity's entity_picture); returns (body, content type)."""
        status, (payload, ctype) = self._request("GET", path, raw=True)
        if status != 200:
            raise HAError(f"GET {path} answered {status}: {payload[:200]!r}")
        return payload, ctype

    def states(self) -> list[dict]:
        return self.api("GET", "/api/states")

    def state(self, entity_id: str) -> dict | None:
        status, payload = self._request("GET", f"/api/states/{entity_id}")
        if status == 404:
            return None
        if status != 200:
            raise HAError(f"GET /api/states/{entity_id} answered {status}: {payload!r}")
        return payload

    # ---- websocket --------------------------------------------------------------------
    def ws(self, *commands: dict, timeout_s: float = HTTP_TIMEOUT_S) -> list[dict]:
        """Websocket commands (without "id") on one connection; returns their result messages."""
        self._auth_header()  # refreshes the token if needed
        ws = _WebSocket(self.host, self.port, "/api/websocket", timeout_s)
        try:
            ws.receive_json()  # auth_required
            ws.send_json({"type": "auth", "access_token": self.token})
            reply = ws.receive_json()
            if reply.get("type") != "auth_ok":
                raise HAError(f"websocket auth failed: {reply}")
            results = []
            for number, command in enumerate(commands, 1):
                ws.send_json({"id": number, **command})
                while not ((reply := ws.receive_json()).get("id") == number and reply.get("type") == "result"):
                    pass
                results.append(reply)
            return results
        finally:
            ws.close()

    def _ws_list(self, command: str) -> list[dict]:
        (reply,) = self.ws({"type": command})
        if not reply.get("success"):
            raise HAError(f"{command}: {reply}")
        return reply["result"]

    def entity_registry(self) -> list[dict]:
        """`config/entity_registry/list`: entity_id, unique_id, platform, device_id, ..."""
        return self._ws_list("config/entity_registry/list")

    def device_registry(self) -> list[dict]:
        """`config/device_registry/list`: id, identifiers ([["mqtt", ...]]), name, model, ..."""
        return self._ws_list("config/device_registry/list")

    def entity_id_for(self, unique_id: str, platform: str = "mqtt") -> str | None:
        for entry in self.entity_registry():
            if entry.get("unique_id") == unique_id and entry.get("platform") == platform:
                return entry["entity_id"]
        return None

    # ---- waiting and logs -------------------------------------------------------------
    def _poll(self, predicate: Callable[[], T], deadline: float, what: str, interval_s: float = 0.25,
              during_start: bool = False) -> T:
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise HAError(f"Home Assistant exited with {self.proc.returncode} while waiting for {what}\n"
                              f"{self.diagnostics()}")
            if during_start:
                log = self.log_text()
                fatal = next((line for line in log.splitlines() if any(f in line for f in _FATAL_START_LINES)), None)
                if fatal is not None:
                    raise HAStartFailed(f"Home Assistant failed to start: {fatal}\n{self.diagnostics()}")
            try:
                result = predicate()
            except (OSError, HAError):
                if not during_start or time.monotonic() > deadline:
                    raise
                result = None
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}\n{self.diagnostics()}")
            time.sleep(interval_s)

    def wait_for(self, predicate: Callable[[], T], timeout_s: float, what: str, interval_s: float = 0.25) -> T:
        """Poll predicate() until it returns something truthy, and return that; fail naming `what`."""
        return self._poll(predicate, time.monotonic() + timeout_s, f"{what} ({timeout_s:.0f} s)", interval_s)

    def wait_for_state(self, entity_id: str, expected: str | Callable[[dict], bool], timeout_s: float = 60.0) -> dict:
        """Wait until entity_id exists and its state equals `expected` (or expected(state_dict) holds)."""
        def check() -> dict | None:
            current = self.state(entity_id)
            if current is None:
                return None
            ok = expected(current) if callable(expected) else current["state"] == expected
            return current if ok else None

        what = f"{entity_id} to be {expected!r}" if not callable(expected) else f"{entity_id} to match"
        return self.wait_for(check, timeout_s, what)

    def wait_for_entity(self, unique_id: str, timeout_s: float = 60.0, platform: str = "mqtt") -> str:
        """Wait until an entity with this unique_id is registered and has a state; returns its entity_id."""
        def check() -> str | None:
            entity_id = self.entity_id_for(unique_id, platform)
            return entity_id if entity_id and self.state(entity_id) is not None else None

        return self.wait_for(check, timeout_s, f"an entity with unique_id {unique_id!r}", interval_s=0.5)

    def wait_log(self, text: str, timeout_s: float = 60.0) -> str:
        """Wait until `text` is in HA's log; returns the first line that has it."""
        def check() -> str | None:
            return next((line for line in self.log_text().splitlines() if text in line), None)

        return self.wait_for(check, timeout_s, f"{text!r} in the Home Assistant log")

    def wait_subscribed(self, topic: str, timeout_s: float = 60.0) -> None:
        """Wait until HA's subscription to `topic` is in place.

        An entity is in /api/states a moment before its topics are subscribed (HA batches
        SUBSCRIBEs), so a non-retained message sent in between is lost. This waits for HA's
        "Subscribing to <topic>" log line and, when the broker logs subscriptions (ha_mosquitto
        does), for the broker's own record of it, after which nothing published is missed.
        """
        self.wait_log(f"Subscribing to {topic},", timeout_s)
        if "log_type subscribe" in self.broker.conf.read_text():
            def broker_has_it() -> bool:
                try:
                    text = self.broker.log_path.read_text(errors="replace")
                except OSError:
                    return False
                return any(line.endswith(f" {topic}") for line in text.splitlines())

            self.wait_for(broker_has_it, timeout_s, f"mosquitto to log the subscription to {topic}")

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def diagnostics(self, lines: int = 40) -> str:
        def tail(path: Path) -> str:
            try:
                return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
            except OSError:
                return "(none)"

        return (f"--- {self.log_path} (last {lines} lines)\n{tail(self.log_path)}\n"
                f"--- {self.stdout_path}\n{tail(self.stdout_path)}\n--- mosquitto\n{self.broker.log_tail()}")


class SubscribeLoggingMosquitto(Mosquitto):
    """Mosquitto that also logs each SUBSCRIBE it has processed (for wait_subscribed)."""

    def _write_config(self) -> None:
        super()._write_config()
        with open(self.conf, "a") as conf:
            conf.write("log_type subscribe\nlog_type unsubscribe\n")


def _require_ha() -> None:
    reason = ha_missing_reason()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def ha_installed() -> Path:
    """The HA venv (skips the test when it is missing)."""
    _require_ha()
    return ha_venv()


@pytest.fixture
def home_assistant_factory(ha_installed):
    """make(broker) -> a started HomeAssistant on that broker; all are stopped after the test
    (request the broker's fixture before this one, so they stop before it does)."""
    made: list[HomeAssistant] = []

    def make(broker: Mosquitto, **kwargs) -> HomeAssistant:
        ha = HomeAssistant(broker, **{"venv": ha_installed, **kwargs})
        made.append(ha)
        return ha.start()

    try:
        yield make
    finally:
        for ha in made:
            ha.cleanup()


@pytest.fixture
def home_assistant(ha_installed, mosquitto):
    """A Home Assistant on the `mosquitto` fixture's broker, for one test (stopped before the broker)."""
    ha = HomeAssistant(mosquitto, venv=ha_installed)
    try:
        yield ha.start()
    finally:
        ha.cleanup()


@pytest.fixture(scope="module")
def ha_mosquitto():
    """A broker for the whole module (home_assistant_module needs one that lives as long)."""
    binary = find_mosquitto()
    if binary is None:
        pytest.skip("mosquitto is not installed (apt-get install -y mosquitto mosquitto-clients)")
    yield from _running(SubscribeLoggingMosquitto(binary))


@pytest.fixture(scope="module")
def home_assistant_module(ha_installed, ha_mosquitto):
    """One Home Assistant on ha_mosquitto for the whole module: tests must use distinct topics and ids."""
    ha = HomeAssistant(ha_mosquitto, venv=ha_installed)
    try:
        yield ha.start()
    finally:
        ha.cleanup()
