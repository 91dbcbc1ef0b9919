"""Scoring a caption model on a split from cached encoder features."""
from __future__ import annotations

import logging
import shutil
import subprocess

import numpy as np
import torch

from streamcap.model.decoding import DecodeOptions, decode_grid
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
        hyps, _ = decode_grid(decoder, vocab, grid, options, decoder.config.concept_names)
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


def official_scores(references: dict[str, list[str]], hypotheses: dict[str, list[str]], use_java: bool | None = None) -> dict[str, float]:
    """BLEU-1..4, METEOR, ROUGE-L and CIDEr from the COCO scorer (pycocoevalcap), on raw captions.

    With Java, captions go through the COCO PTB tokenizer and METEOR is scored,
    like published results; without it, plain lower-case words and no METEOR.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    use_java = java_available() if use_java is None else use_java
    if use_java:
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        tokenizer = PTBTokenizer()
        references = tokenizer.tokenize({k: [{"caption": c} for c in v] for k, v in references.items()})
        hypotheses = tokenizer.tokenize({k: [{"caption": c} for c in v] for k, v in hypotheses.items()})
    else:
        references = {k: [tokenize_for_scoring(c) for c in v] for k, v in references.items()}
        hypotheses = {k: [tokenize_for_scoring(c) for c in v] for k, v in hypotheses.items()}
    scores: dict[str, float] = {}
    bleu, _ = Bleu(4).compute_score(references, hypotheses, verbose=0)
    scores.update({f"BLEU-{i + 1}": bleu[i] for i in range(4)})
    if use_java:
        value = meteor(references, hypotheses)
        if value is not None:
            scores["METEOR"] = value
    scores["ROUGE-L"], _ = Rouge().compute_score(references, hypotheses)
    scores["CIDEr"], _ = Cider().compute_score(references, hypotheses)
    return scores
