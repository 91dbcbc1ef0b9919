"""RuleEngine: captions in, alarms out, with per-(rule, camera) debounce and cooldown.

Runs on the dispatch thread only, so its state needs no lock. All timing
(`for:`, cooldown, schedules) uses the caption's `captured_at`, so results do
not depend on how late a caption arrives and tests need no sleeping.
"""
from __future__ import annotations

import fnmatch
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import cv2

from streamcap.messages import Alarm, Caption
from streamcap.rules.conditions import check_all
from streamcap.rules.matchers import BUILTIN_GROUPS, CaptionMatcher, MatchResult
from streamcap.rules.schema import CaptionTrigger, Rule

log = logging.getLogger("streamcap.rules")

JPEG_QUALITY = 85


def camera_matches(patterns: Iterable[str], camera_id: str) -> bool:
    return any(fnmatch.fnmatchcase(camera_id, p) for p in patterns)


@dataclass
class TriggerState:
    """Debounce memory of one trigger on one camera."""

    recent: deque[bool]  # hit or miss for the last `window` captions
    active_since: float | None = None  # captured_at when min_matches-of-window started holding

    def update(self, trigger: CaptionTrigger, hit: bool, at: float) -> bool:
        """Record one caption; True when the trigger fires on it."""
        self.recent.append(hit)
        if sum(self.recent) >= trigger.min_matches:
            if self.active_since is None:
                self.active_since = at
        else:
            self.active_since = None
        # Fire only on a matching caption: the alarm's caption must show the event.
        return hit and self.active_since is not None and at - self.active_since >= trigger.hold_s


@dataclass
class RuleCameraState:
    triggers: list[TriggerState]
    last_alarm_at: float | None = None


@dataclass
class CompiledRule:
    rule: Rule
    matchers: list[CaptionMatcher]
    cameras: frozenset[str] | None = None  # resolved against known cameras, or None = match patterns live
    states: dict[str, RuleCameraState] = field(default_factory=dict)

    @classmethod
    def compile(cls, rule: Rule, known_cameras: Iterable[str] | None) -> CompiledRule:
        groups = {**BUILTIN_GROUPS, **rule.synonyms}
        cameras = None
        if known_cameras is not None:
            cameras = frozenset(c for c in known_cameras if camera_matches(rule.cameras, c))
        return cls(rule, [CaptionMatcher(t, groups) for t in rule.triggers], cameras)

    def watches(self, camera_id: str) -> bool:
        if self.cameras is not None:
            return camera_id in self.cameras
        return camera_matches(self.rule.cameras, camera_id)

    def state(self, camera_id: str) -> RuleCameraState:
        if camera_id not in self.states:
            self.states[camera_id] = RuleCameraState([TriggerState(deque(maxlen=t.window_size)) for t in self.rule.triggers])
        return self.states[camera_id]


class RuleEngine:
    """Evaluates every enabled rule on every caption of the cameras it watches."""

    def __init__(
        self,
        rules: Iterable[Rule],
        known_cameras: Iterable[str] | None = None,
        clock: Callable[[], float] = time.time,
        timezone: str = "UTC",
        snapshot_cameras: Iterable[str] | None = None,
    ):
        self.known_cameras = None if known_cameras is None else tuple(known_cameras)
        # Cameras whose config says `snapshot: false` never get JPEGs, whatever the rule says.
        self.snapshot_cameras = None if snapshot_cameras is None else frozenset(snapshot_cameras)
        self.clock = clock
        self.timezone = timezone
        self._compiled: list[CompiledRule] = []
        self.replace_rules(rules)

    @property
    def rules(self) -> list[Rule]:
        return [c.rule for c in self._compiled]

    def replace_rules(self, rules: Iterable[Rule]) -> None:
        """Swap in a new rule list; unchanged rules keep their debounce and cooldown state."""
        old = {c.rule.id: c for c in self._compiled}
        compiled = []
        for rule in rules:
            previous = old.get(rule.id)
            if previous is not None and previous.rule == rule:
                compiled.append(previous)
            else:
                compiled.append(CompiledRule.compile(rule, self.known_cameras))
        self._compiled = compiled

    def process(self, caption: Caption) -> list[Alarm]:
        alarms = []
        for compiled in self._compiled:
            rule = compiled.rule
            if not rule.enabled or not compiled.watches(caption.camera_id):
                continue
            state = compiled.state(caption.camera_id)
            fired = False
            for matcher, trigger, tstate in zip(compiled.matchers, rule.triggers, state.triggers):
                hit = matcher.matches(caption.text)
                fired = tstate.update(trigger, hit, caption.captured_at) or fired
            if not fired:
                continue
            if rule.conditions and not check_all(rule.conditions, caption.captured_at, self.timezone)[0]:
                continue
            if state.last_alarm_at is not None and caption.captured_at - state.last_alarm_at < rule.cooldown:
                continue
            state.last_alarm_at = caption.captured_at
            alarms.append(self._alarm(rule, caption))
        return alarms

    def _alarm(self, rule: Rule, caption: Caption) -> Alarm:
        return Alarm(
            alarm_id=f"{rule.id}-{caption.camera_id}-{round(caption.captured_at * 1000)}",
            rule_id=rule.id,
            severity=rule.severity,
            camera_id=caption.camera_id,
            caption=caption.text,
            captured_at=caption.captured_at,
            raised_at=self.clock(),
            snapshot_jpeg=_snapshot(caption) if rule.snapshot and self._snapshots_allowed(caption.camera_id) else None,
        )

    def _snapshots_allowed(self, camera_id: str) -> bool:
        return self.snapshot_cameras is None or camera_id in self.snapshot_cameras


def _snapshot(caption: Caption) -> bytes | None:
    if caption.frame is None:
        return None
    ok, jpeg = cv2.imencode(".jpg", caption.frame.image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        log.warning("%s: could not encode the snapshot of frame %d; alarm sent without it", caption.camera_id, caption.frame_id)
        return None
    return jpeg.tobytes()


def explain(rule: Rule, camera_id: str, text: str, at: float, timezone: str = "UTC") -> tuple[bool, list[str]]:
    """Would `rule` fire on this one caption, and why (for `streamcap rules test`)."""
    lines: list[str] = []
    if not rule.enabled:
        return False, ["rule is disabled (enabled: false)"]
    if not camera_matches(rule.cameras, camera_id):
        return False, [f"camera {camera_id!r} is not in {rule.cameras}"]
    groups = {**BUILTIN_GROUPS, **rule.synonyms}
    results: list[tuple[CaptionTrigger, MatchResult]] = [(t, CaptionMatcher(t, groups).check(text)) for t in rule.triggers]
    hits = [(i, t, r) for i, (t, r) in enumerate(results) if r.matched]
    for i, (trigger, result) in enumerate(results):
        lines.append(f"trigger {i + 1}: {'matched' if result.matched else 'no match'}: {', '.join(result.reasons)}")
    if not hits:
        return False, lines
    immediate = [t for _, t, _ in hits if t.min_matches == 1 and t.hold_s == 0]
    for i, trigger, _ in hits:
        if trigger.min_matches > 1:
            lines.append(f"trigger {i + 1} debounce: needs {trigger.min_matches} matching captions in the last {trigger.window_size}")
        if trigger.hold_s > 0:
            lines.append(f"trigger {i + 1} debounce: must keep matching for {trigger.hold_s:g}s")
    ok, why = check_all(rule.conditions, at, timezone)
    lines.append(f"conditions: {'pass' if ok else 'fail'}: {why}")
    if not ok:
        return False, lines
    if not immediate:
        lines.append("would fire once the debounce is satisfied")
        return False, lines
    lines.append(f"would fire: {rule.severity.value}, then quiet for {rule.cooldown:g}s (cooldown)")
    return True, lines
