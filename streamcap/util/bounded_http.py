"""BoundedHttpServer: HTTP/1.0 with capped connections, threads and time per request head.

The stdlib's ThreadingHTTPServer gives every connection a thread that waits
for the request as long as the client likes, so a few hundred slow clients
("slowloris", no credentials needed) hold hundreds of threads and
descriptors, and under systemd's default limit of 1,024 descriptors they
starve the rest of the process (rule files, cameras, the spool). Here:

- One thread ("http") accepts connections and reads every request head
  without blocking. A head must be complete within `header_timeout_s`
  (else 408), its request line at most MAX_REQUEST_LINE bytes (else 414)
  and the whole head at most MAX_HEAD_BYTES (else 431).
- At most `max_connections` are open. One more evicts the oldest
  connection still sending its head (503), so a flood of slow clients
  cannot lock out a client that sends its request at once; when every open
  connection is being served, the newcomer gets 503.
- A complete request runs on a thread of its own, at most `workers` at a
  time (the others wait in arrival order). A response that lasts (an event
  stream) moves to a pool of at most `max_streams` (`enter_stream()`;
  when it is full the handler answers 503).
- A refusal is written, then, below the cap, the connection is drained
  for up to LINGER_S before it is closed (a close with unread input sends
  a reset, which can destroy the answer before the client reads it); a
  lingering connection counts against the cap and is the first to give way.
- So threads <= 1 + workers + max_streams, and descriptors <=
  max_connections + 3, whatever clients do. Every refusal is reported
  through `on_refused(reason)` and summed up in the log once a minute.
"""
from __future__ import annotations

import collections
import errno
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from streamcap.util.strenum import StrEnum

log = logging.getLogger("streamcap.http")

MAX_REQUEST_LINE = 8_192
MAX_HEAD_BYTES = 32_768
LINGER_S = 1.0
_OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class Refusal(StrEnum):
    """Why a connection got no answer from a handler: the `reason` label of streamcap_http_refused_total."""

    busy = "busy"  # every open connection was being served
    evicted = "evicted"  # still sending its head when the connection cap was reached
    header_timeout = "header_timeout"  # head not complete within header_timeout_s
    url_too_long = "url_too_long"  # 414
    headers_too_large = "headers_too_large"  # 431
    streams_full = "streams_full"  # event streams at their cap (answered by the handler)


_ANSWERS = {
    Refusal.busy: (503, "Service Unavailable", "busy: too many connections; try again shortly"),
    Refusal.evicted: (503, "Service Unavailable", "busy: too many connections were still sending their request"),
    Refusal.header_timeout: (408, "Request Timeout", "the request did not arrive in time"),
    Refusal.url_too_long: (414, "URI Too Long", f"the request line is longer than {MAX_REQUEST_LINE} bytes"),
    Refusal.headers_too_large: (431, "Request Header Fields Too Large", f"the request head is larger than {MAX_HEAD_BYTES} bytes"),
}


@dataclass(frozen=True)
class Limits:
    max_connections: int = 64
    max_streams: int = 16
    workers: int = 8
    header_timeout_s: float = 5.0
    io_timeout_s: float = 10.0  # each send or receive once a request is being served

    def __post_init__(self) -> None:
        if not 1 <= self.max_streams < self.max_connections or self.workers < 1 or self.header_timeout_s <= 0:
            raise ValueError(f"inconsistent HTTP limits: {self}")


@dataclass
class _Head:
    sock: socket.socket
    address: tuple
    deadline: float
    data: bytearray


class BoundedHttpServer:
    """`handle(sock, address, head)` serves one request whose head (request line and headers) is read.

    Same life cycle as socketserver's: `serve_forever()` on a thread, then `shutdown()`, `server_close()`.
    """

    def __init__(self, address: tuple[str, int], handle: Callable[[socket.socket, tuple, bytes], None],
                 limits: Limits = Limits(), on_refused: Callable[[Refusal], None] | None = None):
        host, port = address
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
        self.socket = socket.create_server((host, port), family=family, backlog=128)
        self.socket.setblocking(False)
        self.server_address = self.socket.getsockname()
        self.limits = limits
        self._handle, self._on_refused = handle, on_refused
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._lock = threading.Lock()
        self._heads: collections.OrderedDict[int, _Head] = collections.OrderedDict()  # oldest first (acceptor only)
        self._lingering: collections.OrderedDict[int, _Head] = collections.OrderedDict()  # refused, draining
        self._selector: selectors.BaseSelector | None = None
        self._ready: collections.deque[tuple[socket.socket, tuple, bytes]] = collections.deque()
        self._serving: dict[threading.Thread, socket.socket] = {}
        self._streams: set[threading.Thread] = set()
        self._busy_workers = 0
        self._closing = threading.Event()
        self._loop_done = threading.Event()
        self._refused: collections.Counter[Refusal] = collections.Counter()
        self._next_summary = time.monotonic() + 60.0
        self._accept_paused_until = 0.0

    # --- what the handlers and tests see ------------------------------------------------
    def enter_stream(self) -> bool:
        """Move the calling request thread to the stream pool; False (answer 503) when it is full."""
        me = threading.current_thread()
        with self._lock:
            if me in self._streams:
                return True
            if len(self._streams) >= self.limits.max_streams:
                self._refused[Refusal.streams_full] += 1
                refused = True
            else:
                self._streams.add(me)
                self._busy_workers -= 1
                refused = False
        if refused:
            self._report(Refusal.streams_full)
            return False
        self._wake()  # a worker slot is free again
        return True

    def open_connections(self) -> int:
        with self._lock:
            return len(self._heads) + len(self._lingering) + len(self._ready) + len(self._serving)

    # --- the accepting thread ---------------------------------------------------------------
    def serve_forever(self, poll_interval: float = 0.2) -> None:
        selector = self._selector = selectors.DefaultSelector()
        selector.register(self.socket, selectors.EVENT_READ, "listen")
        selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        listening = True
        try:
            while not self._closing.is_set():
                now = time.monotonic()
                if not listening and now >= self._accept_paused_until:
                    selector.register(self.socket, selectors.EVENT_READ, "listen")
                    listening = True
                timeout = poll_interval
                for waiting in (self._heads, self._lingering):
                    if waiting:
                        timeout = max(0.0, min(timeout, next(iter(waiting.values())).deadline - now))
                for key, _ in selector.select(timeout):
                    if key.data == "listen":
                        if not self._accept(selector):
                            selector.unregister(self.socket)
                            listening = False
                    elif key.data == "wake":
                        self._drain_wake()
                    else:  # a client socket; look it up by descriptor: it may have changed roles in this batch
                        fd = key.data.sock.fileno()
                        if fd in self._lingering:
                            self._drain(self._lingering[fd])
                        elif fd in self._heads:
                            self._read_head(selector, self._heads[fd])
                self._expire_heads(selector, time.monotonic())
                self._start_ready()
                self._summarise_refusals()
        finally:
            selector.close()
            self._loop_done.set()

    def _accept(self, selector: selectors.BaseSelector) -> bool:
        """Take what the backlog holds; False when out of descriptors (accepting pauses briefly)."""
        for _ in range(64):
            try:
                sock, address = self.socket.accept()
            except BlockingIOError:
                return True
            except OSError as exc:
                if exc.errno in _OUT_OF_DESCRIPTORS:
                    # The listener stays readable: without a pause this thread would spin on EMFILE.
                    self._accept_paused_until = time.monotonic() + 0.1
                    log.warning("http: cannot accept a connection: %s; pausing for 0.1 s", exc.strerror)
                    return False
                continue  # ECONNABORTED and the like: that client gave up
            sock.setblocking(False)
            if self.open_connections() >= self.limits.max_connections:
                if self._lingering:  # already answered: the first to go
                    self._close_lingering(next(iter(self._lingering.values())))
                elif self._heads:
                    oldest = next(iter(self._heads.values()))
                    self._drop_head(selector, oldest)
                    self._refuse(oldest.sock, Refusal.evicted, linger=False)  # its place goes to the newcomer
                else:
                    self._refuse(sock, Refusal.busy)
                    continue
            head = _Head(sock, address, time.monotonic() + self.limits.header_timeout_s, bytearray())
            with self._lock:
                self._heads[sock.fileno()] = head
            selector.register(sock, selectors.EVENT_READ, head)
        return True

    def _read_head(self, selector: selectors.BaseSelector, head: _Head) -> None:
        try:
            chunk = head.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:  # the client went away
            self._drop_head(selector, head)
            head.sock.close()
            return
        head.data += chunk
        line_end = head.data.find(b"\n")
        if line_end > MAX_REQUEST_LINE or (line_end < 0 and len(head.data) > MAX_REQUEST_LINE):
            self._drop_head(selector, head)
            self._refuse(head.sock, Refusal.url_too_long)
            return
        end = _end_of_head(head.data)
        if end < 0 and len(head.data) <= MAX_HEAD_BYTES:
            return  # more to come
        self._drop_head(selector, head)
        if end < 0 or end > MAX_HEAD_BYTES:
            self._refuse(head.sock, Refusal.headers_too_large)
            return
        with self._lock:
            self._ready.append((head.sock, head.address, bytes(head.data[:end])))

    def _drop_head(self, selector: selectors.BaseSelector, head: _Head) -> None:
        selector.unregister(head.sock)
        with self._lock:
            self._heads.pop(head.sock.fileno(), None)

    def _expire_heads(self, selector: selectors.BaseSelector, now: float) -> None:
        while self._heads:
            head = next(iter(self._heads.values()))
            if head.deadline > now:
                break
            self._drop_head(selector, head)
            self._refuse(head.sock, Refusal.header_timeout)
        while self._lingering:
            head = next(iter(self._lingering.values()))
            if head.deadline > now:
                break
            self._close_lingering(head)

    def _start_ready(self) -> None:
        with self._lock:
            while self._ready and self._busy_workers < self.limits.workers and not self._closing.is_set():
                sock, address, head = self._ready.popleft()
                thread = threading.Thread(target=self._serve, args=(sock, address, head), name="http-request", daemon=True)
                self._serving[thread] = sock
                self._busy_workers += 1
                thread.start()

    def _serve(self, sock: socket.socket, address: tuple, head: bytes) -> None:
        me = threading.current_thread()
        try:
            sock.settimeout(self.limits.io_timeout_s)
            self._handle(sock, address, head)
        except Exception:  # noqa: BLE001 - a handler bug must not take the slot with it
            log.exception("http: error serving a request")
        finally:
            _close(sock)
            with self._lock:
                self._serving.pop(me, None)
                if me in self._streams:
                    self._streams.discard(me)
                else:
                    self._busy_workers -= 1
            self._wake()

    # --- refusals -----------------------------------------------------------------------------
    def _refuse(self, sock: socket.socket, reason: Refusal, linger: bool = True) -> None:
        code, phrase, text = _ANSWERS[reason]
        body = text.encode() + b"\n"
        retry = b"Retry-After: 1\r\n" if code == 503 else b""
        response = (f"HTTP/1.0 {code} {phrase}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n").encode() + retry + b"\r\n" + body
        try:
            sock.send(response)  # a short answer fits the empty send buffer of a connection we never wrote to
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            sock.close()
        else:
            if linger and self.open_connections() < self.limits.max_connections:
                self._linger(sock)
            else:
                sock.close()  # at the cap (a flood): no room to linger
        with self._lock:
            self._refused[reason] += 1
        self._report(reason)

    def _linger(self, sock: socket.socket) -> None:
        """Read and discard what the client still sends, so closing does not reset the answer away."""
        head = _Head(sock, (), time.monotonic() + LINGER_S, bytearray())
        with self._lock:
            self._lingering[sock.fileno()] = head
        self._selector.register(sock, selectors.EVENT_READ, head)

    def _drain(self, head: _Head) -> None:
        try:
            if head.sock.recv(65536):
                return
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self._close_lingering(head)  # the client has closed its side (or reset): done

    def _close_lingering(self, head: _Head) -> None:
        self._selector.unregister(head.sock)
        with self._lock:
            self._lingering.pop(head.sock.fileno(), None)
        head.sock.close()

    def _report(self, reason: Refusal) -> None:
        if self._on_refused is not None:
            self._on_refused(reason)

    def _summarise_refusals(self) -> None:
        now = time.monotonic()
        if now < self._next_summary:
            return
        self._next_summary = now + 60.0
        with self._lock:
            counts, self._refused = self._refused, collections.Counter()
        if counts:
            parts = ", ".join(f"{reason}: {n}" for reason, n in counts.most_common())
            log.warning("http: %d requests refused in the last minute (%s); if these are your own clients, raise "
                        "http.max_connections or http.max_event_streams", sum(counts.values()), parts)

    # --- stopping -------------------------------------------------------------------------------
    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass  # already awake (buffer full) or closed

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Stop accepting; returns once serve_forever has left its loop."""
        self._closing.set()
        self._wake()
        self._loop_done.wait(timeout_s)

    def server_close(self, timeout_s: float = 5.0) -> None:
        """Close every connection and join every request thread (a stuck one is woken by closing its socket)."""
        self._closing.set()
        self.socket.close()
        with self._lock:
            heads, self._heads = list(self._heads.values()), collections.OrderedDict()
            heads += self._lingering.values()
            self._lingering = collections.OrderedDict()
            ready, self._ready = list(self._ready), collections.deque()
        for head in heads:
            _close(head.sock)
        for sock, _, _ in ready:
            _close(sock)
        deadline = time.monotonic() + timeout_s
        for attempt in range(2):
            with self._lock:
                serving = dict(self._serving)
            for thread, sock in serving.items():
                if attempt:
                    try:
                        sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked sending to a client that stopped reading
                    except OSError:
                        pass
                thread.join(max(0.0, deadline - time.monotonic()) if not attempt else 1.0)
        for thread in [t for t in serving if t.is_alive()]:
            log.warning("http: thread %s did not stop", thread.name)
        self._wake_r.close()
        self._wake_w.close()


def _end_of_head(data: bytearray) -> int:
    """Index just past the blank line that ends the head, or -1."""
    ends = [i + len(sep) for sep in (b"\r\n\r\n", b"\n\n") if (i := data.find(sep)) >= 0]
    return min(ends) if ends else -1


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_WR)  # FIN after the answer, as socketserver does
    except OSError:
        pass
    sock.close()
