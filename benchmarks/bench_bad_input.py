"""Hostile config and rule files: every one a file:line error, fast, never a traceback or a hang.

    .venv/bin/python benchmarks/bench_bad_input.py [--files 1200] [--seed 1]

Generates config files and rule files from valid ones by mutation (wrong
types, unknown keys, huge, negative, infinite and NaN numbers, invalid and
catastrophic regexes, deep nesting, YAML alias bombs, binary and non-UTF-8
bytes, control characters, empty files, unset ${VARS}, duplicate keys, very
long strings) and loads each with the loaders `streamcap run`, `config
check` and `rules check` use. Counts, per kind of file: tracebacks (any
exception other than the loaders' own error lists), hangs (over 1 s), error
lines that do not start with `file:line:col:`, the slowest file, and valid
files wrongly refused. Exit 1 if any traceback, hang or unplaced error.
"""
from __future__ import annotations

import argparse
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

from streamcap.config.load import ConfigError, load_config
from streamcap.rules.load import load_rules

VALID_CONFIG = """\
device_id: box1
timezone: Europe/Paris
cameras:
  gate:
    url: rtsp://user:${CAM_PASSWORD}@10.0.0.5:554/stream1
    caption_interval_s: 2
    scene_change_threshold: 0.02
  lot:
    url: /var/video/lot.mp4
    loop: true
model:
  backend: auto
  max_batch: 8
  max_wait_ms: 50
rules:
  paths: [rules/*.yaml]
mqtt:
  host: broker.lan
  port: 1883
  username: streamcap
  password: ${MQTT_PASSWORD}
  spool_dir: /var/lib/streamcap/spool
  spool_max_messages: 10000
http:
  enabled: true
  port: 9108
"""

VALID_RULES = """\
- id: intrusion_at_night
  alias: Person at the gate at night
  cameras: ["gate*"]
  triggers:
    - trigger: caption
      any: ["@person"]
      min_matches: 2
      window: 3
    - trigger: caption
      regex: '\\bclimb(s|ing)?\\b.*\\bfence'
    - trigger: caption
      concept: "person >= 0.7"
  conditions:
    - condition: time
      after: "22:00"
      before: "06:00"
  cooldown: 5m
  clear_after: 30s
  severity: alert
"""

BAD_VALUES = [
    ".inf", "-.inf", ".nan", "1e309", "-1", "0", "99999999999999999999999", "1e18", str(2 ** 63), "9" * 5000,
    "'22:00:00:00'", "[]", "{}", "null", "true", "'x' ", "!!binary aGVsbG8=", "*undefined", "&a", "'${UNSET_VAR}'",
    "'\\u0000'", "' '", "'" + "a" * 100_000 + "'", "[1, 2, 3]", "{a: 1}", "'10 parsecs'", "'-5s'", "'1h-30m'",
]
BAD_REGEXES = [
    r"'^(\w+\s?)*$'", r"'(a+)+$'", r"'(a|aa)+$'", "'(unclosed'", "'[a-'", r"'(?<=x)y'", r"'\1'", "'*'", "'" + "(" * 500 + "'",
    r"'(?P<n>a)(?P=n)'", "'" + "a?" * 200 + "a" * 200 + "'",
]


def _lines(text: str) -> list[str]:
    return text.splitlines()


def mutate(text: str, rng: random.Random, kind: str) -> bytes:
    lines = _lines(text)
    choice = rng.randrange(14)
    if choice == 0:  # a value replaced by a hostile one
        candidates = [i for i, line in enumerate(lines) if ": " in line and not line.rstrip().endswith(":")]
        i = rng.choice(candidates)
        key = lines[i].split(": ", 1)[0]
        lines[i] = f"{key}: {rng.choice(BAD_VALUES)}"
    elif choice == 1:  # an unknown key
        i = rng.randrange(len(lines))
        indent = len(lines[i]) - len(lines[i].lstrip())
        lines.insert(i, " " * indent + rng.choice(["colour", "fps", "triggerz", "passwd", "x" * 300]) + ": 1")
    elif choice == 2 and kind == "rules":  # a hostile regex
        lines = [line if "regex:" not in line else line.split("regex:")[0] + "regex: " + rng.choice(BAD_REGEXES) for line in lines]
    elif choice == 3:  # deep nesting
        depth = rng.choice([50, 500, 1200])
        lines.append("deep: " + "[" * depth + "]" * depth)
    elif choice == 4:  # an alias bomb
        lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"] + [f"{c}: &{c} [{', '.join(['*' + p] * 10)}]" for p, c in zip("abcdefg", "bcdefgh")] + lines
    elif choice == 5:  # binary
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4000)))
    elif choice == 6:  # not UTF-8 in the middle
        data = text.encode()
        cut = rng.randrange(len(data))
        return data[:cut] + b"\xff\xfe\xc3" + data[cut:]
    elif choice == 7:  # a control character
        i = rng.randrange(len(lines))
        lines[i] = lines[i] + rng.choice(["\x00", "\x07", "\x1b[31m", "\x7f", "\ufeff"])
    elif choice == 8:  # empty or whitespace
        return rng.choice([b"", b"\n\n", b"   ", b"---\n", b"...\n"])
    elif choice == 9:  # a duplicate key
        i = rng.choice([i for i, line in enumerate(lines) if ":" in line])
        lines.insert(i, lines[i])
    elif choice == 10:  # truncated
        return text.encode()[: rng.randrange(len(text))]
    elif choice == 11 and kind == "rules":  # conditions nested deep
        depth = rng.choice([20, 100, 500])
        lines += ["  conditions:"] + ["    " + "  " * d + "- not:" for d in range(depth)] + ["    " + "  " * depth + "- condition: time"]
    elif choice == 12:  # the wrong top-level shape
        return rng.choice([b"- 1\n- 2\n", b"just a string\n", b"42\n", b"[[[]]]\n", b"{rules: 5}\n", b"!!python/object:os.system ls\n"])
    else:  # a wrong type for a whole section
        i = rng.choice([i for i, line in enumerate(lines) if line and not line.startswith(" ") and line.endswith(":")] or [0])
        lines[i] = lines[i].rstrip(":") + ": " + rng.choice(["5", "[]", "'text'", "null"])
    return "\n".join(lines).encode("utf-8", "surrogatepass")


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang


def check(path: Path, kind: str) -> tuple[str, float, list[str]]:
    """(outcome, seconds, problems): outcome is ok | errors | traceback:<type> | hang."""
    signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, 5.0)
    started = time.perf_counter()
    try:
        if kind == "config":
            try:
                load_config(path, env={"CAM_PASSWORD": "pw", "MQTT_PASSWORD": "pw"})
                problems = []
            except ConfigError as exc:
                problems = exc.problems
        else:
            _, problems = load_rules([path], known_cameras=["gate", "lot"], known_concepts=("person", "vehicle", "animal", "fire"))
        outcome = "errors" if problems else "ok"
    except Hang:
        return "hang", time.perf_counter() - started, []
    except Exception as exc:  # noqa: BLE001 - exactly what we count
        return f"traceback:{type(exc).__name__}", time.perf_counter() - started, []
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    seconds = time.perf_counter() - started
    return ("hang" if seconds > 1.0 else outcome), seconds, problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=1200)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="bench-bad-input-"))
    totals = {}
    failures = 0
    for kind, valid in (("config", VALID_CONFIG), ("rules", VALID_RULES)):
        for name, text in (("valid", valid),):
            path = workdir / f"{kind}-{name}.yaml"
            path.write_text(text)
            outcome, _, problems = check(path, kind)
            if outcome != "ok":
                print(f"valid {kind} file refused: {outcome} {problems[:2]}")
                failures += 1
        counts = {"files": 0, "errors": 0, "ok": 0, "tracebacks": 0, "hangs": 0, "unplaced": 0, "slowest": 0.0}
        examples = []
        for i in range(args.files // 2):
            path = workdir / f"{kind}-{i:05d}.yaml"
            path.write_bytes(mutate(valid, rng, kind))
            outcome, seconds, problems = check(path, kind)
            counts["files"] += 1
            counts["slowest"] = max(counts["slowest"], seconds)
            if outcome.startswith("traceback"):
                counts["tracebacks"] += 1
                examples.append(f"{path}: {outcome}")
            elif outcome == "hang":
                counts["hangs"] += 1
                examples.append(f"{path}: hang ({seconds:.1f} s)")
            else:
                counts[outcome] += 1
                unplaced = [p for p in problems if not p.startswith(f"{path}:") or not p.split(":", 3)[1].isdigit()]
                if unplaced:
                    counts["unplaced"] += 1
                    examples.append(f"{path}: unplaced error {unplaced[0][:120]!r}")
        totals[kind] = counts
        failures += counts["tracebacks"] + counts["hangs"] + counts["unplaced"]
        for example in examples[:10]:
            print("  ", example)
    print(f"\n{args.files} generated files (seed {args.seed}), each loaded by the loader `streamcap run` uses")
    print("| kind | files | refused with file:line errors | accepted | tracebacks | hangs (>1 s) | errors without file:line | slowest |")
    print("|---|---|---|---|---|---|---|---|")
    for kind, c in totals.items():
        print(f"| {kind} | {c['files']} | {c['errors']} | {c['ok']} | {c['tracebacks']} | {c['hangs']} | {c['unplaced']} | {c['slowest'] * 1000:.0f} ms |")
    print(f"(files kept in {workdir})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
