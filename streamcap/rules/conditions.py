"""Rule conditions, evaluated at the caption's capture time (not at processing time).

A delayed caption is judged by when its frame was taken, so a backlog after a
reconnect cannot move an event in or out of a schedule.
"""
from __future__ import annotations

import datetime as dt
import functools
import zoneinfo

from streamcap.rules.schema import AndCondition, Condition, NotCondition, OrCondition, TimeCondition, Weekday


@functools.lru_cache(maxsize=64)
def _zone(name: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(name)


def local_time(at: float, timezone: str) -> dt.datetime:
    return dt.datetime.fromtimestamp(at, _zone(timezone))


def in_window(t: dt.time, after: dt.time | None, before: dt.time | None) -> bool:
    """after <= t < before; when after > before the window wraps past midnight."""
    if after is not None and before is not None:
        if after < before:
            return after <= t < before
        return t >= after or t < before
    if after is not None:
        return t >= after
    if before is not None:
        return t < before
    return True


def _time(cond: TimeCondition, at: float, default_tz: str) -> tuple[bool, str]:
    zone = cond.timezone or default_tz
    local = local_time(at, zone)
    stamp = f"{local:%a %H:%M} {zone}"
    if cond.weekday and Weekday(local.strftime("%a").lower()) not in cond.weekday:
        return False, f"time: {stamp} is not on {', '.join(d.value for d in cond.weekday)}"
    if not in_window(local.time().replace(tzinfo=None), cond.after, cond.before):
        return False, f"time: {stamp} is outside {_span(cond)}"
    return True, f"time: {stamp} is within {_span(cond) if cond.after or cond.before else 'the days'}"


def _span(cond: TimeCondition) -> str:
    after = f"{cond.after:%H:%M}" if cond.after else "00:00"
    before = f"{cond.before:%H:%M}" if cond.before else "24:00"
    return f"{after}-{before}"


def check(cond: Condition, at: float, default_tz: str) -> tuple[bool, str]:
    """(holds, why) for one condition at unix time `at`."""
    if isinstance(cond, TimeCondition):
        return _time(cond, at, default_tz)
    if isinstance(cond, OrCondition):
        results = [check(c, at, default_tz) for c in cond.any_of]
        ok = any(r[0] for r in results)
        return ok, f"or: {'; '.join(r[1] for r in results if r[0] == ok)}"
    if isinstance(cond, AndCondition):
        return check_all(cond.all_of, at, default_tz)
    if isinstance(cond, NotCondition):
        results = [check(c, at, default_tz) for c in cond.none_of]
        held = [r[1] for r in results if r[0]]
        return (False, f"not: {'; '.join(held)}") if held else (True, "not: none of the conditions hold")
    raise TypeError(f"unknown condition {type(cond).__name__}")


def check_all(conditions: list[Condition], at: float, default_tz: str) -> tuple[bool, str]:
    """(all hold, why): the first failing condition's reason, or every reason when all hold."""
    reasons = []
    for cond in conditions:
        ok, why = check(cond, at, default_tz)
        if not ok:
            return False, why
        reasons.append(why)
    return True, "; ".join(reasons) or "no conditions"
