"""RuleEngine: captions in, alarm lifecycles out (new, update, end), per rule and camera.

Like Frigate's events: `new` when a rule starts matching on a camera (its
triggers' debounce satisfied and its conditions holding), `update` while it
keeps matching and the caption or snapshot gets better (at most one per
`update_every`), `end` once it has not matched for `clear_after`. After an
end, `cooldown` must pass before the same rule raises a new alarm on that
camera. "Better" is a higher concept probability for the concepts the rule
is about (the caption's evidence), or, without a concept head, a new caption.

Runs on the dispatch thread only, so its state needs no lock (`plan_rules`,
which a reload may call elsewhere, reads nothing but the immutable rules in
force: a large rule file is compiled off the dispatch thread and swapped in
by `apply_rules` in one step). Matching and
debounce use the caption's `captured_at`, so results do not depend on how
late a caption arrives and tests need no sleeping; `tick()` ends alarms of
cameras that have stopped sending captions at all, by the engine's clock.

`explain` runs one caption through the same evaluation and says why, for
`streamcap rules test`.
"""
from __future__ import annotations

import fnmatch
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from streamcap.concepts import BY_NAME
from streamcap.messages import Alarm, AlarmType, Caption
from streamcap.rules.conditions import check_all
from streamcap.rules.matchers import BUILTIN_GROUPS, CaptionMatcher, MatchResult
from streamcap.rules.schema import CaptionTrigger, Rule

log = logging.getLogger("streamcap.rules")

SnapshotSource = Callable[[str, int], bytes | None]  # (camera, frame id) -> JPEG


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
class ActiveAlarm:
    alarm_id: str
    start_time: float
    last_match_at: float
    best: Caption
    best_score: float
    seq: int = 0
    last_update_at: float = 0.0


@dataclass
class RuleCameraState:
    triggers: list[TriggerState]
    active: ActiveAlarm | None = None
    last_end_at: float | None = None


@dataclass(frozen=True)
class Evaluation:
    """What one caption did to one rule on one camera; `explain` words it."""

    results: list[MatchResult]
    fired: list[bool]  # per trigger: matched and its debounce is satisfied
    conditions: tuple[bool, str] | None  # None: not checked (no trigger fired)

    @property
    def matched(self) -> bool:
        return any(self.fired) and (self.conditions is None or self.conditions[0])


@dataclass
class CompiledRule:
    rule: Rule
    matchers: list[CaptionMatcher]
    concepts: tuple[str, ...]  # what the rule is about, for judging a better caption
    cameras: frozenset[str] | None = None  # resolved against known cameras, or None = match patterns live
    states: dict[str, RuleCameraState] = field(default_factory=dict)

    @classmethod
    def compile(cls, rule: Rule, known_cameras: Iterable[str] | None) -> CompiledRule:
        groups = {**BUILTIN_GROUPS, **rule.synonyms}
        cameras = None
        if known_cameras is not None:
            cameras = frozenset(c for c in known_cameras if camera_matches(rule.cameras, c))
        concepts = []
        for trigger in rule.triggers:
            concepts += [c.concept for c in trigger.concept if c.op in (">=", ">")]
            concepts += [w[1:] for w in [*trigger.any, *trigger.all] if w.startswith("@") and w[1:] in BY_NAME]
        return cls(rule, [CaptionMatcher(t, groups) for t in rule.triggers], tuple(dict.fromkeys(concepts)), cameras)

    def watches(self, camera_id: str) -> bool:
        if self.cameras is not None:
            return camera_id in self.cameras
        return camera_matches(self.rule.cameras, camera_id)

    def state(self, camera_id: str) -> RuleCameraState:
        if camera_id not in self.states:
            self.states[camera_id] = RuleCameraState([TriggerState(deque(maxlen=t.window_size)) for t in self.rule.triggers])
        return self.states[camera_id]

    def evaluate(self, state: RuleCameraState, caption: Caption, timezone: str) -> Evaluation:
        results, fired = [], []
        for matcher, trigger, tstate in zip(self.matchers, self.rule.triggers, state.triggers):
            result = matcher.check(caption.text, caption.concepts)
            results.append(result)
            fired.append(tstate.update(trigger, result.matched, caption.captured_at))
        conditions = check_all(self.rule.conditions, caption.captured_at, timezone) if any(fired) else None
        return Evaluation(results, fired, conditions)

    def score(self, caption: Caption) -> float:
        return max((caption.concepts.get(c, 0.0) for c in self.concepts), default=0.0)


@dataclass(frozen=True)
class RulePlan:
    """The next rule list: compiled rules in order, unchanged ones being the very objects in force
    (so they keep their debounce and alarm state), and the list they were planned against."""

    entries: tuple[CompiledRule, ...]
    base: list[CompiledRule]


class RuleEngine:
    """Evaluates every enabled rule on every caption of the cameras it watches."""

    def __init__(
        self,
        rules: Iterable[Rule],
        known_cameras: Iterable[str] | None = None,
        clock: Callable[[], float] = time.time,
        timezone: str = "UTC",
        snapshot_cameras: Iterable[str] | None = None,
        snapshots: SnapshotSource | None = None,
    ):
        self.known_cameras = None if known_cameras is None else tuple(known_cameras)
        # Cameras whose config says `snapshot: false` never get JPEGs, whatever the rule says.
        self.snapshot_cameras = None if snapshot_cameras is None else frozenset(snapshot_cameras)
        self.snapshots = snapshots
        self.clock = clock
        self.timezone = timezone
        self._compiled: list[CompiledRule] = []
        self._pending: list[Alarm] = []  # ends of alarms whose rule was removed or edited
        self.replace_rules(rules)

    @property
    def rules(self) -> list[Rule]:
        return [c.rule for c in self._compiled]

    def active_alarms(self) -> list[Alarm]:
        """The `new` message of every alarm in progress (for the live page and the startup state)."""
        return [self._message(c, s.active, AlarmType.new) for c in self._compiled for s in c.states.values() if s.active]

    def replace_rules(self, rules: Iterable[Rule]) -> None:
        """Swap in a new rule list; unchanged rules keep their state, alarms of the others end."""
        plan = self.plan_rules(rules)
        if plan is not None:
            self.apply_rules(plan)

    def plan_rules(self, rules: Iterable[Rule]) -> RulePlan | None:
        """What `apply_rules` will do, worked out on any thread (compiling is the slow part); None: no change.

        Reads only the rules in force, which are immutable; the dispatch thread replaces the list, never edits it.
        """
        base = self._compiled
        by_id = {c.rule.id: c for c in base}
        entries: list[CompiledRule] = []
        kept = 0
        for rule in rules:
            previous = by_id.get(rule.id)
            if previous is not None and previous.rule == rule:
                entries.append(previous)
                kept += 1
            else:
                entries.append(CompiledRule.compile(rule, self.known_cameras))
        if kept == len(entries) == len(base) and all(a is b for a, b in zip(entries, base)):
            return None
        return RulePlan(tuple(entries), base)

    def apply_rules(self, plan: RulePlan) -> None:
        """Put a plan in force (the engine's thread; a dictionary pass, however many rules)."""
        if plan.base is not self._compiled:  # planned against other rules than those in force: plan again here
            plan = self.plan_rules([c.rule for c in plan.entries]) or RulePlan(tuple(self._compiled), self._compiled)
        kept = {id(c) for c in plan.entries}
        for gone in self._compiled:
            if id(gone) in kept:
                continue
            for state in gone.states.values():
                if state.active is not None:
                    self._pending.append(self._end(gone, state, self.clock()))
        self._compiled = list(plan.entries)

    def process(self, caption: Caption) -> list[Alarm]:
        messages, self._pending = self._pending, []
        for compiled in self._compiled:
            rule = compiled.rule
            if not rule.enabled or not compiled.watches(caption.camera_id):
                continue
            state = compiled.state(caption.camera_id)
            evaluation = compiled.evaluate(state, caption, self.timezone)
            at = caption.captured_at
            if state.active is not None:
                if evaluation.matched:
                    message = self._keep(compiled, state, caption)
                    if message is not None:
                        messages.append(message)
                elif at - state.active.last_match_at >= rule.clear_after:
                    messages.append(self._end(compiled, state, at))
            if state.active is None and evaluation.matched and (
                state.last_end_at is None or at - state.last_end_at >= rule.cooldown
            ):
                messages.append(self._start(compiled, state, caption))
        return messages

    def tick(self, now: float | None = None) -> list[Alarm]:
        """End the alarms that have not matched for clear_after (their camera may have gone quiet)."""
        now = self.clock() if now is None else now
        messages, self._pending = self._pending, []
        for compiled in self._compiled:
            for state in compiled.states.values():
                if state.active is not None and now - state.active.last_match_at >= compiled.rule.clear_after:
                    messages.append(self._end(compiled, state, now))
        return messages

    def end_all(self) -> list[Alarm]:
        """End every alarm in progress (clean shutdown: nothing stays ON at the subscribers)."""
        messages, self._pending = self._pending, []
        for compiled in self._compiled:
            for state in compiled.states.values():
                if state.active is not None:
                    messages.append(self._end(compiled, state, self.clock()))
        return messages

    # --- lifecycle ---------------------------------------------------------------
    def _start(self, compiled: CompiledRule, state: RuleCameraState, caption: Caption) -> Alarm:
        at = caption.captured_at
        state.active = ActiveAlarm(f"{compiled.rule.id}-{caption.camera_id}-{round(at * 1000)}", at, at, caption,
                                   compiled.score(caption), last_update_at=at)
        return self._message(compiled, state.active, AlarmType.new, snapshot=True)

    def _keep(self, compiled: CompiledRule, state: RuleCameraState, caption: Caption) -> Alarm | None:
        active = state.active
        at = caption.captured_at
        active.last_match_at = at
        score = compiled.score(caption)
        better = score > active.best_score if compiled.concepts and caption.concepts else caption.text != active.best.text
        if not better or at - active.last_update_at < compiled.rule.update_every:
            return None
        active.best, active.best_score, active.last_update_at = caption, score, at
        active.seq += 1
        return self._message(compiled, active, AlarmType.update, snapshot=True)

    def _end(self, compiled: CompiledRule, state: RuleCameraState, at: float) -> Alarm:
        active = state.active
        active.seq += 1
        state.active, state.last_end_at = None, at
        return self._message(compiled, active, AlarmType.end, end_time=active.last_match_at)

    def _message(self, compiled: CompiledRule, active: ActiveAlarm, kind: AlarmType, snapshot: bool = False,
                 end_time: float | None = None) -> Alarm:
        caption, rule = active.best, compiled.rule
        jpeg = None
        if snapshot and rule.snapshot and self._snapshots_allowed(caption.camera_id) and self.snapshots is not None:
            jpeg = self.snapshots(caption.camera_id, caption.frame_id)
        return Alarm(
            alarm_id=active.alarm_id, type=kind, seq=active.seq, rule_id=rule.id, rule_title=rule.title, severity=rule.severity,
            camera_id=caption.camera_id, caption=caption.text, captured_at=caption.captured_at,
            start_time=active.start_time, end_time=end_time, raised_at=self.clock(),
            concepts=dict(caption.concepts), snapshot_jpeg=jpeg,
        )

    def _snapshots_allowed(self, camera_id: str) -> bool:
        return self.snapshot_cameras is None or camera_id in self.snapshot_cameras


def explain(rule: Rule, camera_id: str, text: str, at: float, timezone: str = "UTC",
            concepts: dict[str, float] | None = None) -> tuple[bool, list[str]]:
    """Would `rule` raise a new alarm on this one caption, and why (for `streamcap rules test`)."""
    if not rule.enabled:
        return False, ["rule is disabled (enabled: false)"]
    if not camera_matches(rule.cameras, camera_id):
        return False, [f"camera {camera_id!r} is not in {rule.cameras}"]
    engine = RuleEngine([rule], timezone=timezone, clock=lambda: at)
    compiled = engine._compiled[0]
    caption = Caption(camera_id, 0, at, 0.0, text, "explain", 0.0, dict(concepts or {}))
    evaluation = compiled.evaluate(compiled.state(camera_id), caption, timezone)
    lines = [f"trigger {i + 1}: {'matched' if r.matched else 'no match'}: {', '.join(r.reasons)}"
             for i, r in enumerate(evaluation.results)]
    hits = [(i, t) for i, (t, r) in enumerate(zip(rule.triggers, evaluation.results)) if r.matched]
    if not hits:
        return False, lines
    for i, trigger in hits:
        if trigger.min_matches > 1:
            lines.append(f"trigger {i + 1} debounce: needs {trigger.min_matches} matching captions in the last {trigger.window_size}")
        if trigger.hold_s > 0:
            lines.append(f"trigger {i + 1} debounce: must keep matching for {trigger.hold_s:g}s")
    ok, why = evaluation.conditions if evaluation.conditions is not None else check_all(rule.conditions, at, timezone)
    lines.append(f"conditions: {'pass' if ok else 'fail'}: {why}")
    if not ok:
        return False, lines
    if not evaluation.matched:
        lines.append("would fire once the debounce is satisfied")
        return False, lines
    lines.append(f"would raise a new {rule.severity.value} alarm; it ends {rule.clear_after:g}s after the last match"
                 + (f", then quiet for {rule.cooldown:g}s (cooldown)" if rule.cooldown else ""))
    return True, lines
