"""The HTTP server's bounds and checks, against real clients over real loopback sockets."""
from __future__ import annotations

import base64
import logging
import socket
import threading
import time

import pytest

from streamcap.config.schema import HttpConfig
from streamcap.http import MetricsServer, is_loopback
from streamcap.metrics import Metrics
from streamcap.util.bounded_http import Limits
from streamcap.web.live import LivePage

TOKEN = "right-token-0123456789abcdef"


@pytest.fixture
def serve():
    servers = []

    def start(auth=None, allowed_hosts=(), **limits) -> MetricsServer:
        from streamcap.http import Auth

        server = MetricsServer(Metrics(), port=0, live=LivePage("box", ["gate"]),
                               auth=Auth(**auth) if auth else None, limits=Limits(**limits), allowed_hosts=allowed_hosts)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def request(port: int, head: bytes, timeout_s: float = 10.0) -> bytes:
    """Send `head` as is and read the whole answer (HTTP/1.0: the server closes after it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        try:
            sock.sendall(head)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before we finished sending: its answer is still there to read
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def get(port: int, path: str, host: str | None = "127.0.0.1", headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    lines = [f"GET {path} HTTP/1.0"] + ([f"Host: {host}"] if host is not None else []) + [f"{k}: {v}" for k, v in (headers or {}).items()]
    answer = request(port, ("\r\n".join(lines) + "\r\n\r\n").encode())
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest


def open_stream(port: int, host: str = "127.0.0.1") -> tuple[int, socket.socket]:
    """Open /events and read only its status line; the caller closes the socket."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(f"GET /events HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
    answer = b""
    while b"\r\n" not in answer:
        answer += sock.recv(100)
    return int(answer.split()[1]), sock


def request_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(("http-request", "Thread-"))]


def test_slow_clients_hold_no_thread_and_the_right_token_still_gets_healthz(serve):
    # given a server capped at 16 connections, and 200 clients that send half a request head and then nothing
    server = serve(auth={"token": TOKEN}, max_connections=16, max_streams=4, header_timeout_s=30)
    slow = []
    try:
        for _ in range(200):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.sendall(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\nX-Slow: ")
            slow.append(sock)
        refused = lambda: server._metrics.registry.get_sample_value("streamcap_http_refused_total", {"reason": "evicted"}) or 0
        deadline = time.monotonic() + 30
        while refused() < 200 - 16:  # the server has taken every connection from its backlog
            assert time.monotonic() < deadline, f"only {refused()} evicted"
            time.sleep(0.05)
        # then they hold no request thread, and the server keeps at most 16 of them open
        assert request_threads() == [], "a slow client must not hold a thread"
        assert server._server.open_connections() <= 16
        # and the right token gets /healthz at once, every time, while the flood lasts
        for _ in range(5):
            status, body = get(server.port, "/healthz", headers={"Authorization": f"Bearer {TOKEN}"})
            assert status == 200 and b'"status"' in body
        # and the ones that gave way were told so (503)
        answers = [s.recv(200) for s in slow[:10]]
        assert all(a.startswith(b"HTTP/1.0 503 ") for a in answers), answers
    finally:
        for sock in slow:
            sock.close()


def test_a_request_head_that_does_not_arrive_in_time_gets_408(serve):
    server = serve(header_timeout_s=0.5)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.0\r\n")
        started = time.monotonic()
        answer = sock.recv(200)
    assert answer.startswith(b"HTTP/1.0 408 Request Timeout")
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("head, status", [
    (b"GET /" + b"a" * 70_000 + b" HTTP/1.0\r\n\r\n", 414),
    (b"GET /healthz HTTP/1.0\r\n" + b"".join(b"X-Big-%d: %s\r\n" % (i, b"v" * 1000) for i in range(40)) + b"\r\n", 431),
    (b"GET /healthz HTTP/1.0\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(150)) + b"\r\n", 431),
])
def test_an_over_long_url_or_over_large_head_is_answered_cleanly(serve, caplog, head, status):
    server = serve()
    with caplog.at_level(logging.DEBUG):
        answer = request(server.port, head)
        # the server goes on serving
        assert get(server.port, "/healthz")[0] == 200
    assert answer.startswith(f"HTTP/1.0 {status} ".encode()), answer[:100]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], "no traceback in the log"


def test_event_streams_are_capped_and_the_rest_is_still_served(serve):
    server = serve(max_connections=8, max_streams=2)
    streams = []
    try:
        for _ in range(2):
            status, sock = open_stream(server.port)
            streams.append(sock)
            assert status == 200, "a stream within the cap opens"
        # when a third page opens its stream, it gets 503, and everything else still works
        status, body = get(server.port, "/events")
        assert status == 503 and b"http.max_event_streams" in body
        assert get(server.port, "/api/state")[0] == 200
        # when one page closes, a new stream opens once the server has noticed (at the stream's next write)
        streams.pop().close()
        deadline = time.monotonic() + 10
        while True:
            server._live.publish_camera_state("gate", "connected")
            status, sock = open_stream(server.port)
            streams.append(sock)
            if status == 200:
                break
            assert time.monotonic() < deadline, "the closed stream's place was never freed"
            time.sleep(0.1)
    finally:
        for sock in streams:
            sock.close()


@pytest.mark.parametrize("host, status", [
    ("127.0.0.1", 200), ("127.0.0.1:9108", 200), ("localhost", 200), ("LOCALHOST:9108", 200), ("[::1]:9108", 200),
    ("192.168.1.20:9108", 200),  # an address cannot be rebound to another box
    ("cctv.example.lan", 200), ("cctv.example.lan.:9108", 200),  # from http.allowed_hosts
    ("evil.example", 403), ("127.attacker.example", 403), ("localhost.evil.example", 403), ("", 403),
])
@pytest.mark.parametrize("path", ["/", "/api/state", "/events", "/cameras/gate/frame.jpg", "/metrics", "/healthz"])
def test_only_the_names_the_box_serves_are_answered_on_every_path(serve, host, status, path):
    server = serve(allowed_hosts=["cctv.example.lan"])
    if path == "/events" and status == 200:
        got, sock = open_stream(server.port, host)
        sock.close()
        assert got == 200
        return
    got, body = get(server.port, path, host=host)
    expected = 404 if status == 200 and path == "/cameras/gate/frame.jpg" else status  # no frame captioned yet
    assert got == expected, body
    if status == 403:
        assert b"http.allowed_hosts" in body


def test_the_query_token_only_logs_the_page_in(serve):
    server = serve(auth={"token": TOKEN})
    for path in ("/api/state", "/healthz", "/metrics", "/events", "/cameras/gate/frame.jpg"):
        assert get(server.port, f"{path}?token={TOKEN}")[0] == 401, path
    status, rest = get(server.port, f"/?token={TOKEN}")
    assert status == 303 and f"Set-Cookie: streamcap_token={TOKEN}; HttpOnly".encode() in rest
    assert get(server.port, "/api/state", headers={"Cookie": f"streamcap_token={TOKEN}"})[0] == 200
    assert get(server.port, "/?token=wrong-token-0123456789")[0] == 401


@pytest.mark.parametrize("header, status", [
    (f"Bearer {TOKEN}", 200), (f"bearer {TOKEN}", 200), (f"BEARER  {TOKEN}", 200),
    ("Basic " + base64.b64encode(b"wall:pass-word-1").decode(), 200),
    ("basic " + base64.b64encode(b"wall:pass-word-1").decode(), 200),
    ("basic " + base64.b64encode(b"wall:wrong").decode(), 401), ("Bearer wrong-token", 401), (TOKEN, 401),
])
def test_the_auth_scheme_is_case_insensitive(serve, header, status):
    server = serve(auth={"token": TOKEN, "username": "wall", "password": "pass-word-1"})
    assert get(server.port, "/api/state", headers={"Authorization": header})[0] == status


@pytest.mark.parametrize("address, loopback", [
    ("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("::ffff:127.0.0.1", True),
    ("0.0.0.0", False), ("::", False), ("10.0.0.5", False), ("127.attacker.example", False), ("localhost", False),
])
def test_loopback_is_decided_by_address(address, loopback):
    assert is_loopback(address) is loopback


@pytest.mark.parametrize("host, needs_auth", [
    ("127.0.0.1", False), ("127.0.0.2", False), ("::1", False), ("localhost", False),
    ("127.attacker.example", True), ("127.0.0.1.nip.io", True), ("0.0.0.0", True), ("cctv.lan", True),
])
def test_the_config_asks_for_auth_unless_the_host_is_a_loopback_address(host, needs_auth):
    if needs_auth:
        with pytest.raises(ValueError, match="add auth"):
            HttpConfig(enabled=True, host=host)
    else:
        assert HttpConfig(enabled=True, host=host).host == host


def test_http_limits_and_allowed_hosts_are_checked_at_load_with_their_position(tmp_path):
    from streamcap.config.load import ConfigError, load_config

    path = tmp_path / "c.yaml"
    path.write_text("http:\n  enabled: true\n  max_connections: 8\n  max_event_streams: 8\n"
                    "  allowed_hosts: [cctv.lan, 'evil.example:80']\n  header_timeout_s: 0\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    problems = err.value.problems
    assert any(p.startswith(f"{path}:5:29: http.allowed_hosts[1]:") and "not a host name" in p for p in problems), problems
    assert any(p.startswith(f"{path}:6:3: http.header_timeout_s:") for p in problems), problems
    path.write_text("http:\n  enabled: true\n  max_connections: 8\n  max_event_streams: 8\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert "max_event_streams (8) must be below max_connections (8)" in err.value.problems[0]
