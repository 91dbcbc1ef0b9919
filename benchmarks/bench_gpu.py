"""The captioner on a GPU box, in one command: tests, parity, captions/s at batch 1-256, many cameras.

Prepare here, once (copies 56 dev frames and three CCTV clips into .device/,
which git ignores, and fetches the wheels the GPU box lacks into .device/whl):

    .venv/bin/python benchmarks/bench_gpu.py --prepare

Prove it here on the CPU (about a minute; torch-cpu stands in for torch-cuda):

    flock /tmp/streamcap-bench.lock .venv/bin/python benchmarks/bench_gpu.py --quick --out /tmp/bench_gpu

On the GPU machine (carry [".device"]; about 48 MB travel with the checkout), one command:

    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .device/whl/*.whl \\
      && export PYTHONPATH=/tmp/site:$PWD && PYTHONUNBUFFERED=1 timeout 450 python3 benchmarks/bench_gpu.py --out $OUT

Parts, each in its own time budget (under 7 minutes in all), each written to
<out>/bench_gpu.json as soon as it ends, so a timeout keeps what was measured:

1. tests: `pytest tests/gpu` (torch-cuda end to end on the carried frames;
   its output goes to <out>/gpu_tests.txt);
2. parity on the carried frames: torch-cuda against torch-cpu captions (greedy
   and beam 3), the device search against today's host search on the GPU, the
   GPU resize against OpenCV's, fp16 against fp32;
3. the whole captioner (frames in, captions out) at batch 1, 8, 32, 64, 128
   and 256: captions/s, with the encoder (preprocessing included) and the
   decoder timed apart, for today's path (host search, OpenCV resize, no CUDA
   graphs), the device search with CUDA graphs off and on, fp32 and fp16, the
   GPU resize against OpenCV's, and input 320; medians of repeats after
   warm-up, all in this one process;
4. scale: benchmarks/bench_scale.py (if present) with 64, 160 and 320 looping
   file cameras on torch-cuda, into <out>/scale.json.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEVICE = REPO / ".device"
FRAMES, CLIPS, WHEELS = DEVICE / "frames", DEVICE / "clips", DEVICE / "whl"
DATA = Path(os.environ.get("STREAMCAP_DATA", REPO.parent / "shared" / "data"))
SCALE_CLIPS = ("motorway-elevated.mp4", "shopping-street.mp4", "road-topdown.mp4")  # 960x540, 960x540, 640x360; key frame every 1 s
BATCHES = (256, 64, 8, 1, 32, 128)  # the headline first, in case the budget runs out
BUDGETS_S = {"tests": 90, "parity": 50, "captioner": 160, "scale": 110}  # 410 s with the start: under 7 minutes


def prepare() -> int:
    """Copy the frames and clips the GPU run needs into .device/ (never committed) and fetch the wheels."""
    sys.path.insert(0, str(REPO / "tests" / "unit"))
    import cv2

    from _backend_models import dev_set_paths

    if not (DATA / "flickr8k").is_dir():
        sys.exit(f"no shared data at {DATA}; set STREAMCAP_DATA")
    shutil.rmtree(FRAMES, ignore_errors=True)
    FRAMES.mkdir(parents=True)
    for i, path in enumerate(dev_set_paths(DATA, 16)):  # Flickr8k 224x224, COCO 256x256, clip frames up to 640 wide
        shutil.copy(path, FRAMES / f"{i:02d}-{path.name}")
    CLIPS.mkdir(parents=True, exist_ok=True)
    videos = DATA / "cctv_clips" / "videos"
    for name in ("motorway-elevated.mp4", "shop-produce.mp4", "plaza-crowd-topdown.mp4", "shop-fisheye.mp4"):
        capture = cv2.VideoCapture(str(videos / name))  # full-size camera frames, for the resize on the GPU
        for k in range(2):
            capture.set(cv2.CAP_PROP_POS_FRAMES, 50 + 100 * k)
            ok, frame = capture.read()
            if ok:
                cv2.imwrite(str(FRAMES / f"9{k}-{Path(name).stem}.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, 92])
        capture.release()
    for name in SCALE_CLIPS:
        shutil.copy(videos / name, CLIPS / name)
    if not any(WHEELS.glob("*.whl")):
        subprocess.run(["bash", str(REPO.parent / "shared" / "device" / "fetch_wheels.sh"), str(WHEELS)], check=True)
    size = sum(p.stat().st_size for p in DEVICE.rglob("*") if p.is_file())
    print(f"{DEVICE}: {len(list(FRAMES.iterdir()))} frames, {len(list(CLIPS.iterdir()))} clips, "
          f"{len(list(WHEELS.glob('*.whl')))} wheels, {size / 2**20:.1f} MiB; carry [\".device\"]")
    return 0


class Run:
    """The JSON being written, part by part."""

    def __init__(self, out: Path, quick: bool):
        self.out, self.quick = out, quick
        self.path = out / "bench_gpu.json"
        self.results: dict = {"meta": {}, "parts": {}}

    def save(self) -> None:
        self.path.write_text(json.dumps(self.results, indent=2, default=str))

    def part(self, name: str, fn, budget_s: float) -> None:
        started = time.monotonic()
        print(f"\n== {name} (budget {budget_s:.0f} s)", flush=True)
        try:
            result = fn(budget_s)
        except Exception as exc:  # noqa: BLE001 - one broken part must not lose the others
            result = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
            print(result["traceback"], flush=True)
        result["seconds"] = round(time.monotonic() - started, 1)
        self.results["parts"][name] = result
        self.save()


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _median_s(fn, device, reps: int, deadline: float) -> float:
    times = []
    for _ in range(reps):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
        if time.monotonic() > deadline and len(times) >= 2:
            break
    return statistics.median(times)


def _frames(count: int) -> list:
    from streamcap.model.images import read_image

    frames = [read_image(p) for p in sorted(FRAMES.iterdir())]
    return list(itertools.islice(itertools.cycle(frames), count))


def _device_backend(quick: bool) -> str:
    import torch

    return "torch-cuda" if torch.cuda.is_available() else "torch-cpu"


def _run(command: list[str], budget_s: float) -> tuple[str, int | None]:
    """(stdout and stderr, exit code or None if it ran past the budget and was killed)."""
    try:
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=budget_s)
        return done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as exc:  # its output comes back as bytes, whatever text= said
        captured = b"".join(part for part in (exc.stdout, exc.stderr) if part)
        return captured.decode(errors="replace") + f"\nTIMEOUT after {budget_s:.0f} s", None


def run_tests(run: Run, budget_s: float) -> dict:
    log = run.out / "gpu_tests.txt"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", "tests/gpu"]
    output, code = _run(command, budget_s)
    log.write_text(output)
    summary = next((line for line in reversed(output.splitlines()) if " in " in line and ("passed" in line or "failed" in line
                                                                                           or "skipped" in line)), "")
    print(output[-2500:], flush=True)
    return {"exit_code": code, "summary": summary.strip("= ")}


def run_parity(run: Run, budget_s: float) -> dict:
    from streamcap.backends.select import load_captioner
    from streamcap.model.decoding import DecodeOptions, decode_grid
    from streamcap.model.preprocess import preprocess, preprocess_on
    from streamcap.model.search_reference import reference_decode

    frames = _frames(len(list(FRAMES.iterdir())))[: 12 if run.quick else None]
    backend = _device_backend(run.quick)
    gpu = load_captioner(backend=backend, max_batch=64)
    cpu = load_captioner(backend="torch-cpu", max_batch=64, input_size=gpu.encoder.spec.input_size)  # same pixels
    result = {"frames": len(frames), "backend": gpu.name}
    for beam in (1, 3):
        for captioner in (gpu, cpu):
            captioner.options = DecodeOptions.for_model(captioner.spec, beam)
        same = sum(a == b for a, b in zip(gpu.caption(frames), cpu.caption(frames)))
        result[f"{gpu.name} = torch-cpu, beam {beam}"] = f"{same}/{len(frames)}"
    grid = gpu.encode(frames)
    spec = gpu.spec
    new, _ = decode_grid(gpu, spec.vocab, grid, gpu.options, spec.concept_names)
    old, _ = reference_decode(gpu, spec.vocab, grid, gpu.options, spec.concept_names)
    result["device search = host search (tokens), beam 3"] = f"{sum(a.tokens == b.tokens for a, b in zip(new, old))}/{len(frames)}"
    if gpu.device.type == "cuda":
        on_gpu = preprocess_on(frames, gpu.encoder.spec, gpu.device, "device", gpu.resizer).cpu()
        result["GPU resize vs OpenCV, most grey levels apart"] = round(
            float((on_gpu - preprocess(frames, gpu.encoder.spec)).abs().amax()) * max(gpu.encoder.spec.std_rgb), 3)
        device_texts = gpu.caption(frames)
        gpu.resize = "host"
        host_texts = gpu.caption(frames)
        gpu.resize = "device"
        result["captions, GPU resize = OpenCV resize"] = f"{sum(a == b for a, b in zip(device_texts, host_texts))}/{len(frames)}"
        half = load_captioner(backend=backend, precision="fp16", max_batch=64)
        result["captions, fp16 = fp32"] = f"{sum(a == b for a, b in zip(half.caption(frames), device_texts))}/{len(frames)}"
    for key, value in result.items():
        print(f"  {key}: {value}", flush=True)
    return result


# The first GPU figures (444 captions/s at batch 256) were at 224 px; the shipped model now takes 320 on a GPU.
BASE_SIZE = 224


def _variants(quick: bool) -> list[dict]:
    variants = [
        {"name": "device search, graphs, fp32", "search": "device", "graphs": True, "precision": "fp32", "resize": "device"},
        {"name": "today: host search, OpenCV resize", "search": "host", "graphs": False, "precision": "fp32", "resize": "host"},
        {"name": "device search, graphs, fp16", "search": "device", "graphs": True, "precision": "fp16", "resize": "device"},
        {"name": "device search, no graphs, fp32", "search": "device", "graphs": False, "precision": "fp32", "resize": "device"},
        {"name": "device search, graphs, fp32, OpenCV resize", "search": "device", "graphs": True, "precision": "fp32", "resize": "host"},
        {"name": "device search, graphs, fp16, input 320", "search": "device", "graphs": True, "precision": "fp16",
         "resize": "device", "input_size": 320, "batches": (256, 64)},
    ]
    return variants[:2] if quick else variants


def run_captioner(run: Run, budget_s: float) -> dict:
    import torch

    from streamcap.backends.select import load_captioner
    from streamcap.model.decoding import describe
    from streamcap.model.search_reference import reference_decode

    backend = _device_backend(run.quick)
    batches = (2,) if run.quick else BATCHES
    frames = _frames(max(batches))
    captioners: dict = {}
    rows = []
    deadline_all = time.monotonic() + budget_s
    variants = _variants(run.quick)
    for index, variant in enumerate(variants):
        key = (variant["precision"], variant.get("input_size"))
        if key not in captioners:
            captioners[key] = load_captioner(backend=backend, precision=variant["precision"], max_batch=max(batches),
                                             input_size=variant.get("input_size", BASE_SIZE))
        captioner = captioners[key]
        graphed = getattr(captioner, "graphed", None)
        captioner.resize = variant["resize"]
        spec = captioner.spec
        share = (deadline_all - time.monotonic()) / (len(variants) - index)
        deadline = time.monotonic() + share
        for batch in variant.get("batches", batches):
            if time.monotonic() > deadline:
                rows.append({**variant, "batch": batch, "skipped": "time budget"})
                continue
            chunk = frames[:batch]
            if hasattr(captioner, "graphed"):
                captioner.graphed = graphed if variant["graphs"] else None

            if variant["search"] == "host":
                def decode(grid):
                    return reference_decode(captioner, spec.vocab, grid, captioner.options, spec.concept_names)
            else:
                decode = captioner.decode

            def whole():
                hypotheses, concepts = decode(captioner.encode(chunk))
                return describe(spec.vocab, hypotheses, concepts, spec.concept_names)

            device = captioner.device
            for _ in range(2):  # warm-up: graph capture per bucket, cuDNN's choices, the allocator
                whole()
            reps = 3 if run.quick else 5
            step_deadline = min(deadline, time.monotonic() + share / max(1, len(batches)))
            t_encode = _median_s(lambda: captioner.encode(chunk), device, reps, step_deadline)
            grid = captioner.encode(chunk)
            t_decode = _median_s(lambda: decode(grid), device, reps, step_deadline)
            t_whole = _median_s(whole, device, reps, step_deadline)
            row = {**variant, "batch": batch, "captions_per_s": round(batch / t_whole, 1),
                   "encode_images_per_s": round(batch / t_encode, 1), "decode_captions_per_s": round(batch / t_decode, 1),
                   "encode_ms": round(1000 * t_encode, 2), "decode_ms": round(1000 * t_decode, 2),
                   "graph_buckets": sorted(graphed.graphs) if graphed is not None and variant["graphs"] else []}
            rows.append(row)
            print(f"  {variant['name']:<44} batch {batch:>3}: {row['captions_per_s']:>8.1f} captions/s "
                  f"(encode {row['encode_ms']:.1f} ms, decode {row['decode_ms']:.1f} ms)", flush=True)
        if hasattr(captioner, "graphed"):
            captioner.graphed = graphed
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    return {"backend": backend, "rows": rows, "peak_gpu_memory_gib": peak}


def run_scale(run: Run, budget_s: float) -> dict:
    script = REPO / "benchmarks" / "bench_scale.py"
    if not script.is_file():
        return {"skipped": "benchmarks/bench_scale.py is not in this checkout"}
    clips = [str(CLIPS / name) for name in SCALE_CLIPS if (CLIPS / name).is_file()]
    if not clips:
        return {"skipped": f"no clips in {CLIPS}: run benchmarks/bench_gpu.py --prepare"}
    if run.quick:
        cameras, backend, seconds, warmup, batch = "2", "onnxruntime-cpu", "4", "2", "8"
    else:
        cameras, backend, seconds, warmup, batch = "64,160,320", "torch-cuda", "12", "4", "64"
    out = run.out / "scale.json"
    command = [sys.executable, str(script), "--source", "file", "--clip", *clips, "--backend", backend, "--cameras", cameras,
               "--decoders", "new", "--max-batch", batch, "--seconds", seconds, "--warmup", warmup, "--connect-timeout", "30",
               "--json", str(out)]
    output, code = _run(command, budget_s)
    print(output[-4000:], flush=True)
    result = {"command": " ".join(command), "exit_code": code, "output_tail": output[-3000:]}
    if out.is_file():
        result["results"] = json.loads(out.read_text())
    return result


def table(results: dict) -> str:
    rows = [r for r in results["parts"].get("captioner", {}).get("rows", []) if "captions_per_s" in r]
    lines = ["| variant | batch | captions/s | encoder img/s | decoder captions/s | encode ms | decode ms |",
             "|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["name"], r["batch"])):
        lines.append(f"| {r['name']} | {r['batch']} | {r['captions_per_s']:.1f} | {r['encode_images_per_s']:.1f} "
                     f"| {r['decode_captions_per_s']:.1f} | {r['encode_ms']:.1f} | {r['decode_ms']:.1f} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prepare", action="store_true", help="copy frames, clips and wheels into .device/ (here, not on the GPU box)")
    p.add_argument("--out", type=Path, default=Path("/tmp/bench_gpu"), help="folder for bench_gpu.json and the logs")
    p.add_argument("--quick", action="store_true", help="a one-minute run that proves the script (on the CPU here)")
    p.add_argument("--parts", default="tests,parity,captioner,scale")
    args = p.parse_args()
    if args.prepare:
        return prepare()
    if not FRAMES.is_dir():
        sys.exit(f"{FRAMES} is missing: run `benchmarks/bench_gpu.py --prepare` where the shared data is, and carry .device")
    import torch

    args.out.mkdir(parents=True, exist_ok=True)
    run = Run(args.out, args.quick)
    torch.backends.cudnn.benchmark = True  # the encoder's convolutions tuned once per batch size, in the warm-ups
    if args.quick:
        torch.set_num_threads(1)  # the shared 2-core box: small batches run several times faster on one thread
    run.results["meta"] = {
        "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpus": os.cpu_count(), "quick": args.quick, "frames": len(list(FRAMES.iterdir())),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    print(json.dumps(run.results["meta"]), flush=True)
    scale = 0.25 if args.quick else 1.0
    parts = {"tests": run_tests, "parity": run_parity, "captioner": run_captioner, "scale": run_scale}
    for name in args.parts.split(","):
        run.part(name, lambda budget, fn=parts[name]: fn(run, budget), BUDGETS_S[name] * scale)
    print("\n" + table(run.results), flush=True)
    for name in ("tests", "parity", "scale"):
        part = run.results["parts"].get(name, {})
        print(f"{name}: " + json.dumps({k: v for k, v in part.items() if k not in ("output_tail", "results", "traceback")})[:600])
    print(f"\nwrote {run.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
