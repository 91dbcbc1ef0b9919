"""The whole pipeline under load: N RTSP cameras at 640x360, one caption per second each.

    .venv/bin/python benchmarks/bench_pipeline.py                         # 1, 4, 16 cameras, 60 s each
    .venv/bin/python benchmarks/bench_pipeline.py --cameras 4 --seconds 30 --backend onnxruntime

For each camera count: one local GStreamer RTSP server with N mounts serving a
real fixed-camera clip (car-detection.mp4 scaled to 640x360), streamcap's real
app (cameras -> sampler -> batcher -> model -> rules -> JSON-lines output) for
`--seconds` after a burn-in, then in the same process the captioner alone on
real frames at the pipeline's mean batch size. Reports captions/s sustained,
capture-to-publish latency p50/p95, frames dropped by the batcher, this
process's CPU use, and the ratio of pipeline captions/s to the captioner's own
captions/s at that batch size (>= 0.85 means the pipeline adds little).
When the cameras ask for more captions than the model can make (16 cameras at
1/s on 2 CPU cores), the pipeline is model-bound and the ratio is the honest
measure; captions/s then stays at the model's rate and the newest frame per
camera wins.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from rtsp_fixtures import RtspServer, prepared_clip, rtsp_unavailable  # noqa: E402
from bench_backends import median_seconds  # noqa: E402

from streamcap.app import build  # noqa: E402
from streamcap.backends.select import load_captioner  # noqa: E402
from streamcap.config.schema import StreamcapConfig  # noqa: E402


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def captioner_rate(captioner, frames, batch: int, repeats: int = 5) -> float:
    chunk = (frames * batch)[:batch]
    return batch / median_seconds(lambda: captioner.caption(chunk), repeats)


def run(count: int, seconds: float, burn_in_s: float, clip: Path, captioner, tmp: Path) -> dict:
    server = RtspServer(clip, count=count, log_dir=tmp).start()
    events = tmp / f"events-{count}.jsonl"
    try:
        config = StreamcapConfig.model_validate({
            "device_id": "bench",
            "cameras": {f"cam{i}": {"url": url, "caption_interval_s": 1.0} for i, url in enumerate(server.urls)},
            "model": {"max_batch": 8, "max_wait_ms": 50},
            "outputs": {"console": False, "jsonl": str(events)},
        })
        app = build(config, captioner=captioner)
        app.start()
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and any(s.value != "connected" for s in app.pipeline.hub.states().values()):
                time.sleep(0.2)
            time.sleep(burn_in_s)
            start_wall, start_cpu = time.time(), cpu_s()
            drops_before = sum(s.batcher_drops for s in app.pipeline.hub.stats().values())
            time.sleep(seconds)
            end_wall, end_cpu = time.time(), cpu_s()
            drops = sum(s.batcher_drops for s in app.pipeline.hub.stats().values()) - drops_before
            batch_hist = app.pipeline.metrics.batch_size.collect()[0].samples
        finally:
            app.stop()
    finally:
        server.kill()
    captions = [json.loads(line) for line in events.read_text().splitlines() if '"kind": "caption"' in line]
    window = [c for c in captions if start_wall <= datetime.fromisoformat(c["time"]).timestamp() <= end_wall]
    latencies = [c["latency_ms"] for c in window]
    batch_sum = next(s.value for s in batch_hist if s.name.endswith("_sum"))
    batch_count = next(s.value for s in batch_hist if s.name.endswith("_count"))
    return {
        "cameras": count,
        "captions_per_s": len(window) / (end_wall - start_wall),
        "p50_ms": percentile(latencies, 0.5),
        "p95_ms": percentile(latencies, 0.95),
        "dropped": drops,
        "cpu_pct": 100 * (end_cpu - start_cpu) / (end_wall - start_wall),
        "mean_batch": batch_sum / max(batch_count, 1),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cameras", default="1,4,16")
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--burn-in", type=float, default=10)
    p.add_argument("--backend", default="auto")
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
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for count in [int(c) for c in args.cameras.split(",")]:
            row = run(count, args.seconds, args.burn_in, clip, captioner, Path(tmp))
            batch = max(1, round(row["mean_batch"]))
            row["model_captions_per_s"] = captioner_rate(captioner, frames, batch)
            row["ratio"] = row["captions_per_s"] / row["model_captions_per_s"]
            rows.append(row)
            print(f"  {count} cameras done", file=sys.stderr)
    print(f"backend {captioner.name}, model {captioner.model_name}, {args.seconds:.0f} s per row after {args.burn_in:.0f} s burn-in")
    print("| cameras | asked captions/s | captions/s | p50 ms | p95 ms | dropped | CPU % (of 1 core) | mean batch | model alone captions/s | ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['cameras']} | {r['cameras']} | {r['captions_per_s']:.2f} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['dropped']} | "
              f"{r['cpu_pct']:.0f} | {r['mean_batch']:.1f} | {r['model_captions_per_s']:.2f} | {r['ratio']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
