"""RuleEngine: debounce (N in M, for:), alarm lifecycle, cooldown, schedules and time zones, cameras,
concept thresholds, snapshots.

All times are explicit `captured_at` values; nothing sleeps.
"""
from __future__ import annotations

import datetime as dt
import zoneinfo

import cv2
import numpy as np
import pytest

from streamcap.messages import AlarmType, Caption, Frame, Severity
from streamcap.rules.engine import RuleEngine, explain
from streamcap.snapshots import SnapshotStore
from streamcap.rules.schema import Rule

T0 = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.timezone.utc).timestamp()  # a Wednesday


def rule(**fields) -> Rule:
    """A rule whose alarm ends at the first caption that does not match (so each match streak is one alarm)."""
    fields.setdefault("id", "r")
    fields.setdefault("triggers", [{"trigger": "caption", "any": ["@person"]}])
    fields.setdefault("cooldown", 0)
    fields.setdefault("clear_after", 0)
    return Rule.model_validate(fields)


def caption(text: str, at: float, camera: str = "gate", concepts: dict | None = None, frame_id: int | None = None) -> Caption:
    return Caption(camera_id=camera, frame_id=int(at) if frame_id is None else frame_id, captured_at=at, t_mono=at,
                   text=text, model="test", captioned_mono=at, concepts=concepts or {})


def new_alarms(engine: RuleEngine, c: Caption) -> list:
    return [a for a in engine.process(c) if a.type == AlarmType.new]


def run(engine: RuleEngine, texts: list[str], start: float = T0, step_s: float = 1.0, camera: str = "gate") -> list[int]:
    """Indices of the captions that raised a new alarm."""
    fired = []
    for i, text in enumerate(texts):
        if new_alarms(engine, caption(text, start + i * step_s, camera)):
            fired.append(i)
    return fired


def local(year, month, day, hour, minute, zone="UTC") -> float:
    return dt.datetime(year, month, day, hour, minute, tzinfo=zoneinfo.ZoneInfo(zone)).timestamp()


P, N = "a man stands by the gate", "an empty street"


@pytest.mark.parametrize(
    "trigger,texts,expected",
    [
        ({}, [N, P, N, P], [1, 3]),
        ({"min_matches": 2, "window": 3}, [P, N, P, N, N, P], [2]),
        ({"min_matches": 2, "window": 3}, [P, N, N, P, N, N], []),
        ({"min_matches": 3}, [P, P, N, P, P, P], [5]),
        # fires on matching captions only, once the N-of-M condition holds
        ({"min_matches": 2, "window": 4}, [P, P, N, P], [1, 3]),
    ],
)
def test_debounce_n_in_m(trigger, texts, expected):
    # given
    engine = RuleEngine([rule(triggers=[{"trigger": "caption", "any": ["@person"], **trigger}])])
    # when / then
    assert run(engine, texts) == expected


def test_for_must_hold_across_captions():
    # given a trigger that must hold 10 s, captions every 2 s
    engine = RuleEngine([rule(triggers=[{"trigger": "caption", "any": ["@person"], "for": "10s"}])])
    # when one miss breaks the streak, then it holds again from the next match
    fired = run(engine, [P, P, P, P, N, P, P, P, P, P, P, P], step_s=2.0)
    # then it fires at the first caption 10 s after the streak (re)started at index 5
    assert fired[0] == 10


def test_for_combined_with_n_in_m_survives_a_missed_caption():
    # given loitering: 2 of the last 3 captions, held for 6 s
    engine = RuleEngine([rule(triggers=[{"trigger": "caption", "any": ["@person"], "min_matches": 2, "window": 3, "for": 6}])])
    # when a single miss does not break "2 of 3"
    fired = run(engine, [P, P, N, P, P, N, P, P], step_s=1.0)
    # then the streak started at index 1 (second match) and holds: first alarm at t >= 7
    assert fired[0] == 7


def test_cooldown_after_an_alarm_ended_suppresses_a_new_one_per_camera():
    # given a rule quiet for 30 s after each alarm ends, and a person seen every other second
    engine = RuleEngine([rule(cooldown="30s")])
    # when
    fired_gate = run(engine, [P, N] * 35, step_s=1.0)
    fired_yard = run(engine, [P] * 3, start=T0 + 5, camera="yard")
    # then each alarm ends at the next miss (t=1, then t=33), and the next starts 30 s after that end
    assert fired_gate == [0, 32, 64]
    assert fired_yard == [0]


def test_an_alarm_lives_new_update_end_with_one_id():
    # given a rule that ends an alarm after 10 s without a match and updates at most every 5 s
    engine = RuleEngine([rule(clear_after="10s", update_every="5s")], clock=lambda: T0 + 1000)
    person = lambda p: {"person": p, "vehicle": 0.0}  # noqa: E731
    messages = []
    # when a person is seen for 12 s with rising confidence, then the captions stop matching
    for t, p in [(0, 0.6), (2, 0.7), (6, 0.65), (8, 0.9), (12, 0.95), (14, None), (20, None), (23, None)]:
        text = P if p is not None else N
        messages += engine.process(caption(text, T0 + t, concepts=person(p or 0.01)))
    kinds = [(m.type.value, round(m.captured_at - T0), m.seq) for m in messages]
    # new at t=0; an update needs a better caption and 5 s since the last: t=6 (0.65 > 0.6), t=12 (0.95 > 0.65);
    # t=2 and t=8 are better but too soon; the end comes with the first caption 10 s after the last match (t=23)
    assert kinds == [("new", 0, 0), ("update", 6, 1), ("update", 12, 2), ("end", 12, 3)]
    assert len({m.alarm_id for m in messages}) == 1
    end = messages[-1]
    assert end.start_time == T0 and end.end_time == T0 + 12 and end.caption == P and end.concepts["person"] == 0.95


def test_tick_ends_the_alarm_of_a_camera_that_stopped_sending_captions():
    now = [T0]
    engine = RuleEngine([rule(clear_after="30s")], clock=lambda: now[0])
    assert [m.type for m in engine.process(caption(P, T0))] == [AlarmType.new]
    now[0] = T0 + 29
    assert engine.tick() == []
    now[0] = T0 + 31
    (end,) = engine.tick()
    assert end.type == AlarmType.end and end.end_time == T0
    assert engine.tick() == [] and engine.active_alarms() == []


def test_end_all_ends_every_alarm_in_progress():
    engine = RuleEngine([rule(clear_after="1h")], clock=lambda: T0 + 5)
    engine.process(caption(P, T0, camera="gate"))
    engine.process(caption(P, T0, camera="yard"))
    assert sorted(a.camera_id for a in engine.active_alarms()) == ["gate", "yard"]
    assert sorted((a.type.value, a.camera_id) for a in engine.end_all()) == [("end", "gate"), ("end", "yard")]


@pytest.mark.parametrize("probability,fires", [(0.69, False), (0.7, True), (0.71, True)])
def test_a_concept_threshold_fires_at_or_above_it_and_not_below(probability, fires):
    # given "person >= 0.7", on a caption whose words name nobody
    engine = RuleEngine([rule(triggers=[{"trigger": "caption", "concept": "person >= 0.7"}])])
    alarms = new_alarms(engine, caption("a dark yard at night", T0, concepts={"person": probability, "vehicle": 0.1}))
    assert bool(alarms) is fires


@pytest.mark.parametrize("probability,fires", [(0.59, False), (0.6, True)])
def test_a_category_threshold_fires_at_or_above_it_and_not_below(probability, fires):
    # given "truck >= 0.6" (a category of the vehicle group) on a caption that names no truck
    engine = RuleEngine([rule(triggers=[{"trigger": "caption", "concept": "truck >= 0.6"}])])
    concepts = {"person": 0.01, "vehicle": max(probability, 0.8), "truck": probability, "car": 0.8}
    assert bool(new_alarms(engine, caption("cars on a road", T0, concepts=concepts))) is fires


def test_concepts_and_words_combine():
    # a vehicle named in words, and the head unsure of any person
    engine = RuleEngine([rule(triggers=[{"trigger": "caption", "any": ["@vehicle"], "concept": ["vehicle >= 0.5", "person < 0.3"]}])])
    assert new_alarms(engine, caption("a van parked in a lot", T0, concepts={"vehicle": 0.9, "person": 0.1}))
    assert not new_alarms(engine, caption("a van parked in a lot", T0 + 10, "yard", concepts={"vehicle": 0.9, "person": 0.4}))


@pytest.mark.parametrize(
    "hour,minute,zone,expected",
    [
        (23, 0, "UTC", True),
        (2, 30, "UTC", True),
        (5, 59, "UTC", True),
        (6, 0, "UTC", False),
        (12, 0, "UTC", False),
        (21, 59, "UTC", False),
        (22, 0, "UTC", True),
        # 23:00 in Paris is 22:00 UTC in November (CET = UTC+1): inside in Paris terms
        (23, 0, "Europe/Paris", True),
        # 06:30 in Paris is 05:30 UTC: outside the Paris window
        (6, 30, "Europe/Paris", False),
    ],
)
def test_schedule_across_midnight_in_rule_time_zone(hour, minute, zone, expected):
    # given a night window written in the config's time zone
    engine = RuleEngine([rule(conditions=[{"condition": "time", "after": "22:00", "before": "06:00"}])], timezone=zone)
    # when
    alarms = engine.process(caption(P, local(2026, 11, 25, hour, minute, zone)))
    # then
    assert bool(alarms) is expected


def test_condition_time_zone_overrides_the_default():
    # given the engine in UTC and a condition in New York
    cond = {"condition": "time", "after": "09:00", "before": "17:00", "timezone": "America/New_York"}
    engine = RuleEngine([rule(conditions=[cond])], timezone="UTC")
    # then 15:00 UTC = 10:00 New York is inside, 23:00 UTC = 18:00 New York is outside
    assert new_alarms(engine, caption(P, local(2026, 11, 25, 15, 0)))
    assert not new_alarms(engine, caption(P, local(2026, 11, 25, 23, 0)))


@pytest.mark.parametrize(
    "day,expected",
    [(23, True), (27, True), (28, False), (29, False)],  # Mon, Fri, Sat, Sun
)
def test_weekday_condition(day, expected):
    engine = RuleEngine([rule(conditions=[{"condition": "time", "weekday": ["mon", "tue", "wed", "thu", "fri"]}])])
    assert bool(new_alarms(engine, caption(P, local(2026, 11, day, 12, 0)))) is expected


def test_not_and_or_conditions():
    # given "outside working hours OR on Sunday"
    conditions = [{"or": [{"not": [{"condition": "time", "after": "08:00", "before": "18:00"}]}, {"condition": "time", "weekday": "sun"}]}]
    engine = RuleEngine([rule(conditions=conditions)])
    # then
    assert not new_alarms(engine, caption(P, local(2026, 11, 25, 12, 0)))  # Wednesday noon
    assert new_alarms(engine, caption(P, local(2026, 11, 25, 20, 0)))  # Wednesday evening
    engine.process(caption(N, local(2026, 11, 26, 8, 0)))  # ends it
    assert new_alarms(engine, caption(P, local(2026, 11, 29, 12, 0)))  # Sunday noon


def test_triggers_are_ored_and_keep_separate_state():
    # given a slow trigger (3 in a row) and a fast one (a climbing regex)
    triggers = [
        {"trigger": "caption", "any": ["@person"], "min_matches": 3},
        {"trigger": "caption", "regex": r"climbs?\b.*fence"},
    ]
    engine = RuleEngine([rule(triggers=triggers)])
    # then the fast one starts the alarm at 1, and the slow one keeps it alive at 2
    assert run(engine, [P, "a man climbs the fence", P, N, "a man climbs the fence"]) == [1, 4]


@pytest.mark.parametrize(
    "cameras,camera,expected",
    [
        (["gate"], "gate", True),
        (["gate"], "gate2", False),
        (["gate*"], "gate_north", True),
        (["gate*", "fence*"], "fence_east", True),
        (["*"], "anything", True),
        (["door"], "gate", False),
    ],
)
def test_camera_globs(cameras, camera, expected):
    engine = RuleEngine([rule(cameras=cameras)])
    assert bool(new_alarms(engine, caption(P, T0, camera))) is expected


def test_known_cameras_limit_globs():
    engine = RuleEngine([rule(cameras=["*"])], known_cameras=["gate"])
    assert new_alarms(engine, caption(P, T0, "gate"))
    assert not new_alarms(engine, caption(P, T0, "unknown"))


def test_disabled_rule_never_fires():
    assert run(RuleEngine([rule(enabled=False)]), [P, P]) == []


def test_alarm_fields_and_snapshot():
    # given a captioned frame in the snapshot store and a rule that wants a snapshot
    image = np.zeros((48, 64, 3), np.uint8)
    image[:, :32] = (0, 0, 255)
    store = SnapshotStore()
    store.put(Frame(camera_id="gate", frame_id=7, captured_at=T0 + 0.5, t_mono=1.0, image=image))
    engine = RuleEngine([rule(id="night_gate", severity="detection", snapshot=True)], clock=lambda: 1234.5, snapshots=store.jpeg)
    # when
    (alarm,) = engine.process(caption(P, T0 + 0.5, concepts={"person": 0.9}, frame_id=7))
    # then
    assert alarm.alarm_id == f"night_gate-gate-{round((T0 + 0.5) * 1000)}" and alarm.message_id == alarm.alarm_id + ":0"
    assert (alarm.type, alarm.rule_id, alarm.camera_id, alarm.severity, alarm.caption) == (AlarmType.new, "night_gate", "gate", Severity.detection, P)
    assert (alarm.captured_at, alarm.start_time, alarm.end_time, alarm.raised_at) == (T0 + 0.5, T0 + 0.5, None, 1234.5)
    assert alarm.concepts == {"person": 0.9}
    decoded = cv2.imdecode(np.frombuffer(alarm.snapshot_jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (48, 64, 3)
    assert decoded[24, 10, 2] > 200 and decoded[24, 50, 2] < 50, "the JPEG shows the frame"


@pytest.mark.parametrize("wants_snapshot,frame_kept", [(False, True), (True, False)])
def test_no_snapshot_when_not_wanted_or_the_frame_is_gone(wants_snapshot, frame_kept):
    store = SnapshotStore(per_camera=1)
    store.put(Frame("gate", 1, T0, 0.0, np.zeros((8, 8, 3), np.uint8)))
    if not frame_kept:  # a backlog pushed frame 1 out before its alarm was raised
        store.put(Frame("gate", 2, T0, 0.0, np.zeros((8, 8, 3), np.uint8)))
    engine = RuleEngine([rule(snapshot=wants_snapshot)], snapshots=store.jpeg)
    (alarm,) = engine.process(caption(P, T0, frame_id=1))
    assert alarm.snapshot_jpeg is None


def test_replace_rules_keeps_state_of_unchanged_rules_and_ends_alarms_of_the_others():
    # given two rules with an alarm in progress each
    keep = rule(id="keep", clear_after="1h")
    change = rule(id="change", clear_after="1h")
    engine = RuleEngine([keep, change])
    assert {a.rule_id for a in engine.process(caption(P, T0))} == {"keep", "change"}
    # when the second rule is edited
    engine.replace_rules([keep, rule(id="change", clear_after="1h", severity="detection")])
    # then its alarm ends, the unchanged rule's goes on, and the edited one starts fresh
    messages = engine.process(caption(P, T0 + 1))
    assert [(m.rule_id, m.type.value) for m in messages] == [("change", "end"), ("change", "new")]


def test_explain_says_why():
    # given
    r = rule(
        triggers=[{"trigger": "caption", "any": ["@person"], "min_matches": 2, "window": 3}],
        conditions=[{"condition": "time", "after": "22:00", "before": "06:00"}],
    )
    # when
    fires_day, why_day = explain(r, "gate", "a man climbs a fence", local(2026, 11, 25, 12, 0))
    fires_night, why_night = explain(r, "gate", "a man climbs a fence", local(2026, 11, 25, 23, 0))
    # then
    assert not fires_day and any("outside 22:00-06:00" in line for line in why_day)
    assert not fires_night and "trigger 1 debounce: needs 2 matching captions in the last 3" in why_night
    assert explain(r, "gate", "a cat", T0)[1][0].startswith("trigger 1: no match")


def test_explain_reads_concepts_like_the_engine():
    r = rule(triggers=[{"trigger": "caption", "concept": "person >= 0.7"}])
    fires, why = explain(r, "gate", "a dark yard", T0, concepts={"person": 0.8})
    assert fires and why[0] == "trigger 1: matched: concept: person 0.80 >= 0.7"
    fires, why = explain(r, "gate", "a dark yard", T0, concepts={"person": 0.2})
    assert not fires and "person is 0.20, not >= 0.7" in why[0]
    assert "no person probability" in explain(r, "gate", "a dark yard", T0)[1][0]
