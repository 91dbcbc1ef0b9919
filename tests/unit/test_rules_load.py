"""Rule files: line-accurate errors, bad files skipped, example rule sets, hot reload, CLI."""
from __future__ import annotations

import logging
import os
import textwrap
from pathlib import Path

import numpy as np
import pytest

from streamcap.__main__ import main
from streamcap.config.load import load_config
from streamcap.messages import Caption, Frame
from streamcap.rules.engine import RuleEngine
from streamcap.rules.load import load_rules
from streamcap.rules.watch import RuleWatcher, build_rules
from streamcap.snapshots import SnapshotStore

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_CAMERAS = ["gate", "fence_north", "front_door", "loading_bay", "parking_east", "lobby_usb"]

GOOD = """
- id: person_at_gate
  cameras: [gate]
  triggers:
    - trigger: caption
      any: ["@person"]
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def test_every_example_rule_file_loads():
    # given every file in rules/ and the example config's cameras
    files = sorted((REPO / "rules").glob("*.yaml"))
    assert len(files) >= 5
    # when
    rules, errors = load_rules(files, EXAMPLE_CAMERAS)
    # then
    assert errors == []
    ids = {r.id for r in rules}
    assert {"intrusion_at_night", "fire_or_smoke", "person_at_door_night", "vehicle_in_no_parking_zone", "loitering",
            "vehicle_at_night"} <= ids


BAD_RULES = [
    # (rule file text, expected "line:col", fragment)
    ("- id: r\n  triggers:\n    - trigger: caption\n      regex: '(unclosed'\n", "4:7", "invalid regex '(unclosed': missing )"),
    ("- id: r\n  triggers:\n    - trigger: caption\n      regex:\n        - ok\n        - '[a-'\n", "6:11", "invalid regex '[a-'"),
    ("- id: r\n  cameras: [gate, yard]\n  triggers:\n    - trigger: caption\n      any: [dog]\n", "2:19", "unknown camera 'yard'"),
    ("- id: r\n  cameras:\n    - gate\n    - 'back*'\n  triggers:\n    - trigger: caption\n      any: [dog]\n", "4:7", "'back*' matches no configured camera"),
    ("- id: r\n  triggers:\n    - trigger: caption\n      any: [dog]\n- id: r\n  triggers:\n    - trigger: caption\n      any: [cat]\n", "5:3", "duplicate rule id 'r' (first on line 1)"),
    ("- id: r\n  triggers:\n    - trigger: caption\n      any: [dog\n", "5:1", "invalid YAML"),
    ("- id: r\n  triggers:\n    - trigger: motion\n", "3:7", "triggers[0].trigger: Input should be 'caption'"),
    ("- id: r\n  triggers:\n    - trigger: caption\n      any: [dog]\n      for: soon\n", "5:7", "'soon' is not a duration"),
    ("- id: r\n  triggers:\n    - trigger: caption\n      none: [dog]\n", "3:7", "needs at least one of any, all, phrase, regex or concept"),
    ("- id: r\n  triggers:\n    - trigger: caption\n      any: [dog]\n      min_matches: 3\n      window: 2\n", "3:7", "window (2) must be >= min_matches (3)"),
    ("- id: r\n  triggers:\n    - trigger: caption\n      any: [dog, '@pets']\n", "4:18", "unknown synonym group @pets"),
    ("- id: r\n  triggers:\n    - trigger: caption\n      any: [dog]\n  conditions:\n    - condition: sun\n", "6:7", "conditions are"),
    ("- id: r\n  triggers:\n    - trigger: caption\n      any: [dog]\n  conditions:\n    - condition: time\n      after: '25:00'\n", "7:7", "not a time of day"),
    ("- id: r\n  triggers:\n    - trigger: caption\n      any: [dog]\n  severity: panic\n", "5:3", "severity: Input should be 'alert' or 'detection'"),
    ("- id: r\n  trigers:\n    - trigger: caption\n", "1:3", "triggers: required key is missing"),
    ("- id: Bad Id\n  triggers:\n    - trigger: caption\n      any: [dog]\n", "1:3", "id: ids must be lowercase"),
    ("id: r\n", "1:1", "not a rule file"),
    ("- id: r\n  triggers:\n    - trigger: caption\n      regex: '(?<=a)b'\n", "4:7", "RE2 syntax: no lookbehind"),
    ("- id: r\n  triggers:\n    - trigger: caption\n      concept: 'person is likely'\n", "4:7", "is not a concept condition"),
    ("- id: r\n  triggers:\n    - trigger: caption\n      concept: 'person >= 1.5'\n", "4:7", "a probability is between 0 and 1"),
    ("- id: r\n  triggers:\n    - trigger: caption\n      any: [dog]\n  cooldown: .inf\n", "5:3", "a duration must be between 0 and 7 days"),
    ("- id: r\n  triggers:\n    - trigger: caption\n      any: [dog]\n      min_matches: 1000000000000000000\n", "5:7", "less than or equal to 1000"),
    ("- id: r\n  synonyms:\n    a: ['@b']\n    b: ['@a']\n  triggers:\n    - trigger: caption\n      any: ['@a']\n", "7:13", "refers to itself"),
    ("- id: r\n  triggers:\n    - trigger: caption\n      any: [dog]\n  conditions:\n    - condition: time\n      after: 22:00:00:00\n", "7:7", "not a time of day"),
    (
        "- id: r\n  triggers:\n    - trigger: caption\n      any: [dog]\n  conditions:\n    - or:\n        - not:\n"
        "            - condition: time\n              after: '7pm'\n",
        "9:15",
        "conditions[0].or[0].not[0].after: '7pm' is not a time of day",
    ),
]


@pytest.mark.parametrize("text,position,fragment", BAD_RULES)
def test_rule_errors_name_file_line_col(tmp_path, text, position, fragment):
    # given
    path = write(tmp_path, "rules.yaml", text)
    # when
    rules, errors = load_rules([path], known_cameras=["gate"])
    # then
    assert rules == [], "a file with an error is skipped"
    assert any(e.startswith(f"{path}:{position}: ") and fragment in e for e in errors), f"wanted {position} ... {fragment} in {errors}"


def test_error_messages_name_the_rule(tmp_path):
    path = write(tmp_path, "r.yaml", "- id: fire\n  triggers:\n    - trigger: caption\n      regex: '(x'\n")
    _, errors = load_rules([path])
    assert errors == [f"{path}:4:7: rule fire: triggers[0].regex: invalid regex '(x': missing ): (x"]


def test_bad_file_is_skipped_good_file_still_loads(tmp_path):
    # given
    good = write(tmp_path, "a_good.yaml", GOOD)
    bad = write(tmp_path, "b_bad.yaml", "- id: broken\n  triggers: []\n")
    # when
    rules, errors = load_rules([tmp_path / "*.yaml"], ["gate"])
    # then
    assert [r.id for r in rules] == ["person_at_gate"]
    assert len(errors) == 1 and errors[0].startswith(f"{bad}:2:3: rule broken: triggers:")
    assert good.exists()


def test_duplicate_id_across_files_skips_the_later_file(tmp_path):
    first = write(tmp_path, "a.yaml", GOOD)
    second = write(tmp_path, "b.yaml", "- id: other\n  triggers:\n    - trigger: caption\n      any: [cat]\n" + GOOD.lstrip("\n"))
    rules, errors = load_rules([first, second], ["gate"])
    assert [r.id for r in rules] == ["person_at_gate"]
    assert errors == [f"{second}:5:3: duplicate rule id 'person_at_gate' (first in {first}:1)"]


def test_pattern_matching_no_file_is_reported(tmp_path):
    rules, errors = load_rules([tmp_path / "nothing-*.yaml"])
    assert rules == [] and errors == [f"{tmp_path / 'nothing-*.yaml'}: no rule files match this pattern; fix the path or glob"]


def test_missing_file_is_reported(tmp_path):
    _, errors = load_rules([tmp_path / "gone.yaml"])
    assert errors[0] == f"{tmp_path / 'gone.yaml'}:1:1: cannot read rule file: No such file or directory"


def test_file_level_synonyms_and_mapping_form(tmp_path):
    # given a rule file with its own synonym group
    path = write(tmp_path, "r.yaml", """
        synonyms:
          barrier: [fence, gate, wall]
        rules:
          - id: climb
            triggers:
              - trigger: caption
                all: ["@person", "@barrier"]
    """)
    # when
    rules, errors = load_rules([path])
    engine = RuleEngine(rules)
    # then
    assert errors == []
    assert engine.process(Caption("gate", 1, 1.0, 1.0, "a boy sits on a wall", "m", 1.0))
    assert not engine.process(Caption("gate", 2, 2.0, 2.0, "a boy sits on a bench", "m", 2.0))


def test_mapping_form_errors_point_into_rules(tmp_path):
    path = write(tmp_path, "r.yaml", "synonyms:\n  x: [a]\nrules:\n  - id: r\n    triggers:\n      - trigger: caption\n        any: ['@y']\n")
    _, errors = load_rules([path])
    assert len(errors) == 1 and errors[0].startswith(f"{path}:7:15: rule r: triggers[0].any: unknown synonym group @y"), errors


def test_empty_file_is_an_empty_rule_set(tmp_path):
    assert load_rules([write(tmp_path, "r.yaml", "# nothing yet\n")]) == ([], [])


# --- hot reload -----------------------------------------------------------


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def touch_later(path: Path, text: str, seconds: int) -> None:
    """Rewrite `path` with a distinct mtime (file systems may keep 1 s resolution)."""
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + seconds * 1_000_000_000))


def poll_settled(watcher: RuleWatcher, clock: FakeClock) -> bool:
    """The first poll after a change only notices it; the change is read once it has settled."""
    assert watcher.poll() is False, "a change is read only once it has settled"
    clock.now += watcher.settle_s
    return watcher.poll()


def test_hot_reload_swaps_rules_on_change(tmp_path):
    # given
    path = write(tmp_path, "r.yaml", GOOD)
    rules, _ = load_rules([path], ["gate"])
    engine, clock = RuleEngine(rules, ["gate"]), FakeClock()
    watcher = RuleWatcher([str(path)], engine, ["gate"], interval_s=2.0, clock=clock)
    # when nothing changed
    clock.now = 5
    assert watcher.poll() is False
    # when the file changes but the interval has not passed
    touch_later(path, GOOD.replace("person_at_gate", "someone_at_gate"), 10)
    clock.now = 6
    assert watcher.poll() is False
    # then after the interval, once it has settled
    clock.now = 7.5
    assert poll_settled(watcher, clock) is True
    assert [r.id for r in engine.rules] == ["someone_at_gate"]


def test_bad_reload_keeps_old_rules_and_logs_one_line(tmp_path, caplog):
    # given good rules in use
    path = write(tmp_path, "r.yaml", GOOD)
    rules, _ = load_rules([path], ["gate"])
    engine, clock = RuleEngine(rules, ["gate"]), FakeClock()
    watcher = RuleWatcher([str(path)], engine, ["gate"], interval_s=2.0, clock=clock)
    # when the file is saved with a broken regex
    touch_later(path, GOOD + "      regex: '(oops'\n", 10)
    clock.now = 3
    with caplog.at_level(logging.WARNING, logger="streamcap.rules"):
        reloaded = poll_settled(watcher, clock)
        clock.now = 6
        watcher.poll()  # the same bad state is not reported again
    # then
    assert reloaded is False
    assert [r.id for r in engine.rules] == ["person_at_gate"]
    assert engine.process(Caption("gate", 1, 1.0, 1.0, "a man at the gate", "m", 1.0)), "old rules still run"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert f"keep their previous rules (1 kept): {path}:6:7: rule person_at_gate: triggers[0].regex: invalid regex" in warnings[0]
    # when it is fixed again
    touch_later(path, GOOD.replace("@person", "dog"), 20)
    clock.now = 9
    assert poll_settled(watcher, clock) is True
    assert engine.rules[0].triggers[0].any == ["dog"]


def test_a_broken_file_does_not_block_reloads_of_the_others(tmp_path):
    # given two files in force
    a = write(tmp_path, "a.yaml", GOOD)
    b = write(tmp_path, "b.yaml", GOOD.replace("person_at_gate", "dog_at_gate").replace("@person", "dog"))
    pattern = str(tmp_path / "*.yaml")
    engine, clock = RuleEngine(load_rules([pattern])[0]), FakeClock()
    watcher = RuleWatcher([pattern], engine, clock=clock)
    # when b is broken and stays broken, then a is edited
    touch_later(b, "- id: dog_at_gate\n  triggers: [\n", 10)
    clock.now = 3
    assert poll_settled(watcher, clock) is False
    touch_later(a, GOOD.replace("@person", "@vehicle"), 20)
    clock.now = 6
    # then a's edit goes in and b keeps its last good version
    assert poll_settled(watcher, clock) is True
    assert [(r.id, r.triggers[0].any) for r in engine.rules] == [("person_at_gate", ["@vehicle"]), ("dog_at_gate", ["dog"])]


def test_reload_sees_new_files_matching_a_glob(tmp_path):
    write(tmp_path, "a.yaml", GOOD)
    pattern = str(tmp_path / "*.yaml")
    engine, clock = RuleEngine(load_rules([pattern])[0]), FakeClock()
    watcher = RuleWatcher([pattern], engine, clock=clock)
    write(tmp_path, "b.yaml", GOOD.replace("person_at_gate", "second"))
    clock.now = 10
    assert poll_settled(watcher, clock) is True
    assert [r.id for r in engine.rules] == ["person_at_gate", "second"]


# --- CLI ------------------------------------------------------------------


def test_cli_rules_check_examples_ok(capsys, monkeypatch):
    monkeypatch.setenv("CAMERA_PASSWORD", "x")
    monkeypatch.setenv("MQTT_PASSWORD", "y")
    code = main(["rules", "check", str(REPO / "rules" / "*.yaml"), "--config", str(REPO / "deploy" / "streamcap.example.yaml")])
    out = capsys.readouterr()
    assert code == 0, out.err
    files = len(list((REPO / "rules").glob("*.yaml")))
    assert out.out.startswith("ok: ") and f"in {files} files" in out.out


def test_cli_rules_check_errors_exit_2(tmp_path, capsys):
    path = write(tmp_path, "r.yaml", "- id: r\n  triggers:\n    - trigger: caption\n      regex: '(x'\n")
    assert main(["rules", "check", str(path)]) == 2
    assert f"{path}:4:7: rule r: triggers[0].regex: invalid regex" in capsys.readouterr().err


def test_cli_rules_test_explains(capsys):
    # when a person climbs a fence at 23:00 Paris time
    code = main([
        "rules", "test", str(REPO / "rules" / "intrusion_at_night.yaml"), "--camera", "gate",
        "--caption", "a man climbs a fence", "--at", "2026-11-25T23:00", "--timezone", "Europe/Paris",
    ])
    out = capsys.readouterr().out
    # then the regex trigger fires immediately, the person trigger would need debounce
    assert code == 0
    assert "intrusion_at_night: FIRES (alert)" in out
    assert "trigger 1 debounce: needs 2 matching captions in the last 3" in out
    assert "time: Wed 23:00 Europe/Paris is within 22:00-06:00" in out


def test_cli_rules_test_outside_schedule_exit_1(capsys):
    code = main([
        "rules", "test", str(REPO / "rules" / "intrusion_at_night.yaml"), "--camera", "gate",
        "--caption", "a man climbs a fence", "--at", "2026-11-25T12:00",
    ])
    out = capsys.readouterr().out
    assert code == 1
    assert "intrusion_at_night: no" in out and "outside 22:00-06:00" in out


def test_build_rules_from_config(tmp_path, caplog):
    # given a config with one good and one bad rule file, and a camera without snapshots
    write(tmp_path, "good.yaml", GOOD)
    write(tmp_path, "bad.yaml", "- id: x\n  cameras: [nowhere]\n  triggers:\n    - trigger: caption\n      any: [dog]\n")
    config = load_config(write(tmp_path, "c.yml", "timezone: Europe/Paris\ncameras:\n  gate:\n    url: 0\n    snapshot: false\nrules:\n  paths: ['*.yaml']\n"), env={})
    # when
    with caplog.at_level(logging.INFO, logger="streamcap.rules"):
        engine, watcher = build_rules(config)
    # then
    assert [r.id for r in engine.rules] == ["person_at_gate"] and engine.timezone == "Europe/Paris"
    assert watcher is not None and watcher.paths == [str(tmp_path / "*.yaml")]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "bad.yaml:2:13: rule x: cameras: unknown camera 'nowhere'" in errors[0]
    store = SnapshotStore()
    store.put(Frame("gate", 1, 1.0, 1.0, np.zeros((8, 8, 3), np.uint8)))
    engine.snapshots = store.jpeg
    (alarm,) = engine.process(Caption("gate", 1, 1.0, 1.0, "a man", "m", 1.0))
    assert alarm.snapshot_jpeg is None, "camera config says snapshot: false"


def test_unquoted_times_of_day_are_understood(tmp_path):
    # given YAML 1.1 reads an unquoted 22:00 as the integer 1320
    path = write(tmp_path, "r.yaml", GOOD + "  conditions:\n    - condition: time\n      after: 22:00\n      before: 06:00\n")
    # when
    rules, errors = load_rules([path])
    # then
    assert errors == []
    assert (f"{rules[0].conditions[0].after:%H:%M}", f"{rules[0].conditions[0].before:%H:%M}") == ("22:00", "06:00")


CONCEPT_RULE = "- id: r\n  triggers:\n    - trigger: caption\n      concept: ['person >= 0.7', 'smoke > 0.5']\n"


def test_a_concept_the_model_has_no_head_for_is_an_error_naming_the_ones_it_has(tmp_path):
    path = write(tmp_path, "c.yaml", CONCEPT_RULE)
    rules, errors = load_rules([path], known_concepts=("person", "vehicle", "animal", "fire"))
    assert rules == []
    assert errors == [f"{path}:4:34: rule r: triggers[0].concept: the model has no 'smoke' concept (it has person, vehicle, animal, fire)"]


def test_a_category_rule_loads_on_a_model_with_categories_and_is_an_error_on_one_without(tmp_path):
    path = write(tmp_path, "c.yaml", "- id: r\n  triggers:\n    - trigger: caption\n      concept: 'traffic_light >= 0.6'\n")
    rules, errors = load_rules([path], known_concepts=("person", "vehicle", "car", "traffic_light"))
    assert errors == [] and str(rules[0].triggers[0].concept[0]) == "traffic_light >= 0.6"
    _, errors = load_rules([path], known_concepts=("person", "vehicle", "animal", "fire"))  # a model of groups only
    assert errors == [f"{path}:4:7: rule r: triggers[0].concept: the model has no 'traffic_light' concept "
                      "(it has person, vehicle, animal, fire)"]


def test_concept_rules_with_a_model_without_a_head_say_why_they_cannot_run(tmp_path):
    path = write(tmp_path, "c.yaml", "- id: r\n  triggers:\n    - trigger: caption\n      concept: 'person >= 0.7'\n")
    _, errors = load_rules([path], known_concepts=())
    assert errors == [f"{path}:4:7: rule r: triggers[0].concept: the model in use has no concept head, so "
                      "'person >= 0.7' cannot run; use a model with concepts or match words instead"]


@pytest.mark.parametrize("path", ["/dev/zero", "/dev/null", "/proc/self"])
def test_rule_paths_that_are_not_regular_files_are_refused_at_once(path):
    _, errors = load_rules([path])
    assert errors == [f"{path}:1:1: not a regular file (a device, pipe or folder); give the path of a YAML rule file"]


def test_a_file_that_is_not_a_rule_file_is_named_without_echoing_it(tmp_path):
    # given a password file listed as a rule file by mistake
    path = write(tmp_path, "shadow", "root: $6$s3cr3tHash$xyz\nalice: $6$another$hash\n")
    unparsable = write(tmp_path, "passwd", "root:$6$s3cr3tHash$xyz:19000:0:99999:7:::\nalice: $6$another$hash\n")
    _, errors = load_rules([path, unparsable])
    assert errors[0] == f"{path}:1:1: not a rule file: expected a list of rules (- id: ...), or a mapping with `rules:` and `synonyms:`"
    assert errors[1].startswith(f"{unparsable}:") and ("invalid YAML" in errors[1] or "not a rule file" in errors[1])
    assert not any("s3cr3t" in e or "another" in e or "19000" in e for e in errors)


@pytest.mark.parametrize("text,fragment", [
    ("- id: r\n  x: " + "[" * 600 + "]" * 600 + "\n", "nested deeper than 40 levels"),
    ("- id: r\n  triggers:\n    - trigger: caption\n      any: [dog]\n  conditions:\n" + "".join(
        "    " + "  " * i + "- not:\n" for i in range(300)), "nested deeper than 40 levels"),
    ("a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefg", "bcdefgh")), "expands to more than 100000 values"),
    ("- id: r\x07\n", "control character #x07"),
    ("- id: r\n  cooldown: " + "9" * 5000 + "\n", "number with more than 30 digits"),
    (b"- id: \xff\xfe\n", "not UTF-8 text"),
])
def test_hostile_rule_files_are_one_line_errors_in_well_under_a_second(tmp_path, text, fragment):
    import time

    path = tmp_path / "hostile.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    started = time.monotonic()
    rules, errors = load_rules([path])
    assert time.monotonic() - started < 1.0
    assert rules == [] and len(errors) == 1 and errors[0].startswith(f"{path}:") and fragment in errors[0], errors


def test_a_large_rule_file_without_aliases_is_not_taken_for_an_alias_bomb(tmp_path):
    # given 10,000 rules written out plainly (about 150,000 YAML values, under the 1 MB file limit)
    path = tmp_path / "many.yaml"
    path.write_text("".join(f"- {{id: r{i:05d}, cameras: [gate], triggers: [{{trigger: caption, any: [person, w{i}]}}]}}\n"
                            for i in range(10_000)))
    # when
    rules, errors = load_rules([path], ["gate"])
    # then
    assert errors == [] and len(rules) == 10_000


def test_aliases_that_add_a_little_are_fine_and_a_bomb_is_still_refused(tmp_path):
    # given a synonym list shared by 200 rules through one alias
    shared = "synonyms:\n  intruder: &who [person, man, woman, child, burglar]\nrules:\n" + "".join(
        f"  - {{id: r{i}, triggers: [{{trigger: caption, any: *who}}]}}\n" for i in range(200))
    assert len(load_rules([write(tmp_path, "shared.yaml", shared)])[0]) == 200
    # and a bomb of 10^7 values from 80 written ones
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdef", "bcdefg"))
    rules, errors = load_rules([write(tmp_path, "bomb.yaml", bomb)])
    assert rules == [] and len(errors) == 1 and "expands to more than 100000 values through aliases" in errors[0]
