"""Alarms under faults: broker kills and streamcap restarts, counted end to end.

    .venv/bin/python benchmarks/bench_faults.py [--broker-kills 10] [--streamcap-restarts 3] [--minutes 5]

A real `streamcap run` (the shipped model on ONNX Runtime, four file cameras
playing a clip that cuts between a cat and a coffee cup every 2 s, a rule on
@animal that ends as soon as the cat is gone) raises a steady stream of alarm
lifecycle messages. A persistent QoS 1 subscriber (clean_session off) records
what arrives. Meanwhile the broker is SIGKILLed and restarted --broker-kills
times (down 1-4 s each), and streamcap is restarted --streamcap-restarts
times, alternately by SIGTERM and SIGKILL, always with the same spool.

Raised = every alarm message streamcap spooled and wrote to its JSON lines
output (MQTT comes first in its publisher order, so a crash can leave a
spooled message unprinted but never a printed one unspooled). Reported: lost
(raised, never received), duplicates (received more than once, by id and
seq: at-least-once delivery allows them), order (per alarm, seq only ever
grows; per camera, alarms arrive in the order raised), alarms ended by a
restart (a SIGKILLed streamcap leaves its open alarms to the next start) and
alarms that never ended at the subscriber (target 0), and, after each broker
return, how long until alarms flowed again (p50, p90).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import cv2
import paho.mqtt.client as mqtt

from _servers import Broker
from streamcap.demo import photo

STREAMCAP = Path(sys.executable).with_name("streamcap")


def write_clip(path: Path) -> Path:
    """Cuts between a cat and a coffee cup every 2 s, 5 fps."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (640, 360))
    for name in ("chelsea", "coffee") * 3:
        image = cv2.resize(photo(name), (640, 360), interpolation=cv2.INTER_AREA)
        for _ in range(10):
            writer.write(image)
    writer.release()
    return path


class Recorder:
    def __init__(self, port: int):
        self.received: list[tuple[float, str, str, int, str, str | None]] = []  # (time, camera, id, seq, type, ended_by)
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-faults-subscriber", clean_session=False)
        self.client.reconnect_delay_set(0.2, 1)
        self.client.on_connect = lambda c, *_: c.subscribe("streamcap/+/+/alarm", qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg) -> None:
        doc = json.loads(msg.payload)
        with self._lock:
            self.received.append((time.time(), doc["camera"], doc["id"], doc["seq"], doc["type"], doc.get("ended_by")))

    def snapshot(self):
        with self._lock:
            return list(self.received)

    def stop(self):
        self.client.disconnect()
        self.client.loop_stop()


def start_streamcap(workdir: Path, port: int) -> subprocess.Popen:
    log = open(workdir / "streamcap.log", "ab")
    return subprocess.Popen([str(STREAMCAP), "run", "-c", str(workdir / "streamcap.yaml")], stdout=log,
                            stderr=subprocess.STDOUT, cwd=workdir)


def raised(workdir: Path) -> list[dict]:
    path = workdir / "events.jsonl"
    if not path.exists():
        return []
    docs = []
    for line in path.read_text().splitlines():
        try:
            doc = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by SIGKILL
        if doc.get("kind") == "alarm":
            docs.append(doc)
    return docs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--broker-kills", type=int, default=10)
    parser.add_argument("--streamcap-restarts", type=int, default=3)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="bench-faults-"))
    broker_dir = workdir / "broker"
    broker_dir.mkdir()
    broker = Broker(broker_dir, persistence=True)
    broker.start()
    clip = write_clip(workdir / "cut.avi")
    (workdir / "rules.yaml").write_text(
        "- id: animal\n  triggers: [{trigger: caption, any: ['@animal']}]\n  clear_after: 0\n  update_every: 0\n")
    cameras = "\n".join(f"  cam{i}: {{url: \"{clip}\", loop: true, caption_interval_s: 1}}" for i in range(4))
    (workdir / "streamcap.yaml").write_text(textwrap.dedent("""\
        device_id: faults
        cameras:
        {cameras}
        model: {{backend: onnxruntime, max_batch: 4}}
        rules: {{paths: [rules.yaml]}}
        mqtt: {{host: 127.0.0.1, port: {port}, keepalive_s: 5, spool_dir: spool}}
        outputs: {{console: false, jsonl: events.jsonl}}
        """).format(cameras=cameras, port=broker.port))
    recorder = Recorder(broker.port)
    broker.wait_saved()  # the persistent subscriber's session is on disk before the first kill
    streamcap = start_streamcap(workdir, broker.port)
    duration = args.minutes * 60
    events = sorted([(rng.uniform(20, duration - 30), "broker") for _ in range(args.broker_kills)] +
                    [(rng.uniform(20, duration - 30), "streamcap") for _ in range(args.streamcap_restarts)])
    t0 = time.monotonic()
    recoveries, restarts = [], 0
    try:
        for at, what in events:
            time.sleep(max(0.0, at - (time.monotonic() - t0)))
            if what == "broker":
                broker.kill()
                time.sleep(rng.uniform(1, 4))
                back = time.time()
                broker.start()
                seen = len(recorder.snapshot())
                deadline = time.monotonic() + 30
                while len(recorder.snapshot()) == seen and time.monotonic() < deadline:
                    time.sleep(0.05)
                recoveries.append(time.time() - back)
                print(f"{time.monotonic() - t0:6.0f} s  broker killed and restarted; alarms again after {recoveries[-1]:.1f} s", flush=True)
            else:
                sig = signal.SIGTERM if restarts % 2 == 0 else signal.SIGKILL
                restarts += 1
                streamcap.send_signal(sig)
                code = streamcap.wait(30)
                print(f"{time.monotonic() - t0:6.0f} s  streamcap {sig.name} (exit {code}), restarting", flush=True)
                streamcap = start_streamcap(workdir, broker.port)
        time.sleep(max(0.0, duration - (time.monotonic() - t0)))
    finally:
        streamcap.send_signal(signal.SIGTERM)
        streamcap.wait(60)
        time.sleep(5)  # the last deliveries
        recorder.stop()
        broker.stop()
    sent = raised(workdir)
    got = recorder.snapshot()
    sent_ids = {(d["id"], d["seq"]) for d in sent}
    got_ids = [(g[2], g[3]) for g in got]
    lost = sent_ids - set(got_ids)
    duplicates = len(got_ids) - len(set(got_ids))
    # a SIGKILLed streamcap cannot end its open alarms; the next start ends them (ended_by: restart)
    restart_ends = {(g[2], g[3]) for g in got if g[5] == "restart"}
    never_ended = {d["id"] for d in sent} - {g[2] for g in got if g[4] == "end"}
    # order: per alarm the seqs of first deliveries only grow; per camera, alarms first arrive in raised order
    first: dict[tuple[str, int], int] = {}
    for index, key in enumerate(got_ids):
        first.setdefault(key, index)
    seq_order_ok = all(
        [s for (i, s) in sorted(first, key=first.get) if i == alarm] == sorted(s for (i, s) in first if i == alarm)
        for alarm in {i for i, _ in first})
    camera_order_ok = True
    for camera in {d["camera"] for d in sent}:
        raised_order = [(d["id"], d["seq"]) for d in sent if d["camera"] == camera and (d["id"], d["seq"]) in first]
        camera_order_ok &= [k for k in sorted(first, key=first.get) if k in set(raised_order)] == raised_order
    print(f"\n{args.minutes:g} min, {args.broker_kills} broker SIGKILLs, {args.streamcap_restarts} streamcap restarts (SIGTERM/SIGKILL)")
    print("| raised | received (unique) | lost | duplicates | ended by a restart | never ended | order per alarm | order per camera | recovery p50 | recovery p90 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    p90 = statistics.quantiles(recoveries, n=10)[-1] if len(recoveries) >= 2 else (recoveries[0] if recoveries else 0)
    print(f"| {len(sent_ids)} | {len(set(got_ids))} | {len(lost)} | {duplicates} | {len(restart_ends)} | {len(never_ended)} | {'kept' if seq_order_ok else 'BROKEN'} | "
          f"{'kept' if camera_order_ok else 'BROKEN'} | {statistics.median(recoveries) if recoveries else 0:.1f} s | {p90:.1f} s |")
    if lost:
        print("lost:", sorted(lost)[:20])
    print(f"(work folder kept: {workdir})")
    if never_ended:
        print("never ended:", sorted(never_ended)[:20])
    return 1 if lost or never_ended else 0


if __name__ == "__main__":
    sys.exit(main())
