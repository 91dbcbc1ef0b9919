"""YAML with positions: read a file once, keep the node tree, point errors at lines.

Shared by the config and rule loaders so both report problems the same way,
like a compiler: `file:line:col: dotted.path: message` (1-based; PyYAML marks
are 0-based). `${VAR}` and `${VAR:-default}` are substituted in string values
before construction, so a missing variable can be reported at its own line.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from streamcap.util.redact import redact_url

_STR_TAG = "tag:yaml.org,2002:str"
# $${X} is a literal ${X}; ${X} and ${X:-default} are substituted.
_ENV_RE = re.compile(r"\$(\$)?\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class YamlLoadError(Exception):
    """One or more problems, each already formatted as `file:line:col: message`."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass
class YamlDocument:
    path: str
    root: Node | None
    data: Any

    def locate(self, loc: Iterable[Any], missing: bool = False) -> tuple[int, int, str]:
        """(line, col, dotted path) of a pydantic error `loc` in this document.

        Elements that are not in the YAML (union member tags, `[key]`) are
        skipped. When `missing` (a required key is absent) the last element is
        kept in the path and the position is its parent's.
        """
        node, mark = self.root, self.root.start_mark if self.root is not None else None
        parts: list[str] = []
        loc = list(loc)
        for i, item in enumerate(loc):
            if isinstance(node, MappingNode) and not isinstance(item, int):
                found = next(((k, v) for k, v in node.value if isinstance(k, ScalarNode) and k.value == str(item)), None)
                if found is not None:
                    mark, node = found[0].start_mark, found[1]
                    parts.append(str(item))
                    continue
            elif isinstance(node, SequenceNode) and isinstance(item, int) and 0 <= item < len(node.value):
                node = node.value[item]
                mark = node.start_mark
                parts.append(f"[{item}]")
                continue
            if missing and i == len(loc) - 1:
                parts.append(str(item))
        if mark is None:
            return 1, 1, _dotted(parts)
        return mark.line + 1, mark.column + 1, _dotted(parts)

    def where(self, loc: Iterable[Any] = (), missing: bool = False) -> str:
        line, col, _ = self.locate(loc, missing)
        return f"{self.path}:{line}:{col}"


def _dotted(parts: list[str]) -> str:
    return "".join(p if p.startswith("[") or i == 0 else f".{p}" for i, p in enumerate(parts))


def format_pydantic_errors(doc: YamlDocument, errors: list[dict], prefix: Iterable[Any] = ()) -> list[str]:
    """`file:line:col: dotted.path: message` for each pydantic error (as from `exc.errors()`)."""
    problems = []
    for error in errors:
        loc = (*prefix, *error["loc"])
        line, col, dotted = doc.locate(loc, missing=error["type"] == "missing")
        message = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key (check the spelling)"
        elif error["type"] == "missing":
            message = "required key is missing"
        problems.append(f"{doc.path}:{line}:{col}: {dotted or '(top)'}: {redact_url(message)}")
    return problems


def read_yaml(path: str | Path, env: Mapping[str, str] | None = None, substitute_env: bool = True) -> YamlDocument:
    """Parse `path` keeping positions; raises YamlLoadError listing every problem found."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise YamlLoadError([f"{name}:1:1: cannot read file: {exc.strerror if isinstance(exc, OSError) else exc}"]) from None
    return parse_yaml(text, name, env=env, substitute_env=substitute_env)


def parse_yaml(text: str, name: str, env: Mapping[str, str] | None = None, substitute_env: bool = True) -> YamlDocument:
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        problems: list[str] = []
        if root is not None:
            _check_duplicate_keys(root, name, problems, set())
            if substitute_env:
                _substitute(root, os.environ if env is None else env, name, problems, set())
        if problems:
            raise YamlLoadError(problems)
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        raise YamlLoadError([f"{name}:{line}:{col}: invalid YAML: {problem}"]) from None
    except yaml.YAMLError as exc:
        raise YamlLoadError([f"{name}:1:1: invalid YAML: {exc}"]) from None
    finally:
        loader.dispose()
    return YamlDocument(name, root, data)


def _children(node: Node) -> list[Node]:
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, SequenceNode):
        return list(node.value)
    return []


def _check_duplicate_keys(node: Node, name: str, problems: list[str], seen: set[int]) -> None:
    # PyYAML silently keeps the last of two equal keys; a config typo then vanishes.
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, MappingNode):
        keys: dict[str, Node] = {}
        for key, _ in node.value:
            if isinstance(key, ScalarNode) and key.value != "<<":
                if key.value in keys:
                    first = keys[key.value].start_mark.line + 1
                    problems.append(f"{name}:{key.start_mark.line + 1}:{key.start_mark.column + 1}: duplicate key {key.value!r} (first on line {first})")
                keys.setdefault(key.value, key)
    for child in _children(node):
        _check_duplicate_keys(child, name, problems, seen)


def _substitute(node: Node, env: Mapping[str, str], name: str, problems: list[str], seen: set[int]) -> None:
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, ScalarNode):
        if node.tag == _STR_TAG and "$" in node.value:
            node.value = _ENV_RE.sub(lambda m: _replace(m, env, node, name, problems), node.value)
        return
    for child in _children(node):
        _substitute(child, env, name, problems, seen)


def _replace(match: re.Match, env: Mapping[str, str], node: ScalarNode, name: str, problems: list[str]) -> str:
    escaped, var, default = match.groups()
    if escaped:
        return match.group(0)[1:]
    if var in env:
        return env[var]
    if default is not None:
        return default
    mark = node.start_mark
    problems.append(
        f"{name}:{mark.line + 1}:{mark.column + 1}: environment variable {var} is not set; export it or write ${{{var}:-default}}"
    )
    return ""
