"""`/metrics` (Prometheus text format) and `/healthz` (JSON; `/health` too) on one small HTTP server.

The server runs in its own thread; `stop()` shuts it down, closes the socket
and joins the thread. It binds 127.0.0.1 by default: exposing it on a network
is a deliberate choice made in the config.
"""
from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streamcap.metrics import Metrics

log = logging.getLogger(__name__)


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, CONTENT_TYPE_LATEST, generate_latest(self.server.metrics.registry))
        elif path in ("/healthz", "/health"):
            body = json.dumps(self.server.metrics.health(), indent=2).encode() + b"\n"
            # 200 even when degraded: a camera being down is news, not a reason
            # for an orchestrator to restart the whole process.
            self._send(200, "application/json", body)
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found: try /metrics or /healthz\n")

    def _send(self, code: int, content_type: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (stdlib signature)
        log.debug("http %s - %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], metrics: Metrics) -> None:
        self.metrics = metrics
        super().__init__(address, _Handler)


class MetricsServer:
    """Serves `metrics` on host:port. Port 0 picks a free port (see `.port`)."""

    def __init__(self, metrics: Metrics, host: str = "127.0.0.1", port: int = 9108) -> None:
        self._metrics = metrics
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
            self._server = _Server(self._address, self._metrics)
        except OSError as exc:
            raise OSError(
                f"metrics server cannot listen on {self._address[0]}:{self._address[1]}: {exc.strerror}; "
                "choose another http.port in the config"
            ) from exc
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name="metrics-http", daemon=True
        )
        self._thread.start()
        log.info("metrics on %s/metrics, health on %s/healthz", self.url, self.url)

    def stop(self, timeout_s: float = 5.0) -> None:
        if self._server is None:
            return
        try:
            self._server.shutdown()  # returns once serve_forever has left its loop
        finally:
            self._server.server_close()
            if self._thread is not None:
                self._thread.join(timeout_s)
                if self._thread.is_alive():
                    log.warning("metrics server thread did not stop within %.1f s", timeout_s)
            self._server = None
            self._thread = None

    def __enter__(self) -> "MetricsServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
