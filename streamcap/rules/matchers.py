"""Compiled caption matchers: whole words, synonym groups, phrases, regexes.

Words match on word boundaries ("cat" never matches "catch", "man" never
matches "woman") and a simple plural ending is allowed ("dog" matches "dogs",
"bus" matches "buses"); irregular plurals come from the groups below.
`@name` in a word list stands for a synonym group.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from streamcap.rules.schema import CaptionTrigger

# Caption vocabularies (Flickr8k, COCO) name people by role far more often than
# as "person", so @person is broad on purpose.
BUILTIN_GROUPS: dict[str, list[str]] = {
    "person": [
        "person", "people", "man", "men", "woman", "women", "boy", "girl", "child", "children", "kid",
        "lady", "ladies", "guy", "gentleman", "gentlemen", "adult", "teenager", "teen", "toddler", "baby", "babies",
        "pedestrian", "worker", "someone", "somebody", "individual", "crowd", "cyclist", "biker", "rider",
        "runner", "jogger", "hiker", "officer", "policeman", "soldier", "player", "skateboarder", "couple",
    ],
    "vehicle": [
        "vehicle", "car", "truck", "van", "bus", "motorcycle", "motorbike", "bike", "bicycle", "scooter",
        "taxi", "cab", "jeep", "suv", "pickup", "lorry", "tractor", "trailer", "ambulance", "minivan",
    ],
    "animal": [
        "animal", "dog", "puppy", "puppies", "cat", "kitten", "horse", "cow", "cattle", "sheep", "goat",
        "pig", "bird", "deer", "fox", "foxes", "bear", "rabbit", "squirrel", "raccoon", "duck", "chicken",
    ],
    # "smoking" is left out: a man smoking a cigarette is not a fire.
    "fire": ["fire", "smoke", "flame", "burning", "blaze", "smoky", "embers"],
}

_EDGE_BEFORE = r"(?<![\w])"
_EDGE_AFTER = r"(?![\w])"


def normalise(text: str) -> str:
    return " ".join(text.lower().split())


def expand(word: str, groups: Mapping[str, list[str]], _seen: tuple[str, ...] = ()) -> list[str]:
    """The plain words `word` stands for (itself, or a group's words, recursively)."""
    if not word.startswith("@"):
        return [word]
    name = word[1:]
    if name not in groups:
        raise KeyError(name)
    if name in _seen:
        raise ValueError(f"synonym group @{name} refers to itself")
    return [w for member in groups[name] for w in expand(member, groups, (*_seen, name))]


def unknown_groups(words: list[str], groups: Mapping[str, list[str]]) -> list[str]:
    missing = []
    for word in words:
        try:
            expand(word, groups)
        except KeyError as exc:
            missing.append(str(exc.args[0]))
    return missing


def word_regex(words: list[str], plural: bool = True) -> re.Pattern:
    """One regex matching any of `words` as whole words (multi-word entries allow any spacing)."""
    alternatives = []
    for word in sorted(set(words), key=len, reverse=True):
        body = r"\s+".join(re.escape(part) for part in word.split())
        alternatives.append(body + (r"(?:s|es)?" if plural and word[-1:].isalpha() else ""))
    return re.compile(f"{_EDGE_BEFORE}(?:{'|'.join(alternatives)}){_EDGE_AFTER}")


@dataclass(frozen=True)
class _Entry:
    label: str  # as written in the rule: "dog" or "@person"
    regex: re.Pattern

    def find(self, text: str) -> str | None:
        match = self.regex.search(text)
        return match.group(0) if match else None

    def describe(self, found: str) -> str:
        return f"{found!r} ({self.label})" if self.label.startswith("@") else repr(found)


@dataclass
class MatchResult:
    matched: bool
    reasons: list[str] = field(default_factory=list)  # why it matched, or the first reason it did not


class CaptionMatcher:
    """One `trigger: caption`, compiled once; `check(text)` says whether and why it matches."""

    def __init__(self, trigger: CaptionTrigger, groups: Mapping[str, list[str]] | None = None):
        groups = BUILTIN_GROUPS if groups is None else groups
        self.trigger = trigger
        self._any = [self._entry(w, groups) for w in trigger.any]
        self._all = [self._entry(w, groups) for w in trigger.all]
        self._none = [self._entry(w, groups) for w in trigger.none]
        self._phrases = [_Entry(p, word_regex([p], plural=False)) for p in trigger.phrase]
        self._regexes = [re.compile(r, re.IGNORECASE) for r in trigger.regex]

    @staticmethod
    def _entry(word: str, groups: Mapping[str, list[str]]) -> _Entry:
        try:
            return _Entry(word, word_regex(expand(word, groups)))
        except KeyError as exc:
            raise ValueError(f"unknown synonym group @{exc.args[0]}") from None

    def check(self, text: str) -> MatchResult:
        text = normalise(text)
        reasons = []
        if self._any:
            hit = next(((e, f) for e in self._any if (f := e.find(text))), None)
            if hit is None:
                return MatchResult(False, [f"any: none of {_labels(self._any)} in the caption"])
            reasons.append(f"any: {hit[0].describe(hit[1])}")
        for entry in self._all:
            found = entry.find(text)
            if found is None:
                return MatchResult(False, [f"all: {entry.label!r} is not in the caption"])
            reasons.append(f"all: {entry.describe(found)}")
        for entry in self._none:
            found = entry.find(text)
            if found is not None:
                return MatchResult(False, [f"none: {entry.describe(found)} is in the caption"])
        if self._phrases:
            hit = next((e for e in self._phrases if e.find(text)), None)
            if hit is None:
                return MatchResult(False, [f"phrase: none of {_labels(self._phrases)} in the caption"])
            reasons.append(f"phrase: {hit.label!r}")
        if self._regexes:
            hit = next(((r, m) for r in self._regexes if (m := r.search(text))), None)
            if hit is None:
                return MatchResult(False, [f"regex: none of {[r.pattern for r in self._regexes]} matches"])
            reasons.append(f"regex: /{hit[0].pattern}/ matched {hit[1].group(0)!r}")
        return MatchResult(True, reasons)

    def matches(self, text: str) -> bool:
        return self.check(text).matched


def _labels(entries: list[_Entry]) -> str:
    return "[" + ", ".join(e.label for e in entries) + "]"
