"""Segments: consecutive captions of one camera that say the same thing, kept as one record.

A fixed camera says nearly the same sentence for hours ("a street at night
with parked motorcycles", "a dark street with motorcycles parked on it").
Storing each of those as a row costs the disk and buries the moments that
matter, so a caption joins its camera's open segment when it says the same
thing:

- the same concepts: no concept of the head crossed `threshold` since the
  segment began (with `hysteresis`, so a probability hovering at the threshold
  does not split it every second);
- no new object: it names no concept the segment has not named, counting a
  group's categories as the group (streamcap.concepts: "children" after
  "people" and "a truck" after "a van" are the same object, "a man" after
  "an empty street" or "a bench" after "a path" a new one);
- the same words up to small variation: at most `max_new_words` of its content
  words (not counting a, the, on, ...) are new to the segment.

A change must be seen twice in a row to end a segment: a caption that does
not fit is held until the camera's next caption. If that one fits the open
segment, the held caption was a passing moment (the model wavering, or
something crossing the frame for an instant): it is counted in the segment and
its words are indexed for search, but they do not widen what the segment
accepts. Otherwise the held caption begins the new segment. A segment older
than `max_duration_s` is closed at once (so a day-long still scene gets a fresh
thumbnail every hour, and single captions can age out in steps).

The best caption of a segment is the one said most often (the first of equals).
Pure logic: no clock, no disk; the writer stores what this decides.
"""
from __future__ import annotations

import functools
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


@functools.lru_cache(maxsize=4096)
def words_of(text: str) -> tuple[str, ...]:
    """The words of a caption, lower case, in order (cached: a camera says the same few sentences over and over)."""
    return tuple(_WORD.findall(text.lower()))


def _concept_of_words() -> dict[str, str]:
    """Every word of every concept (and its simple plural) -> the concept it names; a category's words name its group."""
    forms: dict[str, str] = {}
    for concept in CONCEPTS:
        for word in concept.words:
            if " " not in word:
                for form in (word, word + "s", word + "es"):
                    forms.setdefault(form, concept.name)
    return forms


OBJECT_WORDS = _concept_of_words()
# A category of a group (car of vehicle) moves its group's probability too: segments compare the groups
# and the categories that belong to none (bench, water, train), as they compare objects.
_GROUPED = frozenset(c.name for c in CONCEPTS if getattr(c, "group", ""))


def objects_in(words) -> set[str]:
    """The concept groups a caption names by its words ("cars" and "a van" both name vehicle)."""
    return {OBJECT_WORDS[w] for w in words if w in OBJECT_WORDS}


@dataclass(frozen=True)
class Said:
    """One caption, as the segmenter keeps it while deciding where it goes."""

    camera_id: str
    at: float
    text: str
    concepts: Mapping[str, float]
    frame_id: int
    model: str
    words: tuple[str, ...]


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
    words: dict[str, None] = field(default_factory=dict)  # distinct words of the captions that fit, first seen first
    passing: dict[str, None] = field(default_factory=dict)  # words only passing moments said: searchable, not compared
    moments: list[str] = field(default_factory=list)  # what the passing moments said (bounded), for search and display
    picture: int | None = None  # the store's id of the segment whose thumbnail stands for this one; None: its own
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
        """What search finds the segment by: every word said in it, passing moments included."""
        extra = [w for w in self.passing if w not in self.words][: max(0, MAX_WORDS - len(self.words))]
        return " ".join([*self.words, *extra])

    def variant_of(self, text: str) -> int | None:
        """The index of `text` among the variants, or None if the segment stopped remembering new ones."""
        try:
            return self.variants.index(text)
        except ValueError:
            return None

    def _take(self, said: Said) -> int | None:
        self._count(said)
        variant = self.variant_of(said.text)
        if variant is None and len(self.variants) < MAX_VARIANTS:
            self.variants.append(said.text)
            self.said.append(0)
            variant = len(self.variants) - 1
        if variant is not None:
            self.said[variant] += 1
        for word in said.words:
            if len(self.words) >= MAX_WORDS:
                break
            self.words.setdefault(word, None)
        self.objects |= objects_in(said.words)
        return variant

    def _pass(self, said: Said) -> None:
        self._count(said)
        if said.text not in self.moments and len(self.moments) < MAX_VARIANTS:
            self.moments.append(said.text)
        for word in said.words:
            if len(self.passing) >= MAX_WORDS:
                break
            self.passing.setdefault(word, None)

    def _count(self, said: Said) -> None:
        self.count += 1
        self.end = max(self.end, said.at)
        for name, p in said.concepts.items():
            if p > self.concepts_max.get(name, -1.0):
                self.concepts_max[name] = float(p)


@dataclass(frozen=True)
class Placed:
    """Where a caption went: its segment, whether that segment began with it, and its variant (None: stored with its row)."""

    caption: Said
    segment: Segment
    began: bool
    variant: int | None


class Segmenter:
    def __init__(self, threshold: float = 0.5, max_new_words: float = 0.34, max_duration_s: float = 3600.0,
                 hysteresis: float = 0.1) -> None:
        self.threshold, self.max_new_words = threshold, max_new_words
        self.max_duration_s, self.hysteresis = max_duration_s, hysteresis
        self._open: dict[str, Segment] = {}
        self._held: dict[str, Said] = {}  # a caption that did not fit, waiting for the camera's next one

    def add(self, camera_id: str, at: float, text: str, concepts: Mapping[str, float], frame_id: int = 0,
            model: str = "") -> list[Placed]:
        """Place a caption; returns what was placed now: nothing (held), it, or a held caption and it."""
        said = Said(camera_id, at, text, dict(concepts), frame_id, model, words_of(text))
        current = self._open.get(camera_id)
        held = self._held.pop(camera_id, None)
        placed: list[Placed] = []
        if held is not None:
            if current is not None and self._fits(current, said):
                current._pass(held)  # the change was not seen again: a passing moment of this segment
                placed.append(Placed(held, current, False, None))
            else:
                current = self._begin(held)
                placed.append(Placed(held, current, True, 0))
        if current is None or self._expired(current, said):
            placed.append(Placed(said, self._begin(said), True, 0))
        elif self._fits(current, said):
            placed.append(Placed(said, current, False, current._take(said)))
        else:
            self._held[camera_id] = said
        return placed

    def flush(self, before: float | None = None) -> list[Placed]:
        """Held captions older than `before` (all without it) begin their segments: the camera went quiet, or we stop."""
        placed = []
        for camera_id, said in list(self._held.items()):
            if before is None or said.at < before:
                del self._held[camera_id]
                placed.append(Placed(said, self._begin(said), True, 0))
        return placed

    def forget(self) -> int:
        """Drop every open segment and held caption (after a failed write); returns how many captions were held."""
        held = len(self._held)
        self._open.clear()
        self._held.clear()
        return held

    def open_segment(self, camera_id: str) -> Segment | None:
        return self._open.get(camera_id)

    def _begin(self, said: Said) -> Segment:
        segment = Segment(said.camera_id, said.at, said.at, said.frame_id, said.model,
                          frozenset(n for n, p in said.concepts.items() if p >= self.threshold))
        segment._take(said)
        self._open[said.camera_id] = segment
        return segment

    def _expired(self, segment: Segment, said: Said) -> bool:
        return said.at - segment.start >= self.max_duration_s or said.at < segment.start

    def _fits(self, segment: Segment, said: Said) -> bool:
        if self._expired(segment, said):
            return False
        for name, p in said.concepts.items():  # a concept appeared, or one that was there left
            if name in _GROUPED:
                continue
            if name in segment.present and p < self.threshold - self.hysteresis:
                return False
            if name not in segment.present and p >= self.threshold + self.hysteresis:
                return False
        if said.text in segment.variants:
            return True
        if not objects_in(said.words) <= segment.objects:
            return False  # a new object ends a segment
        content = [w for w in said.words if w not in STOPWORDS]
        if not content:
            return True
        new = sum(1 for w in content if w not in segment.words)
        return new <= self.max_new_words * len(content)
