"""`streamcap history search|summary -c CONFIG`: what the cameras saw, from the box's history database.

    streamcap history search -c CONFIG "white van" --camera gate --since 12h [--concept "vehicle >= 0.7"] [--json]
    streamcap history summary -c CONFIG --camera gate --since 24h [--json]

Reads the database under the config's `history.path` (read-only, beside a
running streamcap). Times print in the config's time zone; `--json` prints one
JSON document (search: a list of results; summary: the camera, its segments,
its alarms and alarms per rule), each with camera, start, end and caption.
A problem is one line on stderr and exit 2.
"""
from __future__ import annotations

import json
import sys
import time
import zoneinfo
from datetime import datetime

from streamcap.config.load import ConfigError, load_config


def register(subparsers) -> None:
    p = subparsers.add_parser("history", help="search or summarise what the cameras saw (the box's caption history)")
    sub = p.add_subparsers(dest="history_command", metavar="ACTION", required=True)
    search = sub.add_parser("search", help="segments whose captions match TEXT, newest first")
    search.add_argument("text", nargs="?", default="", help='words to find, e.g. "white van"; a group name (person, '
                        "vehicle, animal, fire) finds any of its words")
    search.add_argument("--concept", action="append", default=[], metavar="COND",
                        help='keep segments whose concept probability holds, e.g. "vehicle >= 0.7" (repeatable)')
    search.add_argument("--limit", type=int, default=50, help="most results (default 50)")
    summary = sub.add_parser("summary", help="one camera's timeline: its segments and alarms per rule")
    for action, default_since in ((search, None), (summary, "24h")):
        action.add_argument("-c", "--config", required=True, help="the box's config YAML (its history.path is read)")
        action.add_argument("--camera", required=action is summary, help="only this camera")
        action.add_argument("--since", default=default_since, help="a span back from now (12h, 30m, 7d) or a time "
                            f"(2026-11-25T22:00){'; default 24h' if default_since else ''}")
        action.add_argument("--until", help="end of the window, same forms as --since (default: now)")
        action.add_argument("--json", action="store_true", help="one JSON document instead of text")
    search.set_defaults(func=run_search)
    summary.set_defaults(func=run_summary)


def _open(args):
    """(History, time zone) for the config, or None after printing why."""
    from streamcap.history.query import History

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None
    if not config.history.enabled:
        print(f"{args.config}: history.enabled is false: this box keeps no history", file=sys.stderr)
        return None
    return History(config.history.path), zoneinfo.ZoneInfo(config.timezone)


def run_search(args) -> int:
    from streamcap.history.query import QueryError, parse_concept, parse_time

    opened = _open(args)
    if opened is None:
        return 2
    history, zone = opened
    now = time.time()
    try:
        results = history.search(args.text, camera=args.camera,
                                 since=parse_time(args.since, now, "--since") if args.since else None,
                                 until=parse_time(args.until, now, "--until") if args.until else None,
                                 concepts=[parse_concept(c) for c in args.concept], limit=args.limit)
    except QueryError as exc:
        print(f"streamcap history: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(results, ensure_ascii=False, indent=1))
        return 0
    if not results:
        print("no segment matches")
    width = max((len(r["camera"]) for r in results), default=0)
    for r in results:
        print(f"{r['camera']:<{width}}  {_span(r, zone, with_date=True)}  {r['caption']}")
    return 0


def run_summary(args) -> int:
    from streamcap.history.query import QueryError, parse_time

    opened = _open(args)
    if opened is None:
        return 2
    history, zone = opened
    now = time.time()
    try:
        since = parse_time(args.since, now, "--since")
        until = parse_time(args.until, now, "--until") if args.until else now
        doc = history.summary(args.camera, since, until)
    except QueryError as exc:
        print(f"streamcap history: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(doc, ensure_ascii=False, indent=1))
        return 0
    segments, alarms = doc["segments"], doc["alarms"]
    shown = f" (the {len(segments)} longest shown)" if len(segments) < doc["segments_total"] else ""
    print(f"{args.camera} from {_local(since, zone):%Y-%m-%d %H:%M} to {_local(until, zone):%Y-%m-%d %H:%M} ({zone.key}): "
          f"{_count(doc['segments_total'], 'segment')}{shown}, {_count(len(alarms), 'alarm')}")
    day = None
    for s in segments:
        start = _parse(s["start"], zone)
        if start.date() != day:
            day = start.date()
            print(f"{day:%A %d %B %Y}")
        print(f"  {_span(s, zone, with_date=False)}  {s['caption']}")
    if alarms:
        print("alarms:")
        for a in alarms:
            end = f"{_parse(a['end'], zone):%H:%M:%S}" if a["end"] else "still on"
            print(f"  {_parse(a['start'], zone):%Y-%m-%d %H:%M:%S} to {end}  {a['title']} ({a['severity']})  {a['caption']}")
        print("alarms per rule: " + ", ".join(f"{rule} {n}" for rule, n in sorted(doc["alarms_per_rule"].items())))
    return 0


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _local(ts: float, zone) -> datetime:
    return datetime.fromtimestamp(ts, zone)


def _parse(iso: str, zone) -> datetime:
    return datetime.fromisoformat(iso).astimezone(zone)


def _span(doc: dict, zone, with_date: bool) -> str:
    start, end = _parse(doc["start"], zone), _parse(doc["end"], zone)
    first = f"{start:%Y-%m-%d %H:%M:%S}" if with_date else f"{start:%H:%M:%S}"
    if doc["count"] == 1:
        return f"{first} (1 caption)"
    seconds = (end - start).total_seconds()
    length = f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"
    last = f"{end:%H:%M:%S}" if end.date() == start.date() else f"{end:%Y-%m-%d %H:%M:%S}"
    return f"{first} to {last} ({length}, {doc['count']} captions)"
