"""Many cameras on one box: today's decoding against decoding only what is captioned, in the same run.

    flock /tmp/streamcap-bench.lock .venv/bin/python benchmarks/bench_scale.py                 # 8, 32, 64, 128 RTSP cameras
    ... bench_scale.py --cameras 128 --interval 5 --decoders new                              # one caption every 5 s
    ... bench_scale.py --cameras 48 --decoders new --seconds 40                                # 2x overload: fair share
    ... bench_scale.py --gop 10 --cameras 32                                                   # key frames every 8-10 s
    python3 benchmarks/bench_scale.py --source file --clip .device/clip.mp4 --backend torch-cuda \\
        --cameras 320 --decoders new --max-batch 64 --json $OUT/scale.json                    # the GPU box

Each run starts streamcap's real app (`streamcap.app.build`) with N cameras and
the shipped model, and no MQTT or HTTP. `--source rtsp` serves a real CCTV clip
from one local GStreamer RTSP server with N mounts, as pre-encoded H.264
(filesrc ! qtdemux ! h264parse ! rtph264pay, no re-encoding; the clip looped
20 times); `--source file` gives N looping file cameras instead (no server:
the GPU box has no GStreamer). Two decoders, alternating in one process:

- today: OpenCV's FFmpeg with its default thread pool (one thread per core per
  camera), every frame decoded, OpenCV's open lock on (cameras connect one after
  another): streamcap before issue 15 (`decode.library: opencv`,
  `decode.threads_per_camera: 0`, `keyframes_only: false`).
- new: the default: PyAV where installed (else OpenCV), one thread per camera,
  key frames only when the key-frame interval fits the caption interval.

For each run, after the cameras connected and a warm-up: CPU of the process
per camera (% of one core) and of its decoding alone (the process less the
inference and dispatch threads), threads, captions/s per camera (min, mean,
max, and how many cameras were captioned), capture-to-publish latency p50/p95
(from the captions' own `latency_ms`), how busy the model was kept (time in
the captioner over the window) and its mean batch, frames dropped because
the model was behind, waiting frames refreshed just before their turn,
captions/s made against the model's own rate at that batch size
(measured first in this process), and the time until every camera connected.
Prints a table per run and writes everything to --json. Only streamcap's own
dependencies and numpy/opencv/psutil-free stdlib are imported, so it runs on
the GPU box as it is.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from streamcap.app import build  # noqa: E402
from streamcap.backends.select import load_captioner  # noqa: E402
from streamcap.capture.readers import resolve_library  # noqa: E402
from streamcap.config.schema import StreamcapConfig  # noqa: E402
from streamcap.messages import CameraState  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
DATA = Path(os.environ.get("STREAMCAP_DATA", REPO.parent / "shared" / "data"))
CLIPS = {1: DATA / "cctv_clips" / "videos" / "motorway-elevated.mp4",  # 960x540, 25 fps, a key frame every 1 s
         10: DATA / "videos" / "bottle-detection.mp4"}  # a key frame every 8.4 s
DECODERS = {
    "today": {"decode": {"library": "opencv", "threads_per_camera": 0}, "keyframes_only": False, "opencv_lock": True},
    "new": {"decode": {"library": "auto", "threads_per_camera": 1}, "keyframes_only": True, "opencv_lock": False},
    # the new decoding with each library forced, to choose between them
    "new-pyav": {"decode": {"library": "pyav", "threads_per_camera": 1}, "keyframes_only": True, "opencv_lock": False},
    "new-opencv": {"decode": {"library": "opencv", "threads_per_camera": 1}, "keyframes_only": True, "opencv_lock": False},
}


def thread_cpu_s(native_id: int | None) -> float:
    if native_id is None:
        return 0.0
    try:
        fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def process_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


def thread_count() -> int:
    return len(os.listdir("/proc/self/task"))


def model_rate(captioner, clip: Path, batch: int) -> float:
    cap = cv2.VideoCapture(str(clip))
    frames = [cap.read()[1] for _ in range(batch)]
    cap.release()
    captioner.caption(frames)  # warm-up
    times = []
    for _ in range(5):
        started = time.perf_counter()
        captioner.caption(frames)
        times.append(time.perf_counter() - started)
    return batch / statistics.median(times)


class TimedCaptioner:
    """The captioner, counting the seconds spent captioning: how busy the pipeline kept the model."""

    def __init__(self, captioner) -> None:
        self.captioner = captioner
        self.busy_s = 0.0

    def __getattr__(self, name):
        return getattr(self.captioner, name)

    def describe(self, images):
        started = time.perf_counter()
        try:
            return self.captioner.describe(images)
        finally:
            self.busy_s += time.perf_counter() - started


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run_one(args, captioner, clips: list[Path], cameras: int, decoder: str, own_rate: float, workdir: Path) -> dict:
    spec = DECODERS[decoder]
    # OpenCV reads this at every open: "1" (streamcap's default since issue 15) lets cameras open in parallel.
    os.environ["OPENCV_FFMPEG_IS_THREAD_SAFE"] = "0" if spec["opencv_lock"] else "1"
    server = None
    if args.source == "rtsp":
        sys.path.insert(0, str(REPO / "tests" / "integration"))
        from rtsp_fixtures import RtspServer, prepared_clip

        served = prepared_clip(str(clips[0]))
        server = RtspServer(served, count=cameras, path="cam", log_dir=workdir).start()
        urls = server.urls
    else:
        urls = [str(clips[i % len(clips)]) for i in range(cameras)]  # several clips: dealt out in turn
    jsonl = workdir / f"{decoder}-{cameras}-{time.monotonic_ns()}.jsonl"
    config = StreamcapConfig.model_validate({
        "device_id": "scale",
        "cameras": {f"cam{i:03d}": {"url": url, "loop": args.source == "file", "caption_interval_s": args.interval,
                                    "keyframes_only": spec["keyframes_only"], "open_timeout_s": 20, "read_timeout_s": 10}
                    for i, url in enumerate(urls)},
        "decode": spec["decode"],
        "model": {"max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms},
        "outputs": {"console": False, "jsonl": str(jsonl)},
    })
    timed = TimedCaptioner(captioner)
    app = build(config, captioner=timed)
    hub = app.pipeline.hub
    started = time.monotonic()
    app.start()
    try:
        connect_s = None
        while time.monotonic() - started < args.connect_timeout:
            if all(state == CameraState.connected for state in hub.states().values()):
                connect_s = time.monotonic() - started
                break
            time.sleep(0.1)
        connected = sum(state == CameraState.connected for state in hub.states().values())
        time.sleep(args.warmup)
        inference, dispatch = app.pipeline._inference.native_id, app.pipeline._dispatch.native_id
        cpu0, inf0, dis0, main0 = process_cpu_s(), thread_cpu_s(inference), thread_cpu_s(dispatch), thread_cpu_s(threading.get_native_id())
        wall0, t0 = time.monotonic(), time.time()
        batcher0, busy0 = hub.batcher.stats(), timed.busy_s
        drops0 = batcher0.drops
        threads = []
        while time.monotonic() - wall0 < args.seconds:
            threads.append(thread_count())
            time.sleep(1.0)
        wall = time.monotonic() - wall0
        t1 = time.time()
        cpu = process_cpu_s() - cpu0
        model_cpu = (thread_cpu_s(inference) - inf0) + (thread_cpu_s(dispatch) - dis0) + (thread_cpu_s(threading.get_native_id()) - main0)
        batcher1, busy1 = hub.batcher.stats(), timed.busy_s
        drops1 = batcher1.drops
        modes = {}
        for camera in hub.cameras.values():
            info = camera.decoder_info
            key = f"{info.get('library')}/{info.get('hardware')}/{info.get('mode')}"
            modes[key] = modes.get(key, 0) + 1
    finally:
        app.stop()
        if server is not None:
            server.kill()
    per_camera = {name: 0 for name in config.cameras}
    latencies = []
    for line in jsonl.read_text().splitlines():
        doc = json.loads(line)
        if doc.get("kind") != "caption":
            continue
        at = datetime.fromisoformat(doc["time"]).timestamp()
        if t0 <= at < t1:
            per_camera[doc["camera"]] += 1
            latencies.append(doc["latency_ms"] / 1000.0)
    jsonl.unlink(missing_ok=True)
    rates = [n / wall for n in per_camera.values()]
    made = sum(per_camera.values()) / wall
    asked = cameras / args.interval
    return {
        "decoder": decoder, "source": args.source, "cameras": cameras, "interval_s": args.interval, "gop_s": args.gop,
        "clips": [c.name for c in clips], "library": resolve_library(spec["decode"]["library"]).value, "modes": modes,
        "connected": connected, "connect_s": None if connect_s is None else round(connect_s, 2),
        "cpu_per_camera_pct": round(100 * cpu / wall / cameras, 2),
        "decode_cpu_per_camera_pct": round(100 * (cpu - model_cpu) / wall / cameras, 2),
        "process_cores": round(cpu / wall, 2), "threads": max(threads) if threads else None,
        "captions_per_s": round(made, 2), "asked_per_s": round(asked, 2), "own_rate": round(own_rate, 1),
        "made_over_own": round(made / own_rate, 3) if own_rate else None,
        "per_camera_min": round(min(rates), 3), "per_camera_mean": round(statistics.mean(rates), 3),
        "per_camera_max": round(max(rates), 3), "cameras_captioned": sum(n > 0 for n in per_camera.values()),
        "p50_s": percentile(latencies, 0.5), "p95_s": percentile(latencies, 0.95),
        "drops": sum(drops1.values()) - sum(drops0.values()), "seconds": round(wall, 1),
        "mean_batch": round((batcher1.frames_batched - batcher0.frames_batched) / max(1, batcher1.batches - batcher0.batches), 2),
        "refreshed": batcher1.refreshed - batcher0.refreshed,
        "asked_without_frame": batcher1.asked_without_frame - batcher0.asked_without_frame,
        "model_busy": round((busy1 - busy0) / wall, 3),
    }


def print_table(results: list[dict]) -> None:
    print("\n| decoder | cameras | caption every | connected (s) | CPU/camera | decode CPU/camera | process cores | threads "
          "| captions/s (own rate) | model busy | mean batch | per camera min/mean/max | captioned | p50 / p95 | drops | refreshed | modes |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        fmt = (lambda v: "-" if v is None else f"{v:.2f}")
        print(f"| {r['decoder']} ({r['library']}) | {r['cameras']} | {r['interval_s']:g} s | {r['connected']} ({fmt(r['connect_s'])}) "
              f"| {r['cpu_per_camera_pct']:.1f} % | {r['decode_cpu_per_camera_pct']:.1f} % | {r['process_cores']:.2f} | {r['threads']} "
              f"| {r['captions_per_s']:.1f} ({r['own_rate']:.1f}) | {100 * r['model_busy']:.0f} % | {r['mean_batch']:.1f} | {r['per_camera_min']:.2f} / {r['per_camera_mean']:.2f} / "
              f"{r['per_camera_max']:.2f} | {r['cameras_captioned']}/{r['cameras']} | {fmt(r['p50_s'])} / {fmt(r['p95_s'])} s "
              f"| {r['drops']} | {r['refreshed']} | {', '.join(f'{k}: {v}' for k, v in r['modes'].items())} |")
    pairs = {}
    for r in results:
        pairs.setdefault((r["cameras"], r["interval_s"], r["source"], r["gop_s"]), {})[r["decoder"]] = r
    for (cameras, interval, _, gop), pair in pairs.items():
        if "today" in pair and "new" in pair and pair["today"]["decode_cpu_per_camera_pct"] > 0:
            ratio = pair["new"]["decode_cpu_per_camera_pct"] / pair["today"]["decode_cpu_per_camera_pct"]
            print(f"{cameras} cameras, key frame every {gop} s, caption every {interval:g} s: "
                  f"decoding CPU per camera new/today = {ratio:.3f}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cameras", default="8,32,64,128", help="comma-separated camera counts")
    p.add_argument("--decoders", default="today,new", help=f"comma-separated, run in turn for each count: {', '.join(DECODERS)}")
    p.add_argument("--source", choices=("rtsp", "file"), default="rtsp")
    p.add_argument("--gop", type=int, choices=(1, 10), default=1, help="material with a key frame every 1 s or every 8-10 s")
    p.add_argument("--clip", type=Path, nargs="+", help="use these H.264 clips instead (file cameras take them in turn; "
                   "an RTSP server serves the first)")
    p.add_argument("--interval", type=float, default=1.0, help="caption interval per camera, seconds")
    p.add_argument("--seconds", type=float, default=25.0, help="measured window per run")
    p.add_argument("--warmup", type=float, default=8.0, help="after every camera connected (or --connect-timeout)")
    p.add_argument("--connect-timeout", type=float, default=90.0)
    p.add_argument("--backend", default="onnxruntime", help="captioner backend: onnxruntime, torch, torch-cuda, ...")
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--max-wait-ms", type=float, default=50.0)
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.source == "rtsp":
        sys.path.insert(0, str(REPO / "tests" / "integration"))
        from rtsp_fixtures import rtsp_unavailable

        why = rtsp_unavailable()
        if why:
            print(f"skipped: {why}")
            return 0
    clips = args.clip or [CLIPS[args.gop]]
    for clip in clips:
        if not clip.is_file():
            sys.exit(f"{clip} not found: set STREAMCAP_DATA, or give --clip")
    captioner = load_captioner(backend=args.backend, max_batch=args.max_batch)
    own_rate = model_rate(captioner, clips[0], args.max_batch)
    print(f"model {captioner.model_name} on {getattr(captioner, 'name', args.backend)}: {own_rate:.1f} captions/s alone at batch "
          f"{args.max_batch}; clips {', '.join(c.name for c in clips)}; {os.cpu_count()} CPUs; "
          f"load average {os.getloadavg()[0]:.1f} at start")
    results = []
    workdir = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    for cameras in [int(c) for c in args.cameras.split(",")]:
        for decoder in args.decoders.split(","):
            result = run_one(args, captioner, clips, cameras, decoder, own_rate, workdir)
            results.append(result)
            print_table([result])
            sys.stdout.flush()
    print("\nall runs:")
    print_table(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"own_rate": own_rate, "load_average_end": os.getloadavg(), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
