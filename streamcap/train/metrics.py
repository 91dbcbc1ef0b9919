"""BLEU-1..4, ROUGE-L and CIDEr-D, written to agree with the COCO caption scorer.

Inputs are already tokenised: each caption is a string of words separated by
single spaces. The formulas, including the COCO scorer's smoothing constants
and its quirks (CIDEr-D's length is the hypothesis' bigram count), follow
pycocoevalcap so that scores are comparable with published numbers; the tests
check agreement to 1e-6. CIDEr-D is also the self-critical training reward,
so its reference side is precomputed once per corpus.
"""
from __future__ import annotations

import math
from collections import Counter

import numpy as np

NGRAMS = 4


def _ngrams(words: list[str], n: int = NGRAMS) -> Counter:
    counts: Counter = Counter()
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            counts[tuple(words[i : i + k])] += 1
    return counts


def bleu(references: dict, hypotheses: dict, n: int = NGRAMS) -> list[float]:
    """Corpus BLEU-1..n with the closest reference length, as the COCO scorer."""
    tiny, small = 1e-15, 1e-9
    correct, guess = [0] * n, [0] * n
    hyp_len_total = ref_len_total = 0
    for key, (hypothesis,) in hypotheses.items():
        hyp_words = hypothesis.split()
        hyp_counts = _ngrams(hyp_words, n)
        max_ref_counts: dict = {}
        ref_lengths = []
        for ref in references[key]:
            ref_words = ref.split()
            ref_lengths.append(len(ref_words))
            for gram, count in _ngrams(ref_words, n).items():
                max_ref_counts[gram] = max(max_ref_counts.get(gram, 0), count)
        hyp_len = len(hyp_words)
        hyp_len_total += hyp_len
        ref_len_total += min((abs(length - hyp_len), length) for length in ref_lengths)[1]
        for k in range(n):
            guess[k] += max(0, hyp_len - k)
        for gram, count in hyp_counts.items():
            correct[len(gram) - 1] += min(max_ref_counts.get(gram, 0), count)
    scores, product = [], 1.0
    for k in range(n):
        product *= float(correct[k] + tiny) / (guess[k] + small)
        scores.append(product ** (1.0 / (k + 1)))
    ratio = (hyp_len_total + tiny) / (ref_len_total + small)
    if ratio < 1:
        scores = [s * math.exp(1 - 1 / ratio) for s in scores]
    return scores


def _lcs_length(a: list[str], b: list[str]) -> int:
    previous = [0] * (len(b) + 1)
    for word_a in a:
        current = [0]
        for j, word_b in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if word_a == word_b else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(references: dict, hypotheses: dict, beta: float = 1.2) -> tuple[float, list[float]]:
    """Mean sentence ROUGE-L (F with beta 1.2 of the best precision and best recall)."""
    scores = []
    for key, (hypothesis,) in hypotheses.items():
        hyp_words = hypothesis.split(" ")
        precisions, recalls = [], []
        for ref in references[key]:
            ref_words = ref.split(" ")
            lcs = _lcs_length(ref_words, hyp_words)
            precisions.append(lcs / len(hyp_words))
            recalls.append(lcs / len(ref_words))
        p, r = max(precisions), max(recalls)
        scores.append((1 + beta**2) * p * r / (r + beta**2 * p) if p and r else 0.0)
    return float(np.mean(scores)), scores


class CiderD:
    """CIDEr-D against a fixed reference corpus (document frequencies from it)."""

    def __init__(self, references: dict, n: int = NGRAMS, sigma: float = 6.0):
        self.n, self.sigma = n, sigma
        ref_counts = {key: [_ngrams(r.split(), n) for r in refs] for key, refs in references.items()}
        self.document_frequency: Counter = Counter()
        for counts in ref_counts.values():
            self.document_frequency.update({gram for c in counts for gram in c})
        self.log_corpus_size = math.log(float(len(references)))
        self.ref_vectors = {key: [self._vector(c) for c in counts] for key, counts in ref_counts.items()}

    def _vector(self, counts: Counter) -> tuple[list[dict], list[float], int]:
        vec = [dict() for _ in range(self.n)]
        norm = [0.0] * self.n
        bigram_count = 0  # the COCO scorer's "length" counts bigrams; kept for comparability
        for gram, tf in counts.items():
            k = len(gram) - 1
            idf = self.log_corpus_size - math.log(max(1.0, self.document_frequency.get(gram, 0.0)))
            vec[k][gram] = float(tf) * idf
            norm[k] += vec[k][gram] ** 2
            if k == 1:
                bigram_count += tf
        return vec, [math.sqrt(x) for x in norm], bigram_count

    def sentence_score(self, key, hypothesis: str) -> float:
        vec, norm, length = self._vector(_ngrams(hypothesis.split(), self.n))
        refs = self.ref_vectors[key]
        total = np.zeros(self.n)
        for ref_vec, ref_norm, ref_length in refs:
            delta = float(length - ref_length)
            penalty = np.e ** (-(delta**2) / (2 * self.sigma**2))
            for k in range(self.n):
                value = sum(min(w, ref_vec[k].get(g, 0.0)) * ref_vec[k].get(g, 0.0) for g, w in vec[k].items())
                if norm[k] != 0 and ref_norm[k] != 0:
                    value /= norm[k] * ref_norm[k]
                total[k] += value * penalty
        return float(np.mean(total) / len(refs) * 10.0)

    def corpus_score(self, hypotheses: dict) -> tuple[float, list[float]]:
        scores = [self.sentence_score(key, hyp) for key, (hyp,) in hypotheses.items()]
        return float(np.mean(scores)), scores


def score_all(references: dict, hypotheses: dict) -> dict[str, float]:
    """BLEU-1..4, ROUGE-L and CIDEr-D; METEOR is added by evaluate.py where Java runs."""
    b = bleu(references, hypotheses)
    scores = {f"BLEU-{k + 1}": b[k] for k in range(NGRAMS)}
    scores["ROUGE-L"] = rouge_l(references, hypotheses)[0]
    scores["CIDEr-D"] = CiderD(references).corpus_score(hypotheses)[0]
    return scores
