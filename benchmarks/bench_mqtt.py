"""QoS 1 alarm throughput through the on-disk spool to a local mosquitto.

    .venv/bin/python benchmarks/bench_mqtt.py                 # 1000 alarms, 3 repeats
    .venv/bin/python benchmarks/bench_mqtt.py --alarms 300 --repeats 1

Starts its own mosquitto on a free 127.0.0.1 port (needs the Debian package
mosquitto), then for each spool setting (fsync per alarm or not) and in-flight
window (1 = the default, strict order; 10) publishes N alarms as fast as the
caller can and reports, as medians over --repeats runs after one warm-up:

    put/s        how fast publish_alarm returns (the spool write the dispatch thread pays)
    delivered/s  alarms acknowledged by the broker (PUBACK) and removed from the spool,
                 from the first publish_alarm to an empty spool
    vs raw       delivered/s relative to plain paho QoS 1 publishing without a spool
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as mqtt

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from streamcap.messages import Alarm, Severity  # noqa: E402
from streamcap.metrics import Metrics  # noqa: E402
from streamcap.publish.mqtt import MqttPublisher  # noqa: E402
from _servers import start_mosquitto  # noqa: E402
from streamcap.config.schema import MqttConfig  # noqa: E402


def make_alarm(i: int) -> Alarm:
    now = time.time()
    return Alarm(alarm_id=f"bench-gate-{i}", rule_id="bench", severity=Severity.alert, camera_id="gate",
                 caption="a person is standing at the gate", captured_at=now, raised_at=now)


def run_spool(port: int, workdir: Path, n: int, durable: bool, window: int) -> tuple[float, float]:
    metrics = Metrics()
    spool = workdir / f"spool-{time.monotonic_ns()}"
    pub = MqttPublisher(MqttConfig(host="127.0.0.1", port=port, spool_dir=str(spool), spool_durable=durable,
                                   alarm_window=window, spool_max_messages=n + 1), "bench", metrics)
    pub.start()
    try:
        if not pub.wait_connected(10):
            sys.exit(f"not connected: {pub.last_error}")
        t0 = time.perf_counter()
        for i in range(n):
            pub.publish_alarm(make_alarm(i))
        t_put = time.perf_counter() - t0
        while metrics.health()["mqtt"]["spool_depth"] > 0:
            time.sleep(0.0005)
        t_all = time.perf_counter() - t0
    finally:
        pub.close(2)
        shutil.rmtree(spool, ignore_errors=True)
    return n / t_put, n / t_all


def run_raw(port: int, n: int) -> float:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-raw")
    client.max_inflight_messages_set(20)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        payload = b'{"id":"bench","caption":"a person is standing at the gate"}'
        t0 = time.perf_counter()
        infos = [client.publish("streamcap/bench/gate/alarm", payload, qos=1) for _ in range(n)]
        for info in infos:
            info.wait_for_publish(30)
        return n / (time.perf_counter() - t0)
    finally:
        client.disconnect()
        client.loop_stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alarms", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    workdir = Path(tempfile.mkdtemp(prefix="bench-mqtt-"))
    proc, port = start_mosquitto(workdir)
    try:
        run_raw(port, 200)  # warm-up
        raw = statistics.median(run_raw(port, args.alarms) for _ in range(args.repeats))
        print(f"QoS 1 alarms to local mosquitto, {args.alarms} alarms, median of {args.repeats}")
        print(f"{'setting':<34} {'put/s':>9} {'delivered/s':>12} {'vs raw':>7}")
        print(f"{'raw paho, no spool (inflight 20)':<34} {'-':>9} {raw:>12.0f} {1.0:>7.2f}")
        for durable in (True, False):
            for window in (1, 10):
                run_spool(port, workdir, min(200, args.alarms), durable, window)  # warm-up
                runs = [run_spool(port, workdir, args.alarms, durable, window) for _ in range(args.repeats)]
                put = statistics.median(r[0] for r in runs)
                delivered = statistics.median(r[1] for r in runs)
                name = f"spool {'fsync' if durable else 'no-fsync'}, window {window}"
                print(f"{name:<34} {put:>9.0f} {delivered:>12.0f} {delivered / raw:>7.2f}")
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
