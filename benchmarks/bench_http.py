"""A slow-client flood against a real `streamcap run` under systemd's 1,024-descriptor limit.

    .venv/bin/python benchmarks/bench_http.py [--clients 500 1000] [--seconds 30] [--baseline-tree ../main]

Starts `python -m streamcap run` from this checkout (or --baseline-tree's, for
the code before a change) with RLIMIT_NOFILE 1024: the shipped model on ONNX
Runtime, two file cameras playing a clip of people, a rules folder of 20
rules (one matches people), the live page with a token and default caps.
Once captions flow, it holds N "slowloris" clients open for --seconds: each
sends half a request head, then one more header line every 5 s; a client the
server closes connects again (at most --reconnects-per-s in all, as an attack
tool would). Halfway, a rule file is saved (touched). Meanwhile, once a
second, /healthz is asked with the right token, and the server's threads and
open descriptors are read from /proc.

Reported per run: threads and descriptors (before the flood, most during),
/healthz answered with 200 within 10 s (of those asked; median and slowest),
the rules in force (from the log: at start, fewest and last during the
flood), and captions and alarms per second during the flood against the same
time just before it. Exit 1 if this checkout lost a rule or missed a /healthz.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
from datetime import datetime
from pathlib import Path

from _servers import free_port, stop_process

REPO = Path(__file__).resolve().parents[1]
TOKEN = "bench-token-0123456789abcdef"
DATA = Path(os.environ.get("STREAMCAP_DATA", REPO.parent / "shared" / "data"))
RULES_LINE = re.compile(r"^(\S+ \S+) .*?(?:rules: (\d+) loaded|rules reloaded: (\d+) rules|keeping the (\d+) rules in force)")


def write_setup(workdir: Path, port: int, clip: Path) -> Path:
    rules = workdir / "rules"
    rules.mkdir()
    (rules / "people.yaml").write_text(
        "- id: someone\n  triggers: [{trigger: caption, any: ['@person']}]\n  clear_after: 0\n  update_every: 0\n")
    (rules / "others.yaml").write_text("".join(
        f"- id: other_{i:02d}\n  triggers: [{{trigger: caption, any: [word{i}]}}]\n" for i in range(19)))
    config = workdir / "streamcap.yaml"
    config.write_text(textwrap.dedent(f"""\
        device_id: flood
        cameras:
          walk1: {{url: "{clip}", loop: true, caption_interval_s: 1}}
          walk2: {{url: "{clip}", loop: true, caption_interval_s: 1}}
        model: {{backend: onnxruntime, max_batch: 2}}
        rules: {{paths: [rules/*.yaml], reload_interval_s: 1}}
        outputs: {{console: false, jsonl: events.jsonl}}
        http: {{enabled: true, port: {port}, auth: {{token: {TOKEN}}}}}
        """))
    return config


def proc_counts(pid: int) -> tuple[int, int]:
    """(threads, open descriptors) of a process."""
    threads = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                   if line.startswith("Threads:"))
    return threads, len(os.listdir(f"/proc/{pid}/fd"))


def healthz(port: int) -> tuple[int, float]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/healthz", headers={"Authorization": f"Bearer {TOKEN}"})
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
            return response.status, time.perf_counter() - started
    except urllib.error.HTTPError as err:
        return err.code, time.perf_counter() - started
    except OSError:
        return 0, time.perf_counter() - started


class Slowloris:
    """N connections that never finish their request head, kept open by one thread with a selector.

    Connects are non-blocking, so a server with a short listen backlog does not slow the flood down.
    """

    HEAD = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slow\r\n"

    def __init__(self, port: int, clients: int, reconnects_per_s: float):
        self.port, self.clients, self.rate = port, clients, reconnects_per_s
        self.selector = selectors.DefaultSelector()
        self.stop = threading.Event()
        self.opened = self.connected = self.closed_by_server = 0
        self.thread = threading.Thread(target=self._run, name="slowloris")

    def _open(self) -> None:
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", self.port))
        self.selector.register(sock, selectors.EVENT_WRITE, time.monotonic() + 10)  # connecting, until this
        self.opened += 1

    def _close(self, sock: socket.socket) -> None:
        self.selector.unregister(sock)
        sock.close()

    def _run(self) -> None:
        budget, last, next_drip = float(self.clients), time.monotonic(), time.monotonic() + 5
        while not self.stop.is_set():
            now = time.monotonic()
            budget, last = min(float(self.clients), budget + (now - last) * self.rate), now
            while len(self.selector.get_map()) < self.clients and budget >= 1:
                budget -= 1
                self._open()
            for key, events in self.selector.select(0.05):
                sock = key.fileobj
                if events & selectors.EVENT_WRITE:  # connected (or failed)
                    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                        try:
                            sock.send(self.HEAD)
                            self.selector.modify(sock, selectors.EVENT_READ, None)
                            self.connected += 1
                            continue
                        except OSError:
                            pass
                    self._close(sock)
                    continue
                try:
                    sock.recv(4096)
                except OSError:
                    pass
                self._close(sock)  # answered (503, 408) or closed: the server let it go
                self.closed_by_server += 1
            for key in [k for k in self.selector.get_map().values() if k.data is not None and k.data < now]:
                self._close(key.fileobj)  # a connect the server never completed
            if now >= next_drip:  # one more header line each, so a per-read timeout never fires
                next_drip = now + 5
                for key in list(self.selector.get_map().values()):
                    if key.data is None:
                        try:
                            key.fileobj.send(b"X-a: b\r\n")
                        except OSError:
                            pass
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()
        self.selector.close()


def events(workdir: Path, kind: str) -> list[dict]:
    path = workdir / "events.jsonl"
    out = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            doc = json.loads(line)
        except json.JSONDecodeError:
            continue
        if doc.get("kind") == kind:
            out.append(doc)
    return out


def rules_in_force(log_text: str) -> list[tuple[float, int]]:
    points = []
    for line in log_text.splitlines():
        match = RULES_LINE.match(line)
        if match:
            at = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            points.append((at, int(next(g for g in match.groups()[1:] if g))))
    return points


def run(tree: Path, clients: int, seconds: float, rate: float, clip: Path) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="bench-http-"))
    port = free_port()
    config = write_setup(workdir, port, clip)
    log = open(workdir / "streamcap.log", "wb")
    limit = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))  # noqa: E731 - systemd's default
    proc = subprocess.Popen([sys.executable, "-m", "streamcap", "run", "-c", str(config)], cwd=workdir, stdout=log,
                            stderr=subprocess.STDOUT, preexec_fn=limit, env={**os.environ, "PYTHONPATH": str(tree)})
    try:
        deadline = time.monotonic() + 180
        while len(events(workdir, "caption")) < 4:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"streamcap did not caption: see {workdir / 'streamcap.log'}")
            time.sleep(0.5)
        time.sleep(seconds / 3)  # a window before the flood, as long as a third of it
        before = proc_counts(proc.pid)
        flood_start = time.time()
        flood = Slowloris(port, clients, rate)
        flood.thread.start()
        counts, probes, touched = [], [], False
        while time.time() - flood_start < seconds:
            tick = time.monotonic()
            counts.append(proc_counts(proc.pid))
            probes.append(healthz(port))
            if not touched and time.time() - flood_start > seconds / 2:
                os.utime(workdir / "rules" / "others.yaml")  # a save during the flood: the watcher reads again
                touched = True
            time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
        flood_end = time.time()
        flood.stop.set()
        flood.thread.join()
    finally:
        stop_process(proc)
        log.close()
    window = flood_end - flood_start
    pre_start = flood_start - seconds / 3

    def rate_in(kind: str, start: float, end: float, type_: str | None = None) -> float:
        docs = [d for d in events(workdir, kind) if type_ is None or d.get("type") == type_]
        return sum(start <= datetime.fromisoformat(d["time"]).timestamp() < end for d in docs) / (end - start)

    points = rules_in_force((workdir / "streamcap.log").read_text(errors="replace"))
    at_start = points[0][1] if points else 0
    during = [n for t, n in points if flood_start <= t <= flood_end]
    last_before = [n for t, n in points if t < flood_start][-1:] or [at_start]
    ok = [s for s, _ in probes if s == 200]
    times = [t * 1000 for s, t in probes if s == 200]
    return {
        "tree": str(tree), "clients": clients, "opened": flood.opened, "connected": flood.connected,
        "closed_by_server": flood.closed_by_server,
        "threads_before": before[0], "fds_before": before[1],
        "threads_max": max(c[0] for c in counts), "fds_max": max(c[1] for c in counts),
        "healthz_ok": len(ok), "healthz_asked": len(probes),
        "healthz_p50_ms": statistics.median(times) if times else None, "healthz_max_ms": max(times) if times else None,
        "rules_at_start": at_start, "rules_min_during": min(during + last_before), "rules_last": (during or last_before)[-1],
        "captions_per_s_before": rate_in("caption", pre_start, flood_start),
        "captions_per_s_during": rate_in("caption", flood_start, flood_end),
        "alarms_per_s_before": rate_in("alarm", pre_start, flood_start, "new"),
        "alarms_per_s_during": rate_in("alarm", flood_start, flood_end, "new"),
        "workdir": str(workdir), "seconds": window,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[500, 1000])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--reconnects-per-s", type=float, default=200.0)
    parser.add_argument("--baseline-tree", type=Path, help="another checkout to run the same flood against")
    parser.add_argument("--clip", type=Path, default=DATA / "videos" / "pedestrians-campus.mp4")
    parser.add_argument("--json", type=Path, default=Path("bench_http.json"))
    args = parser.parse_args()
    if not args.clip.exists():
        sys.exit(f"{args.clip}: no such clip; set STREAMCAP_DATA or give --clip")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # this process holds the clients' sockets
    trees = [REPO] + ([args.baseline_tree.resolve()] if args.baseline_tree else [])
    results = []
    for clients in args.clients:
        for tree in trees:
            print(f"{clients} slow clients against {tree} ...", flush=True)
            results.append(run(tree, clients, args.seconds, args.reconnects_per_s, args.clip))
    args.json.write_text(json.dumps(results, indent=2))
    print(f"\nstreamcap run under RLIMIT_NOFILE 1024; {args.seconds:g} s of slow clients (reconnecting at most "
          f"{args.reconnects_per_s:g}/s); /healthz with the right token once a second")
    print("| code | slow clients | threads before / max | descriptors before / max | /healthz 200 (asked) | /healthz p50 / max | "
          "rules at start / fewest / last | captions/s before / during | alarms/s before / during |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        name = "this checkout" if Path(r["tree"]) == REPO else Path(r["tree"]).name
        ms = "-" if r["healthz_p50_ms"] is None else f"{r['healthz_p50_ms']:.0f} / {r['healthz_max_ms']:.0f} ms"
        print(f"| {name} | {r['clients']} | {r['threads_before']} / {r['threads_max']} | {r['fds_before']} / {r['fds_max']} | "
              f"{r['healthz_ok']} ({r['healthz_asked']}) | {ms} | {r['rules_at_start']} / {r['rules_min_during']} / {r['rules_last']} | "
              f"{r['captions_per_s_before']:.2f} / {r['captions_per_s_during']:.2f} | "
              f"{r['alarms_per_s_before']:.2f} / {r['alarms_per_s_during']:.2f} |")
    print(f"(json: {args.json}; work folders: {', '.join(r['workdir'] for r in results)})")
    mine = [r for r in results if Path(r["tree"]) == REPO]
    failed = any(r["rules_min_during"] < r["rules_at_start"] or r["healthz_ok"] < r["healthz_asked"] for r in mine)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
