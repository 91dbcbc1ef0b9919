"""Caption quality on a split, scored by the official COCO scorer (pycocoevalcap).

    python benchmarks/bench_caption_quality.py --data ../shared/data/flickr8k \
        --model runs/merge/model.pt:1 --model streamcap/assets/default.pt:1,3,5

Each --model is CHECKPOINT[:BEAMS]. References and hypotheses go through the
COCO PTB tokenizer (Java) like published results; without Java, the plain
lower-case tokenisation is used and METEOR is left out. The human row scores
each image's first reference against the other four, the same four the models
are scored against in the 4-reference columns.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from streamcap.model.checkpoint import load_checkpoint
from streamcap.model.decoding import DecodeOptions
from streamcap.model.encoder import build_encoder
from streamcap.train.data import load_corpus
from streamcap.train.evaluate import caption_features, java_available, official_scores
from streamcap.train.features import cached_features


def coco_scores(refs: dict, hyps: dict, use_java: bool) -> dict:
    scores = official_scores(refs, hyps, use_java)
    return {k.replace("BLEU-", "B"): v for k, v in scores.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.environ.get("STREAMCAP_DATA", "../shared/data") + "/flickr8k")
    p.add_argument("--split", default="dev")
    p.add_argument("--model", action="append", required=True, help="CHECKPOINT[:BEAM,BEAM...]")
    p.add_argument("--length-penalty", type=float, default=None)
    p.add_argument("--cache-dir", default=".cache/features")
    p.add_argument("--json", help="also write the rows here")
    args = p.parse_args()
    if not Path(args.data).exists():
        print(f"skipped: no data at {args.data} (set STREAMCAP_DATA)")
        return 0
    corpus = load_corpus(args.data)
    ids = corpus.split(args.split)
    use_java = java_available()
    refs5 = {i: corpus.captions[i] for i in ids}
    refs4 = {i: corpus.captions[i][1:] for i in ids}
    rows = [("human (ref 1 vs refs 2-5)", "-", coco_scores(refs4, {i: [corpus.captions[i][0]] for i in ids}, use_java), None)]
    for spec in args.model:
        path, _, beams = spec.partition(":")
        spec, decoder, _ = load_checkpoint(path)
        feats, bad = cached_features(build_encoder(spec.encoder), ids, corpus.image_paths, args.cache_dir)
        assert not bad, f"unreadable images: {bad}"
        for beam in [int(b) for b in (beams or "1").split(",")]:
            options = DecodeOptions.for_model(spec, beam, args.length_penalty)
            t0 = time.perf_counter()
            caps = caption_features(decoder, spec.vocab, feats, options)
            elapsed = time.perf_counter() - t0
            hyps = {i: [c or "empty"] for i, c in zip(ids, caps)}
            name = f"{Path(path).parent.name}/{Path(path).name} {spec.decoder.kind}"
            rows.append((name, beam, coco_scores(refs5, hyps, use_java), coco_scores(refs4, hyps, use_java)["CIDEr"]))
            print(f"  {name} beam {beam}: decoded {len(ids)} in {elapsed:.1f} s", file=sys.stderr)
    keys = list(rows[0][2])
    print(f"\n{args.split} split, {len(ids)} images, {'PTB tokenizer (Java)' if use_java else 'plain tokens, no METEOR'}; 5 references (human row: 4)")
    print(f"| model | beam | {' | '.join(keys)} | CIDEr vs refs 2-5 |")
    print("|---|---|" + "---|" * (len(keys) + 1))
    for name, beam, s, c4 in rows:
        print(f"| {name} | {beam} | " + " | ".join(f"{s[k]:.3f}" for k in keys) + f" | {'' if c4 is None else f'{c4:.3f}'} |")
    if args.json:
        Path(args.json).write_text(json.dumps([{"model": n, "beam": b, **s, "CIDEr_4refs": c} for n, b, s, c in rows], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
