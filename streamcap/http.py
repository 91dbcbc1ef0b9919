"""streamcap's one small HTTP server: the live page, its event stream and images, /metrics and /healthz.

    /                               the live page (read-only)
    /api/state                      JSON: every camera's latest caption, state and alarms in progress; recent alarms
    /events                         server-sent events: caption, alarm, state, as they happen
    /cameras/<id>/frame.jpg         the camera's newest captioned frame, scaled for a tile
    /alarms/<id>/<seq>/snapshot.jpg an alarm message's snapshot
    /metrics                        Prometheus text format
    /healthz (/health)              JSON health; 200 even when degraded (news, not a reason to restart)
    /api/history/..., /history/...  the caption history's search, summary and thumbnails (web/history_api.py)

It binds 127.0.0.1 by default. Bound anywhere else the config must give
`http.auth`: a bearer token (header, or `/?token=...` once, which sets an
HttpOnly cookie so the page's images and event stream work) or basic auth.
Credentials are compared in constant time and never logged. An unknown path
or camera is a 404, never a traceback.

Every request runs on its own thread; `stop()` wakes the event streams,
shuts the server down and joins every thread (no daemon threads left).
"""
from __future__ import annotations

import base64
import hmac
import json
import logging
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from queue import Empty
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streamcap.metrics import Metrics
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
        if self.token is not None:
            offered = [query_token, cookies.get(COOKIE)]
            header = headers.get("Authorization", "")
            if header.startswith("Bearer "):
                offered.append(header[7:].strip())
            if any(o is not None and hmac.compare_digest(o.encode(), self.token.encode()) for o in offered):
                return True
        if self.username is not None:
            header = headers.get("Authorization", "")
            if header.startswith("Basic "):
                try:
                    user, _, password = base64.b64decode(header[6:].strip()).decode().partition(":")
                except (ValueError, UnicodeDecodeError):
                    return False
                return hmac.compare_digest(user.encode(), self.username.encode()) and hmac.compare_digest(
                    password.encode(), (self.password or "").encode())
        return False


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    # HTTP/1.0: one request per connection, so no idle keep-alive connection can hold a thread at shutdown.
    protocol_version = "HTTP/1.0"
    timeout = 10  # a client that stalls mid-request or mid-image gives its thread back within this

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        try:
            self._route()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the browser went away
        except Exception:  # noqa: BLE001 - one bad request must never take the server down
            log.exception("http: error serving %s", urlsplit(self.path).path)
            try:
                self._send(500, "text/plain; charset=utf-8", b"internal error\n")
            except OSError:
                pass

    def _route(self) -> None:
        parts = urlsplit(self.path)
        path, query = parts.path, parse_qs(parts.query)
        cookies = _cookies(self.headers.get("Cookie", ""))
        auth = self.server.auth
        query_token = (query.get("token") or [None])[0]
        if auth is not None and not auth.allows(self.headers, cookies, query_token):
            self._unauthorized()
            return
        live = self.server.live
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
            self._send(*history_api.respond(self.server.history, path, query))
        else:
            self._not_found("not found: try /, /metrics or /healthz")

    def _events(self, live) -> None:
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

    def _send(self, code: int, content_type: str, body: bytes, cache: str | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if cache:
            self.send_header("Cache-Control", cache)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def _not_found(self, text: str) -> None:
        self._send(404, "text/plain; charset=utf-8", text.encode() + b"\n")

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
        # The request line may carry ?token=...: log the path only.
        log.debug("http %s %s", self.address_string(), urlsplit(self.path).path)


def _cookies(header: str) -> dict[str, str]:
    cookies = {}
    for part in header.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep:
            cookies[name] = value
    return cookies


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # request threads are joined on close (block_on_close)
    block_on_close = True

    def __init__(self, address: tuple[str, int], metrics: Metrics, live, auth: Auth | None, history=None) -> None:
        self.metrics, self.live, self.auth, self.history = metrics, live, auth, history
        self.stopping = threading.Event()
        self.page_html = resources.files("streamcap.web").joinpath("page.html").read_bytes() if live is not None else b""
        super().__init__(address, _Handler)


class MetricsServer:
    """Serves the page (when `live` is given), metrics and health on host:port. Port 0 picks a free port (see `.port`)."""

    def __init__(self, metrics: Metrics, host: str = "127.0.0.1", port: int = 9108, live=None, auth: Auth | None = None,
                 history=None) -> None:
        self._metrics, self._live, self._auth, self._history = metrics, live, auth, history
        self._address = (host, port)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("MetricsServer is not started")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self._address[0]}:{self.port}"

    def start(self) -> None:
        try:
            self._server = _Server(self._address, self._metrics, self._live, self._auth, self._history)
        except OSError as exc:
            raise OSError(
                f"http server cannot listen on {self._address[0]}:{self._address[1]}: {exc.strerror}; "
                "choose another http.port in the config"
            ) from exc
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
