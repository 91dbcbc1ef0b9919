"""`streamcap history search|summary -c CONFIG`: text and JSON answers, one-line errors with exit 2."""
from __future__ import annotations

import json
import time

import pytest

from streamcap.__main__ import main
from streamcap.config.load import load_config
from streamcap.history.writer import HistoryRecorder
from streamcap.messages import Alarm, AlarmType, Caption, Severity
from streamcap.metrics import Metrics

NOW = time.time()


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    """A config file and the history a run of it left: the gate saw a white van, then a man; an alarm for the man."""
    folder = tmp_path_factory.mktemp("box")
    config = folder / "streamcap.yaml"
    config.write_text("timezone: Europe/Paris\ncameras:\n  gate: {url: gate.mp4}\n  yard: {url: yard.mp4}\n"
                      "history:\n  path: state/history\n")
    recorder = HistoryRecorder(load_config(config).history, Metrics())
    recorder.start()
    scenes = [("gate", 5 * 3600, "a white van parked in front of a gate", {"vehicle": 0.9}, 90),
              ("gate", 3 * 3600, "a man walking past the gate", {"person": 0.95}, 30),
              ("yard", 2 * 3600, "a dog running across the yard", {"animal": 0.8}, 10)]
    for camera, ago, text, concepts, count in scenes:
        for i in range(count):
            recorder.publish_caption(Caption(camera, i, NOW - ago + i, 0.0, text, "m", 0.0, concepts))
    start = NOW - 3 * 3600 + 5
    recorder.publish_alarm(Alarm("person_at_gate-gate-1", "person_at_gate", Severity.alert, "gate",
                                 "a man walking past the gate", start, start, rule_title="Person at the gate"))
    recorder.publish_alarm(Alarm("person_at_gate-gate-1", "person_at_gate", Severity.alert, "gate",
                                 "a man walking past the gate", start + 20, start + 20, type=AlarmType.end, seq=1,
                                 start_time=start, end_time=start + 20))
    recorder.close(timeout_s=30)
    return config


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(["history", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_search_prints_camera_time_span_and_caption(box, capsys):
    code, out, err = run(capsys, "search", "-c", str(box), "white van", "--camera", "gate", "--since", "12h")
    assert code == 0, err
    (line,) = out.splitlines()
    assert line.startswith("gate ") and line.endswith("a white van parked in front of a gate")
    assert "(89 s, 90 captions)" in line


def test_search_by_group_and_concept_as_json(box, capsys):
    code, out, err = run(capsys, "search", "-c", str(box), "vehicle", "--concept", "vehicle >= 0.7", "--json")
    assert code == 0, err
    results = json.loads(out)
    assert [(r["camera"], r["caption"]) for r in results] == [("gate", "a white van parked in front of a gate")]
    assert {"camera", "start", "end", "caption", "count", "concepts"} <= set(results[0])


def test_summary_is_the_timeline_with_alarms_per_rule(box, capsys):
    code, out, err = run(capsys, "summary", "-c", str(box), "--camera", "gate", "--since", "24h")
    assert code == 0, err
    assert "(Europe/Paris): 2 segments, 1 alarm" in out.splitlines()[0]
    assert out.index("a white van parked") < out.index("a man walking past the gate")
    assert "Person at the gate (alert)" in out and "alarms per rule: person_at_gate 1" in out
    code, out, err = run(capsys, "summary", "-c", str(box), "--camera", "gate", "--since", "4h", "--json")
    doc = json.loads(out)
    assert [s["caption"] for s in doc["segments"]] == ["a man walking past the gate"]
    assert doc["alarms_per_rule"] == {"person_at_gate": 1} and doc["camera"] == "gate"


@pytest.mark.parametrize("argv, message", [
    (["search", "van", "--since", "yesterday"], "--since 'yesterday': give a span like 12h"),
    (["search", "van", "--camera", "porch"], "no camera 'porch' in the history (cameras: gate, yard)"),
    (["search", "--concept", "vehicle is large"], "--concept: 'vehicle is large' is not a concept condition"),
    (["search", "van " * 2560], "the search is 10240 characters; at most 500"),
    (["summary", "--camera", "gate", "--since", "2h", "--until", "5h"], "--until is before --since"),
])
def test_a_bad_request_is_one_line_and_exit_2(box, capsys, argv, message):
    code, out, err = run(capsys, argv[0], "-c", str(box), *argv[1:])
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and message in err, err


def test_no_history_or_history_off_is_one_line_and_exit_2(tmp_path, capsys):
    config = tmp_path / "streamcap.yaml"
    config.write_text("cameras: {}\n")
    code, _, err = run(capsys, "search", "-c", str(config), "van")
    assert code == 2 and err.count("\n") == 1 and f"no history at {tmp_path}/.streamcap/history yet" in err
    config.write_text("history: {enabled: false}\n")
    code, _, err = run(capsys, "summary", "-c", str(config), "--camera", "gate")
    assert code == 2 and err.count("\n") == 1 and "history.enabled is false" in err
