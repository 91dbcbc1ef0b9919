"""Alert rules: the YAML grammar as pydantic models.

Home Assistant shapes (`triggers` OR'ed, `conditions` AND'ed, list items told
apart by their first key), Frigate words (`severity: alert|detection`).
Captions are plain text, so triggers are word lists, phrases and regexes:

    - id: person_at_gate_night
      cameras: [gate]
      triggers:
        - trigger: caption
          any: ["@person"]
          min_matches: 2        # 2 of the last 3 captions
          window: 3
          for: 10s              # and it keeps holding this long
      conditions:
        - condition: time
          after: "22:00"
          before: "06:00"
        - trigger: caption
          concept: "person >= 0.7"  # the concept head's probability, not a word
      clear_after: 30s          # the alarm ends after this long without a match
      cooldown: 5m              # and no new one for this rule and camera until 5 min after that
      severity: alert

User regexes run on RE2 (linear time, whatever the pattern), so a rule can
never slow the box down; RE2 has no lookaround or backreferences.

Every number has a range: durations are finite and at most a week, counts at
most 1,000, probabilities within 0..1.

Checks that need other files or the model (unknown cameras, duplicate ids,
unknown synonym groups, concepts the model has no head for) live in
`streamcap.rules.load`, where they can be pointed at the exact YAML line.
"""
from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass
from streamcap.util.strenum import StrEnum
from typing import Annotated, Any, Literal, Union

import re2
from pydantic import AfterValidator, BeforeValidator, Discriminator, Field, Tag, field_validator, model_validator

from streamcap.config.schema import Id, StrictModel, TimeZone
from streamcap.messages import Severity

_DURATION_RE = re.compile(r"(\d{1,9}(?:\.\d{1,9})?)\s*(ms|h|m|s)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
MAX_DURATION_S = 7 * 24 * 3600.0  # a week: longer is a typo, and would hold state for ever
MAX_COUNT = 1000
MAX_PATTERN_LENGTH = 1000


def parse_duration(value: Any) -> float:
    """Seconds from `90`, `1.5`, `"10s"`, `"5m"`, `"1h30m"`, `"500ms"`."""
    if isinstance(value, bool):
        raise ValueError("a duration looks like 10s, 5m or 1h30m")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        if len(text) > 40:
            raise ValueError("a duration looks like 10s, 5m or 1h30m")
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION_RE.findall(text)
            if not parts or "".join(n + u for n, u in parts) != text:
                raise ValueError(f"{value!r} is not a duration; write 10s, 5m, 1h30m or a number of seconds") from None
            seconds = sum(float(n) * _UNIT_S[u] for n, u in parts)
    else:
        raise ValueError("a duration looks like 10s, 5m or 1h30m")
    if not math.isfinite(seconds) or seconds < 0 or seconds > MAX_DURATION_S:
        raise ValueError(f"a duration must be between 0 and {MAX_DURATION_S / 86400:.0f} days")
    return seconds


def _parse_clock(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        # YAML 1.1 reads an unquoted 22:00 as the sexagesimal integer 1320.
        if 0 <= value < 24 * 60:
            return dt.time(*divmod(value, 60))
    elif isinstance(value, str):
        try:
            return dt.time.fromisoformat(value.strip()[:20])
        except ValueError:
            raise ValueError(f"{value[:20]!r} is not a time of day; write \"HH:MM\" (24 h, quoted)") from None
    raise ValueError("not a time of day; write \"HH:MM\" (24 h, quoted)")


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.case_sensitive = False
_RE2_OPTIONS.log_errors = False  # RE2 would print its own line on stderr for every bad pattern


def compile_regex(pattern: str):
    """A user regex on RE2: case-insensitive, linear time; ValueError says what is wrong."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise ValueError(f"regex longer than {MAX_PATTERN_LENGTH} characters")
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as exc:
        detail = str(exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc)
        hint = " (RE2 syntax: no lookbehind, lookahead or backreferences)" if "perl operator" in detail or "escape" in detail else ""
        raise ValueError(f"invalid regex {pattern!r}: {detail}{hint}") from None


def _check_regex(pattern: str) -> str:
    compile_regex(pattern)
    return pattern


@dataclass(frozen=True)
class ConceptCondition:
    """`person >= 0.7`: the concept head's probability compared with a threshold."""

    concept: str
    op: str
    threshold: float

    def holds(self, probability: float) -> bool:
        return _OPS[self.op](probability, self.threshold)

    def __str__(self) -> str:
        return f"{self.concept} {self.op} {self.threshold:g}"


_OPS = {">=": lambda p, t: p >= t, ">": lambda p, t: p > t, "<=": lambda p, t: p <= t, "<": lambda p, t: p < t}
_CONCEPT_RE = re.compile(r"^\s*([a-z][a-z0-9_]{0,40})\s*(>=|<=|>|<)\s*(\d{0,3}(?:\.\d{1,6})?)\s*$")


def _parse_concept(value: Any) -> Any:
    if isinstance(value, ConceptCondition):
        return value
    if not isinstance(value, str):
        raise ValueError('a concept condition looks like "person >= 0.7"')
    match = _CONCEPT_RE.match(value.lower())
    if not match or not match.group(3):
        raise ValueError(f"{value[:60]!r} is not a concept condition; write it like \"person >= 0.7\"")
    threshold = float(match.group(3))
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"{value[:60]!r}: a probability is between 0 and 1")
    return ConceptCondition(match.group(1), match.group(2), threshold)


parse_concept_condition = _parse_concept  # one parser for rules and for history filters (`--concept "vehicle >= 0.7"`)

Duration = Annotated[float, BeforeValidator(parse_duration)]
RegexText = Annotated[str, AfterValidator(_check_regex)]
ClockTime = Annotated[dt.time, BeforeValidator(_parse_clock)]
WordList = Annotated[list[Annotated[str, Field(max_length=200)]], BeforeValidator(_as_list), Field(max_length=MAX_COUNT)]
ConceptText = Annotated[ConceptCondition, BeforeValidator(_parse_concept)]


class Weekday(StrEnum):
    mon = "mon"
    tue = "tue"
    wed = "wed"
    thu = "thu"
    fri = "fri"
    sat = "sat"
    sun = "sun"

    @property
    def index(self) -> int:
        return list(Weekday).index(self)  # Monday = 0, like datetime.weekday()


class CaptionTrigger(StrictModel):
    trigger: Literal["caption"] = Field(description="Fires on caption text.")
    any: WordList = Field(default_factory=list, description="At least one of these words (or @groups) is in the caption.")
    all: WordList = Field(default_factory=list, description="Every one of these words (or @groups) is in the caption.")
    none: WordList = Field(default_factory=list, description="None of these words (or @groups) is in the caption.")
    phrase: WordList = Field(default_factory=list, description="One of these exact word sequences is in the caption.")
    regex: Annotated[list[RegexText], BeforeValidator(_as_list), Field(max_length=MAX_COUNT)] = Field(default_factory=list, description="One of these regular expressions matches (case-insensitive, RE2 syntax).")
    concept: Annotated[list[ConceptText], BeforeValidator(_as_list), Field(max_length=len(_OPS) * 10)] = Field(
        default_factory=list, description='Each of these holds for the concept head\'s probabilities ("person >= 0.7", "vehicle < 0.2").')
    min_matches: int = Field(default=1, ge=1, le=MAX_COUNT, description="Matching captions needed among the last `window` captions.")
    window: int | None = Field(default=None, ge=1, le=MAX_COUNT, description="How many recent captions `min_matches` counts over (default: min_matches).")
    hold_s: Duration = Field(default=0.0, alias="for", description="The trigger must keep holding this long (10s, 1m) before it fires.")

    @field_validator("any", "all", "none", "phrase")
    @classmethod
    def _normalise_words(cls, words: list[str]) -> list[str]:
        cleaned = [" ".join(w.lower().split()) for w in words]
        if any(not w or w == "@" for w in cleaned):
            raise ValueError("empty word")
        return cleaned

    @model_validator(mode="after")
    def _check(self) -> CaptionTrigger:
        if not (self.any or self.all or self.phrase or self.regex or self.concept):
            raise ValueError("a caption trigger needs at least one of any, all, phrase, regex or concept")
        if self.window is not None and self.window < self.min_matches:
            raise ValueError(f"window ({self.window}) must be >= min_matches ({self.min_matches})")
        return self

    @property
    def window_size(self) -> int:
        return self.window or self.min_matches


class TimeCondition(StrictModel):
    condition: Literal["time"] = Field(description="Holds during a time window of the day and/or on given weekdays.")
    after: ClockTime | None = Field(default=None, description="From this time of day (\"22:00\").")
    before: ClockTime | None = Field(default=None, description="Until this time of day (\"06:00\"); may wrap past midnight.")
    weekday: list[Weekday] | None = Field(default=None, description="Only on these days: mon, tue, wed, thu, fri, sat, sun.")
    timezone: TimeZone | None = Field(default=None, description="Time zone of after/before (default: the config's timezone).")

    @field_validator("weekday", mode="before")
    @classmethod
    def _weekday_list(cls, value: Any) -> Any:
        return _as_list(value)

    @model_validator(mode="after")
    def _check(self) -> TimeCondition:
        if self.after is None and self.before is None and not self.weekday:
            raise ValueError("a time condition needs after, before or weekday")
        if self.after is not None and self.after == self.before:
            raise ValueError("after and before are equal: the window is empty")
        return self


class OrCondition(StrictModel):
    any_of: list[Condition] = Field(alias="or", min_length=1, description="Holds when at least one of these holds.")


class AndCondition(StrictModel):
    all_of: list[Condition] = Field(alias="and", min_length=1, description="Holds when all of these hold.")


class NotCondition(StrictModel):
    none_of: list[Condition] = Field(alias="not", min_length=1, description="Holds when none of these hold.")


def _condition_tag(value: Any) -> str | None:
    if isinstance(value, dict):
        if "condition" in value:
            return str(value["condition"])
        for key in ("or", "and", "not"):
            if key in value:
                return key
        return None
    return getattr(value, "condition", None) or {OrCondition: "or", AndCondition: "and", NotCondition: "not"}.get(type(value))


Condition = Annotated[
    Union[
        Annotated[TimeCondition, Tag("time")],
        Annotated[OrCondition, Tag("or")],
        Annotated[AndCondition, Tag("and")],
        Annotated[NotCondition, Tag("not")],
    ],
    Discriminator(
        _condition_tag,
        custom_error_type="unknown_condition",
        custom_error_message="conditions are `- condition: time`, `- or: [...]`, `- and: [...]` or `- not: [...]`",
    ),
]
OrCondition.model_rebuild()
AndCondition.model_rebuild()
NotCondition.model_rebuild()


def _camera_list(value: Any) -> Any:
    return _as_list(value)


class Rule(StrictModel):
    id: Id = Field(description="Unique, stable id; used in alarm ids and topics.")
    alias: str | None = Field(default=None, description="Human-readable name.")
    enabled: bool = Field(default=True, description="Set false to keep the rule in the file but not run it.")
    cameras: Annotated[list[str], BeforeValidator(_camera_list)] = Field(
        default_factory=lambda: ["*"], min_length=1, description="Camera ids or globs (gate*, *) this rule watches."
    )
    synonyms: dict[Id, list[str]] = Field(
        default_factory=dict, description="Extra word groups for this rule (@name); the file's `synonyms:` are merged in."
    )
    triggers: list[CaptionTrigger] = Field(min_length=1, description="Any one of these (OR) can fire the rule.")
    conditions: list[Condition] = Field(default_factory=list, description="All of these (AND) must hold when a trigger fires.")
    clear_after: Duration = Field(default=30.0, description="The alarm ends (type: end) once the rule has not matched on the camera for this long.")
    update_every: Duration = Field(default=10.0, description="At most one update (a better caption or snapshot) per this long while the alarm lasts.")
    cooldown: Duration = Field(default=0.0, description="Quiet time after an alarm ended before this rule raises a new one on the same camera.")
    severity: Severity = Field(default=Severity.alert, description="alert (needs attention) or detection (for the record).")
    snapshot: bool = Field(default=True, description="Attach a JPEG of the frame to the alarm.")

    @field_validator("synonyms")
    @classmethod
    def _lower_synonyms(cls, groups: dict[str, list[str]]) -> dict[str, list[str]]:
        return {name: [" ".join(w.lower().split()) for w in words] for name, words in groups.items()}

    @property
    def title(self) -> str:
        return self.alias or self.id


class RuleFile(StrictModel):
    """A rule file is either a plain list of rules or this mapping."""

    synonyms: dict[Id, list[str]] = Field(default_factory=dict, description="Word groups for every rule in this file (@name).")
    rules: list[dict[str, Any]] = Field(description="The rules.")
