"""`streamcap pack`: turn a training checkpoint into a shippable one (fp16, decoding defaults)."""
from __future__ import annotations

from streamcap.model.checkpoint import load_checkpoint, save_checkpoint


def register(subparsers) -> None:
    p = subparsers.add_parser("pack", help="write a compact fp16 copy of a checkpoint with its default decoding")
    p.add_argument("model", help="checkpoint written by `streamcap train`")
    p.add_argument("out", help="where to write the packed checkpoint (e.g. streamcap/assets/default.pt)")
    p.add_argument("--beam", type=int, help="default beam width")
    p.add_argument("--length-penalty", type=float, help="default beam length penalty exponent")
    p.add_argument("--note", action="append", default=[], help="KEY=VALUE to record in the model card info")
    p.set_defaults(func=run)


def run(args) -> int:
    spec, decoder, _ = load_checkpoint(args.model)
    if args.beam is not None:
        spec.beam_size = args.beam
    if args.length_penalty is not None:
        spec.length_penalty = args.length_penalty
    spec.info = {k: v for k, v in spec.info.items() if k != "config"} | {"packed_from": args.model}
    spec.info.update(dict(note.split("=", 1) for note in args.note))
    save_checkpoint(args.out, spec, decoder, half=True)
    print(f"{args.out}: {spec.decoder.kind} decoder on {spec.encoder}, beam {spec.beam_size}, length penalty {spec.length_penalty}, fp16")
    return 0
