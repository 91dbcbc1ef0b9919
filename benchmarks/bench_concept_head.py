"""Concept head variants on the cached lite0 grids: which pooling sees small, distant things?

    python benchmarks/bench_concept_head.py [--data ../shared/data] [--variants mean,max,lse,lse+imagenet]

Trains each variant on the training images of Flickr8k + COCO subset + the
training clips (90 %; the other 10 % fit its calibration) and reports, on each
dev set, per concept: recall and false-positive rate at probability 0.5, and
average precision. Also the head's extra cost per image in multiply-adds, to
set beside the encoder's (lite0 at 224: about 0.4 GMAC). Variants:
- mean: a linear probe on the mean of the grid (what a pooled vector gives);
- max / lse: a per-cell MLP pooled by max or by log-sum-exp (multiple instance), plus the mean probe;
- +imagenet: the encoder's own ImageNet classifier as extra evidence (its
  vehicle classes summed, its animal classes summed, per cell and on the mean).
Features come from the training cache (`streamcap train` or this script writes it).

`--test-sizes 224,320,448` also runs each head, trained at 224, on the dev
images encoded at larger squares (a finer grid over the same frame: small
and distant things get more cells), with the encoder's time per image at
each size measured in the same process, so gain and cost sit side by side.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from streamcap.concepts import CONCEPT_NAMES
from streamcap.model.concept_head import ConceptHead, ConceptHeadConfig
from streamcap.model.encoder import build_encoder
from streamcap.train.concept_eval import image_labels
from streamcap.train.concept_training import calibrate, head_logits, label_arrays, train_head
from streamcap.train.data import clip_of, load_corpora, source_of
from streamcap.train.features import cached_features

VEHICLE_CLASSES = [407, 436, 444, 468, 479, 511, 555, 561, 569, 573, 575, 581, 586, 595, 603, 609, 612, 627, 654, 656,
                   661, 665, 670, 671, 675, 705, 717, 734, 751, 757, 779, 803, 817, 829, 847, 864, 866, 867, 870, 874, 880]
ANIMAL_CLASSES = list(range(398))
PERSON_CLASSES = [981, 982, 983]


class ImageNetEvidence(nn.Module):
    """Group probabilities of the ImageNet classifier, on the mean grid and the most confident cell: (B, 6)."""

    def __init__(self, classifier: nn.Linear):
        super().__init__()
        self.classifier = classifier
        self.groups = [torch.tensor(g) for g in (PERSON_CLASSES, VEHICLE_CLASSES, ANIMAL_CLASSES)]

    @torch.no_grad()
    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        mean_probs = self.classifier(grid.mean(1)).softmax(-1)  # (B, 1000)
        cell_probs = self.classifier(grid).softmax(-1)  # (B, P, 1000)
        feats = [mean_probs[:, g].sum(-1) for g in self.groups] + [cell_probs[:, :, g].sum(-1).max(1).values for g in self.groups]
        return torch.logit(torch.stack(feats, 1).clamp(1e-4, 1 - 1e-4))  # (B, 6)


class HeadWithEvidence(nn.Module):
    def __init__(self, head: ConceptHead, evidence: ImageNetEvidence):
        super().__init__()
        self.head, self.evidence = head, evidence
        self.config = head.config
        self.mix = nn.Linear(6, len(head.config.concepts))
        nn.init.zeros_(self.mix.weight)

    def logits(self, grid):
        return self.head.logits(grid) + self.mix(self.evidence(grid))


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    order = np.argsort(-scores)
    hits = labels[order]
    if hits.sum() == 0:
        return float("nan")
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision * hits).sum() / hits.sum())


def report(name: str, set_name: str, probs: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> str:
    cells = []
    for j, concept in enumerate(CONCEPT_NAMES[:3]):
        known = mask[:, j] > 0
        y, p = labels[known, j].numpy(), probs[known, j].numpy()
        pos, neg = y == 1, y == 0
        recall = f"{(p[pos] >= 0.5).mean():.2f}" if pos.any() else "-"
        false = f"{(p[neg] >= 0.5).mean():.2f}" if neg.any() else "-"
        ap = average_precision(p, y)
        cells.append(f"{recall} / {false} / {'-' if np.isnan(ap) else f'{ap:.2f}'}")
    return f"| {name} | {set_name} | " + " | ".join(cells) + " |"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.environ.get("STREAMCAP_DATA", "../shared/data"))
    p.add_argument("--variants", default="mean,max,lse,lse+imagenet")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--cache-dir", default=".cache/features")
    p.add_argument("--corrections", default="data/caption_corrections.tsv")
    p.add_argument("--test-sizes", default="224", help="input squares to run the dev images at (the heads train at 224)")
    p.add_argument("--size-sets", default="flickr8k,coco_subset,clip_frames", help="dev sets to encode at the other sizes")
    args = p.parse_args()
    root = Path(args.data)
    if not (root / "flickr8k").is_dir():
        print(f"skipped: no shared data at {root} (set STREAMCAP_DATA)")
        return 0
    torch.set_num_threads(2)
    corpus = load_corpora([root / "flickr8k", root / "coco_subset", root / "clip_frames"], corrections=args.corrections)
    encoder = build_encoder("efficientnet_lite0")
    train_ids, dev_ids = corpus.split("train"), corpus.split("dev")
    train_feats, _ = cached_features(encoder, train_ids, corpus.image_paths, args.cache_dir)
    dev_by_size = {}
    size_ids = [i for i in dev_ids if source_of(i) in args.size_sets.split(",")]
    for size in [int(x) for x in args.test_sizes.split(",")]:
        if size == encoder.spec.input_size:
            dev_by_size[size] = (dev_ids, cached_features(encoder, dev_ids, corpus.image_paths, args.cache_dir)[0])
        else:
            sized = build_encoder("efficientnet_lite0", input_size=size)
            dev_by_size[size] = (size_ids, cached_features(sized, size_ids, corpus.image_paths, args.cache_dir)[0])
    train_labels, train_mask = label_arrays([image_labels(corpus, i) for i in train_ids], CONCEPT_NAMES)
    dev_labels, dev_mask = label_arrays([image_labels(corpus, i) for i in dev_ids], CONCEPT_NAMES)
    rng = np.random.default_rng(0)
    held = rng.random(len(train_ids)) < 0.1
    fit_rows, calib_rows = np.flatnonzero(~held), np.flatnonzero(held)
    sets = {s: np.array([k for k, i in enumerate(dev_ids) if source_of(i) == s]) for s in ("flickr8k", "coco_subset", "clip_frames")}
    for clip in sorted({clip_of(i.split("/", 1)[1]) for i in dev_ids if source_of(i) == "clip_frames"}):
        sets[clip] = np.array([k for k, i in enumerate(dev_ids) if source_of(i) == "clip_frames" and clip_of(i.split("/", 1)[1]) == clip])
    print("recall / false-positive rate at 0.5 / average precision")
    print("| variant | dev set | person | vehicle | animal |")
    print("|---|---|---|---|---|")
    for variant in args.variants.split(","):
        pooling = variant.split("+")[0]
        config = ConceptHeadConfig(CONCEPT_NAMES, encoder.feature_dim, pooling=pooling)
        head = train_head(config, train_feats, train_labels, train_mask, rows=fit_rows, epochs=args.epochs)
        if variant.endswith("+imagenet"):
            wrapped = HeadWithEvidence(head, ImageNetEvidence(encoder.classifier))
            # The evidence mix is trained on top of the frozen head, on the same rows.
            for param in head.parameters():
                param.requires_grad_(False)
            optimizer = torch.optim.Adam(wrapped.mix.parameters(), lr=1e-2)
            for _ in range(3):
                for start in range(0, len(fit_rows), 256):
                    rows = fit_rows[start : start + 256]
                    grid = torch.from_numpy(np.asarray(train_feats[rows], dtype=np.float32))
                    from streamcap.model.concept_head import masked_bce
                    loss = masked_bce(wrapped.logits(grid), train_labels[rows], train_mask[rows])
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
            model = wrapped
        else:
            model = head
        calib_logits = head_logits(model, train_feats, calib_rows)
        calibrate(head, calib_logits, train_labels[calib_rows], train_mask[calib_rows])
        for size, (ids, feats) in dev_by_size.items():
            dev_logits = head_logits(model, feats)
            probs = torch.sigmoid(dev_logits * head.calib_scale + head.calib_bias)
            index = {image_id: k for k, image_id in enumerate(dev_ids)}
            label_rows = np.array([index[i] for i in ids])
            for set_name, rows in sets.items():
                local = np.array([k for k, i in enumerate(ids) if index[i] in set(rows.tolist())])
                if len(local):
                    print(report(f"{variant} @{size}", set_name, probs[local], dev_labels[label_rows[local]],
                                 dev_mask[label_rows[local]]), flush=True)
    print("\n| input | grid | encoder ms/image (batch 8, median of 5) | ratio to 224 |\n|---|---|---|---|")
    base = None
    for size in dev_by_size:
        ms = encoder_ms(size)
        base = base or ms
        print(f"| {size} | {-(-size // 32)}x{-(-size // 32)} | {ms:.1f} | {ms / base:.2f} |")
    return 0


def encoder_ms(size: int) -> float:
    import time

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


if __name__ == "__main__":
    sys.exit(main())
