"""Scoring a caption model on a split from cached encoder features."""
from __future__ import annotations

import logging
import shutil
import subprocess

import numpy as np
import torch

from streamcap.model.captioner import DecodeOptions, decode_grid
from streamcap.model.vocab import Vocabulary, tokenize_for_scoring
from streamcap.train.metrics import score_all

log = logging.getLogger(__name__)


@torch.no_grad()
def caption_features(decoder, vocab: Vocabulary, features: np.ndarray, options: DecodeOptions, batch_size: int = 100) -> list[str]:
    """Decode every row of a (N, P, D) feature array."""
    decoder.eval()
    captions: list[str] = []
    for start in range(0, len(features), batch_size):
        grid = torch.from_numpy(np.asarray(features[start : start + batch_size], dtype=np.float32))  # (B, P, D)
        hyps = decode_grid(decoder, vocab, grid, options)
        captions.extend(vocab.decode(h.tokens) for h in hyps)
    return captions


def references_for(image_ids: list[str], raw_captions: dict[str, list[str]]) -> dict[str, list[str]]:
    return {i: [tokenize_for_scoring(c) for c in raw_captions[i]] for i in image_ids}


def java_available() -> bool:
    if shutil.which("java") is None:
        return False
    try:
        return subprocess.run(["java", "-version"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def meteor(references: dict, hypotheses: dict) -> float | None:
    """METEOR through the COCO scorer's Java jar; None without Java or pycocoevalcap."""
    if not java_available():
        log.info("METEOR skipped: no working `java` on PATH (install a JRE to get it)")
        return None
    try:
        from pycocoevalcap.meteor.meteor import Meteor
    except ImportError:
        log.info("METEOR skipped: `pip install pycocoevalcap` to get it")
        return None
    scorer = Meteor()
    try:
        score, _ = scorer.compute_score(references, {k: list(v) for k, v in hypotheses.items()})
    finally:
        # The scorer only stops its Java process in __del__; stop it now, deterministically.
        scorer.meteor_p.stdin.close()
        scorer.meteor_p.kill()
        scorer.meteor_p.wait()
    return float(score)


def score_captions(image_ids: list[str], captions: list[str], raw_captions: dict[str, list[str]], with_meteor: bool = False) -> dict[str, float]:
    references = references_for(image_ids, raw_captions)
    # An empty hypothesis would break ROUGE-L's precision; score it as one unknown word.
    hypotheses = {i: [c if c else "<empty>"] for i, c in zip(image_ids, captions)}
    scores = score_all(references, hypotheses)
    if with_meteor:
        value = meteor(references, hypotheses)
        if value is not None:
            scores["METEOR"] = value
    return scores
