"""Rule reloads change the rule set only on a complete, successful read, and never on the dispatch thread."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from streamcap.messages import AlarmType, Caption
from streamcap.rules.engine import RuleEngine
from streamcap.rules.load import load_rule_sources
from streamcap.rules.watch import RuleWatcher

GATE = "- id: person_at_gate\n  cameras: [gate]\n  triggers: [{trigger: caption, any: [person]}]\n  clear_after: 1h\n"
DOG = "- id: dog_in_yard\n  triggers: [{trigger: caption, any: [dog]}]\n"


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def rewrite(path: Path, text: str, seconds: int) -> None:
    """Write `path` with an mtime `seconds` later than now (file systems may keep 1 s resolution)."""
    path.write_text(text)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + seconds * 1_000_000_000))


def watched(folder: Path, clock: FakeClock) -> tuple[RuleEngine, RuleWatcher]:
    pattern = str(folder / "*.yaml")
    sources, errors = load_rule_sources([pattern], ["gate", "yard"])
    assert not errors
    engine = RuleEngine([s.rule for s in sources], ["gate", "yard"], clock=lambda: 1000.0)
    return engine, RuleWatcher([pattern], engine, ["gate", "yard"], interval_s=2.0, clock=clock, sources=sources)


def settle_and_poll(watcher: RuleWatcher, clock: FakeClock) -> bool:
    clock.now += watcher.interval_s
    changed = watcher.poll()
    clock.now += watcher.settle_s
    return watcher.poll() or changed


def caption(text: str, at: float, camera: str = "gate") -> Caption:
    return Caption(camera, int(at), at, at, text, "m", at)


@pytest.fixture
def folder(tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "gate.yaml").write_text(GATE)
    (rules / "yard.yaml").write_text(DOG)
    return rules


def test_a_rule_folder_briefly_missing_keeps_every_rule_and_the_alarms_in_progress(folder, caplog):
    # given two rules in force and an alarm in progress
    clock = FakeClock()
    engine, watcher = watched(folder, clock)
    assert [a.type for a in engine.process(caption("a person at the gate", 1.0))] == [AlarmType.new]
    # when the folder disappears (a deploy tool swapping it) and the watcher looks
    moved = folder.with_name("rules.old")
    folder.rename(moved)
    with caplog.at_level(logging.INFO, logger="streamcap.rules"):
        assert settle_and_poll(watcher, clock) is False
        # then both rules stay and the log says so truthfully, once
        assert [r.id for r in engine.rules] == ["person_at_gate", "dog_in_yard"]
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert warnings == [f"rules: {folder}/*.yaml: the folder {folder} does not exist; keeping the 2 rules in force "
                            "(to remove every rule, leave a rule file that says `[]`)"]
        assert settle_and_poll(watcher, clock) is False  # the same state is not reported again
        assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
        # when it comes back, nothing changes: no reload, the alarm goes on without an end
        moved.rename(folder)
        assert settle_and_poll(watcher, clock) is False
    messages = [r.getMessage() for r in caplog.records]
    assert "rules: the rule files read completely again" in messages
    assert not any(m.startswith("rules reloaded") for m in messages)
    assert [a.type for a in engine.process(caption("a person at the gate", 2.0))] == []
    assert all(a.type != AlarmType.end for a in engine.tick(3.0))


def test_an_emptied_file_keeps_its_rules_and_an_explicit_empty_list_removes_them(folder, caplog):
    # given two rules in force, and an alarm of the gate rule in progress
    clock = FakeClock()
    engine, watcher = watched(folder, clock)
    engine.process(caption("a person at the gate", 1.0))
    # when gate.yaml is truncated (the first half of truncate-then-write) and stays so
    with caplog.at_level(logging.WARNING, logger="streamcap.rules"):
        rewrite(folder / "gate.yaml", "", 10)
        assert settle_and_poll(watcher, clock) is False
    # then its rule stays, and the log names the file and how to remove rules on purpose
    assert [r.id for r in engine.rules] == ["person_at_gate", "dog_in_yard"]
    assert caplog.records[-1].getMessage() == (
        f"rules: files with errors keep their previous rules (1 kept): {folder}/gate.yaml:1:1: the file is empty "
        "(a save in progress?); write `[]` in it to remove its rules")
    assert engine.process(caption("a person at the gate", 2.0)) == []
    # when the file says `[]`, its rule goes and its alarm ends
    rewrite(folder / "gate.yaml", "[]\n", 20)
    assert settle_and_poll(watcher, clock) is True
    assert [r.id for r in engine.rules] == ["dog_in_yard"]
    assert [a.type for a in engine.process(caption("a dog", 3.0, "yard"))] == [AlarmType.end, AlarmType.new]


def test_a_half_written_file_is_read_only_once_the_writer_has_finished(folder):
    # given two rules in one file, with an alarm of the second in progress
    (folder / "yard.yaml").unlink()
    clock = FakeClock()
    rewrite(folder / "gate.yaml", GATE + DOG, 0)
    engine, watcher = watched(folder, clock)
    engine.process(caption("a dog", 1.0, "yard"))
    # when a writer has put down the first rule of a new version (valid YAML on its own) when the watcher looks
    new = GATE.replace("[person]", "[person, man]") + DOG
    rewrite(folder / "gate.yaml", new[: len(GATE) + 1], 10)
    clock.now += watcher.interval_s
    assert watcher.poll() is False
    # and finishes before the change has settled
    rewrite(folder / "gate.yaml", new, 11)
    clock.now += watcher.settle_s
    assert watcher.poll() is False, "changed since it was seen: not read yet"
    # then the finished file is read, the dog rule never left and its alarm never ended
    clock.now += watcher.settle_s
    assert watcher.poll() is True
    assert [(r.id, r.triggers[0].any) for r in engine.rules] == [("person_at_gate", ["person", "man"]), ("dog_in_yard", ["dog"])]
    assert [a.type for a in engine.process(caption("a dog", 2.0, "yard"))] == []


def test_a_file_written_to_while_it_is_read_is_read_again(folder, monkeypatch):
    import streamcap.rules.watch as watch

    clock = FakeClock()
    engine, watcher = watched(folder, clock)
    real_read = watch.read_rules
    writes = []

    def read_while_written(*args, **kwargs):
        read = real_read(*args, **kwargs)
        if not writes:  # the writer adds a rule just after we read the file
            writes.append(1)
            rewrite(folder / "yard.yaml", DOG + DOG.replace("dog_in_yard", "cat_in_yard").replace("dog", "cat"), 30)
        return read

    monkeypatch.setattr(watch, "read_rules", read_while_written)
    # when gate.yaml changes and yard.yaml is written during that read
    rewrite(folder / "gate.yaml", GATE.replace("[person]", "[man]"), 10)
    assert settle_and_poll(watcher, clock) is False, "the read that overlapped a write is thrown away"
    assert [r.id for r in engine.rules] == ["person_at_gate", "dog_in_yard"]
    # then the next look, once settled, reads both changes
    clock.now += watcher.settle_s
    assert watcher.poll() is True
    assert [r.id for r in engine.rules] == ["person_at_gate", "dog_in_yard", "cat_in_yard"]


def test_a_glob_that_matches_no_file_any_more_keeps_the_rules(folder, caplog):
    clock = FakeClock()
    engine, watcher = watched(folder, clock)
    for path in folder.iterdir():
        path.unlink()
    with caplog.at_level(logging.WARNING, logger="streamcap.rules"):
        assert settle_and_poll(watcher, clock) is False
    assert [r.id for r in engine.rules] == ["person_at_gate", "dog_in_yard"]
    assert "no rule files match this pattern" in caplog.records[-1].getMessage()
    assert "keeping the 2 rules in force" in caplog.records[-1].getMessage()


OUT_OF_DESCRIPTORS = textwrap.dedent("""
    import json, logging, os, resource, socket, sys
    from streamcap.rules.engine import RuleEngine
    from streamcap.rules.load import load_rule_sources
    from streamcap.rules.watch import RuleWatcher

    records = []
    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())
    logging.getLogger("streamcap.rules").addHandler(Keep())
    logging.getLogger("streamcap.rules").setLevel(logging.INFO)

    folder = sys.argv[1]
    pattern = os.path.join(folder, "*.yaml")
    sources, errors = load_rule_sources([pattern], ["gate", "yard"])
    engine = RuleEngine([s.rule for s in sources], ["gate", "yard"])
    now = [0.0]
    watcher = RuleWatcher([pattern], engine, ["gate", "yard"], interval_s=2.0, clock=lambda: now[0], sources=sources)
    def settle_and_poll():
        now[0] += 2.0
        changed = watcher.poll()
        now[0] += watcher.settle_s
        return watcher.poll() or changed

    # a real limit, as systemd's LimitNOFILE gives, then every descriptor taken (as a connection flood would)
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    held = []
    try:
        while True:
            held.append(socket.socket())
    except OSError as exc:
        exhausted = exc.strerror
    # a rule file is saved meanwhile (utime needs no descriptor)
    os.utime(os.path.join(folder, "gate.yaml"), (1e9, 2e9))
    during = settle_and_poll()
    rules_during = [r.id for r in engine.rules]
    for s in held:
        s.close()
    after = settle_and_poll()
    print(json.dumps({"exhausted": exhausted, "changed": [during, after], "during": rules_during,
                      "after": [r.id for r in engine.rules], "log": records}))
""")


def test_running_out_of_file_descriptors_keeps_every_rule(folder):
    # given a process under a real descriptor limit, every descriptor taken, and a rule file saved meanwhile
    result = subprocess.run([sys.executable, "-c", OUT_OF_DESCRIPTORS, str(folder)], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    # then the watcher could not list the folder, kept both rules and said so; and nothing changed after
    assert report["exhausted"] == "Too many open files"
    assert report["changed"] == [False, False]
    assert report["during"] == report["after"] == ["person_at_gate", "dog_in_yard"]
    assert report["log"][0] == (f"rules: {folder}/*.yaml: the folder {folder} cannot be listed: Too many open files; "
                                "keeping the 2 rules in force (to remove every rule, leave a rule file that says `[]`)")
    assert report["log"][1:] == ["rules: the rule files read completely again", "rules: read again, no change (2 rules)"]


def test_a_reload_is_read_off_the_dispatch_thread_and_captions_flow_meanwhile(folder, monkeypatch, tmp_path):
    import streamcap.rules.watch as watch
    from streamcap.app import build
    from streamcap.config.schema import StreamcapConfig
    from streamcap.model.decoding import Description

    class Steady:
        """Stands in for the model: captions every frame at once, so a stalled dispatch would show at once."""

        model_name = "steady"

        def describe(self, frames):
            return [Description("a person at the gate", {}) for _ in frames]

    clip = Path(os.environ.get("STREAMCAP_DATA", "../shared/data")) / "videos" / "car-detection.mp4"
    if not clip.exists():
        pytest.skip(f"needs the shared data's clip {clip}")
    config = StreamcapConfig.model_validate({
        "cameras": {"gate": {"url": str(clip), "loop": True, "caption_interval_s": 0.05}},
        "rules": {"paths": [str(folder / "*.yaml")], "reload_interval_s": 0.2},
        "outputs": {"console": False, "jsonl": str(tmp_path / "events.jsonl")},
    })
    # a read that blocks until released, and records which thread did it
    readers, release, real_read = [], threading.Event(), watch.read_rules

    def blocking_read(*args, **kwargs):
        readers.append(threading.current_thread().name)
        assert release.wait(60)
        return real_read(*args, **kwargs)

    monkeypatch.setattr(watch, "read_rules", blocking_read)
    app = build(config, captioner=Steady())
    listener_calls = []
    app.pipeline._on_rules_changed.append(lambda rules: listener_calls.append([r.id for r in rules]))
    app.start()
    try:
        registry = app.pipeline.metrics.registry

        def published() -> float:
            return registry.get_sample_value("streamcap_captions_published_total", {"publisher": "console"}) or 0

        deadline = time.monotonic() + 60
        while published() < 3:
            assert time.monotonic() < deadline, "no captions"
            time.sleep(0.05)
        # when a rule file changes and its read is in progress (blocked)
        rewrite(folder / "yard.yaml", DOG.replace("[dog]", "[dog, cat]"), 10)
        while not readers:
            assert time.monotonic() < deadline, "the watcher never read the change"
            time.sleep(0.05)
        # then captions still flow through the dispatch thread meanwhile
        before = published()
        while published() < before + 5:
            assert time.monotonic() < deadline, "dispatch stalled while a reload was being read"
            time.sleep(0.05)
        assert app.pipeline.rules.rules[1].triggers[0].any == ["dog"], "not swapped before the read finished"
        # and once the read finishes, the rules are swapped in and the listeners hear of it once
        release.set()
        while not listener_calls:
            assert time.monotonic() < deadline, "the new rules never went in"
            time.sleep(0.05)
    finally:
        release.set()
        app.stop()
    assert set(readers) == {"rules-reload"}
    assert listener_calls == [["person_at_gate", "dog_in_yard"]]
    assert app.pipeline.rules.rules[1].triggers[0].any == ["dog", "cat"]


def test_a_reload_says_which_rules_were_added_changed_and_removed(folder, caplog):
    clock = FakeClock()
    engine, watcher = watched(folder, clock)
    rewrite(folder / "gate.yaml", GATE.replace("[person]", "[man]") + DOG.replace("dog_in_yard", "cat").replace("dog", "cat"), 10)
    rewrite(folder / "yard.yaml", "[]\n", 10)
    with caplog.at_level(logging.INFO, logger="streamcap.rules"):
        assert settle_and_poll(watcher, clock) is True
    assert caplog.records[-1].getMessage() == "rules reloaded: 2 rules (added 1: cat; changed 1: person_at_gate; removed 1: dog_in_yard)"
