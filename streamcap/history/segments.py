"""Segments: consecutive captions of one camera that say the same thing, kept as one record.

A fixed camera says nearly the same sentence for hours ("a street at night
with parked motorcycles", "a dark street with motorcycles parked on it").
Storing each of those as a row costs the disk and buries the moments that
matter, so a caption joins its camera's open segment when it says the same
thing:

- the same concepts: no concept of the head crossed `threshold` since the
  segment began (with `hysteresis`, so a probability hovering at the threshold
  does not split it every second);
- no new object: every word of a concept group (person, car, dog, fire...,
  from streamcap.concepts) it names was named in the segment before;
- the same words up to small variation: at most `max_new_words` of its content
  words (not counting a, the, on, ...) are new to the segment.

Anything else ends the segment and begins a new one, as does a segment older
than `max_duration_s` (so a day-long still scene gets a fresh thumbnail every
hour, and single captions can age out in steps).

The best caption of a segment is the one said most often (the first of equals).
Pure logic: no clock, no disk; the writer stores what this decides.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from streamcap.concepts import CONCEPTS

MAX_VARIANTS = 32  # distinct sentences remembered per segment; later ones are stored with their row
MAX_WORDS = 96  # distinct words remembered per segment (what search finds it by)

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
# Function words: they vary between two wordings of the same scene and name nothing.
STOPWORDS = frozenset(
    "a an the of in on at to with and or is are be being been its it this that these those there some for by from "
    "into onto near next while his her their as has have".split())


def words_of(text: str) -> list[str]:
    """The words of a caption, lower case, in order."""
    return _WORD.findall(text.lower())


def _object_words() -> dict[str, str]:
    """Every word of every concept group (and its simple plural) -> its singular form."""
    forms: dict[str, str] = {}
    for concept in CONCEPTS:
        for word in concept.words:
            if " " in word:
                continue
            forms[word] = word
            for plural in (word + "s", word + "es"):
                forms.setdefault(plural, word)
    return forms


OBJECT_WORDS = _object_words()


def objects_in(words: list[str]) -> set[str]:
    """The objects a caption names, singular ("cars" and "car" are one object)."""
    return {OBJECT_WORDS[w] for w in words if w in OBJECT_WORDS}


@dataclass
class Segment:
    camera_id: str
    start: float  # capture time of the first caption
    end: float  # capture time of the last caption
    frame_id: int  # the first caption's frame (the thumbnail)
    model: str
    present: frozenset[str]  # concepts at or above the threshold when it began
    count: int = 0
    variants: list[str] = field(default_factory=list)  # distinct captions, first seen first
    said: list[int] = field(default_factory=list)  # how often each variant was said
    words: dict[str, None] = field(default_factory=dict)  # distinct words, first seen first
    objects: set[str] = field(default_factory=set)
    concepts_max: dict[str, float] = field(default_factory=dict)
    key: int | None = None  # the store's id once written

    @property
    def caption(self) -> str:
        """The caption said most often (the first of equals)."""
        best = max(range(len(self.said)), key=lambda i: (self.said[i], -i))
        return self.variants[best]

    @property
    def indexed_words(self) -> str:
        return " ".join(self.words)

    def variant_of(self, text: str) -> int | None:
        """The index of `text` among the variants, or None if the segment stopped remembering new ones."""
        try:
            return self.variants.index(text)
        except ValueError:
            return None

    def _take(self, at: float, text: str, words: list[str], concepts: Mapping[str, float]) -> int | None:
        self.count += 1
        self.end = max(self.end, at)
        variant = self.variant_of(text)
        if variant is None and len(self.variants) < MAX_VARIANTS:
            self.variants.append(text)
            self.said.append(0)
            variant = len(self.variants) - 1
        if variant is not None:
            self.said[variant] += 1
        for word in words:
            if len(self.words) >= MAX_WORDS:
                break
            self.words.setdefault(word, None)
        self.objects |= objects_in(words)
        for name, p in concepts.items():
            if p > self.concepts_max.get(name, -1.0):
                self.concepts_max[name] = float(p)
        return variant


@dataclass(frozen=True)
class Placed:
    """Where a caption went: its segment, whether that segment began with it, and its variant index (None: not kept)."""

    segment: Segment
    began: bool
    variant: int | None
    ended: Segment | None = None  # the segment this caption closed, if any


class Segmenter:
    def __init__(self, threshold: float = 0.5, max_new_words: float = 0.34, max_duration_s: float = 3600.0,
                 hysteresis: float = 0.1) -> None:
        self.threshold, self.max_new_words = threshold, max_new_words
        self.max_duration_s, self.hysteresis = max_duration_s, hysteresis
        self._open: dict[str, Segment] = {}

    def add(self, camera_id: str, at: float, text: str, concepts: Mapping[str, float], frame_id: int = 0,
            model: str = "") -> Placed:
        words = words_of(text)
        current = self._open.get(camera_id)
        if current is not None and self._same(current, at, text, words, concepts):
            return Placed(current, False, current._take(at, text, words, concepts))
        segment = Segment(camera_id, at, at, frame_id, model,
                          frozenset(n for n, p in concepts.items() if p >= self.threshold))
        variant = segment._take(at, text, words, concepts)
        self._open[camera_id] = segment
        return Placed(segment, True, variant, ended=current)

    def _same(self, segment: Segment, at: float, text: str, words: list[str], concepts: Mapping[str, float]) -> bool:
        if at - segment.start >= self.max_duration_s or at < segment.start:
            return False
        for name, p in concepts.items():  # a concept appeared, or one that was there left
            if name in segment.present and p < self.threshold - self.hysteresis:
                return False
            if name not in segment.present and p >= self.threshold + self.hysteresis:
                return False
        if text in segment.variants:
            return True
        if not objects_in(words) <= segment.objects:
            return False  # a new object ends a segment
        content = [w for w in words if w not in STOPWORDS]
        if not content:
            return True
        new = sum(1 for w in content if w not in segment.words)
        return new <= self.max_new_words * len(content)

    def open_segment(self, camera_id: str) -> Segment | None:
        return self._open.get(camera_id)

    def forget(self) -> None:
        """Drop every open segment: the next caption of each camera begins a new one (after a failed write)."""
        self._open.clear()
