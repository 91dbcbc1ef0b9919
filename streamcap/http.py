"""streamcap's one small HTTP server: the live page, its event stream and images, /metrics and /healthz.

    /                               the live page (read-only)
    /api/state                      JSON: every camera's latest caption, state and alarms in progress; recent alarms
    /events                         server-sent events: caption, alarm, state, as they happen
    /cameras/<id>/frame.jpg         the camera's newest captioned frame, scaled for a tile
    /alarms/<id>/<seq>/snapshot.jpg an alarm message's snapshot
    /metrics                        Prometheus text format
    /healthz (/health)              JSON health; 200 even when degraded (news, not a reason to restart)
    /api/history/..., /history/...  the caption history's search, summary and thumbnails (web/history_api.py)

It binds 127.0.0.1 by default. Bound to an address that is not loopback
(127.0.0.0/8, ::1; decided by the address actually bound, never by a name)
it must have `http.auth`: a bearer token (the Authorization header, any
letter case of "Bearer"; or `/?token=...` on the page's first load only,
which sets an HttpOnly cookie for the page's images and event stream) or
basic auth. Credentials are compared in constant time and never logged.

Every request, whatever its path, must name in its `Host` header a name the
box serves: an IP address, `localhost`, the bound host, or one of
`http.allowed_hosts`; anything else is a 403. Without that check a web page
elsewhere could point its own DNS name at 127.0.0.1 ("DNS rebinding") and
read the cameras through the operator's browser.

Connections, threads, request-head time and size are capped by
BoundedHttpServer (streamcap.util.bounded_http): 503 beyond the caps, 408,
414 and 431 for slow, long or large request heads. An unknown path or camera
is a 404, never a traceback. `stop()` wakes the event streams, shuts the
server down and joins every thread (no daemon threads left).
"""
from __future__ import annotations

import base64
import hmac
import io
import ipaddress
import json
import logging
import re
import socket
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler
from importlib import resources
from queue import Empty
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streamcap.metrics import Metrics
from streamcap.util.bounded_http import BoundedHttpServer, Limits
from streamcap.web import history_api

log = logging.getLogger(__name__)

COOKIE = "streamcap_token"
KEEPALIVE_S = 15.0  # an SSE comment this often keeps proxies from closing an idle stream
_FRAME = re.compile(r"^/cameras/([a-z0-9_-]{1,64})/frame\.jpg$")
_SNAPSHOT = re.compile(r"^/alarms/([A-Za-z0-9_.:-]{1,200})/(\d{1,9})/snapshot\.jpg$")


class Auth:
    """Who may read: nobody checked (loopback without auth), a token, or a user and password."""

    def __init__(self, token: str | None = None, username: str | None = None, password: str | None = None):
        self.token, self.username, self.password = token, username, password

    @classmethod
    def from_config(cls, auth) -> "Auth | None":
        if auth is None:
            return None
        return cls(auth.token.get_secret_value() if auth.token else None, auth.username,
                   auth.password.get_secret_value() if auth.password else None)

    def allows(self, headers, cookies: dict[str, str], query_token: str | None) -> bool:
        """`query_token` is the page's one-time login (`/?token=...`); pass None on every other path."""
        scheme, _, credentials = headers.get("Authorization", "").strip().partition(" ")
        scheme, credentials = scheme.lower(), credentials.strip()  # the scheme is case-insensitive (RFC 9110)
        if self.token is not None:
            offered = [query_token, cookies.get(COOKIE), credentials if scheme == "bearer" else None]
            if any(o is not None and hmac.compare_digest(o.encode(), self.token.encode()) for o in offered):
                return True
        if self.username is not None:
            if scheme == "basic":
                try:
                    user, _, password = base64.b64decode(credentials).decode().partition(":")
                except (ValueError, UnicodeDecodeError):
                    return False
                return hmac.compare_digest(user.encode(), self.username.encode()) and hmac.compare_digest(
                    password.encode(), (self.password or "").encode())
        return False


def is_loopback(address: str) -> bool:
    """True for 127.0.0.0/8 and ::1 (also IPv4-mapped), given as an address; a name is never loopback here."""
    try:
        ip = ipaddress.ip_address(address.strip("[]").split("%")[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def host_name(header: str) -> str:
    """The name in a Host header, lower case, without port, brackets or a final dot."""
    name = header.strip().lower()
    if name.startswith("["):
        name = name[1:name.find("]")] if "]" in name else name[1:]
    elif name.count(":") == 1:
        name = name.rsplit(":", 1)[0]
    return name.rstrip(".")


class HostCheck:
    """Which Host headers the box answers: any IP address (an address cannot be rebound), localhost,
    the host it binds, and the configured extra names."""

    def __init__(self, bind_host: str, allowed_hosts: Iterable[str] = ()):
        self.names = frozenset(host_name(h) for h in ("localhost", bind_host, *allowed_hosts) if h)

    def allows(self, header: str | None) -> bool:
        if header is None:
            return True  # not a browser: every browser sends Host, and DNS rebinding needs one
        name = host_name(header)
        if name in self.names:
            return True
        try:
            ipaddress.ip_address(name)
            return True
        except ValueError:
            return False


class _SocketWriter(io.BufferedIOBase):
    """wfile: every write is a whole sendall (a raw socket file may write part of a buffer)."""

    def __init__(self, sock: socket.socket):
        self._sock = sock

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._sock.sendall(data)
        return len(memoryview(data))


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    # HTTP/1.0: one request per connection, so no idle keep-alive connection can hold a thread at shutdown.
    protocol_version = "HTTP/1.0"

    def setup(self) -> None:
        # The server has read the request head already (bounded in time and size); replay it to the parser.
        self.connection, head = self.request
        self.rfile = io.BytesIO(head)
        self.wfile = _SocketWriter(self.connection)

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        try:
            self._route()
        except (ConnectionError, TimeoutError):
            pass  # the browser went away, or stopped reading for longer than the I/O timeout
        except Exception:  # noqa: BLE001 - one bad request must never take the server down
            log.exception("http: error serving %s", urlsplit(self.path).path)
            try:
                self._send(500, "text/plain; charset=utf-8", b"internal error\n")
            except OSError:
                pass

    def _route(self) -> None:
        parts = urlsplit(self.path)
        path = parts.path
        if not self.server.hosts.allows(self.headers.get("Host")):
            self._forbidden_host()
            return
        live = self.server.live
        cookies = _cookies(self.headers.get("Cookie", ""))
        auth = self.server.auth
        # The token in the address only logs the page in: anywhere else it would end up in proxy and scraper logs.
        query_token = (parse_qs(parts.query).get("token") or [None])[0] if path == "/" and live is not None else None
        if auth is not None and not auth.allows(self.headers, cookies, query_token):
            self._unauthorized()
            return
        if path == "/" and live is not None:
            if query_token is not None:  # log in once: keep the token in a cookie, drop it from the address bar
                self.send_response(303)
                self.send_header("Location", "/")
                self.send_header("Set-Cookie", f"{COOKIE}={query_token}; HttpOnly; SameSite=Strict; Path=/")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self._send(200, "text/html; charset=utf-8", self.server.page_html)
        elif path == "/api/state" and live is not None:
            self._send(200, "application/json", json.dumps(live.state()).encode())
        elif path == "/events" and live is not None:
            self._events(live)
        elif (match := _FRAME.match(path)) and live is not None:
            camera = match.group(1)
            latest = live.snapshots.latest(camera) if live.has_camera(camera) and live.snapshots else None
            if latest is None:
                self._not_found(f"no frame of camera {camera!r} (unknown camera, or not captioned yet)")
            else:
                self._send(200, "image/jpeg", latest[1], cache="no-store")
        elif (match := _SNAPSHOT.match(path)) and live is not None:
            jpeg = live.alarm_snapshot(match.group(1), match.group(2))
            if jpeg is None:
                self._not_found("no such alarm snapshot (only the recent alarms' are kept)")
            else:
                self._send(200, "image/jpeg", jpeg, cache="max-age=3600")
        elif path == "/metrics":
            self._send(200, CONTENT_TYPE_LATEST, generate_latest(self.server.metrics.registry))
        elif path in ("/healthz", "/health"):
            self._send(200, "application/json", json.dumps(self.server.metrics.health(), indent=2).encode() + b"\n")
        elif path.startswith(history_api.PREFIXES) and self.server.history is not None:
            self._send(*history_api.respond(self.server.history, path, parse_qs(parts.query)))
        else:
            self._not_found("not found: try /, /metrics or /healthz")

    def _events(self, live) -> None:
        if not self.server.enter_stream():
            self._send(503, "text/plain; charset=utf-8", b"too many live pages are open (http.max_event_streams); "
                       b"close one or raise the limit\n", retry_after=True)
            return
        queue = live.subscribe()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(b"retry: 2000\n\n")
            self.wfile.flush()
            while not live.closed.is_set() and not self.server.stopping.is_set():
                try:
                    item = queue.get(timeout=KEEPALIVE_S)
                except Empty:
                    self.wfile.write(b": keepalive\n\n")
                    self.wfile.flush()
                    continue
                if item is None:
                    return
                kind, data = item
                self.wfile.write(f"event: {kind}\ndata: {data}\n\n".encode())
                self.wfile.flush()
        finally:
            live.unsubscribe(queue)

    def _send(self, code: int, content_type: str, body: bytes, cache: str | None = None, retry_after: bool = False) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if cache:
            self.send_header("Cache-Control", cache)
        if retry_after:
            self.send_header("Retry-After", "5")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def _not_found(self, text: str) -> None:
        self._send(404, "text/plain; charset=utf-8", text.encode() + b"\n")

    def _forbidden_host(self) -> None:
        name = host_name(self.headers.get("Host", ""))[:100]
        text = (f"forbidden: this box does not answer to the host name {name!r} (a guard against DNS rebinding); "
                "to open it under that name, add the name to http.allowed_hosts in the config\n")
        self._send(403, "text/plain; charset=utf-8", text.encode("ascii", "backslashreplace"))

    def _unauthorized(self) -> None:
        self.send_response(401)
        if self.server.auth is not None and self.server.auth.username is not None:
            self.send_header("WWW-Authenticate", 'Basic realm="streamcap"')
        body = b"unauthorized: give the token (/?token=...) or the user and password\n"
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (stdlib signature)
        # The request line may carry ?token=...: log the path only. A request refused before it was
        # parsed (too long, malformed) has no path.
        log.debug("http %s %s %s", self.address_string(), urlsplit(getattr(self, "path", "") or "").path[:200],
                  args[1] if len(args) > 1 else "")


def _cookies(header: str) -> dict[str, str]:
    cookies = {}
    for part in header.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep:
            cookies[name] = value
    return cookies


class _Server(BoundedHttpServer):
    def __init__(self, address: tuple[str, int], metrics: Metrics, live, auth: Auth | None, limits: Limits,
                 hosts: HostCheck, history=None) -> None:
        self.metrics, self.live, self.auth, self.hosts, self.history = metrics, live, auth, hosts, history
        self.stopping = threading.Event()
        self.page_html = resources.files("streamcap.web").joinpath("page.html").read_bytes() if live is not None else b""
        super().__init__(address, lambda sock, client, head: _Handler((sock, head), client, self), limits,
                         on_refused=metrics.count_http_refused)


class MetricsServer:
    """Serves the page (when `live` is given), metrics and health on host:port. Port 0 picks a free port (see `.port`)."""

    def __init__(self, metrics: Metrics, host: str = "127.0.0.1", port: int = 9108, live=None, auth: Auth | None = None,
                 limits: Limits | None = None, allowed_hosts: Iterable[str] = (), history=None) -> None:
        self._metrics, self._live, self._auth, self._history = metrics, live, auth, history
        self._address = (host, port)
        self._limits = limits or Limits()
        self._hosts = HostCheck(host, allowed_hosts)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("MetricsServer is not started")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        host = self._address[0]
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    def start(self) -> None:
        try:
            self._server = _Server(self._address, self._metrics, self._live, self._auth, self._limits, self._hosts,
                                   self._history)
        except OSError as exc:
            raise OSError(
                f"http server cannot listen on {self._address[0]}:{self._address[1]}: {exc.strerror or exc}; "
                "choose another http.host or http.port in the config"
            ) from exc
        bound = self._server.server_address[0]
        if self._auth is None and not is_loopback(bound):
            self._server.server_close()
            self._server = None
            raise OSError(f"http: {self._address[0]} is bound as {bound}, which is not a loopback address, and "
                          "http.auth is not set: give a token or a username and password, or bind 127.0.0.1")
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name="http", daemon=True
        )
        self._thread.start()
        log.info("http on %s: %smetrics at /metrics, health at /healthz", self.url, "live page at /, " if self._live else "")

    def stop(self, timeout_s: float = 5.0) -> None:
        if self._server is None:
            return
        self._server.stopping.set()
        if self._live is not None:
            self._live.close()  # wakes every event stream so its thread can be joined
        try:
            self._server.shutdown()  # returns once serve_forever has left its loop
        finally:
            self._server.server_close()  # joins the request threads
            if self._thread is not None:
                self._thread.join(timeout_s)
                if self._thread.is_alive():
                    log.warning("http server thread did not stop within %.1f s", timeout_s)
            self._server = None
            self._thread = None

    def __enter__(self) -> "MetricsServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
