"""`streamcap run -c config.yaml` and `streamcap demo`: the main job.

Runs until SIGINT/SIGTERM (or --duration), then stops in order: readers
joined, the last batch finished, captions drained, `stopped` status published
and the alarm spool flushed as far as the broker allows.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path

log = logging.getLogger("streamcap.run")


def register(subparsers) -> None:
    run_parser = subparsers.add_parser("run", help="watch the cameras of a config file (default: the demo)")
    run_parser.add_argument("-c", "--config", help="config YAML; without it, runs the embedded demo")
    run_parser.add_argument("--duration", type=float, help="stop after this many seconds (default: run until Ctrl-C)")
    run_parser.set_defaults(func=run)

    demo_parser = subparsers.add_parser("demo", help="the embedded default: a built-in sample stream, the shipped model, console output")
    demo_parser.add_argument("--mqtt-host", help="also publish to this MQTT broker")
    demo_parser.add_argument("--mqtt-port", type=int, default=1883)
    demo_parser.add_argument("--http-port", type=int, help="serve /metrics and /healthz on 127.0.0.1:PORT")
    demo_parser.add_argument("--duration", type=float, help="stop after this many seconds (default: run until Ctrl-C)")
    demo_parser.set_defaults(func=demo)


def _serve(config, duration_s: float | None) -> int:
    from streamcap.app import build
    from streamcap.backends.base import BackendUnavailable
    from streamcap.history.store import HistoryUnavailable
    from streamcap.model.checkpoint import CheckpointError
    from streamcap.model.encoder import EncoderWeightsError
    from streamcap.publish.base import PublisherUnavailable

    try:
        app = build(config, console_stream=sys.stdout)
    except (CheckpointError, EncoderWeightsError, BackendUnavailable, PublisherUnavailable, HistoryUnavailable) as exc:
        print(f"streamcap: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        app.start()
        stop.wait(duration_s)
        log.info("stopping")
    finally:
        app.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not app.pipeline.readers_stopped:
        # Python aborts the process (exit 134) if it exits while a thread is inside cap.read();
        # everything else is stopped, flushed and closed by now, so leave without waiting for it.
        log.warning("a camera reader is still blocked inside OpenCV; exiting without it")
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


def run(args) -> int:
    if not args.config:
        args.mqtt_host, args.mqtt_port, args.http_port = None, 1883, None
        return demo(args)
    from streamcap.config.load import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    return _serve(config, args.duration)


def demo(args) -> int:
    from streamcap.config.schema import StreamcapConfig
    from streamcap.demo import demo_config, write_sample_clip

    with tempfile.TemporaryDirectory(prefix="streamcap-demo-") as tmp:
        clip = write_sample_clip(Path(tmp) / "sample.avi")
        config = StreamcapConfig.model_validate(
            demo_config(clip, args.mqtt_host, args.mqtt_port, args.http_port)
        )
        log.info("demo: sample stream %s (scikit-image photos), Ctrl-C to stop", clip.name)
        return _serve(config, args.duration)
