"""The pre-open probe on plain local sockets: refused, silent, answering, stoppable."""
from __future__ import annotations

import socket
import threading

import pytest

from streamcap.capture.probe import ProbeError, check_answering, explain_rtsp_refusal


@pytest.fixture
def silent_listener():
    """A socket that accepts connections (the kernel's backlog) and never says a word: a hung camera."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield sock.getsockname()[1]
    sock.close()


@pytest.fixture
def rtsp_answer():
    """A one-shot-per-connection RTSP responder with a fixed status line."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.settimeout(0.2)
    status = {"line": "RTSP/1.0 200 OK"}
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                conn, _ = sock.accept()
            except (TimeoutError, OSError):
                continue
            with conn:
                conn.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(4096) or b"\r\n\r\n"
                conn.sendall(f"{status['line']}\r\nCSeq: 1\r\n\r\n".encode())

    thread = threading.Thread(target=serve)
    thread.start()
    yield sock.getsockname()[1], status
    done.set()
    thread.join(timeout=5)
    sock.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("scheme", ["rtsp", "http", "rtsps"])
def test_nothing_listening_is_refused(scheme):
    # when / then
    with pytest.raises(ProbeError, match="connection refused"):
        check_answering(f"{scheme}://127.0.0.1:{closed_port()}/x", scheme, timeout_s=5)


def test_rtsp_camera_that_accepts_but_never_answers_is_hung(silent_listener):
    # when / then
    with pytest.raises(ProbeError, match="did not answer within the open timeout"):
        check_answering(f"rtsp://u:p@127.0.0.1:{silent_listener}/stream", "rtsp", timeout_s=0.5)


def test_stop_interrupts_a_long_probe(silent_listener):
    # given
    stop = threading.Event()
    stop.set()

    # when / then: would otherwise wait out the full 600 s
    with pytest.raises(ProbeError):
        check_answering(f"rtsp://127.0.0.1:{silent_listener}/stream", "rtsp", timeout_s=600, stop=stop)


def test_an_http_camera_that_accepts_and_never_answers_is_called_hung(silent_listener):
    with pytest.raises(ProbeError, match="accepted the connection but sent no HTTP answer within the open timeout .camera hung."):
        check_answering(f"http://127.0.0.1:{silent_listener}/video.mjpg", "http", timeout_s=0.5)


@pytest.mark.parametrize(("status", "expected"), [
    ("HTTP/1.0 200 OK", None),
    ("HTTP/1.1 401 Unauthorized", "401 Unauthorized: check the user and password"),
    ("HTTP/1.1 404 Not Found", "404 Not Found: no stream at this path"),
])
def test_an_http_camera_must_answer_and_its_refusals_are_explained(rtsp_answer, status, expected):
    port, answer = rtsp_answer
    answer["line"] = status
    url = f"http://user:pw@127.0.0.1:{port}/video.mjpg"
    if expected is None:
        check_answering(url, "http", timeout_s=5)
    else:
        with pytest.raises(ProbeError, match=expected):
            check_answering(url, "http", timeout_s=5)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("RTSP/1.0 200 OK", None),
        ("RTSP/1.0 404 Not Found", "404 Not Found: no stream at this path"),
        ("RTSP/1.0 401 Unauthorized", "401 Unauthorized: check the user and password"),
        ("RTSP/1.0 503 Service Unavailable", "503 Service Unavailable: the camera refused the stream"),
        ("HTTP/1.1 400 Bad Request", "did not answer in RTSP"),
    ],
)
def test_refusals_are_explained(rtsp_answer, status, expected):
    # given
    port, server = rtsp_answer
    server["line"] = status

    # when
    why = explain_rtsp_refusal(f"rtsp://127.0.0.1:{port}/stream", timeout_s=5)

    # then
    if expected is None:
        assert why is None, why
    else:
        assert expected in why, why
