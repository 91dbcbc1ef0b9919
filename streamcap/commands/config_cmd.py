"""`streamcap config check|show|schema`: validate a config file before deploying it."""
from __future__ import annotations

import json
import sys

from streamcap.config.load import ConfigError, load_config
from streamcap.config.schema import StreamcapConfig
from streamcap.util.redact import redact_url


def register(subparsers) -> None:
    p = subparsers.add_parser("config", help="check or show a config file")
    sub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    check = sub.add_parser("check", help="validate FILE and its rule files; exit 0 if usable, 2 if not")
    check.add_argument("file")
    check.add_argument("--no-rules", action="store_true", help="do not load the rule files it names")
    check.set_defaults(func=run_check)
    show = sub.add_parser("show", help="print FILE with every default filled in (secrets masked)")
    show.add_argument("file")
    show.set_defaults(func=run_show)
    schema = sub.add_parser("schema", help="print the JSON schema of the config, with field descriptions")
    schema.set_defaults(func=run_schema)


def run_check(args) -> int:
    try:
        config = load_config(args.file)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{args.file}: {len(exc.problems)} problem(s)", file=sys.stderr)
        return 2
    facts = [f"{len(config.cameras)} cameras ({len(config.enabled_cameras)} enabled)"]
    if not args.no_rules:
        from streamcap.rules.load import expand_paths, load_rules

        rules, errors = load_rules(config.rules.paths, list(config.cameras))
        if errors:
            for problem in errors:
                print(problem, file=sys.stderr)
            print(f"{args.file}: {len(errors)} problem(s) in the rule files", file=sys.stderr)
            return 2
        facts.append(f"{len(rules)} rules from {len(expand_paths(config.rules.paths)[0])} files")
    facts.append(f"mqtt {config.mqtt.host}:{config.mqtt.port}" if config.mqtt else "no mqtt")
    facts.append(f"backend {config.model.backend.value}")
    print(f"{args.file}: ok ({', '.join(facts)})")
    return 0


def run_show(args) -> int:
    try:
        config = load_config(args.file)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    data = config.model_dump(mode="json")  # SecretStr dumps as '**********'
    for camera in data["cameras"].values():
        camera["url"] = redact_url(camera["url"])
    print(json.dumps(data, indent=2))
    return 0


def run_schema(args) -> int:
    print(json.dumps(StreamcapConfig.model_json_schema(), indent=2))
    return 0
