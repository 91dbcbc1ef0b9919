"""The `streamcap` command line: one subcommand per module in streamcap/commands/."""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Each module defines register(subparsers) and sets `func` on its parsers.
COMMAND_MODULES = [
    "streamcap.commands.caption",
    "streamcap.commands.train",
    "streamcap.commands.evaluate",
    "streamcap.commands.pack",
    "streamcap.commands.run",
    "streamcap.commands.config_cmd",
    "streamcap.commands.rules_cmd",
    "streamcap.commands.export",
    "streamcap.commands.build_engine",
    "streamcap.commands.ha",
    "streamcap.commands.history_cmd",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamcap", description="Live CCTV captioning: cameras in, captions and alarms out.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
