"""Ask a network camera whether it answers, before OpenCV opens it, and why it refused after.

OpenCV's FFmpeg backend holds one process-wide lock for the whole of
`VideoCapture(url)` (measured: a camera that accepts the TCP connection and
then says nothing held every other camera's open for its full open timeout).
So a hung or black-holed camera must be caught here, outside that lock: a TCP
connect and, for rtsp://, an OPTIONS request that has to be answered within
the open timeout. Both wait in short slices so `stop` interrupts them.

After a failed open, `explain_rtsp_refusal` sends a DESCRIBE (with the URL's
credentials, Basic or Digest) so the log can say "401 Unauthorized: check the
user and password" or "404 Not Found: no stream at this path" instead of
OpenCV's silence.
"""
from __future__ import annotations

import base64
import errno
import hashlib
import re
import select
import socket
import threading
import time
from urllib.parse import unquote, urlsplit

SLICE_S = 0.25
_DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}
_HINTS = {
    401: "check the user and password in the camera url",
    403: "the camera refused this user",
    404: "no stream at this path; check the path in the camera url",
    454: "no stream at this path; check the path in the camera url",
}


class ProbeError(Exception):
    pass


def _deadline_wait(sock: socket.socket, write: bool, deadline: float, stop: threading.Event | None) -> bool:
    """Wait in slices until `sock` is ready; False at the deadline or on stop."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or (stop is not None and stop.is_set()):
            return False
        ready = select.select([], [sock], [], min(SLICE_S, remaining)) if write else select.select([sock], [], [], min(SLICE_S, remaining))
        if ready[1] if write else ready[0]:
            return True


def _connect(host: str, port: int, deadline: float, stop: threading.Event | None) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise ProbeError(f"cannot resolve host {host!r} ({exc.strerror})") from None
    sock = socket.socket(family, kind, proto)
    sock.setblocking(False)
    error = sock.connect_ex(address)
    if error not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
        sock.close()
        raise ProbeError(f"cannot connect to {host}:{port} ({errno.errorcode.get(error, error)})")
    if not _deadline_wait(sock, True, deadline, stop):
        sock.close()
        raise ProbeError(f"no TCP connection to {host}:{port} within the open timeout (camera off or unreachable)")
    error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if error:
        sock.close()
        raise ProbeError(f"cannot connect to {host}:{port} ({errno.errorcode.get(error, error)}: connection refused or unreachable)")
    return sock


def _rtsp_request(url: str, method: str, timeout_s: float, stop: threading.Event | None, headers: str = "") -> tuple[int, str, str]:
    """(status code, reason, raw response headers) of one RTSP request."""
    parts = urlsplit(url)
    deadline = time.monotonic() + timeout_s
    sock = _connect(parts.hostname or "", parts.port or _DEFAULT_PORTS["rtsp"], deadline, stop)
    try:
        bare = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
        request = f"{method} {bare} RTSP/1.0\r\nCSeq: 1\r\nUser-Agent: streamcap-probe\r\n{headers}\r\n"
        sock.sendall(request.encode())
        response = b""
        while b"\r\n\r\n" not in response:
            if not _deadline_wait(sock, False, deadline, stop):
                raise ProbeError(f"{parts.hostname}:{parts.port} accepted the connection but did not answer within the open timeout (camera hung)")
            chunk = sock.recv(4096)
            if not chunk:
                raise ProbeError(f"{parts.hostname}:{parts.port} closed the connection without an RTSP answer")
            response += chunk
    finally:
        sock.close()
    head = response.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    match = re.match(r"RTSP/\d\.\d (\d{3}) ?(.*)", head.split("\r\n", 1)[0])
    if not match:
        raise ProbeError(f"{parts.hostname}:{parts.port} did not answer in RTSP")
    return int(match.group(1)), match.group(2).strip(), head


def _http_head(url: str, timeout_s: float, stop: threading.Event | None) -> tuple[int, str]:
    """(status code, reason) of a GET, reading only the status line: a camera that accepts and never answers fails here."""
    parts = urlsplit(url)
    deadline = time.monotonic() + timeout_s
    sock = _connect(parts.hostname or "", parts.port or _DEFAULT_PORTS["http"], deadline, stop)
    try:
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        auth = ""
        if parts.username is not None:
            token = base64.b64encode(f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()).decode()
            auth = f"Authorization: Basic {token}\r\n"
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {parts.hostname}\r\nUser-Agent: streamcap-probe\r\n{auth}\r\n".encode())
        response = b""
        while b"\r\n" not in response:
            if not _deadline_wait(sock, False, deadline, stop):
                raise ProbeError(f"{parts.hostname}:{parts.port or 80} accepted the connection but sent no HTTP answer "
                                 "within the open timeout (camera hung)")
            chunk = sock.recv(1024)
            if not chunk:
                raise ProbeError(f"{parts.hostname}:{parts.port or 80} closed the connection without an HTTP answer")
            response += chunk
    finally:
        sock.close()
    match = re.match(r"HTTP/\d(?:\.\d)? (\d{3}) ?(.*)", response.split(b"\r\n", 1)[0].decode("latin-1"))
    if not match:
        raise ProbeError(f"{parts.hostname}:{parts.port or 80} did not answer in HTTP")
    return int(match.group(1)), match.group(2).strip()


def check_answering(url: str, kind: str, timeout_s: float, stop: threading.Event | None = None) -> None:
    """Raise ProbeError unless the camera at `url` answers within `timeout_s`."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "rtsp":
        _rtsp_request(url, "OPTIONS", timeout_s, stop)  # any answer, even 401, means it is alive
        return
    if scheme == "http":
        code, reason = _http_head(url, timeout_s, stop)
        if code >= 400:
            raise ProbeError(f"{code} {reason}: {_HINTS.get(code, 'the camera refused the stream')}")
        return
    # rtsps/https would need a TLS handshake; a TCP connection is enough to rule out off or black-holed.
    port = parts.port or _DEFAULT_PORTS.get(scheme, 80)
    _connect(parts.hostname or "", port, time.monotonic() + timeout_s, stop).close()


def _authorization(url: str, method: str, challenge: str) -> str:
    parts = urlsplit(url)
    user, password = unquote(parts.username or ""), unquote(parts.password or "")
    if "digest" in challenge.lower():
        fields = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        uri = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
        ha1 = hashlib.md5(f"{user}:{fields.get('realm', '')}:{password}".encode()).hexdigest()
        ha2 = hashlib.md5(f"{method}:{uri}".encode()).hexdigest()
        response = hashlib.md5(f"{ha1}:{fields.get('nonce', '')}:{ha2}".encode()).hexdigest()
        return (
            f'Authorization: Digest username="{user}", realm="{fields.get("realm", "")}", '
            f'nonce="{fields.get("nonce", "")}", uri="{uri}", response="{response}"\r\n'
        )
    return f"Authorization: Basic {base64.b64encode(f'{user}:{password}'.encode()).decode()}\r\n"


def explain_rtsp_refusal(url: str, timeout_s: float, stop: threading.Event | None = None) -> str | None:
    """Why an RTSP server refuses this URL ("401 Unauthorized: check ..."), or None if it does not."""
    try:
        code, reason, head = _rtsp_request(url, "DESCRIBE", timeout_s, stop, "Accept: application/sdp\r\n")
        challenge = re.search(r"^WWW-Authenticate: *(.*)$", head, re.I | re.M)
        if code == 401 and challenge and urlsplit(url).username is not None:
            auth = _authorization(url, "DESCRIBE", challenge.group(1))
            code, reason, _ = _rtsp_request(url, "DESCRIBE", timeout_s, stop, f"Accept: application/sdp\r\n{auth}")
    except ProbeError as exc:
        return str(exc)
    if code < 300:
        return None
    hint = _HINTS.get(code, "the camera refused the stream")
    return f"{code} {reason}: {hint}"
