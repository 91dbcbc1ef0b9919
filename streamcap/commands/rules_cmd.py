"""`streamcap rules check|test`: validate rule files, and try a caption against them."""
from __future__ import annotations

import datetime as dt
import sys
import time
import zoneinfo

from streamcap.config.load import ConfigError, load_config
from streamcap.rules.engine import explain
from streamcap.rules.load import expand_paths, load_rules


def register(subparsers) -> None:
    p = subparsers.add_parser("rules", help="check rule files or test a caption against them")
    sub = p.add_subparsers(dest="rules_command", metavar="ACTION", required=True)
    check = sub.add_parser("check", help="validate rule files; exit 0 if all load, 2 if not")
    check.add_argument("files", nargs="+", help="rule files or globs")
    check.add_argument("--config", help="config file: also check that the rules' cameras exist (and use its model)")
    check.add_argument("--model", help="checkpoint whose concepts `concept:` conditions may use (default: the config's, else the shipped model)")
    check.set_defaults(func=run_check)
    test = sub.add_parser("test", help="which rules a caption would fire, and why (exit 0 if any fires, 1 if none)")
    test.add_argument("files", nargs="+", help="rule files or globs")
    test.add_argument("--camera", required=True, help="camera id the caption comes from")
    test.add_argument("--caption", required=True, help='caption text, e.g. "a man climbs a fence"')
    test.add_argument("--at", help="capture time, ISO 8601 (2026-11-25T23:00); naive times are in --timezone. Default: now")
    test.add_argument("--timezone", help="time zone for schedules and --at (default: the config's, else UTC)")
    test.add_argument("--config", help="config file: its timezone and cameras are used")
    test.add_argument("--concepts", default="", help='concept probabilities of the caption, e.g. "person=0.92,vehicle=0.05"')
    test.set_defaults(func=run_test)


def _config_facts(path: str | None) -> tuple[list[str] | None, str, str | None]:
    """(camera ids or None, time zone, model path or None) from a config file."""
    if path is None:
        return None, "UTC", None
    config = load_config(path)
    return list(config.cameras), config.timezone, str(config.model.path) if config.model.path else None


def model_concepts(model_path: str | None) -> tuple[str, ...] | None:
    """The concepts a checkpoint's head predicts, () without a head, None if it cannot be read."""
    from streamcap.model.checkpoint import DEFAULT_MODEL, CheckpointError, load_checkpoint

    try:
        return load_checkpoint(model_path or DEFAULT_MODEL)[0].concept_names
    except CheckpointError as exc:
        print(f"warning: {exc}; concept conditions are not checked", file=sys.stderr)
        return None


def parse_concepts(text: str) -> dict[str, float]:
    concepts = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            concepts[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--concepts {part!r}: write name=probability, e.g. person=0.9") from None
        if not sep or not 0.0 <= concepts[name.strip()] <= 1.0:
            raise ValueError(f"--concepts {part!r}: write name=probability with a probability from 0 to 1")
    return concepts


def _print_problems(problems: list[str]) -> None:
    for problem in problems:
        print(problem, file=sys.stderr)


def run_check(args) -> int:
    try:
        cameras, _, model = _config_facts(args.config)
    except ConfigError as exc:
        _print_problems(exc.problems)
        return 2
    rules, errors = load_rules(args.files, cameras, model_concepts(args.model or model))
    if errors:
        _print_problems(errors)
        print(f"{len(errors)} problem(s); files with problems would be skipped", file=sys.stderr)
        return 2
    print(f"ok: {len(rules)} rules in {len(expand_paths(args.files)[0])} files")
    return 0


def parse_at(text: str | None, timezone: str) -> float:
    if text is None:
        return time.time()
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--at {text!r}: write an ISO time such as 2026-11-25T23:00") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zoneinfo.ZoneInfo(timezone))
    return moment.timestamp()


def run_test(args) -> int:
    try:
        cameras, timezone, _ = _config_facts(args.config)
    except ConfigError as exc:
        _print_problems(exc.problems)
        return 2
    timezone = args.timezone or timezone
    try:
        zoneinfo.ZoneInfo(timezone)
        at = parse_at(args.at, timezone)
        concepts = parse_concepts(args.concepts)
    except (ValueError, zoneinfo.ZoneInfoNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rules, errors = load_rules(args.files, cameras)
    if errors:
        _print_problems(errors)
        return 2
    fired = 0
    for rule in rules:
        fires, reasons = explain(rule, args.camera, args.caption, at, timezone, concepts)
        fired += fires
        print(f"{rule.id}: {'FIRES (' + rule.severity.value + ')' if fires else 'no'}")
        for reason in reasons:
            print(f"    {reason}")
    print(f"{fired} of {len(rules)} rules would fire on {args.camera!r}: {args.caption!r}")
    return 0 if fired else 1
