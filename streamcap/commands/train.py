"""`streamcap train`: train a caption model on Flickr8k-format or Karpathy-JSON data."""
from __future__ import annotations

import shlex
import sys
from dataclasses import fields

from streamcap.train.train import TrainConfig, train

HELP = {
    "data": "Flickr8k folder, a captions.tsv folder (COCO subset, clip frames) or a Karpathy dataset_*.json; "
            "repeat --data to train on several (ids become <folder>/<image>)",
    "corrections": "caption corrections: image<TAB>caption number<TAB>corrected caption",
    "concepts": "train a concept head (the groups person, vehicle, animal, fire and the object categories the captions "
                "name often enough) and condition the attention decoder on it",
    "min_category_images": "a category needs this many training images that name it to get a head output (default 25)",
    "camera_weight": "camera frames (the hand-labelled clip corpora) count this many times in training and in the "
                     "concept head's calibration (default 8)",
    "input_sizes": "comma-separated encoder input squares to train at, one drawn per batch (e.g. 224,320; "
                   "default: the encoder's own)",
    "scst_images": "images per self-critical epoch, a fresh random share each epoch with every camera frame "
                   "(default 0: all)",
    "out": "where to write the best checkpoint (by dev CIDEr-D)",
    "images": "image folder, for a Karpathy JSON",
    "decoder": "merge (the paper's baseline) or attention",
    "glove": "GloVe rows .npy (words in *_vocab.txt beside it) to initialise the embedding",
    "scst_epochs": "epochs of self-critical training with a CIDEr-D reward after cross-entropy",
    "resume": "continue from a *.last.pt checkpoint",
    "limit_train_images": "train on only the first N training images (smoke tests)",
}


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a caption model")
    for f in fields(TrainConfig):
        if f.name in ("command", "extra"):
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.name == "data":
            p.add_argument(flag, required=True, action="append", help=HELP[f.name])
        elif f.name == "out":
            p.add_argument(flag, required=True, help=HELP[f.name])
        elif f.type in ("bool | None", "bool"):
            p.add_argument(flag, type=lambda s: s.lower() in ("1", "true", "yes"), default=f.default, help=HELP.get(f.name, "true/false"))
        else:
            kind = {"int": int, "float": float}.get(f.type, str)
            p.add_argument(flag, type=kind, default=f.default, help=HELP.get(f.name, f"default {f.default}"))
    p.set_defaults(func=run)


def run(args) -> int:
    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if f.name not in ("command", "extra")}
    config = TrainConfig(**values, command="streamcap " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    train(config)
    return 0
