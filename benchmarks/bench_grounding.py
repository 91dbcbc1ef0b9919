"""Grounded decoding's thresholds on the dev sets: concept truth and CIDEr-D for each setting.

    .venv/bin/python benchmarks/bench_grounding.py --model runs/x/model.pt [--beam 3]
        [--ban 0,0.05,0.1,0.2] [--require 1.01,0.9,0.8]
        [--try "0.1,1.01 person=0.6,0.9 vehicle=0.1,0.5" ...]

Decodes the cached dev grids of Flickr8k, the COCO subset and the dev clips
(clip_frames and cctv_clips) with the checkpoint's decoder (the same search
every backend runs) for each (ban_below, require_above) pair and prints, per
dev set, person, vehicle and animal recall and false mention, object
hallucination (CHAIRs) and CIDEr-D (our scorer, against each set's own
references). `--input-size` encodes the dev images at another square (the
grids come from the training's per-corpus feature cache). The default
thresholds shipped in a checkpoint are chosen from this table (dev only);
the global pair applies to every concept without its own (the categories),
`CONCEPT=BAN,REQUIRE` overrides one.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

from streamcap.model.checkpoint import load_checkpoint
from streamcap.model.decoding import DecodeOptions
from streamcap.model.encoder import build_encoder
from streamcap.model.grounding import GroundingOptions, parse_concept_thresholds
from streamcap.train.concept_eval import concept_truth, format_rate, hallucination, image_labels
from streamcap.train.data import load_corpora, source_of
from streamcap.train.evaluate import caption_features, score_captions
from streamcap.train.train import _features_by_source

SETS = ("flickr8k", "coco_subset", "clip_frames", "cctv_clips")


def parse_setting(text: str) -> tuple[float, float, tuple[tuple[str, float, float], ...]]:
    first, *overrides = text.split()
    ban, require = (float(v) for v in first.split(","))
    return ban, require, tuple(parse_concept_thresholds(item) for item in overrides)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--data", default=os.environ.get("STREAMCAP_DATA", "../shared/data"))
    p.add_argument("--beam", type=int, default=3)
    p.add_argument("--ban", default="0,0.05,0.1,0.2")
    p.add_argument("--require", default="1.01,0.9")
    p.add_argument("--person-ban", default="", help="also try these ban thresholds for person alone (per-concept override)")
    p.add_argument("--try", dest="tries", action="append", default=[], metavar="BAN,REQUIRE [CONCEPT=BAN,REQUIRE ...]",
                   help="one whole setting: the global thresholds, then per-concept ones (what `streamcap pack` records); "
                        "when given, only these settings run")
    p.add_argument("--boost", default="0", help="require_boost values to try with each setting (nats)")
    p.add_argument("--input-size", type=int, default=0, help="encoder input square (default: the encoder's own)")
    p.add_argument("--sets", default=",".join(SETS))
    p.add_argument("--cache-dir", default=".cache/features")
    p.add_argument("--corrections", default="data/caption_corrections.tsv")
    args = p.parse_args()
    root = Path(args.data)
    if not (root / "flickr8k").is_dir():
        print(f"skipped: no shared data at {root}")
        return 0
    spec, decoder, _ = load_checkpoint(args.model)
    set_names = args.sets.split(",")
    corpus = load_corpora([root / s for s in set_names], corrections=args.corrections)
    dev_ids = corpus.split("dev")
    encoder = build_encoder(spec.encoder, input_size=args.input_size or None)
    features, _ = _features_by_source(encoder, dev_ids, corpus, args.cache_dir)
    labels = [image_labels(corpus, i) for i in dev_ids]
    sets = {s: [k for k, i in enumerate(dev_ids) if source_of(i) == s] for s in set_names}
    print(f"{args.model}, beam {args.beam}, input {encoder.spec.input_size}; cells: recall / false mention (count)")
    print("| ban below | require above | set | person recall | person false | vehicle recall | vehicle false | animal recall | animal false | CHAIRs | CIDEr-D |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    settings = []
    if args.ban and args.require:  # `--ban "" --require ""`: only the --try settings
        settings = [(float(b), float(r), ()) for b in args.ban.split(",") for r in args.require.split(",")]
        settings += [(float(args.ban.split(",")[-1]), float(args.require.split(",")[-1]),
                      (("person", float(pb), float(args.require.split(",")[-1])),)) for pb in args.person_ban.split(",") if pb]
    if args.tries:
        settings = [parse_setting(t) for t in args.tries]
    settings = [(*setting, float(boost)) for setting in settings for boost in args.boost.split(",")]
    for ban, require, per_concept, boost in settings:
            options = dataclasses.replace(DecodeOptions.for_model(spec, args.beam), grounding=GroundingOptions(
                ban_below=ban, require_above=require, per_concept=per_concept, require_boost=boost))
            t0 = time.perf_counter()
            captions = caption_features(decoder, spec.vocab, features, options)
            for name, rows in sets.items():
                truth = concept_truth([labels[k] for k in rows], [captions[k] for k in rows])
                cider = score_captions([dev_ids[k] for k in rows], [captions[k] for k in rows], corpus.captions)["CIDEr-D"]
                chair = hallucination([captions[k] for k in rows], [corpus.captions[dev_ids[k]] for k in rows]).chair_s
                cells = [format_rate(t.recall, t.present) + " | " + format_rate(t.false_mention, t.absent)
                         for t in (truth["person"], truth["vehicle"], truth["animal"])]
                label = f"{ban:g}" + "".join(f" ({c} {b:g}, {r:g})" for c, b, r in per_concept) + (f" boost {boost:g}" if boost else "")
                print(f"| {label} | {require:g} | {name} | " + " | ".join(cells) + f" | {chair:.3f} | {cider:.3f} |", flush=True)
            print(f"  ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
