"""Caption latency and CPU per caption when the CPU is shared: how the inference threads wait, compared.

    .venv/bin/python benchmarks/bench_cpu_contention.py [--loads 0,4] [--captions 15] [--repeats 3]

A box's CPU is never the captioner's alone: camera decoders, the rest of
streamcap and other processes want it too. For each background load (that
many pure-Python busy loops, each wanting a whole core) and each setting, a
fresh process (the wait policies are read once per process) loads the shipped
model, captions a photo twice to warm up, then --captions times one at a
time, and reports the median wall and CPU seconds per caption over --repeats
processes. Settings, alternated so a change in the machine's load hits all:

    torch, passive wait     OMP_WAIT_POLICY=PASSIVE (streamcap's default, set in streamcap/__init__.py)
    torch, spinning         OMP_WAIT_POLICY=ACTIVE (OpenMP's own behaviour before)
    torch, 1 thread         OMP_NUM_THREADS=1
    onnxruntime, no spin    session.intra_op.allow_spinning=0 (streamcap's default)
    onnxruntime, spinning   allow_spinning=1 (ONNX Runtime's own default)

Ratios are wall per caption against the backend's streamcap default at the same load.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SETTINGS = [
    ("torch, passive wait", "torch", {"OMP_WAIT_POLICY": "PASSIVE"}),
    ("torch, spinning", "torch", {"OMP_WAIT_POLICY": "ACTIVE"}),
    ("torch, 1 thread", "torch", {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}),
    ("onnxruntime, no spin", "onnxruntime", {"BENCH_ORT_SPIN": "0"}),
    ("onnxruntime, spinning", "onnxruntime", {"BENCH_ORT_SPIN": "1"}),
]


def worker(backend: str, captions: int) -> None:
    sys.path.insert(0, str(REPO))
    spin = os.environ.get("BENCH_ORT_SPIN")
    if backend == "onnxruntime" and spin == "1":
        import onnxruntime as ort

        class Spinning(ort.SessionOptions):  # ONNX Runtime's own default, whatever streamcap asks
            def add_session_config_entry(self, key, value):
                super().add_session_config_entry(key, "1" if key == "session.intra_op.allow_spinning" else value)

        ort.SessionOptions = Spinning
    import cv2
    from streamcap.backends.select import load_captioner
    from streamcap.demo import photo

    captioner = load_captioner(None, backend=backend)
    frame = cv2.resize(photo("chelsea"), (640, 360))
    for _ in range(2):
        captioner.describe([frame])
    walls, cpus = [], []
    for _ in range(captions):
        wall, cpu = time.perf_counter(), time.process_time()
        captioner.describe([frame])
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    print(json.dumps({"wall": statistics.median(walls), "cpu": statistics.median(cpus)}))


def busy(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loads", default="0,4", help="background busy loops, comma-separated")
    parser.add_argument("--captions", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", choices=["torch", "onnxruntime"], help=argparse.SUPPRESS)
    parser.add_argument("--busy", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.captions)
        return 0
    if args.busy:
        busy(args.busy)
        return 0
    results: dict[tuple[int, str], list[dict]] = {}
    for load in [int(x) for x in args.loads.split(",")]:
        loaders = [subprocess.Popen([sys.executable, __file__, "--busy", "3600"]) for _ in range(load)]
        try:
            time.sleep(1 if load else 0)
            for _ in range(args.repeats):
                for name, backend, env in SETTINGS:
                    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
                    done = subprocess.run([sys.executable, __file__, "--worker", backend, "--captions", str(args.captions)],
                                          env={**clean, **env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                                          timeout=1800)
                    if done.returncode != 0:
                        sys.exit(f"{name} failed: {done.stderr[-2000:]}")
                    results.setdefault((load, name), []).append(json.loads(done.stdout.strip().splitlines()[-1]))
                    print(f"load {load}: {name}: {results[(load, name)][-1]}", flush=True)
        finally:
            for p in loaders:
                p.kill()
                p.wait()
    print(f"\nmedians of {args.repeats} processes x {args.captions} captions (batch 1, beam 3), {os.cpu_count()} cores")
    print("| busy loops | setting | wall per caption | CPU per caption | wall vs streamcap default |")
    print("|---|---|---|---|---|")
    for (load, name), runs in results.items():
        wall = statistics.median(r["wall"] for r in runs)
        cpu = statistics.median(r["cpu"] for r in runs)
        default = "torch, passive wait" if name.startswith("torch") else "onnxruntime, no spin"
        base = statistics.median(r["wall"] for r in results[(load, default)])
        print(f"| {load} | {name} | {wall * 1000:.0f} ms | {cpu * 1000:.0f} ms | {wall / base:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
