"""Rule files -> validated rules, with `file:line:col: message` errors.

A file with any error is reported and skipped as a whole (like a file that
does not compile); the other files still load. A bad rule file never stops
the pipeline.
"""
from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from streamcap.config.yamlpos import YamlDocument, YamlLoadError, format_pydantic_errors, read_yaml
from streamcap.rules.engine import camera_matches
from streamcap.rules.matchers import BUILTIN_GROUPS, unknown_groups
from streamcap.rules.schema import Rule, RuleFile

_SYNONYMS = TypeAdapter(dict[str, list[str]])
_RULE = TypeAdapter(Rule)


@dataclass(frozen=True)
class RuleSource:
    rule: Rule
    path: str
    line: int
    col: int = 1


def expand_paths(paths: Iterable[str | os.PathLike]) -> tuple[list[str], list[str]]:
    """(files, errors): globs expanded in order, duplicates dropped; a pattern matching nothing is an error."""
    files: list[str] = []
    errors: list[str] = []
    for pattern in paths:
        pattern = str(pattern)
        found = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not found:
            errors.append(f"{pattern}: no rule files match this pattern")
        files.extend(f for f in found if f not in files)
    return files, errors


def load_rules(paths: Iterable[str | os.PathLike], known_cameras: Iterable[str] | None = None) -> tuple[list[Rule], list[str]]:
    """(rules, errors). `known_cameras=None` skips the camera cross-check (no config at hand)."""
    sources, errors = load_rule_sources(paths, known_cameras)
    return [s.rule for s in sources], errors


def load_rule_sources(
    paths: Iterable[str | os.PathLike],
    known_cameras: Iterable[str] | None = None,
    fallback: Mapping[str, list[RuleSource]] | None = None,
) -> tuple[list[RuleSource], list[str]]:
    """(rules with their origin, errors). A file with problems contributes `fallback[file]`
    (its last good version, on reload) or nothing."""
    files, errors = expand_paths(paths)
    cameras = None if known_cameras is None else sorted(known_cameras)
    loaded: list[RuleSource] = []
    seen: dict[str, RuleSource] = {}
    for path in files:
        fresh, problems = load_rule_file(path, cameras)
        for source in fresh:
            first = seen.get(source.rule.id)
            if first is not None:
                problems.append(f"{source.path}:{source.line}:{source.col}: duplicate rule id {source.rule.id!r} (first in {first.path}:{first.line})")
        chosen = fresh
        if problems:
            errors.extend(problems)
            chosen = [s for s in (fallback or {}).get(path, []) if s.rule.id not in seen]
        for source in chosen:
            seen[source.rule.id] = source
        loaded.extend(chosen)
    return loaded, errors


def load_rule_file(path: str, known_cameras: list[str] | None = None) -> tuple[list[RuleSource], list[str]]:
    """Rules of one file and its problems; callers should drop the rules if there are problems."""
    try:
        doc = read_yaml(path)
    except YamlLoadError as exc:
        return [], exc.problems
    data, prefix = doc.data, ()
    if data is None:
        return [], []  # an empty file is an empty rule set
    file_groups: dict[str, list[str]] = {}
    if isinstance(data, dict):
        try:
            parsed = RuleFile.model_validate(data)
        except ValidationError as exc:
            return [], format_pydantic_errors(doc, exc.errors())
        file_groups = {name: [" ".join(w.lower().split()) for w in words] for name, words in parsed.synonyms.items()}
        data, prefix = parsed.rules, ("rules",)
    if not isinstance(data, list):
        return [], [f"{path}:1:1: a rule file is a list of rules (- id: ...), or a mapping with `rules:` and `synonyms:`"]
    sources: list[RuleSource] = []
    problems: list[str] = []
    ids: dict[str, int] = {}
    for index, item in enumerate(data):
        loc = (*prefix, index)
        line, col, _ = doc.locate(loc)
        try:
            rule = _RULE.validate_python(item)
        except ValidationError as exc:
            problems.extend(_label(format_pydantic_errors(doc, exc.errors(), prefix=loc), item))
            continue
        rule = rule.model_copy(update={"synonyms": {**file_groups, **rule.synonyms}})
        problems.extend(_label(_cross_check(doc, loc, rule, item, known_cameras), item))
        if rule.id in ids:
            problems.append(f"{path}:{line}:{col}: duplicate rule id {rule.id!r} (first on line {ids[rule.id]})")
        ids.setdefault(rule.id, line)
        sources.append(RuleSource(rule, path, line, col))
    return sources, problems


def _cross_check(doc: YamlDocument, loc: tuple, rule: Rule, item: Any, known_cameras: list[str] | None) -> list[str]:
    problems = []
    if known_cameras is not None:
        written = item.get("cameras") if isinstance(item, dict) else None
        for i, pattern in enumerate(rule.cameras):
            if not any(camera_matches([pattern], c) for c in known_cameras):
                where = doc.where((*loc, "cameras", i) if isinstance(written, list) else (*loc, "cameras"))
                what = f"camera pattern {pattern!r} matches no configured camera" if _is_glob(pattern) else f"unknown camera {pattern!r}"
                known = ", ".join(known_cameras) or "none"
                problems.append(f"{where}: cameras: {what} (configured: {known})")
    groups = {**BUILTIN_GROUPS, **rule.synonyms}
    for t, trigger in enumerate(rule.triggers):
        for key in ("any", "all", "none"):
            words: list[str] = getattr(trigger, key)
            for w, word in enumerate(words):
                for name in unknown_groups([word], groups):
                    where = doc.where((*loc, "triggers", t, key, w))
                    available = ", ".join(f"@{g}" for g in sorted(groups))
                    problems.append(f"{where}: triggers[{t}].{key}: unknown synonym group @{name} (known: {available}; add it under synonyms:)")
    for name, words in rule.synonyms.items():
        for missing in unknown_groups(words, groups):
            problems.append(f"{doc.where((*loc, 'synonyms', name))}: synonyms.{name}: unknown synonym group @{missing}")
    return problems


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def _label(problems: list[str], item: Any) -> list[str]:
    """Name the rule in each message: `rules/x.yaml:7:9: rule fire_smoke: cooldown: ...`."""
    rule_id = item.get("id") if isinstance(item, dict) else None
    if not isinstance(rule_id, str):
        return problems
    labelled = []
    for problem in problems:
        where, sep, rest = problem.partition(": ")
        labelled.append(f"{where}: rule {rule_id}: {_strip_index(rest)}" if sep else problem)
    return labelled


def _strip_index(message: str) -> str:
    # "[2].triggers[0].any: ..." or "rules[2].cooldown: ..." -> "triggers[0].any: ..."
    for head in ("rules[", "["):
        if message.startswith(head):
            close = message.find("]")
            rest = message[close + 1 :]
            return rest[1:] if rest.startswith(".") else rest.removeprefix(": ")
    return message


def rule_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    return [Path(p) for p in expand_paths(paths)[0]]
