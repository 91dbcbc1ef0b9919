"""Rule files -> validated rules, with `file:line:col: message` errors.

A file with any error is reported and skipped as a whole (like a file that
does not compile); the other files still load. A bad rule file never stops
the pipeline, at start-up or on reload, whatever is in it: every problem is
one line, and a file that is not a rule file at all is named without
echoing its content (`rules.paths: [/etc/shadow]` must not print hashes).

`known_concepts` are the concept heads of the model in use: a `concept:`
condition on any other concept is an error naming the ones it has, and with
a model without a head (`()`), rules that need concepts say why they cannot run.
"""
from __future__ import annotations

import fnmatch
import glob
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from streamcap.config.yamlpos import YamlDocument, YamlLoadError, format_pydantic_errors, read_yaml
from streamcap.rules.engine import CompiledRule, camera_matches
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


@dataclass
class RuleRead:
    """One read of the rule files: what loaded, and what went wrong at which level.

    `listing_errors`: a pattern could not be expanded completely (a folder missing or unreadable, EMFILE,
    nothing matching), so the set of files itself is unknown; a reload then keeps every rule in force.
    `errors`: problems inside files that were found; each such file contributes its fallback.
    """

    sources: list[RuleSource]
    errors: list[str]
    listing_errors: list[str]
    failed_files: list[str]  # files with errors (they contributed their fallback)


def expand_paths(paths: Iterable[str | os.PathLike], where: Iterable[str] | None = None) -> tuple[list[str], list[str]]:
    """(files, errors): globs expanded in order, duplicates dropped; a pattern matching nothing is an error,
    and so is a folder that cannot be listed (missing, no permission, out of descriptors).

    `where` gives, per pattern, the config position it was written at (`streamcap.yaml:12:7`), for the error.
    """
    files: list[str] = []
    errors: list[str] = []
    positions = list(where) if where is not None else []
    for i, pattern in enumerate(paths):
        pattern = str(pattern)
        at = f"{positions[i]}: rules.paths[{i}]: " if i < len(positions) and positions[i] else ""
        try:
            found = expand_pattern(pattern)
        except OSError as exc:
            # glob.glob would return [] here, and an unreadable folder would look like "no rules at all".
            folder = exc.filename or os.path.dirname(pattern) or "."
            why = "does not exist" if isinstance(exc, FileNotFoundError) else f"cannot be listed: {exc.strerror or type(exc).__name__}"
            errors.append(f"{at}{pattern}: the folder {folder} {why}")
            continue
        if not found:
            errors.append(f"{at}{pattern}: no rule files match this pattern; fix the path or glob")
        files.extend(f for f in found if f not in files)
    return files, errors


def expand_pattern(pattern: str) -> list[str]:
    """The files a rules.paths entry names, sorted: itself if it is no glob, else glob.glob's matches."""
    return sorted(_glob(pattern)) if glob.has_magic(pattern) else [pattern]


def _glob(pattern: str) -> list[str]:
    """glob.glob's matches (hidden names only for a pattern starting with '.'), except that a folder
    that cannot be listed raises OSError instead of matching nothing."""
    folder, name = os.path.split(pattern)
    folders = [p for p in _glob(folder) if os.path.isdir(p)] if glob.has_magic(folder) else [folder]
    found = []
    for parent in folders:
        if not glob.has_magic(name):
            if os.path.lexists(os.path.join(parent, name)):
                found.append(os.path.join(parent, name))
            continue
        with os.scandir(parent or os.curdir) as entries:
            names = [e.name for e in entries]
        found += [os.path.join(parent, n) for n in names
                  if fnmatch.fnmatch(n, name) and (not n.startswith(".") or name.startswith("."))]
    return found


def load_rules(paths: Iterable[str | os.PathLike], known_cameras: Iterable[str] | None = None,
               known_concepts: Iterable[str] | None = None) -> tuple[list[Rule], list[str]]:
    """(rules, errors). `known_cameras=None` / `known_concepts=None` skip those cross-checks (no config or model at hand)."""
    sources, errors = load_rule_sources(paths, known_cameras, known_concepts=known_concepts)
    return [s.rule for s in sources], errors


def load_rule_sources(
    paths: Iterable[str | os.PathLike],
    known_cameras: Iterable[str] | None = None,
    fallback: Mapping[str, list[RuleSource]] | None = None,
    known_concepts: Iterable[str] | None = None,
    where: Iterable[str] | None = None,
) -> tuple[list[RuleSource], list[str]]:
    """(rules with their origin, errors). A file with problems contributes `fallback[file]`
    (its last good version, on reload) or nothing."""
    read = read_rules(paths, known_cameras, fallback, known_concepts, where)
    return read.sources, read.listing_errors + read.errors


def read_rules(
    paths: Iterable[str | os.PathLike],
    known_cameras: Iterable[str] | None = None,
    fallback: Mapping[str, list[RuleSource]] | None = None,
    known_concepts: Iterable[str] | None = None,
    where: Iterable[str] | None = None,
) -> RuleRead:
    """Like `load_rule_sources`, keeping listing problems apart from problems inside files.

    With a `fallback` (a reload), a file that is now empty but had rules is a problem too: a file
    saved by truncate-then-write is empty for a moment, and that must not mean "no rules".
    """
    files, listing_errors = expand_paths(paths, where)
    errors: list[str] = []
    cameras = None if known_cameras is None else sorted(known_cameras)
    concepts = None if known_concepts is None else tuple(known_concepts)
    loaded: list[RuleSource] = []
    failed: list[str] = []
    seen: dict[str, RuleSource] = {}
    for path in files:
        previous = (fallback or {}).get(path, [])
        try:
            fresh, problems = load_rule_file(path, cameras, concepts, empty_is_problem=bool(previous))
        except Exception as exc:  # noqa: BLE001 - a file we failed to foresee still must not stop the box
            fresh, problems = [], [f"{path}:1:1: cannot load this rule file ({type(exc).__name__}); it is skipped"]
        for source in fresh:
            first = seen.get(source.rule.id)
            if first is not None:
                problems.append(f"{source.path}:{source.line}:{source.col}: duplicate rule id {source.rule.id!r} (first in {first.path}:{first.line})")
        chosen = fresh
        if problems:
            errors.extend(problems)
            failed.append(path)
            chosen = [s for s in previous if s.rule.id not in seen]
        for source in chosen:
            seen[source.rule.id] = source
        loaded.extend(chosen)
    return RuleRead(loaded, errors, listing_errors, failed)


NOT_A_RULE_FILE = "not a rule file: expected a list of rules (- id: ...), or a mapping with `rules:` and `synonyms:`"


def load_rule_file(path: str, known_cameras: list[str] | None = None, known_concepts: tuple[str, ...] | None = None,
                   empty_is_problem: bool = False) -> tuple[list[RuleSource], list[str]]:
    """Rules of one file and its problems; callers should drop the rules if there are problems.

    An empty file (nothing but comments) is an empty rule set, or with `empty_is_problem` a problem:
    `[]` is how a file says "no rules" on purpose.
    """
    try:
        doc = read_yaml(path, what="rule file")
    except YamlLoadError as exc:
        return [], exc.problems
    data, prefix = doc.data, ()
    if doc.problems:
        return [], list(doc.problems)
    if data is None:
        if empty_is_problem:
            return [], [f"{path}:1:1: the file is empty (a save in progress?); write `[]` in it to remove its rules"]
        return [], []
    if not _looks_like_rules(data):
        return [], [f"{path}:1:1: {NOT_A_RULE_FILE}"]
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
        checked = _cross_check(doc, loc, rule, item, known_cameras, known_concepts)
        if not checked:
            try:
                CompiledRule.compile(rule, None)
            except (ValueError, KeyError) as exc:
                checked = [f"{doc.where(loc)}: {exc}"]
        problems.extend(_label(checked, item))
        if rule.id in ids:
            problems.append(f"{path}:{line}:{col}: duplicate rule id {rule.id!r} (first on line {ids[rule.id]})")
        ids.setdefault(rule.id, line)
        sources.append(RuleSource(rule, path, line, col))
    return sources, problems


def _looks_like_rules(data: Any) -> bool:
    if isinstance(data, list):
        return all(isinstance(item, dict) for item in data)
    return isinstance(data, dict) and "rules" in data


def _cross_check(doc: YamlDocument, loc: tuple, rule: Rule, item: Any, known_cameras: list[str] | None,
                 known_concepts: tuple[str, ...] | None) -> list[str]:
    problems = []
    if known_concepts is not None:
        for t, trigger in enumerate(rule.triggers):
            for c, condition in enumerate(trigger.concept):
                if condition.concept in known_concepts:
                    continue
                where = doc.where((*loc, "triggers", t, "concept", c) if isinstance(_get(item, "triggers", t, "concept"), list)
                                  else (*loc, "triggers", t, "concept"))
                if known_concepts:
                    problems.append(f"{where}: triggers[{t}].concept: the model has no {condition.concept!r} concept "
                                    f"(it has {', '.join(known_concepts)})")
                else:
                    problems.append(f"{where}: triggers[{t}].concept: the model in use has no concept head, so "
                                    f"{str(condition)!r} cannot run; use a model with concepts or match words instead")
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
                try:
                    unknown = unknown_groups([word], groups)
                except ValueError as exc:  # a cycle through this word's group
                    problems.append(f"{doc.where((*loc, 'triggers', t, key, w))}: triggers[{t}].{key}: {exc}")
                    continue
                for name in unknown:
                    where = doc.where((*loc, "triggers", t, key, w))
                    available = ", ".join(f"@{g}" for g in sorted(groups))
                    problems.append(f"{where}: triggers[{t}].{key}: unknown synonym group @{name} (known: {available}; add it under synonyms:)")
    for name, words in rule.synonyms.items():
        try:
            for missing in unknown_groups(words, groups):
                problems.append(f"{doc.where((*loc, 'synonyms', name))}: synonyms.{name}: unknown synonym group @{missing}")
        except ValueError as exc:  # a cycle: @a -> @b -> @a
            problems.append(f"{doc.where((*loc, 'synonyms', name))}: synonyms.{name}: {exc}")
    return problems


def _get(item: Any, *keys: Any) -> Any:
    for key in keys:
        try:
            item = item[key]
        except (KeyError, IndexError, TypeError):
            return None
    return item


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
