"""`streamcap build-engine`: build and cache TensorRT engines once on the target box."""
from __future__ import annotations

import sys

from streamcap.model.checkpoint import CheckpointError
from streamcap.model.encoder import EncoderWeightsError


def register(subparsers) -> None:
    p = subparsers.add_parser("build-engine", help="build TensorRT engines for this GPU (fp16, or int8 with calibration)")
    p.add_argument("--model", help="checkpoint (default: the shipped model)")
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp16", help="engine precision (default fp16)")
    p.add_argument("--calib", help="folder of real frames or photos for INT8 entropy calibration")
    p.add_argument("--calib-images", type=int, default=256, help="images used for INT8 calibration (default 256)")
    p.add_argument("--max-batch", type=int, default=8, help="largest batch the engines accept (model.max_batch)")
    p.add_argument("--beam", type=int, help="beam width the step engine must fit (default: the model's)")
    p.add_argument("--encoder-weights", help="local ImageNet weights for the encoder")
    p.set_defaults(func=run)


def run(args) -> int:
    from streamcap.backends.base import BackendUnavailable
    from streamcap.backends.export import ExportError, cached_export
    from streamcap.backends.tensorrt_backend import build_engines, import_tensorrt
    from streamcap.model.checkpoint import DEFAULT_MODEL, load_checkpoint

    if args.precision == "int8" and not args.calib:
        print("streamcap build-engine: --precision int8 needs --calib DIR (a folder of real images)", file=sys.stderr)
        return 2
    try:
        import_tensorrt()
        model = args.model or DEFAULT_MODEL
        beam = args.beam if args.beam is not None else load_checkpoint(model)[0].beam_size
        onnx = cached_export(model, args.encoder_weights)
        engines = build_engines(onnx, args.precision, args.max_batch, beam, args.calib, args.calib_images)
    except (BackendUnavailable, CheckpointError, EncoderWeightsError, ExportError, FileNotFoundError, RuntimeError) as exc:
        print(f"streamcap build-engine: {exc}", file=sys.stderr)
        return 2
    print(f"TensorRT {args.precision} engines for batch <= {args.max_batch}, beam {beam}: {engines}")
    return 0
