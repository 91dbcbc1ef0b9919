"""An MqttPublisher in its own process, for tests that kill or restart the publisher.

    python mqtt_publisher_proc.py --port 1883 --spool DIR --device dev \
        [--wait-connected] [--alarms N --first 0] [--then hang|close]

Prints one line per milestone on stdout ("connected", "spooled N", "ready",
"closed depth=N") so the test can follow along; `hang` waits to be killed.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo, when run from anywhere

from streamcap.messages import Alarm, Severity  # noqa: E402
from streamcap.metrics import Metrics  # noqa: E402
from streamcap.publish.mqtt import MqttPublisher  # noqa: E402
from mqtt_fixtures import mqtt_config  # noqa: E402


def make_alarm(i: int, camera: str = "gate") -> Alarm:
    now = time.time()
    return Alarm(alarm_id=f"alarm-{i:05d}", rule_id="person_at_gate", severity=Severity.alert, camera_id=camera,
                 caption=f"a person at the gate ({i})", captured_at=now, raised_at=now)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--spool", required=True)
    parser.add_argument("--device", default="dev")
    parser.add_argument("--prefix", default="streamcap")
    parser.add_argument("--username")
    parser.add_argument("--password-env", help="environment variable holding the password")
    parser.add_argument("--wait-connected", action="store_true")
    parser.add_argument("--alarms", type=int, default=0)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--then", choices=["hang", "close"], default="close")
    parser.add_argument("--close-timeout", type=float, default=5.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")

    settings = mqtt_config(
        host="127.0.0.1", port=args.port, prefix=args.prefix, spool_dir=args.spool,
        username=args.username, password=os.environ.get(args.password_env) if args.password_env else None,
        keepalive_s=5,
    )
    metrics = Metrics()
    publisher = MqttPublisher(settings, args.device, metrics)
    publisher.start()
    if args.wait_connected:
        if not publisher.wait_connected(30):
            print(f"not connected: {publisher.last_error}", flush=True)
            return 1
        print("connected", flush=True)
    for i in range(args.first, args.first + args.alarms):
        publisher.publish_alarm(make_alarm(i))
    print(f"spooled {args.alarms}", flush=True)
    if args.then == "hang":
        print("ready", flush=True)
        while True:
            time.sleep(3600)
    publisher.close(args.close_timeout)
    print(f"closed depth={metrics.health()['mqtt']['spool_depth']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
