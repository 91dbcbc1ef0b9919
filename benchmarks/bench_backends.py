"""Speed of the backends on this machine: encoders and the whole captioner.

For each encoder and batch size: images/s for torch eager, ONNX Runtime fp32
and ONNX Runtime int8, and the encoder's achieved FLOP/s as a fraction of this
machine's fp32 matrix-multiply peak, measured in the same run (2048^3 torch
matmul). Then the whole captioner (encode + greedy decode) per backend, and how
often int8 changes a caption on Flickr8k dev images.

FLOPs per image are counted from the ONNX graph's Conv/Gemm/MatMul shapes
(2 x multiply-adds). All figures are medians of --repeats runs after one warm-up.

    python benchmarks/bench_backends.py --repeats 5
    python benchmarks/bench_backends.py --random-weights   # ResNet50 speed without its weights
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from streamcap.backends import load_captioner  # noqa: E402
from streamcap.backends.export import export_encoder  # noqa: E402
from streamcap.backends.onnxruntime_backend import make_session  # noqa: E402
from streamcap.backends.quantize import quantize_onnx_encoder  # noqa: E402
from streamcap.model.encoder import SPECS, EncoderWeightsError, ImageEncoder, build_encoder, preprocess  # noqa: E402
from streamcap.model.images import read_image  # noqa: E402


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: allocations, ONNX Runtime's first-run planning
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_peak_flops(repeats: int) -> float:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    return 2 * 2048**3 / median_seconds(lambda: a @ b, max(repeats, 5))


def onnx_flops(path: Path, workdir: Path) -> float:
    """FLOPs of one image from the graph: 2 x multiply-adds of every Conv, Gemm and MatMul.

    The graph is first passed through ONNX Runtime's pre-processing so that
    shape inference reaches every node (lite0's dynamic "same" padding hides
    the shapes otherwise).
    """
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = workdir / f"{path.stem}.shapes.onnx"
    quant_pre_process(str(path), str(prepared), skip_symbolic_shape=True)
    graph = onnx.shape_inference.infer_shapes(onnx.load(str(prepared))).graph
    values = [*graph.value_info, *graph.input, *graph.output]
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}
    shapes.update({i.name: list(i.dims) for i in graph.initializer})
    total = 0
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        per_image_out = int(np.prod(shapes[node.output[0]][1:]))  # drop the batch axis
        weight = shapes[node.input[1]]
        if node.op_type == "Conv":
            macs_per_output = int(np.prod(weight[1:]))  # (Cin / groups) x kh x kw
        elif node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute):
            macs_per_output = weight[1]
        else:
            macs_per_output = weight[0] if node.op_type == "Gemm" else shapes[node.input[0]][-1]
        total += 2 * per_image_out * macs_per_output
    return float(total)


def load_encoder(name: str, random_weights: bool) -> tuple[ImageEncoder | None, str]:
    try:
        return build_encoder(name), name
    except EncoderWeightsError as exc:
        if not (random_weights and name == "resnet50"):
            print(f"skipping {name}: {exc}")
            return None, ""
    net = torchvision.models.resnet50(weights=None)
    encoder = ImageEncoder(SPECS[name], torch.nn.Sequential(*list(net.children())[:-2]), net.fc).eval()
    return encoder, f"{name} (RANDOM weights: speed only)"


def dev_paths(data: Path, count: int) -> list[Path]:
    names = (data / "flickr8k" / "Flickr_8k.devImages.txt").read_text().split()
    return [data / "flickr8k" / "Images" / n for n in names[:count]]


def calibration_paths(data: Path, count: int) -> list[Path]:
    names = (data / "flickr8k" / "Flickr_8k.trainImages.txt").read_text().split()
    return [data / "flickr8k" / "Images" / n for n in names[:: max(1, len(names) // count)][:count]]


def bench_encoders(args, data: Path, workdir: Path, peak: float) -> None:
    print(f"\n## Encoders (images/s, median of {args.repeats}; FLOP/s as a share of the {peak / 1e9:.0f} GFLOP/s matmul peak)")
    print("| encoder | GFLOP/img | batch | torch eager | ORT fp32 | ORT int8 | int8/fp32 | peak share torch / fp32 / int8 |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.encoders:
        encoder, label = load_encoder(name, args.random_weights)
        if encoder is None:
            continue
        spec = encoder.spec
        fp32_path, int8_path = workdir / f"{name}.onnx", workdir / f"{name}.int8.onnx"
        export_encoder(encoder, fp32_path)
        flops = onnx_flops(fp32_path, workdir)
        quantize_onnx_encoder(fp32_path, int8_path, calibration_paths(data, args.calib_images), spec)
        fp32, int8 = make_session(fp32_path, threads=args.threads), make_session(int8_path, threads=args.threads)
        frames = [read_image(p) for p in dev_paths(data, max(args.batches))]
        for batch in args.batches:
            images = preprocess(frames[:batch], spec)  # (B, 3, S, S)
            feed = {"images": images.numpy()}
            with torch.no_grad():
                t_torch = median_seconds(lambda: encoder(images), args.repeats)
            t_fp32 = median_seconds(lambda: fp32.run(["grid"], feed), args.repeats)
            t_int8 = median_seconds(lambda: int8.run(["grid"], feed), args.repeats)
            rates = [batch / t for t in (t_torch, t_fp32, t_int8)]
            shares = " / ".join(f"{r * flops / peak:.0%}" for r in rates)
            print(f"| {label} | {flops / 1e9:.2f} | {batch} | {rates[0]:.1f} | {rates[1]:.1f} | {rates[2]:.1f} "
                  f"| {rates[2] / rates[1]:.2f}x | {shares} |", flush=True)


def random_checkpoint(data: Path, workdir: Path) -> Path:
    from streamcap.model.checkpoint import CaptionModelSpec, save_checkpoint
    from streamcap.model.decoder import DecoderConfig, build_decoder
    from streamcap.model.vocab import Vocabulary

    vocab = Vocabulary((data / "glove" / "flickr8k_vocab.txt").read_text().split())
    config = DecoderConfig("merge", len(vocab), SPECS["efficientnet_lite0"].feature_dim)
    torch.manual_seed(0)
    path = workdir / "random-merge.pt"
    save_checkpoint(path, CaptionModelSpec("efficientnet_lite0", config, vocab), build_decoder(config).eval())
    return path


def bench_captioner(args, data: Path, calib_dir: Path) -> None:
    model = Path(args.model)
    print(f"\n## Whole captioner ({model}, greedy; images/s, median of {args.repeats})")
    backends = {
        "torch-cpu": load_captioner(model, backend="torch", beam_size=1),
        "onnxruntime-cpu": load_captioner(model, backend="onnxruntime", beam_size=1),
        "onnxruntime-cpu-int8": load_captioner(model, backend="onnxruntime", precision="int8", beam_size=1, calib_dir=str(calib_dir)),
    }
    frames = [read_image(p) for p in dev_paths(data, max(max(args.batches), args.dev_images))]
    print("| batch | " + " | ".join(backends) + " |")
    print("|---|" + "---|" * len(backends))
    for batch in args.batches:
        rates = [batch / median_seconds(lambda b=b: b.caption(frames[:batch]), args.repeats) for b in backends.values()]
        print(f"| {batch} | " + " | ".join(f"{r:.1f}" for r in rates) + " |", flush=True)

    dev = frames[: args.dev_images]
    captions = {name: [c for i in range(0, len(dev), 16) for c in b.caption(dev[i : i + 16])] for name, b in backends.items()}
    reference = captions["torch-cpu"]
    print(f"\nCaptions that differ from torch-cpu on {len(dev)} Flickr8k dev images:")
    for name, texts in captions.items():
        if name != "torch-cpu":
            changed = sum(a != b for a, b in zip(texts, reference))
            print(f"- {name}: {changed}/{len(dev)} ({changed / len(dev):.0%})")
    for a, b in list((a, b) for a, b in zip(captions["onnxruntime-cpu-int8"], reference) if a != b)[:3]:
        print(f"  e.g. fp32 {b!r} -> int8 {a!r}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 8, 16])
    parser.add_argument("--encoders", type=lambda s: s.split(","), default=["efficientnet_lite0", "resnet50"])
    parser.add_argument("--random-weights", action="store_true", help="time ResNet50 with random weights if its weights are missing")
    parser.add_argument("--model", help="checkpoint for the whole-captioner table (default: the shipped model; skipped if absent)")
    parser.add_argument("--calib-images", type=int, default=64, help="training images for int8 calibration")
    parser.add_argument("--dev-images", type=int, default=64, help="dev images for the caption-change count")
    parser.add_argument("--skip-encoders", action="store_true")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="threads for torch and the encoder ONNX Runtime sessions (on a loaded box, 1 is fairer)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    data = Path(os.environ.get("STREAMCAP_DATA", REPO.parent / "shared" / "data"))
    if not (data / "flickr8k" / "Flickr_8k.devImages.txt").is_file():
        print(f"no Flickr8k at {data}; set STREAMCAP_DATA")
        return 2
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    peak = matmul_peak_flops(args.repeats)
    print(f"fp32 matmul peak (2048^3, median): {peak / 1e9:.0f} GFLOP/s")
    with tempfile.TemporaryDirectory(prefix="bench_backends_") as tmp:
        workdir = Path(tmp)
        if not args.skip_encoders:
            bench_encoders(args, data, workdir, peak)
        from streamcap.model.checkpoint import DEFAULT_MODEL

        args.model = args.model or str(DEFAULT_MODEL)
        if Path(args.model).is_file():
            # A private copy, so the ONNX and int8 files land in the temp dir, not beside the original.
            args.model = shutil.copy(args.model, workdir / Path(args.model).name)
        else:
            print(f"\n{args.model} does not exist: the captioner table uses a RANDOM merge decoder "
                  "(speed only; it always runs to max_len, and its caption changes mean little)")
            args.model = random_checkpoint(data, workdir)
        calib_dir = workdir / "calib"
        calib_dir.mkdir()
        for path in calibration_paths(data, args.calib_images):
            (calib_dir / path.name).symlink_to(path)
        bench_captioner(args, data, calib_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
