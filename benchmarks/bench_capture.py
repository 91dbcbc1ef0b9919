"""Capture benchmark: N RTSP cameras at 640x360 through CaptureHub, plus the scene gate's saving.

    .venv/bin/python benchmarks/bench_capture.py                    # 1, 4, 16 cameras, 20 s each
    .venv/bin/python benchmarks/bench_capture.py --cameras 1,4 --seconds 5

Part 1 serves a real fixed-camera clip (car-detection.mp4 scaled to 640x360,
12.5 fps, H.264, no server-side encoding) from one local GStreamer RTSP server
with N mounts, reads it with N CameraSources behind one CaptureHub (1 caption/s
per camera, batches of up to 8) and a consumer thread standing in for the
captioner. After a burn-in it reports frames/s read per camera (median and
min), this process's CPU and the server's, frames dropped and reconnects, and
how long all N took to connect (OpenCV opens one FFmpeg stream at a time; set
OPENCV_FFMPEG_CAPTURE_OPTIONS="rtsp_transport;tcp|analyzeduration;500000" to
see the effect of a shorter stream analysis).

Part 2 runs FrameSampler over one frame per second of each shared clip and
reports how many due frames the scene-change gate skips at a few thresholds:
nearly static scenes should be skipped, moving ones kept.

Needs the apt packages listed in tests/integration/rtsp_fixtures.py.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from rtsp_fixtures import RtspServer, prepared_clip, rtsp_unavailable, videos_dir  # noqa: E402

from streamcap.capture import Batcher, CameraSource, CaptureHub, FrameSampler  # noqa: E402
from streamcap.capture.sampler import SamplerStats  # noqa: E402
from streamcap.messages import CameraState, Frame  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """utime + stime of another process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def run_cameras(count: int, seconds: float, burn_in_s: float, clip: Path, infer_ms_per_frame: float = 0.0) -> dict:
    server = RtspServer(clip, count=count, path="cam").start()
    cams = {
        f"cam{i}": CameraSource(f"cam{i}", url, open_timeout_s=10, read_timeout_s=5, reconnect_initial_s=0.5, reconnect_max_s=5)
        for i, url in enumerate(server.urls)
    }
    hub = CaptureHub(cams, {name: FrameSampler(interval_s=1.0) for name in cams}, Batcher(max_batch=8, max_wait_ms=50))
    stop = threading.Event()
    batches: list[int] = []

    def consume() -> None:  # the inference thread, minus the model
        while not stop.is_set():
            batch = hub.next_batch(timeout_s=0.5)
            if batch:
                batches.append(len(batch.frames))
                stop.wait(infer_ms_per_frame * len(batch.frames) / 1000)  # a captioner this slow

    consumer = threading.Thread(target=consume, name="consumer")
    try:
        started = time.monotonic()
        hub.start()
        consumer.start()
        # OpenCV serialises FFmpeg opens process-wide, so N cameras come up one after another.
        deadline = started + 120
        while any(state != CameraState.connected for state in hub.states().values()) and time.monotonic() < deadline:
            time.sleep(0.05)
        all_up_s = time.monotonic() - started
        time.sleep(burn_in_s)
        before_stats = hub.stats()
        before = {name: s.camera.frames_read for name, s in before_stats.items()}
        drops_before = sum(s.batcher_drops for s in before_stats.values())
        first_batch = len(batches)
        cpu0, server0, wall0 = time.process_time(), process_cpu_s(server.proc.pid), time.monotonic()
        time.sleep(seconds)
        wall = time.monotonic() - wall0
        cpu, server_cpu = time.process_time() - cpu0, process_cpu_s(server.proc.pid) - server0
        stats = hub.stats()
        measured_batches = batches[first_batch:]
    finally:
        stop.set()
        hub.stop()
        consumer.join(timeout=10)
        server.kill()
    fps = [(stats[name].camera.frames_read - before[name]) / wall for name in cams]
    return {
        "cameras": count,
        "all_up_s": all_up_s,
        "fps_median": statistics.median(fps),
        "fps_min": min(fps),
        "cpu_pct": 100 * cpu / wall,
        "server_cpu_pct": 100 * server_cpu / wall,
        "connected": sum(s.camera.state == CameraState.connected for s in stats.values()),
        "reconnects": sum(s.camera.reconnects for s in stats.values()),
        "batcher_drops": sum(s.batcher_drops for s in stats.values()) - drops_before,
        "mean_batch": statistics.mean(measured_batches) if measured_batches else 0.0,
    }


def scene_skip(clip: Path, thresholds: list[float], seconds: float) -> tuple[dict[float, SamplerStats], float]:
    """Sampler stats per threshold over one frame per second, and the ms per gated frame."""
    cap = cv2.VideoCapture(str(clip))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    stride, frames = max(1, round(fps)), []
    try:
        for index in range(int(seconds * fps)):
            if not cap.grab():
                break
            if index % stride == 0:
                frames.append(cap.retrieve()[1])
    finally:
        cap.release()
    results, started = {}, time.perf_counter()
    for threshold in thresholds:
        sampler = FrameSampler(interval_s=1.0, scene_change_threshold=threshold)
        for i, image in enumerate(frames):
            sampler.accept(Frame(clip.stem, i, 0.0, float(i), image))
        results[threshold] = sampler.stats()
    ms_per_frame = 1000 * (time.perf_counter() - started) / (len(frames) * len(thresholds))
    return results, ms_per_frame


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cameras", default="1,4,16", help="comma-separated camera counts")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per camera count")
    parser.add_argument("--burn-in", type=float, default=3.0, help="seconds to settle after all cameras are up")
    parser.add_argument("--clip", default="car-detection.mp4")
    parser.add_argument("--sampler-seconds", type=float, default=60.0, help="seconds of each clip for part 2")
    parser.add_argument("--infer-ms", type=float, default=0.0, help="simulated captioner time per frame (overload: drops)")
    parser.add_argument("--skip-rtsp", action="store_true")
    args = parser.parse_args()

    print(f"cpu cores: {os.cpu_count()}  load avg: {os.getloadavg()[0]:.1f}  (the box may be shared: compare ratios, not absolutes)")
    if not args.skip_rtsp:
        why = rtsp_unavailable()
        if why:
            print(f"skipping RTSP part: {why}")
        else:
            clip = prepared_clip(args.clip, 640, 360)
            options = os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS", "(unset)")
            print(f"\nRTSP cameras: {args.clip} at 640x360, 12.5 fps; 1 caption/s/camera; captioner {args.infer_ms:.0f} ms/frame; {args.seconds:.0f} s measured; OPENCV_FFMPEG_CAPTURE_OPTIONS={options}")
            print(f"{'cameras':>7} {'up':>3} {'all up s':>8} {'fps/cam med':>11} {'fps/cam min':>11} {'cpu %':>6} {'server %':>8} {'reconn':>6} {'b.drops':>7} {'batch':>5}")
            for count in [int(c) for c in args.cameras.split(",")]:
                r = run_cameras(count, args.seconds, args.burn_in, clip, args.infer_ms)
                print(
                    f"{r['cameras']:>7} {r['connected']:>3} {r['all_up_s']:>8.1f} {r['fps_median']:>11.2f} {r['fps_min']:>11.2f} {r['cpu_pct']:>6.0f} "
                    f"{r['server_cpu_pct']:>8.0f} {r['reconnects']:>6} {r['batcher_drops']:>7} {r['mean_batch']:>5.2f}",
                    flush=True,
                )
            print("cpu %: this process, all cameras, % of one core; b.drops: sampled frames replaced before the consumer took them")

    thresholds = [0.002, 0.005, 0.01, 0.02]
    print(f"\nScene-change gate: share of due frames skipped (1 frame/s, first {args.sampler_seconds:.0f} s of each clip)")
    print(f"{'clip':<32} {'frames':>6} " + " ".join(f"{t:>7}" for t in thresholds) + f" {'ms/frame':>8}")
    for clip in sorted(videos_dir().glob("*.mp4")):
        results, ms = scene_skip(clip, thresholds, args.sampler_seconds)
        due = next(iter(results.values())).offered
        print(f"{clip.name:<32} {due:>6} " + " ".join(f"{results[t].scene_skip_ratio:>7.0%}" for t in thresholds) + f" {ms:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
