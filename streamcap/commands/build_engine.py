"""`streamcap build-engine`: build and cache TensorRT engines once on the target box."""
from __future__ import annotations

import sys

from streamcap.backend_kinds import PRECISIONS
from streamcap.model.checkpoint import CheckpointError
from streamcap.model.encoder import EncoderWeightsError


def register(subparsers) -> None:
    p = subparsers.add_parser("build-engine", help="build TensorRT engines for this GPU (fp16, or int8 with calibration)")
    p.add_argument("--model", help="checkpoint (default: the shipped model)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp16", help="engine precision (default fp16)")
    p.add_argument("--calib", help="folder of real frames or photos to calibrate the INT8 encoder's Q/DQ nodes on")
    p.add_argument("--calib-images", type=int, default=256, help="images used for INT8 calibration (default 256)")
    p.add_argument("--max-batch", type=int, default=8, help="largest batch the engines accept (model.max_batch)")
    p.add_argument("--beam", type=int, help="beam width the step engine must fit (default: the model's)")
    p.add_argument("--encoder-weights", help="local ImageNet weights for the encoder")
    p.add_argument("--input-size", type=int, help="encoder input side (model.input_size; default: the model's own)")
    p.set_defaults(func=run)


def run(args) -> int:
    from streamcap.backends.base import BackendUnavailable
    from streamcap.backends.export import ExportError, cached_export
    from streamcap.backends.tensorrt_backend import import_tensorrt
    from streamcap.backends.tensorrt_build import build_engines
    from streamcap.model.checkpoint import DEFAULT_MODEL, load_checkpoint

    if args.precision == "int8" and not args.calib:
        print("streamcap build-engine: --precision int8 needs --calib DIR (a folder of real images)", file=sys.stderr)
        return 2
    try:
        trt = import_tensorrt()
        model = args.model or DEFAULT_MODEL
        checkpoint = load_checkpoint(model)[:2]
        beam = args.beam if args.beam is not None else checkpoint[0].beam_size
        onnx = cached_export(model, args.encoder_weights, checkpoint=checkpoint, input_size=args.input_size)
        engines, built = build_engines(onnx, args.precision, args.max_batch, beam, args.calib, args.calib_images, trt=trt)
    except (BackendUnavailable, CheckpointError, EncoderWeightsError, ExportError, FileNotFoundError, RuntimeError, ValueError) as exc:
        print(f"streamcap build-engine: tensorrt: {exc}" if isinstance(exc, BackendUnavailable) else f"streamcap build-engine: {exc}",
              file=sys.stderr)
        return 2
    print(f"TensorRT {trt.__version__} {args.precision} engines ({'built' if built else 'already built'}) "
          f"for batch <= {args.max_batch}, beam {beam}, input {onnx.input_size}: {engines}")
    return 0
