"""YAML file -> StreamcapConfig, with every problem reported as `file:line:col: path: message`."""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import ValidationError

from streamcap.config.schema import StreamcapConfig
from streamcap.config.yamlpos import YamlLoadError, format_pydantic_errors, read_yaml


class ConfigError(Exception):
    """The config file is unusable; `problems` holds one formatted line per problem."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> StreamcapConfig:
    """Read, substitute `${ENV}`, validate. Relative paths inside are relative to the file."""
    try:
        doc = read_yaml(path, env=env)
    except YamlLoadError as exc:
        raise ConfigError(exc.problems) from None
    data = {} if doc.data is None else doc.data
    if not isinstance(data, dict):
        raise ConfigError([f"{doc.path}:1:1: the config must be a mapping of sections (cameras:, mqtt:, ...), not a {type(data).__name__}"])
    base_dir = Path(os.path.abspath(path)).parent
    # An unset ${VAR} is one problem among all the others, never one that hides them.
    problems = list(doc.problems)
    try:
        config = StreamcapConfig.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        problems += format_pydantic_errors(doc, exc.errors())
    if problems:
        raise ConfigError(sorted(problems, key=_position))
    config._document = doc
    return config


def _position(problem: str) -> tuple[int, int]:
    parts = problem.split(":", 3)
    try:
        return int(parts[1]), int(parts[2])
    except (IndexError, ValueError):
        return 0, 0
