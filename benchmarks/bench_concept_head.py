"""Concept head variants: which training sees small, distant, top-down things, at what input size?

    python benchmarks/bench_concept_head.py [--data ../shared/data] [--train-sizes 224 --train-sizes 224,320]
        [--camera-weights 1,8] [--test-sizes 224,320] [--folds 5] [--json out.json]

Each variant is the training stage itself (`streamcap.train.train.fit_concept_head`:
groups and categories, out-of-fold predictions with camera frames held out a
clip at a time, calibration on them with camera frames weighted up), trained
on Flickr8k + COCO subset + the training clips of clip_frames and cctv_clips,
at one or several encoder input sizes (a size drawn per batch), with camera
frames counted once or `--camera-weights` times. Each head is then run on the
dev images encoded at every `--test-sizes` (a finer grid over the same frame:
small and distant things get more cells). Reported per dev set and per dev
clip: for person, vehicle and animal, recall / false-positive rate at 0.5 /
average precision; for the object categories, the mean average precision over
categories with at least 3 positives in the set, and how decoding would treat
them at a ban threshold of 0.1: the share of present categories it would
wrongly ban, and of absent ones it would rightly rule out. Then the encoder's
time per image at each size, measured in the same process, so gain and cost
sit side by side.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from streamcap.concepts import GROUP_NAMES
from streamcap.model.encoder import build_encoder
from streamcap.train.concept_eval import image_labels
from streamcap.train.concept_training import label_arrays
from streamcap.train.data import clip_of, source_of
from streamcap.train.train import TrainConfig, TrainingData, _features_by_source, fit_concept_head, prepare_data

SETS = ("flickr8k", "coco_subset", "clip_frames", "cctv_clips")
CLIP_SETS = ("clip_frames", "cctv_clips")
BAN_BELOW = 0.1


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    order = np.argsort(-scores)
    hits = labels[order]
    if hits.sum() == 0:
        return float("nan")
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision * hits).sum() / hits.sum())


def measure(probs: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, names: tuple[str, ...]) -> dict:
    out = {}
    for j, concept in enumerate(names):
        known = mask[:, j] > 0
        y, p = labels[known, j].numpy(), probs[known, j].numpy()
        pos, neg = y == 1, y == 0
        out[concept] = {
            "positives": int(pos.sum()), "negatives": int(neg.sum()),
            "recall": float((p[pos] >= 0.5).mean()) if pos.any() else None,
            "false": float((p[neg] >= 0.5).mean()) if neg.any() else None,
            "ap": average_precision(p, y) if pos.any() else None,
            "banned_present": float((p[pos] < BAN_BELOW).mean()) if pos.any() else None,
            "ruled_out_absent": float((p[neg] < BAN_BELOW).mean()) if neg.any() else None,
        }
    return out


def row(name: str, set_name: str, result: dict) -> str:
    def fmt(v):
        return "-" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.2f}"
    cells = [f"{fmt(result[g]['recall'])} / {fmt(result[g]['false'])} / {fmt(result[g]['ap'])}" for g in ("person", "vehicle", "animal")]
    categories = [r for c, r in result.items() if c not in GROUP_NAMES and r["positives"] >= 3]
    aps = [r["ap"] for r in categories if r["ap"] is not None]
    present = [r for r in result.values() if r["banned_present"] is not None and r not in [result[g] for g in GROUP_NAMES]]
    absent = [r for c, r in result.items() if c not in GROUP_NAMES and r["ruled_out_absent"] is not None]
    banned = sum(r["banned_present"] * r["positives"] for r in present) / max(1, sum(r["positives"] for r in present))
    ruled = sum(r["ruled_out_absent"] * r["negatives"] for r in absent) / max(1, sum(r["negatives"] for r in absent))
    return (f"| {name} | {set_name} | " + " | ".join(cells)
            + f" | {fmt(float(np.mean(aps)) if aps else None)} ({len(aps)}) | {banned:.2f} | {ruled:.3f} |")


def encoder_ms(size: int) -> float:
    encoder = build_encoder("efficientnet_lite0", input_size=size)
    images = torch.randn(8, 3, size, size)
    times = []
    with torch.no_grad():
        encoder(images)
        for _ in range(5):
            t0 = time.perf_counter()
            encoder(images)
            times.append(time.perf_counter() - t0)
    return 1000 * sorted(times)[2] / 8


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.environ.get("STREAMCAP_DATA", "../shared/data"))
    p.add_argument("--extra", action="append", default=[], help="more training corpora (e.g. data/cctv_extra)")
    p.add_argument("--train-sizes", action="append", help="input sizes a variant trains at (repeatable; default 224)")
    p.add_argument("--camera-weights", default="8")
    p.add_argument("--test-sizes", default="224,320")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--cache-dir", default=".cache/features")
    p.add_argument("--corrections", default="data/caption_corrections.tsv")
    p.add_argument("--json", help="write every measure here")
    args = p.parse_args()
    root = Path(args.data)
    if not (root / "flickr8k").is_dir():
        print(f"skipped: no shared data at {root} (set STREAMCAP_DATA)")
        return 0
    train_sizes = args.train_sizes or ["224"]
    test_sizes = [int(s) for s in args.test_sizes.split(",")]
    all_sizes = sorted({int(s) for v in train_sizes for s in v.split(",")} | set(test_sizes))
    config = TrainConfig(data=[str(root / s) for s in SETS] + args.extra, out="unused", corrections=args.corrections,
                         input_sizes=",".join(map(str, all_sizes)), cache_dir=args.cache_dir,
                         concept_folds=args.folds, concept_epochs=args.epochs)
    data = prepare_data(config)
    dev_ids = data.dev_ids
    dev_features = {}
    for size in test_sizes:
        encoder = build_encoder(config.encoder, input_size=size)
        dev_features[size] = torch.from_numpy(np.asarray(_features_by_source(encoder, dev_ids, data.corpus, args.cache_dir)[0]))
    sets = {s: [k for k, i in enumerate(dev_ids) if source_of(i) == s] for s in SETS}
    for set_name in CLIP_SETS:
        for k, image_id in enumerate(dev_ids):
            if source_of(image_id) == set_name:
                sets.setdefault(clip_of(image_id.split("/", 1)[1]), []).append(k)
    print("groups: recall / false-positive rate at 0.5 / average precision; categories: mean AP (how many), "
          f"present ones banned at p < {BAN_BELOW}, absent ones ruled out")
    print("| variant | dev set | person | vehicle | animal | categories mAP | present banned | absent ruled out |")
    print("|---|---|---|---|---|---|---|---|")
    report = []
    for sizes in train_sizes:
        chosen = [all_sizes.index(int(s)) for s in sizes.split(",")]
        variant_data = dataclasses.replace(data, features=[data.features[k] for k in chosen])
        for weight in [float(w) for w in args.camera_weights.split(",")]:
            t0 = time.time()
            head, _ = fit_concept_head(dataclasses.replace(config, camera_weight=weight), variant_data, data.features[0].shape[-1])
            names = head.config.concepts
            labels, mask = label_arrays([image_labels(data.corpus, i) for i in dev_ids], names)
            fit_s = time.time() - t0
            for size in test_sizes:
                with torch.no_grad():
                    probs = torch.cat([head(dev_features[size][i : i + 256].float()) for i in range(0, len(dev_ids), 256)])
                name = f"train {sizes} x{weight:g} @{size}"
                for set_name, rows in sets.items():
                    result = measure(probs[rows], labels[rows], mask[rows], names)
                    print(row(name, set_name, result), flush=True)
                    report.append({"train_sizes": sizes, "camera_weight": weight, "test_size": size, "set": set_name,
                                   "fit_s": fit_s, "concepts": result})
    print("\n| input | grid | encoder ms/image (batch 8, median of 5) | ratio to 224 |\n|---|---|---|---|")
    base = None
    for size in test_sizes:
        ms = encoder_ms(size)
        base = base or ms
        print(f"| {size} | {-(-size // 32)}x{-(-size // 32)} | {ms:.1f} | {ms / base:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
