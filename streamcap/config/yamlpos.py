"""YAML with positions: read a file once, keep the node tree, point errors at lines.

Shared by the config and rule loaders so both report problems the same way,
like a compiler: `file:line:col: dotted.path: message` (1-based; PyYAML marks
are 0-based). `${VAR}` and `${VAR:-default}` are substituted in string values
before construction, so a missing variable can be reported at its own line.

Hostile files get the same one-line errors, fast: only regular files up to
MAX_BYTES are read (never /dev/zero, never a FIFO), nesting deeper than
MAX_DEPTH, documents whose aliases add more than MAX_ALIAS_VALUES values
when expanded ("billion laughs"), control characters and integers longer
than MAX_INT_DIGITS are refused before anything is built from them. Values
written out plainly are bounded by MAX_BYTES alone: a 10,000-rule file with
no alias is no bomb.
"""
from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from streamcap.util.redact import redact_url

# libyaml (PyYAML's C parser) when PyYAML was built with it: the same nodes and marks, 10-25x faster,
# so a large rule file parses in well under a second.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_STR_TAG = "tag:yaml.org,2002:str"
_INT_TAG = "tag:yaml.org,2002:int"
MAX_BYTES = 1 << 20
MAX_DEPTH = 40
MAX_ALIAS_VALUES = 100_000  # values that aliases add on top of those written in the file
MAX_INT_DIGITS = 30
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
    problems: list[str] = field(default_factory=list)  # found while reading (unset ${VAR}); validation adds its own

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


def read_text_file(path: str | Path, what: str = "file") -> str:
    """The text of a regular file of at most MAX_BYTES; YamlLoadError (one line) for anything else."""
    name = str(path)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused just below.
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise YamlLoadError([f"{name}:1:1: cannot read {what}: {exc.strerror}"]) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise YamlLoadError([f"{name}:1:1: not a regular file (a device, pipe or folder); give the path of a YAML {what}"])
    with os.fdopen(fd, "rb") as f:
        if st.st_size > MAX_BYTES:
            raise YamlLoadError([f"{name}:1:1: {st.st_size} bytes is too big for a {what} (at most {MAX_BYTES})"])
        data = f.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise YamlLoadError([f"{name}:1:1: too big for a {what} (at most {MAX_BYTES} bytes)"])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise YamlLoadError([f"{name}:{line}:1: not UTF-8 text (byte {exc.start}); save the {what} as UTF-8"]) from None


def read_yaml(path: str | Path, env: Mapping[str, str] | None = None, substitute_env: bool = True, what: str = "file") -> YamlDocument:
    """Parse `path` keeping positions; raises YamlLoadError listing every problem found."""
    return parse_yaml(read_text_file(path, what), str(path), env=env, substitute_env=substitute_env)


def parse_yaml(text: str, name: str, env: Mapping[str, str] | None = None, substitute_env: bool = True) -> YamlDocument:
    loader = None
    try:
        _check_shape(text, name)
        loader = _LOADER(text)
        root = loader.get_single_node()
        problems: list[str] = []
        if root is not None:
            _check_size(root, name)
            _check_duplicate_keys(root, name, problems, set())
            if substitute_env:
                _substitute(root, os.environ if env is None else env, name, problems, set())
        data = loader.construct_document(root) if root is not None else None
        if any("duplicate key" in p for p in problems):
            raise YamlLoadError(problems)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        raise YamlLoadError([f"{name}:{line}:{col}: invalid YAML: {problem}"]) from None
    except yaml.reader.ReaderError as exc:
        line = text[: exc.position].count("\n") + 1
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise YamlLoadError([f"{name}:{line}:1: invalid YAML: control character #x{char:02x} is not allowed; remove it"]) from None
    except yaml.YAMLError as exc:
        raise YamlLoadError([f"{name}:1:1: invalid YAML: {str(exc).splitlines()[0]}"]) from None
    except (ValueError, OverflowError, RecursionError) as exc:  # a value PyYAML cannot build (checked above; a last guard)
        raise YamlLoadError([f"{name}:1:1: invalid YAML: {type(exc).__name__}"]) from None
    finally:
        if loader is not None:
            loader.dispose()
    return YamlDocument(name, root, data, problems)


def _check_shape(text: str, name: str) -> None:
    """Depth, via PyYAML's event stream (flat, unlike its recursive composer), before any node is built."""
    depth = 0
    for event in yaml.parse(text, Loader=_LOADER):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                mark = event.start_mark
                raise YamlLoadError([f"{name}:{mark.line + 1}:{mark.column + 1}: nested deeper than {MAX_DEPTH} levels; "
                                     "a config or rule file never needs that"])
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
        elif isinstance(event, yaml.ScalarEvent) and event.implicit[0] and len(event.value) > MAX_INT_DIGITS:
            if event.value.lstrip("+-").replace("_", "").isdigit():
                mark = event.start_mark
                raise YamlLoadError([f"{name}:{mark.line + 1}:{mark.column + 1}: number with more than {MAX_INT_DIGITS} digits"])


def _check_size(root: Node, name: str) -> None:
    """Values that aliases add once expanded (what validation would walk beyond what is written)."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: Node) -> int:
        if id(node) in open_nodes:
            mark = node.start_mark
            raise YamlLoadError([f"{name}:{mark.line + 1}:{mark.column + 1}: an alias (*) refers to the value that contains it"])
        if id(node) in sizes:
            return sizes[id(node)]
        open_nodes.add(id(node))
        total = 1 + sum(size(child) for child in _children(node))
        open_nodes.discard(id(node))
        sizes[id(node)] = total
        return total

    # Each node is counted once in `sizes`; an alias makes its target count again wherever it is used.
    if size(root) - len(sizes) > MAX_ALIAS_VALUES:
        raise YamlLoadError([f"{name}:1:1: the document expands to more than {MAX_ALIAS_VALUES} values through "
                             "aliases (&/*); write it out plainly"])


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
