"""Compiled caption matchers: whole words, synonym groups, phrases, regexes.

Words match on word boundaries ("cat" never matches "catch", "man" never
matches "woman") and a simple plural ending is allowed ("dog" matches "dogs",
"bus" matches "buses"); irregular plurals come from the groups.
`@name` in a word list stands for a synonym group: the built-in ones are the
visual concepts of `streamcap.concepts`, the rest come from the rule files.
`concept:` conditions read the caption's concept probabilities instead of
its words. Every part a trigger gives must hold.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from streamcap.concepts import BUILTIN_GROUPS, BY_NAME, Concept, word_regex
from streamcap.rules.schema import CaptionTrigger, compile_regex

__all__ = ["BUILTIN_GROUPS", "CaptionMatcher", "MatchResult", "expand", "normalise", "unknown_groups", "word_regex"]


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


@dataclass(frozen=True)
class _Entry:
    label: str  # as written in the rule: "dog" or "@person"
    regex: re.Pattern
    concept: Concept | None = None  # a built-in group: its not_phrases ("fire hydrant") never count

    def find(self, text: str) -> str | None:
        if self.concept is not None and not self.concept.named_in(text):
            return None
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
        self._regexes = [compile_regex(r) for r in trigger.regex]
        self._concepts = list(trigger.concept)

    @staticmethod
    def _entry(word: str, groups: Mapping[str, list[str]]) -> _Entry:
        concept = BY_NAME.get(word[1:]) if word.startswith("@") else None
        if concept is not None and groups.get(concept.name) != list(concept.words):
            concept = None  # the rule redefined the group
        try:
            return _Entry(word, word_regex(expand(word, groups)), concept)
        except KeyError as exc:
            raise ValueError(f"unknown synonym group @{exc.args[0]}") from None

    def check(self, text: str, concepts: Mapping[str, float] | None = None) -> MatchResult:
        text = normalise(text)
        reasons = []
        for condition in self._concepts:
            probability = (concepts or {}).get(condition.concept)
            if probability is None:
                return MatchResult(False, [f"concept: the caption has no {condition.concept} probability (model without a concept head)"])
            if not condition.holds(probability):
                return MatchResult(False, [f"concept: {condition.concept} is {probability:.2f}, not {condition.op} {condition.threshold:g}"])
            reasons.append(f"concept: {condition.concept} {probability:.2f} {condition.op} {condition.threshold:g}")
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

    def matches(self, text: str, concepts: Mapping[str, float] | None = None) -> bool:
        return self.check(text, concepts).matched


def _labels(entries: list[_Entry]) -> str:
    return "[" + ", ".join(e.label for e in entries) + "]"
