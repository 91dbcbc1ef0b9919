"""`streamcap pack`: turn a training checkpoint into a shippable one (fp16, decoding defaults)."""
from __future__ import annotations

from dataclasses import replace

from streamcap.model.checkpoint import load_checkpoint, save_checkpoint
from streamcap.model.grounding import parse_concept_thresholds


def register(subparsers) -> None:
    p = subparsers.add_parser("pack", help="write a compact fp16 copy of a checkpoint with its default decoding")
    p.add_argument("model", help="checkpoint written by `streamcap train`")
    p.add_argument("out", help="where to write the packed checkpoint (e.g. streamcap/assets/default.pt)")
    p.add_argument("--beam", type=int, help="default beam width")
    p.add_argument("--length-penalty", type=float, help="default beam length penalty exponent")
    p.add_argument("--ban-below", type=float, help="grounding: never name a concept whose probability is below this")
    p.add_argument("--require-above", type=float, help="grounding: name a concept whose probability is at least this")
    p.add_argument("--require-boost", type=float, help="grounding: nats added to a required concept's words until it is named")
    p.add_argument("--concept-thresholds", action="append", default=[], metavar="CONCEPT=BAN,REQUIRE",
                   help="grounding thresholds for one concept (e.g. person=0.5,0.95), chosen on dev with benchmarks/bench_grounding.py")
    p.add_argument("--note", action="append", default=[], help="KEY=VALUE to record in the model card info")
    p.set_defaults(func=run)


def run(args) -> int:
    spec, decoder, _ = load_checkpoint(args.model)
    if args.beam is not None:
        spec.beam_size = args.beam
    if args.length_penalty is not None:
        spec.length_penalty = args.length_penalty
    grounding = {}
    if args.ban_below is not None:
        grounding["ban_below"] = args.ban_below
    if args.require_above is not None:
        grounding["require_above"] = args.require_above
    if args.require_boost is not None:
        grounding["require_boost"] = args.require_boost
    if args.concept_thresholds:
        grounding["per_concept"] = tuple(_concept_thresholds(item, spec) for item in args.concept_thresholds)
    if grounding:
        if not spec.decoder.concept_names:
            raise SystemExit(f"pack: {args.model} has no concept head; grounding thresholds need one (train with --concepts true)")
        spec.grounding = replace(spec.grounding, **grounding)
    spec.info = {k: v for k, v in spec.info.items() if k != "config"} | {"packed_from": args.model}
    spec.info.update(dict(note.split("=", 1) for note in args.note))
    save_checkpoint(args.out, spec, decoder, half=True)
    print(f"{args.out}: {spec.decoder.kind} decoder on {spec.encoder}, beam {spec.beam_size}, length penalty {spec.length_penalty}, {spec.grounding}, fp16")
    return 0


def _concept_thresholds(item: str, spec) -> tuple[str, float, float]:
    known = spec.decoder.concept_names
    if item.partition("=")[0] not in known:
        raise SystemExit(f"pack: --concept-thresholds {item}: the model's concepts are {', '.join(known)}")
    try:
        return parse_concept_thresholds(item)
    except ValueError:
        raise SystemExit(f"pack: --concept-thresholds {item}: expected CONCEPT=BAN,REQUIRE, e.g. person=0.5,0.95") from None
