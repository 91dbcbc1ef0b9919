"""`streamcap evaluate`: BLEU-1..4, METEOR (with Java), ROUGE-L and CIDEr-D on a split."""
from __future__ import annotations

import json

from streamcap.model.checkpoint import DEFAULT_MODEL, load_checkpoint
from streamcap.model.decoding import DecodeOptions
from streamcap.model.encoder import build_encoder
from streamcap.train.data import load_corpus
from streamcap.train.evaluate import caption_features, score_captions
from streamcap.train.features import cached_features


def register(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="score a model on a data split")
    p.add_argument("--data", required=True, help="Flickr8k folder or Karpathy JSON")
    p.add_argument("--images", help="image folder, for a Karpathy JSON")
    p.add_argument("--split", default="dev")
    p.add_argument("--model", help="checkpoint (default: the shipped model)")
    p.add_argument("--beam", type=int, help="beam width (default: the model's)")
    p.add_argument("--length-penalty", type=float)
    p.add_argument("--cache-dir", default=".cache/features")
    p.add_argument("--no-meteor", action="store_true", help="skip METEOR even when Java is present")
    p.add_argument("--captions-out", help="write the generated captions here as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    model_path = args.model or DEFAULT_MODEL
    spec, decoder, _ = load_checkpoint(model_path)
    options = DecodeOptions.for_model(spec, args.beam, args.length_penalty)
    encoder = build_encoder(spec.encoder)
    corpus = load_corpus(args.data, args.images)
    ids = corpus.split(args.split)
    features, unreadable = cached_features(encoder, ids, corpus.image_paths, args.cache_dir)
    keep = [i for i, image_id in enumerate(ids) if image_id not in set(unreadable)]
    ids = [ids[i] for i in keep]
    captions = caption_features(decoder, spec.vocab, features[keep], options)
    scores = score_captions(ids, captions, corpus.captions, with_meteor=not args.no_meteor)
    print(json.dumps({"model": str(model_path), "split": args.split, "images": len(ids), "beam": options.beam_size, **{k: round(v, 4) for k, v in scores.items()}}))
    if args.captions_out:
        with open(args.captions_out, "w", encoding="utf-8") as f:
            json.dump(dict(zip(ids, captions)), f, indent=1)
    return 0
