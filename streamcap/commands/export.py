"""`streamcap export`: the model as checked ONNX graphs (and optionally an INT8 encoder)."""
from __future__ import annotations

import sys
from pathlib import Path

from streamcap.model.checkpoint import DEFAULT_MODEL, CheckpointError
from streamcap.model.encoder import EncoderWeightsError


def register(subparsers) -> None:
    p = subparsers.add_parser("export", help="export the model to ONNX (encoder, decoder prepare and step)")
    p.add_argument("--model", help="checkpoint (default: the shipped model)")
    p.add_argument("--out", help="output folder (default: <checkpoint name>-onnx/ beside the checkpoint)")
    p.add_argument("--encoder-weights", help="local ImageNet weights for the encoder")
    p.add_argument("--int8", action="store_true", help="also write an INT8 encoder for ONNX Runtime on CPUs (needs --calib)")
    p.add_argument("--calib", help="folder of real frames or photos to calibrate INT8 on")
    p.add_argument("--calib-images", type=int, default=64, help="images used for INT8 calibration (default 64)")
    p.set_defaults(func=run)


def run(args) -> int:
    from streamcap.backends.export import ExportError, export_model
    from streamcap.backends.quantize import quantize_encoder

    if args.int8 and not args.calib:
        print("streamcap export: --int8 needs --calib DIR (a folder of real images)", file=sys.stderr)
        return 2
    model = Path(args.model) if args.model else DEFAULT_MODEL
    out = Path(args.out) if args.out else model.parent / f"{model.stem}-onnx"
    try:
        exported = export_model(model, out, args.encoder_weights)
        if args.int8:
            quantize_encoder(exported, args.calib, args.calib_images)
    except (CheckpointError, EncoderWeightsError, ExportError, FileNotFoundError) as exc:
        print(f"streamcap export: {exc}", file=sys.stderr)
        return 2
    for graph, ops in exported.meta["ops"].items():
        print(f"{exported.path(graph)}: {sum(ops.values())} nodes, opset {exported.meta['opset']}, batch dynamic")
    if args.int8:
        print(f"{exported.dir / 'encoder.int8.onnx'}: int8 encoder for ONNX Runtime")
    print(f"exported {model.name} to {out}")
    return 0
