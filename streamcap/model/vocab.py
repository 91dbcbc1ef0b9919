"""The paper's caption cleaning and vocabulary.

Cleaning: lower-case, strip punctuation, drop one-letter words and words with
digits. Captions are wrapped in `startseq ... endseq`. The vocabulary is every
word seen at least `min_count` times in the training captions; index 0 is
padding. Words outside the vocabulary are dropped, as in the paper, so the
model never learns to emit an unknown-word token.
"""
from __future__ import annotations

import string
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property

START, END, PAD = "startseq", "endseq", "<pad>"
PAD_INDEX = 0

_PUNCTUATION = str.maketrans("", "", string.punctuation)


def clean_caption(raw: str, min_word_length: int = 2) -> list[str]:
    """The paper's cleaning, as a list of words (no start/end markers).

    The paper drops one-letter words (min_word_length=2), which removes "a"
    from every caption it learns; references keep it, so such a model loses
    n-gram matches it could have had. The shipped model keeps them (1).
    """
    words = raw.lower().translate(_PUNCTUATION).split()
    return [w for w in words if len(w) >= min_word_length and w.isalpha()]


# A caption never ends on these words. A model trained with out-of-vocabulary
# words dropped has seen "... on a endseq" wherever the noun was rare, and
# learns to stop after an article when unsure (cf. ruotianluo's bad_endings).
NO_END_AFTER = ("a", "an", "the", "in", "for", "at", "of", "with", "on", "to", "is", "are", "and", "its", "their", "his", "her")
# Nor does one of those words directly follow a determiner ("on a in the street",
# "a a black dog"): self-critical training learns such word salad because
# CIDEr-D still pays for the n-grams around it.
DETERMINERS = ("a", "an", "the", "its", "their", "his", "her")

# (after any of these words, never any of those), as vocabulary indices.
BannedAfter = tuple[tuple[frozenset[int], frozenset[int]], ...]


def tokenize_for_scoring(raw: str) -> str:
    """Lower-cased words without punctuation: the text metrics compare."""
    return " ".join(raw.lower().translate(_PUNCTUATION).split())


@dataclass
class Vocabulary:
    words: list[str]  # words[i] is the word of index i; words[0] is the pad
    index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.words or self.words[PAD_INDEX] != PAD:
            raise ValueError(f"vocabulary must start with {PAD!r}")
        self.index = {w: i for i, w in enumerate(self.words)}
        for marker in (START, END):
            if marker not in self.index:
                raise ValueError(f"vocabulary lacks {marker!r}")

    @classmethod
    def build(cls, cleaned_captions: list[list[str]], min_count: int = 10) -> "Vocabulary":
        counts = Counter(w for caption in cleaned_captions for w in [START, *caption, END])
        # Sorted by frequency then word so the same captions always give the same indices.
        kept = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
        return cls([PAD, *kept])

    def __len__(self) -> int:
        return len(self.words)

    def indices(self, words) -> frozenset[int]:
        return frozenset(self.index[w] for w in words if w in self.index)

    @cached_property
    def banned_after(self) -> BannedAfter:
        """The decoding rules every search applies: no caption ends cut off or reads "a in"."""
        return (
            (self.indices(NO_END_AFTER), frozenset({self.end_index})),
            (self.indices(DETERMINERS), self.indices(NO_END_AFTER)),
        )

    @cached_property
    def rule_tensors(self) -> list:
        """`banned_after` as (after, banned) index tensors, built once, for the searches."""
        import torch

        return [(torch.tensor(sorted(after)), torch.tensor(sorted(banned))) for after, banned in self.banned_after if after and banned]

    def concept_words(self, concepts: tuple[str, ...]) -> list:
        """Per concept, the index tensor of the words that name it; computed once per vocabulary."""
        cache = self.__dict__.setdefault("_concept_words", {})
        if concepts not in cache:
            import torch

            from streamcap.concepts import BY_NAME, banned_words

            cache[concepts] = [torch.tensor(sorted(banned_words(BY_NAME[c], self.words)), dtype=torch.long) for c in concepts]
        return cache[concepts]

    @property
    def start_index(self) -> int:
        return self.index[START]

    @property
    def end_index(self) -> int:
        return self.index[END]

    def encode(self, cleaned: list[str]) -> list[int]:
        """startseq + in-vocabulary words + endseq, as indices."""
        return [self.start_index, *(self.index[w] for w in cleaned if w in self.index), self.end_index]

    def decode(self, indices: list[int]) -> str:
        """Indices -> text, stopping at endseq, without the markers."""
        words = []
        for i in indices:
            if i == self.end_index:
                break
            if i in (PAD_INDEX, self.start_index):
                continue
            words.append(self.words[i])
        return " ".join(words)
