"""A long run under overload: memory and threads stay flat, and every drop is counted under bounded labels.

    .venv/bin/python benchmarks/bench_soak.py [--cameras 16] [--minutes 30] [--overload 3] [--backend onnxruntime]

One local GStreamer RTSP server serves N mounts of a real fixed-camera clip
(car-detection.mp4 at 640x360); streamcap's real app watches them all, with
each camera's caption interval set so that together they ask --overload
times what the model can caption (measured first, in this process, at batch
8). Every --sample seconds it records this process's RSS and thread count;
after the warm-up (the first 10 % of the run, at least 2 min) it reports RSS
growth (target < 5 %), the thread count range (target: constant), captions
per second, and the drops by stage, cause and camera from /metrics, with the
number of distinct label sets (bounded: it cannot grow with time) and the
check that batched frames = captioned + dropped-by-the-batcher.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from _servers import free_port  # noqa: E402
from bench_backends import median_seconds  # noqa: E402
from rtsp_fixtures import RtspServer, prepared_clip, rtsp_unavailable  # noqa: E402

from streamcap.app import build  # noqa: E402
from streamcap.backends.select import load_captioner  # noqa: E402
from streamcap.config.schema import StreamcapConfig  # noqa: E402


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def drop_samples(registry) -> dict[tuple[str, str, str], float]:
    samples = {}
    for metric in registry.collect():
        if metric.name == "streamcap_drops":
            for s in metric.samples:
                if s.name.endswith("_total"):
                    samples[(s.labels["stage"], s.labels["cause"], s.labels["camera"])] = s.value
    return samples


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cameras", type=int, default=16)
    p.add_argument("--minutes", type=float, default=30)
    p.add_argument("--overload", type=float, default=3.0)
    p.add_argument("--sample", type=float, default=10.0)
    p.add_argument("--backend", default="onnxruntime")
    args = p.parse_args()
    why = rtsp_unavailable()
    if why:
        print(f"skipped: {why}")
        return 0
    clip = prepared_clip("car-detection.mp4", 640, 360)
    captioner = load_captioner(backend=args.backend)
    cap = cv2.VideoCapture(str(clip))
    frames = [cap.read()[1] for _ in range(8)]
    cap.release()
    model_rate = 8 / median_seconds(lambda: captioner.caption(frames), 5)
    interval = args.cameras / (args.overload * model_rate)
    tmp = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    server = RtspServer(clip, count=args.cameras, log_dir=tmp).start()
    config = StreamcapConfig.model_validate({
        "device_id": "soak",
        "cameras": {f"cam{i:02d}": {"url": url, "caption_interval_s": round(interval, 3)} for i, url in enumerate(server.urls)},
        "model": {"max_batch": 8, "max_wait_ms": 50},
        "outputs": {"console": False},
        "http": {"enabled": True, "port": free_port()},
    })
    app = build(config, captioner=captioner)
    samples: list[tuple[float, float, int]] = []
    app.start()
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < args.minutes * 60:
            samples.append((time.monotonic() - t0, rss_mb(), threading.active_count()))
            time.sleep(args.sample)
    finally:
        app.stop()
        server.kill()
    # Read once everything has stopped, so the counts are final and comparable.
    registry = app.pipeline.metrics.registry
    drops = drop_samples(registry)
    captioned = sum(registry.get_sample_value("streamcap_frames_captioned_total", {"camera": c}) or 0 for c in config.cameras)
    batched = sum(s.sampler.accepted for s in app.pipeline.hub.stats().values())
    warm = max(120.0, 0.1 * args.minutes * 60)
    after = [s for s in samples if s[0] >= warm] or samples[-1:]
    growth = 100 * (after[-1][1] - after[0][1]) / after[0][1]
    threads = sorted({s[2] for s in after})
    batcher_drops = sum(v for (stage, _, _), v in drops.items() if stage == "batcher")
    inference_drops = sum(v for (stage, _, _), v in drops.items() if stage == "inference")
    duration = samples[-1][0] if samples else 0
    print(f"{args.cameras} RTSP cameras, {args.minutes:g} min, asking {args.overload:g}x the model "
          f"({model_rate:.1f} captions/s at batch 8 on {captioner.name}; caption interval {interval:.2f} s per camera)")
    print("| RSS after warm-up | RSS at end | growth | threads after warm-up | captions/s | drop label sets |")
    print("|---|---|---|---|---|---|")
    print(f"| {after[0][1]:.0f} MB | {after[-1][1]:.0f} MB | {growth:+.1f} % | {threads[0]}-{threads[-1]} | "
          f"{captioned / max(duration, 1):.1f} | {len(drops)} |")
    print("\n| stage | cause | cameras | dropped |\n|---|---|---|---|")
    by_cause: dict[tuple[str, str], list[float]] = {}
    for (stage, cause, camera), value in drops.items():
        by_cause.setdefault((stage, cause), []).append(value)
    for (stage, cause), values in sorted(by_cause.items()):
        print(f"| {stage} | {cause} | {len(values)} | {sum(values):.0f} (per camera {min(values):.0f}-{max(values):.0f}) |")
    accounted = captioned + batcher_drops + inference_drops
    print(f"\nsampled {batched} = captioned {captioned:.0f} + dropped by the batcher {batcher_drops:.0f} (behind or at shutdown) "
          f"+ model errors {inference_drops:.0f}: {'every frame accounted for' if batched == accounted else f'MISMATCH by {batched - accounted:.0f}'}")
    (tmp / "samples.json").write_text(json.dumps(samples))
    return 0 if growth < 5 and len(threads) == 1 else 1


if __name__ == "__main__":
    sys.exit(main())
