"""Training the concept head on cached encoder grids, and its out-of-fold predictions.

Labels are per image and per concept: 1, 0 or unknown (masked out of the
loss), from `streamcap.train.concept_eval.image_labels`. The decoder learns to
read the head's probabilities, so it must see them as they will be at run
time: on images the head was not trained on. `out_of_fold_logits` trains K
heads, each without one fold, and predicts every training image with the head
that never saw it (stacking, Wolpert 1992); the caller chooses the folds
(camera frames a whole clip at a time) and calibrates on the result.

`features` is a list of (N, P, D) arrays, one per encoder input size, with
the same rows: each batch is drawn at one size, so the head learns to read a
small box's 7x7 grid and a GPU box's 10x10 alike. `weights` (N,) makes some
images count more (camera frames, of which there are few).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from streamcap.model.concept_head import ConceptHead, ConceptHeadConfig, fit_calibration, masked_bce
from streamcap.train.concept_eval import LabelSet

log = logging.getLogger(__name__)


def label_arrays(label_sets: Sequence[LabelSet], concepts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(labels, mask), both (N, C) float32; mask 0 where the label is unknown."""
    labels = torch.zeros(len(label_sets), len(concepts))
    mask = torch.zeros(len(label_sets), len(concepts))
    for i, label_set in enumerate(label_sets):
        for j, concept in enumerate(concepts):
            value = label_set.get(concept)
            if value is not None:
                labels[i, j] = float(value)
                mask[i, j] = 1.0
    return labels, mask


def _grids(features, rows: np.ndarray) -> torch.Tensor:
    if isinstance(features, torch.Tensor):
        return features[torch.from_numpy(np.asarray(rows))].float()  # (B, P, D)
    return torch.from_numpy(np.asarray(features[rows], dtype=np.float32))  # (B, P, D)


def _sizes(features) -> list:
    return list(features) if isinstance(features, (list, tuple)) else [features]


def train_head(
    config: ConceptHeadConfig,
    features,  # (N, P, D) array or memmap (float16 is fine), or a list of them, one per input size
    labels: torch.Tensor,
    mask: torch.Tensor,
    rows: np.ndarray | None = None,
    epochs: int = 12,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    seed: int = 1234,
    weights: np.ndarray | None = None,
) -> ConceptHead:
    """A head trained on `rows` of `features` (all rows by default); calibration is left to the caller."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    sizes = _sizes(features)
    rows = np.arange(len(labels)) if rows is None else np.asarray(rows)
    if weights is not None:  # whole repeats, and the fraction at random once: an epoch sees each image ~weight times
        whole, part = np.divmod(weights[rows], 1.0)
        rows = np.repeat(rows, whole.astype(int) + (rng.random(len(rows)) < part))
    head = ConceptHead(config)
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * ((len(rows) + batch_size - 1) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.15)
    for epoch in range(epochs):
        head.train()
        order = rng.permutation(rows)
        total = 0.0
        for start in range(0, len(order), batch_size):
            batch = np.sort(order[start : start + batch_size])  # sorted: memmap reads stay sequential
            grid = _grids(sizes[int(rng.integers(len(sizes)))], batch)
            loss = masked_bce(head.logits(grid), labels[batch], mask[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(batch)
        log.debug("concept head epoch %d loss %.4f", epoch, total / len(order))
    head.eval()
    return head


@torch.no_grad()
def head_logits(head: ConceptHead, features, rows: np.ndarray | None = None, batch_size: int = 256) -> torch.Tensor:
    """Uncalibrated logits (N, C) for `rows` (all by default) of one size's features."""
    head.eval()
    rows = np.arange(len(features)) if rows is None else np.asarray(rows)
    out = [head.logits(_grids(features, rows[i : i + batch_size])) for i in range(0, len(rows), batch_size)]
    return torch.cat(out) if out else torch.zeros(0, len(head.config.concepts))


def calibrate(head: ConceptHead, logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> None:
    """Fit the head's Platt scaling on held-out logits, in place."""
    scale, bias = fit_calibration(logits, labels, mask)
    head.calib_scale.copy_(scale)
    head.calib_bias.copy_(bias)
    log.info("concept head calibration: %s", ", ".join(
        f"{c} x{float(s):.2f}{float(b):+.2f}" for c, s, b in zip(head.config.concepts, scale, bias)))


def out_of_fold_logits(config: ConceptHeadConfig, features, labels: torch.Tensor, mask: torch.Tensor,
                       fold_of: np.ndarray, seed: int = 1234, **train_kwargs) -> list[torch.Tensor]:
    """Per input size, uncalibrated logits (N, C) of every row from a head that never trained on it."""
    sizes = _sizes(features)
    logits = [torch.zeros(len(labels), len(config.concepts)) for _ in sizes]
    folds = int(fold_of.max()) + 1
    for fold in range(folds):
        held = np.flatnonzero(fold_of == fold)
        head = train_head(config, sizes, labels, mask, rows=np.flatnonzero(fold_of != fold), seed=seed + fold, **train_kwargs)
        for k, size_features in enumerate(sizes):
            logits[k][held] = head_logits(head, size_features, held)
        log.info("concept head: out-of-fold predictions %d/%d done", fold + 1, folds)
    return logits
