"""RuleEngine: debounce (N in M, for:), cooldown, schedules and time zones, cameras, snapshots.

All times are explicit `captured_at` values; nothing sleeps.
"""
from __future__ import annotations

import datetime as dt
import zoneinfo

import cv2
import numpy as np
import pytest

from streamcap.messages import Caption, Frame, Severity
from streamcap.rules.engine import RuleEngine, explain
from streamcap.rules.schema import Rule

T0 = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.timezone.utc).timestamp()  # a Wednesday


def rule(**fields) -> Rule:
    fields.setdefault("id", "r")
    fields.setdefault("triggers", [{"trigger": "caption", "any": ["@person"]}])
    fields.setdefault("cooldown", 0)
    return Rule.model_validate(fields)


def caption(text: str, at: float, camera: str = "gate", frame: Frame | None = None) -> Caption:
    return Caption(camera_id=camera, frame_id=int(at), captured_at=at, t_mono=at, text=text, model="test", captioned_mono=at, frame=frame)


def run(engine: RuleEngine, texts: list[str], start: float = T0, step_s: float = 1.0, camera: str = "gate") -> list[int]:
    """Indices of the captions that raised an alarm."""
    fired = []
    for i, text in enumerate(texts):
        if engine.process(caption(text, start + i * step_s, camera)):
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


def test_cooldown_suppresses_repeats_per_camera():
    # given
    engine = RuleEngine([rule(cooldown="30s")])
    # when
    fired_gate = run(engine, [P] * 70, step_s=1.0)
    fired_yard = run(engine, [P] * 3, start=T0 + 5, camera="yard")
    # then the same rule alarms again only 30 s later, and other cameras are independent
    assert fired_gate == [0, 30, 60]
    assert fired_yard == [0]


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
    assert engine.process(caption(P, local(2026, 11, 25, 15, 0)))
    assert not engine.process(caption(P, local(2026, 11, 25, 23, 0)))


@pytest.mark.parametrize(
    "day,expected",
    [(23, True), (27, True), (28, False), (29, False)],  # Mon, Fri, Sat, Sun
)
def test_weekday_condition(day, expected):
    engine = RuleEngine([rule(conditions=[{"condition": "time", "weekday": ["mon", "tue", "wed", "thu", "fri"]}])])
    assert bool(engine.process(caption(P, local(2026, 11, day, 12, 0)))) is expected


def test_not_and_or_conditions():
    # given "outside working hours OR on Sunday"
    conditions = [{"or": [{"not": [{"condition": "time", "after": "08:00", "before": "18:00"}]}, {"condition": "time", "weekday": "sun"}]}]
    engine = RuleEngine([rule(conditions=conditions)])
    # then
    assert engine.process(caption(P, local(2026, 11, 25, 20, 0)))  # Wednesday evening
    assert not engine.process(caption(P, local(2026, 11, 25, 12, 0)))  # Wednesday noon
    assert engine.process(caption(P, local(2026, 11, 29, 12, 0)))  # Sunday noon


def test_triggers_are_ored_and_keep_separate_state():
    # given a slow trigger (3 in a row) and a fast one (a climbing regex)
    triggers = [
        {"trigger": "caption", "any": ["@person"], "min_matches": 3},
        {"trigger": "caption", "regex": r"climbs?\b.*fence"},
    ]
    engine = RuleEngine([rule(triggers=triggers)])
    # then
    assert run(engine, [P, "a man climbs the fence", P]) == [1, 2]


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
    assert bool(engine.process(caption(P, T0, camera))) is expected


def test_known_cameras_limit_globs():
    engine = RuleEngine([rule(cameras=["*"])], known_cameras=["gate"])
    assert engine.process(caption(P, T0, "gate"))
    assert not engine.process(caption(P, T0, "unknown"))


def test_disabled_rule_never_fires():
    assert run(RuleEngine([rule(enabled=False)]), [P, P]) == []


def test_alarm_fields_and_snapshot():
    # given a frame and a rule that wants a snapshot
    image = np.zeros((48, 64, 3), np.uint8)
    image[:, :32] = (0, 0, 255)
    frame = Frame(camera_id="gate", frame_id=7, captured_at=T0 + 0.5, t_mono=1.0, image=image)
    engine = RuleEngine([rule(id="night_gate", severity="detection", snapshot=True)], clock=lambda: 1234.5)
    # when
    (alarm,) = engine.process(caption(P, T0 + 0.5, frame=frame))
    # then
    assert alarm.alarm_id == f"night_gate-gate-{round((T0 + 0.5) * 1000)}"
    assert (alarm.rule_id, alarm.camera_id, alarm.severity, alarm.caption) == ("night_gate", "gate", Severity.detection, P)
    assert (alarm.captured_at, alarm.raised_at) == (T0 + 0.5, 1234.5)
    decoded = cv2.imdecode(np.frombuffer(alarm.snapshot_jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (48, 64, 3)
    assert decoded[24, 10, 2] > 200 and decoded[24, 50, 2] < 50, "the JPEG shows the frame"


@pytest.mark.parametrize("wants_snapshot,with_frame", [(False, True), (True, False)])
def test_no_snapshot_when_not_wanted_or_no_frame(wants_snapshot, with_frame):
    frame = Frame("gate", 1, T0, 0.0, np.zeros((8, 8, 3), np.uint8)) if with_frame else None
    engine = RuleEngine([rule(snapshot=wants_snapshot)])
    (alarm,) = engine.process(caption(P, T0, frame=frame))
    assert alarm.snapshot_jpeg is None


def test_replace_rules_keeps_state_of_unchanged_rules():
    # given a rule in cooldown and a second rule that will change
    keep = rule(id="keep", cooldown="1h")
    change = rule(id="change", cooldown="1h")
    engine = RuleEngine([keep, change])
    assert {a.rule_id for a in engine.process(caption(P, T0))} == {"keep", "change"}
    # when the second rule is edited
    engine.replace_rules([keep, rule(id="change", cooldown="1h", severity="detection")])
    # then the unchanged rule is still cooling down, the edited one starts fresh
    assert [a.rule_id for a in engine.process(caption(P, T0 + 1))] == ["change"]


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
