"""Alarms when the spool's disk fills up, and when the broker refuses them: counted end to end.

    .venv/bin/python benchmarks/bench_disk_acl.py [--scenario disk|acl|both] [--cycles 3] [--acl-s 40]

A real `streamcap run` of this checkout (the shipped model on ONNX Runtime,
four file cameras playing a clip that cuts between a cat and a coffee cup
every 2 s, a rule on @animal that ends as soon as the cat is gone, snapshots
on) raises a steady stream of alarm lifecycle messages. A persistent QoS 1
subscriber (clean_session off) records what arrives; raised = the alarm
messages streamcap wrote to its JSON-lines output (on the ordinary disk).

disk (root: it mounts a 64 MiB tmpfs for the spool): --cycles times, the
broker is stopped, the spool's filesystem filled to its last byte, alarms keep
coming for 15 s (they wait in memory), the disk is freed, and 10 s later the
broker comes back. Reported: raised, received, lost, duplicates, order per
alarm and per camera, `spool_full` drops, and what /healthz said while the
disk was full (polled twice a second).

acl: a broker whose ACL denies the alarm and snapshot topics, for --acl-s
seconds, then fixed (rewritten, SIGHUP), run once with MQTT 5 (the default)
and once with MQTT 3.1.1 as the baseline. Reported per protocol: raised,
received before and after the fix, refusals counted, lost silently (raised,
never received and never reported as refused), and /healthz during the denial.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

from _servers import Broker, free_port
from bench_faults import Recorder, raised, write_clip

REPO = Path(__file__).resolve().parent.parent
ACL_DENY = "topic read #\ntopic write streamcap/+/status\ntopic write streamcap/+/+/state\n" \
           "topic write streamcap/+/+/caption\ntopic readwrite homeassistant/#\n"
ACL_ALLOW = "topic readwrite #\n"


class Box:
    """`python -m streamcap run` of this checkout, with /healthz polled in the background."""

    def __init__(self, workdir: Path, broker_port: int, spool: Path, protocol: str, cache: Path):
        self.workdir, self.http_port = workdir, free_port()
        clip = workdir.parent / "cut.avi"
        if not clip.exists():
            write_clip(clip)
        (workdir / "rules.yaml").write_text(
            "- id: animal\n  triggers: [{trigger: caption, any: ['@animal']}]\n  clear_after: 0\n  update_every: 0\n"
            "  snapshot: true\n")
        cameras = "\n".join(f"  cam{i}: {{url: \"{clip}\", loop: true, caption_interval_s: 1}}" for i in range(4))
        (workdir / "streamcap.yaml").write_text(textwrap.dedent("""\
            device_id: bench
            cameras:
            {cameras}
            model: {{backend: onnxruntime, max_batch: 4}}
            rules: {{paths: [rules.yaml]}}
            mqtt: {{host: 127.0.0.1, port: {port}, keepalive_s: 5, spool_dir: {spool}, protocol: "{protocol}",
                    refused_retry_s: 5}}
            outputs: {{console: false, jsonl: events.jsonl}}
            http: {{enabled: true, port: {http}}}
            """).format(cameras=cameras, port=broker_port, spool=spool, protocol=protocol, http=self.http_port))
        env = {**os.environ, "PYTHONPATH": str(REPO), "XDG_CACHE_HOME": str(cache)}
        self.log = open(workdir / "streamcap.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "streamcap", "run", "-c", "streamcap.yaml"], cwd=workdir,
                                     env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.health: list[tuple[float, dict]] = []
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._stop.wait(0.5):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/healthz", timeout=2) as r:
                    self.health.append((time.monotonic(), json.loads(r.read())))
            except OSError:
                continue

    def metric(self, name: str, label: str = "") -> float:
        """The sum of a counter's samples (those with `label`, e.g. 'cause="spool_full"')."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics", timeout=2) as r:
                text = r.read().decode()
        except OSError:
            return float("nan")
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(name + "{") and label in line)

    def wait_alarms(self, n: int, timeout_s: float = 600) -> None:
        deadline = time.monotonic() + timeout_s
        while len(raised(self.workdir)) < n:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"streamcap raised no alarms (exit {self.proc.poll()}); see {self.workdir}/streamcap.log")
            time.sleep(0.5)

    def said(self, since: float, until: float) -> str:
        """The /healthz statuses and problems seen in a time window, e.g. 'degraded (spool_full)'."""
        seen = []
        for t, doc in self.health:
            if since <= t <= until:
                what = f"{doc['status']} ({', '.join(sorted({p['problem'] for p in doc.get('problems', [])})) or '-'})"
                if what not in seen:
                    seen.append(what)
        return " / ".join(seen) or "(no answer)"

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(90)
        self._stop.set()
        self._poller.join(5)
        self.log.close()


def count(sent: list[dict], got: list[tuple]) -> dict:
    sent_keys = [(d["id"], d["seq"]) for d in sent]
    got_keys = [(g[2], g[3]) for g in got]
    first: dict[tuple[str, int], int] = {}
    for index, key in enumerate(got_keys):
        first.setdefault(key, index)
    arrival = sorted(first, key=first.get)
    per_alarm = all([s for (i, s) in arrival if i == a] == sorted(s for (i, s) in first if i == a) for a in {i for i, _ in first})
    per_camera = True
    for camera in {d["camera"] for d in sent}:
        order = [(d["id"], d["seq"]) for d in sent if d["camera"] == camera and (d["id"], d["seq"]) in first]
        per_camera &= [k for k in arrival if k in set(order)] == order
    return {"raised": len(set(sent_keys)), "received": len(first), "lost": len(set(sent_keys) - set(first)),
            "duplicates": len(got_keys) - len(first), "order": "kept" if per_alarm and per_camera else "BROKEN"}


def fill(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 20, 4096, 512):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                continue
    finally:
        os.close(fd)


def run_disk(base: Path, cache: Path, cycles: int) -> None:
    if os.geteuid() != 0:
        print("disk: skipped, mounting a tmpfs for the spool needs root")
        return
    workdir = base / "disk"
    (workdir / "broker").mkdir(parents=True)
    mount = workdir / "spool-disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], check=True)
    broker = Broker(workdir / "broker", persistence=True)
    broker.start()
    recorder = Recorder(broker.port)
    broker.wait_saved()
    box = Box(workdir, broker.port, mount / "spool", "5", cache)
    full_windows = []
    try:
        box.wait_alarms(10)
        for cycle in range(cycles):
            broker.stop()
            time.sleep(2)
            fill(mount / "filler")
            full_from = time.monotonic()
            time.sleep(15)  # alarms keep coming; the spool cannot write them
            full_windows.append((full_from, time.monotonic()))
            (mount / "filler").unlink()
            time.sleep(10)
            broker.start()
            time.sleep(15)
            print(f"disk cycle {cycle + 1}: raised so far {len(raised(workdir))}, received {len(recorder.snapshot())}",
                  flush=True)
        drops = box.metric("streamcap_drops_total", 'cause="spool_full"')
    finally:
        box.stop()
        time.sleep(5)  # the last deliveries
        recorder.stop()
        broker.stop()
        subprocess.run(["umount", "-l", str(mount)])
    c = count(raised(workdir), recorder.snapshot())
    said = " / ".join(sorted({box.said(a, b) for a, b in full_windows}))
    print(f"\ndisk: spool on a 64 MiB tmpfs, {cycles} cycles of broker down + disk filled 15 s + freed + broker back")
    print("| raised | received | lost | duplicates | order | spool_full drops | /healthz while full |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {c['raised']} | {c['received']} | {c['lost']} | {c['duplicates']} | {c['order']} | {drops:g} | {said} |")
    print(f"(work folder: {workdir})")


def run_acl(base: Path, cache: Path, acl_s: float) -> None:
    rows = []
    for protocol in ("5", "3.1.1"):
        workdir = base / f"acl-{protocol}"
        (workdir / "broker").mkdir(parents=True)
        broker = Broker(workdir / "broker", persistence=True, acl=ACL_DENY)
        broker.start()
        recorder = Recorder(broker.port)
        broker.wait_saved()
        box = Box(workdir, broker.port, workdir / "spool", protocol, cache)
        try:
            box.wait_alarms(1)
            denied_from = time.monotonic()
            time.sleep(acl_s)
            denied_until = time.monotonic()
            before_fix = len(recorder.snapshot())
            refusals = box.metric("streamcap_mqtt_refused_total")
            broker.set_acl(ACL_ALLOW)
            time.sleep(20)
        finally:
            box.stop()
            time.sleep(5)
            recorder.stop()
            broker.stop()
        sent = raised(workdir)
        c = count(sent, recorder.snapshot())
        silently = c["lost"] if refusals == 0 else 0
        rows.append((protocol, c, before_fix, refusals, silently, box.said(denied_from + 5, denied_until)))
    print(f"\nacl: alarm and snapshot topics denied for {acl_s:g} s, then allowed (SIGHUP)")
    print("| protocol | raised | received while denied | refusals counted | received in the end | lost | lost silently | order | /healthz while denied |")
    print("|---|---|---|---|---|---|---|---|---|")
    for protocol, c, before_fix, refusals, silently, said in rows:
        print(f"| MQTT {protocol} | {c['raised']} | {before_fix} | {refusals:g} | {c['received']} | {c['lost']} | "
              f"{silently} | {c['order']} | {said} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", choices=["disk", "acl", "both"], default="both")
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--acl-s", type=float, default=40.0)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-disk-acl-"))
    if os.geteuid() == 0:  # the broker runs as `mosquitto` and must reach its folders
        for folder in (base, *base.parents):
            folder.chmod(folder.stat().st_mode | 0o001)
    cache = base / "cache"  # one ONNX export for every run
    if args.scenario in ("disk", "both"):
        run_disk(base, cache, args.cycles)
    if args.scenario in ("acl", "both"):
        run_acl(base, cache, args.acl_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
