"""What every search does to the next word's log-probabilities before it picks.

Greedy search, beam search and self-critical sampling all call
`StepRules.apply` on every step, so PyTorch, ONNX Runtime and TensorRT emit
the same captions under the same rules:

0. Padding and startseq are never words.
1. Word rules (`Vocabulary.banned_after`): a caption never ends on an article
   or preposition, and no function word follows a determiner ("on a in the").
2. No repeated trigram ("is wearing a red helmet is wearing a helmet"): the
   word that would repeat the last two words' earlier continuation is banned
   (Paulus et al. 2017); and no word twice in a row ("a tabby tabby cat").
3. Grounding, from the concept head's calibrated probabilities per image:
   - a concept below `ban_below` is ruled out: none of its words is emitted;
   - a concept at or above `require_above` must be named: the caption cannot
     end before one of its words, for its first `require_within` words
     (a decoder that cannot find the word gives up rather than ramble), and
     while it is not named its words gain `require_boost` nats, so the search
     reaches for "car" in a street scene instead of only talking longer.
   Both thresholds can differ per concept (`per_concept`); the shipped ones
   are chosen on the dev sets (benchmarks/bench_grounding.py).

Shapes: R rows being decoded (images x beams), t words so far, V vocabulary, C concepts.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from streamcap.model.vocab import PAD_INDEX, Vocabulary

NEG_INF = float("-inf")


@dataclass(frozen=True)
class GroundingOptions:
    ban_below: float = 0.0  # 0: never ban
    require_above: float = 1.01  # above 1: never require
    require_within: int = 16
    require_boost: float = 0.0  # nats added to an unmet required concept's words at every step
    block_repeated_trigrams: bool = True
    block_repeated_words: bool = True
    # (concept, ban_below, require_above) for concepts whose head is more or less sure than the rest
    per_concept: tuple[tuple[str, float, float], ...] = ()

    def __post_init__(self) -> None:  # from a checkpoint the overrides arrive as lists
        object.__setattr__(self, "per_concept", tuple((str(c), float(b), float(r)) for c, b, r in self.per_concept))

    def thresholds(self, concepts: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """(ban_below, require_above) per concept, (C,) each."""
        overrides = {c: (b, r) for c, b, r in self.per_concept}
        pairs = [overrides.get(c, (self.ban_below, self.require_above)) for c in concepts]
        return torch.tensor([b for b, _ in pairs]), torch.tensor([r for _, r in pairs])


def parse_concept_thresholds(item: str) -> tuple[str, float, float]:
    """"person=0.6,0.6" -> ("person", 0.6, 0.6): one entry of `per_concept`; ValueError when malformed."""
    concept, _, values = item.partition("=")
    ban, require = (float(v) for v in values.split(","))
    return concept, ban, require


class StepRules:
    """The rules for one batch of images; `apply` shapes one step's log-probs."""

    def __init__(self, vocab: Vocabulary, concepts: tuple[str, ...] = (), probs: torch.Tensor | None = None,
                 options: GroundingOptions = GroundingOptions()):
        self.end = vocab.end_index
        self.start = vocab.start_index
        self.never = torch.tensor([PAD_INDEX, vocab.start_index])
        self.after_rules = vocab.rule_tensors
        self.block_trigrams = options.block_repeated_trigrams
        self.block_repeats = options.block_repeated_words
        self.require_within = options.require_within
        self.boost_by_concept: torch.Tensor | None = None  # (C, V)
        self.ban_mask: torch.Tensor | None = None  # (B, V) bool
        self.required: torch.Tensor | None = None  # (B, C) bool
        self.concept_words: list[torch.Tensor] = []
        if probs is not None and concepts:
            self.concept_words = vocab.concept_words(tuple(concepts))
            ban_below, require_above = options.thresholds(tuple(concepts))  # (C,), (C,)
            ruled_out = probs < ban_below  # (B, C)
            if bool(ruled_out.any()):
                self.ban_mask = torch.zeros(probs.shape[0], len(vocab), dtype=torch.bool)  # (B, V)
                for c, indices in enumerate(self.concept_words):
                    rows = ruled_out[:, c].nonzero()[:, 0]
                    if len(rows) and len(indices):
                        self.ban_mask[rows[:, None], indices[None]] = True
            required = probs >= require_above  # (B, C)
            has_words = torch.tensor([len(w) > 0 for w in self.concept_words])
            required &= has_words[None]
            self.required = required if bool(required.any()) else None
            if self.required is not None and options.require_boost:
                self.boost_by_concept = torch.zeros(len(concepts), len(vocab))  # (C, V): what naming each concept gains
                for c, indices in enumerate(self.concept_words):
                    self.boost_by_concept[c, indices] = options.require_boost

    def apply(self, logprobs: torch.Tensor, history: torch.Tensor, row_image: torch.Tensor) -> torch.Tensor:
        """logprobs (R, V) of the next word, history (R, t) of words so far, row_image (R,) -> shaped (R, V)."""
        logprobs = logprobs.clone()
        logprobs[:, self.never] = NEG_INF
        t = history.shape[1]
        previous = history[:, -1] if t else torch.full((history.shape[0],), self.start, dtype=torch.long)  # (R,)
        for after, banned in self.after_rules:
            rows = torch.isin(previous, after).nonzero()[:, 0]  # (n,)
            if len(rows):
                logprobs[rows[:, None], banned[None]] = NEG_INF
        if self.block_repeats and t:
            logprobs.scatter_(1, previous[:, None], NEG_INF)
        if self.block_trigrams and t >= 3:
            repeat = (history[:, : t - 2] == history[:, t - 2 : t - 1]) & (history[:, 1 : t - 1] == history[:, t - 1 :])  # (R, t-2)
            rows, positions = repeat.nonzero(as_tuple=True)
            if len(rows):
                logprobs[rows, history[rows, positions + 2]] = NEG_INF
        if self.ban_mask is not None:
            logprobs.masked_fill_(self.ban_mask.index_select(0, row_image), NEG_INF)
        if self.required is not None and t < self.require_within:
            required = self.required.index_select(0, row_image)  # (R, C)
            named = torch.stack([torch.isin(history, w).any(1) for w in self.concept_words], 1)  # (R, C)
            missing = required & ~named  # (R, C)
            logprobs[missing.any(1), self.end] = NEG_INF
            if self.boost_by_concept is not None:
                logprobs += missing.float() @ self.boost_by_concept  # (R, C) @ (C, V)
        return logprobs
