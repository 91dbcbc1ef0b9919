"""Search and summary: by words, by concept group, by concept probability; hostile search text answered cleanly."""
from __future__ import annotations

import time

import pytest

from streamcap.config.schema import HistoryConfig
from streamcap.history.query import History, QueryError, match_expression, parse_concept, parse_time
from streamcap.history.writer import HistoryRecorder
from streamcap.messages import Alarm, AlarmType, Caption, Severity
from streamcap.metrics import Metrics

NOW = time.time()
HOUR = 3600.0
# (camera, hours ago, caption, concepts, how many captions at 1/s)
SCENES = [
    ("gate", 30, "a white van parked in front of a gate", {"person": 0.05, "vehicle": 0.92}, 120),
    ("gate", 20, "an empty road at night", {"person": 0.02, "vehicle": 0.03}, 300),
    ("gate", 10, "a man walking past the gate", {"person": 0.95, "vehicle": 0.02}, 60),
    ("gate", 5, "a red bus stops at the gate", {"person": 0.1, "vehicle": 0.75}, 30),
    ("yard", 8, "a woman with a dog in the yard", {"person": 0.9, "animal": 0.8}, 40),
    ("yard", 6, "a fire hydrant next to a parked truck", {"person": 0.03, "vehicle": 0.6, "fire": 0.02}, 40),
    ("yard", 2, "smoke rising from a burning shed", {"person": 0.01, "fire": 0.97}, 20),
]


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    folder = tmp_path_factory.mktemp("history")
    recorder = HistoryRecorder(HistoryConfig(path=folder), Metrics())
    recorder.start()
    stream = sorted(((NOW - hours_ago * HOUR + i, camera, text, concepts)
                     for camera, hours_ago, text, concepts, count in SCENES for i in range(count)), key=lambda c: c[0])
    for frame, (at, camera, text, concepts) in enumerate(stream):  # in time order, as cameras deliver them
        recorder.publish_caption(Caption(camera, frame, at, 0.0, text, "test-model", 0.0, concepts))
    for n, (camera, rule, hours_ago) in enumerate([("gate", "person_at_gate", 10), ("gate", "person_at_gate", 9.5),
                                                   ("gate", "vehicle_at_night", 30), ("yard", "fire", 2)]):
        start = NOW - hours_ago * HOUR
        alarm_id = f"{rule}-{camera}-{n}"
        recorder.publish_alarm(Alarm(alarm_id, rule, Severity.alert, camera, "a man walking past the gate", start, start,
                                     rule_title=rule.replace("_", " ")))
        recorder.publish_alarm(Alarm(alarm_id, rule, Severity.alert, camera, "a man walking past the gate", start + 20,
                                     start + 20, type=AlarmType.end, seq=1, start_time=start, end_time=start + 20))
    recorder.close(timeout_s=30)
    return History(folder)


def captions(results) -> list[str]:
    return [r["caption"] for r in results]


@pytest.mark.parametrize("text, expected", [
    ("white van", ["a white van parked in front of a gate"]),
    ("van", ["a white van parked in front of a gate"]),
    ("vans", ["a white van parked in front of a gate"]),  # stemmed
    ("gate", ["a red bus stops at the gate", "a man walking past the gate", "a white van parked in front of a gate"]),
    ("vehicle", ["a red bus stops at the gate", "a fire hydrant next to a parked truck", "a white van parked in front of a gate"]),
    ("person", ["a woman with a dog in the yard", "a man walking past the gate"]),
    ("people", []),  # a word of the group, not its name: matched as the word
    ("animal", ["a woman with a dog in the yard"]),
    ("fire", ["smoke rising from a burning shed"]),  # "fire hydrant" is no fire
    ("hydrant", ["a fire hydrant next to a parked truck"]),
    ("white truck", []),
])
def test_search_by_words_and_by_concept_group_newest_first(history, text, expected):
    assert captions(history.search(text)) == expected


def test_search_by_camera_and_time_window(history):
    assert captions(history.search("gate", camera="gate", since=NOW - 12 * HOUR)) == [
        "a red bus stops at the gate", "a man walking past the gate"]
    assert captions(history.search("", camera="yard", since=NOW - 7 * HOUR, until=NOW - 3 * HOUR)) == [
        "a fire hydrant next to a parked truck"]


@pytest.mark.parametrize("condition, expected", [
    ("vehicle >= 0.7", ["a red bus stops at the gate", "a white van parked in front of a gate"]),
    ("vehicle >= 0.8", ["a white van parked in front of a gate"]),
    ("person > 0.92", ["a man walking past the gate"]),  # probabilities are kept to 1/255
    ("fire < 0.05", ["a red bus stops at the gate", "a fire hydrant next to a parked truck", "a woman with a dog in the yard",
                     "a man walking past the gate", "an empty road at night", "a white van parked in front of a gate"]),
    ("bus >= 0.5", []),  # a category no caption had at 0.1 reads as 0
    ("fire < 0.0", []),
    ("bus >= 0.0", ["smoke rising from a burning shed", "a red bus stops at the gate", "a fire hydrant next to a parked truck",
                    "a woman with a dog in the yard", "a man walking past the gate", "an empty road at night",
                    "a white van parked in front of a gate"]),
    ("person <= 1", ["smoke rising from a burning shed", "a red bus stops at the gate", "a fire hydrant next to a parked truck",
                     "a woman with a dog in the yard", "a man walking past the gate", "an empty road at night",
                     "a white van parked in front of a gate"]),
    ("vehicle > 1", []),
])
def test_concept_filters_read_the_stored_probabilities(history, condition, expected):
    assert captions(history.search("", concepts=[parse_concept(condition)])) == expected


def test_words_and_concept_filters_combine(history):
    assert captions(history.search("gate", concepts=[parse_concept("person >= 0.5")])) == ["a man walking past the gate"]


@pytest.mark.parametrize("text", [
    'van" OR "*', "NEAR(van gate)", "van AND NOT", "^van", "van*", "camera:gate", "(((", '"', "{van}", "van -gate",
    "'; DROP TABLE segments; --", "\x00\x01van", "ünïcödé 🚐", "",
])
def test_fts_syntax_in_the_search_is_plain_text(history, text):
    # when searching for text full of FTS5 operators, then it is answered (as words), never an SQL error
    results = history.search(text)
    assert isinstance(results, list)
    assert history.search("van"), "the database is untouched"


def test_a_10_kb_search_is_refused_in_one_line(history):
    with pytest.raises(QueryError, match=r"^the search is 10240 characters; at most 500$"):
        history.search("van " * 2560)


def test_too_many_words_and_bad_filters_are_refused(history):
    with pytest.raises(QueryError, match="at most 16"):
        history.search(" ".join(f"w{i}" for i in range(17)))
    with pytest.raises(QueryError, match="no camera 'porch' in the history \\(cameras: gate, yard\\)"):
        history.search("van", camera="porch")
    with pytest.raises(QueryError, match="no concept 'smoke': use a group \\(person, vehicle, animal, fire\\) or one of"):
        history.search("", concepts=[parse_concept("smoke >= 0.5")])
    with pytest.raises(QueryError, match="concept condition"):
        parse_concept("vehicle is big")


def test_every_term_is_quoted_and_groups_expand_from_the_concept_words():
    from streamcap.concepts import BY_NAME

    expression, groups = match_expression('white "van" OR vehicles*')
    assert expression.startswith('"white" AND "van" AND "or" AND ("vehicles" OR "vehicle" OR ')
    assert [g.name for g in groups] == ["vehicle"]
    assert all(f'"{w}"' in expression for w in BY_NAME["vehicle"].words)


def test_summary_is_the_cameras_timeline_with_its_alarms_per_rule(history):
    doc = history.summary("gate", since=NOW - 24 * HOUR)
    assert [s["caption"] for s in doc["segments"]] == [
        "an empty road at night", "a man walking past the gate", "a red bus stops at the gate"]
    assert [s["count"] for s in doc["segments"]] == [300, 60, 30]
    first = doc["segments"][0]
    assert first["camera"] == "gate" and first["start"] < first["end"]
    assert doc["alarms_per_rule"] == {"person_at_gate": 2}, "the 30-hour-old alarm is outside the window"
    assert [a["end"] is not None for a in doc["alarms"]] == [True, True]


def test_a_segment_lists_its_captions(history):
    (result,) = history.search("bus")
    doc = history.segment(result["id"])
    assert doc["count"] == 30 and len(doc["captions"]) == 30
    assert {c["caption"] for c in doc["captions"]} == {"a red bus stops at the gate"}
    assert doc["captions"][0]["concepts"] == pytest.approx({"person": 0.1, "vehicle": 0.75}, abs=0.003)
    assert history.segment(10**9) is None


@pytest.mark.parametrize("text, hours", [("12h", 12), ("30m", 0.5), ("1d12h", 36), ("2w", 336)])
def test_since_spans(text, hours):
    assert parse_time(text, 1_000_000.0) == pytest.approx(1_000_000.0 - hours * HOUR)


@pytest.mark.parametrize("text", ["yesterday", "12x", "-5h", "9" * 50, "", "100000d"])
def test_since_refuses_what_it_cannot_read(text):
    with pytest.raises(QueryError):
        parse_time(text, 1_000_000.0)


def test_no_history_yet_is_said_in_one_line(tmp_path):
    with pytest.raises(QueryError, match="no history at .* yet"):
        History(tmp_path / "none").search("van")


@pytest.mark.parametrize("zone", ["Europe/Paris", "Australia/Lord_Howe", "Asia/Kathmandu"])
def test_times_are_the_local_iso_times_across_daylight_saving_changes(zone, monkeypatch):
    from streamcap.history import query
    from streamcap.metrics import iso_time

    # given a local zone with summer time (Lord Howe moves by half an hour)
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    query._local_zone.cache_clear()
    try:
        # when times around two years of changes are formatted, then they match metrics.iso_time to the millisecond
        for ms in range(1_700_000_000_000, 1_763_000_000_000, 599_987):
            assert query._iso(ms) == iso_time(ms / 1000), ms
    finally:
        monkeypatch.undo()
        time.tzset()
        query._local_zone.cache_clear()


def test_a_summary_of_a_busy_window_lists_its_longest_segments_in_time_order(tmp_path, monkeypatch):
    from streamcap.history import query

    # given a camera with 30 segments: every third lasts 5 captions, the rest 1
    recorder = HistoryRecorder(HistoryConfig(path=tmp_path, thumbnails=False), Metrics())
    recorder.start()
    at, frame = NOW - 3600, 0
    for n in range(30):
        concepts = {"person": 0.9 if n % 2 else 0.05}
        for _ in range(5 if n % 3 == 0 else 1):
            recorder.publish_caption(Caption("gate", frame, at, 0.0, f"scene {n} at the gate", "m", 0.0, concepts))
            at, frame = at + 1, frame + 1
        recorder.publish_caption(Caption("gate", frame, at, 0.0, f"scene {n} at the gate", "m", 0.0, concepts))
        at, frame = at + 1, frame + 1
    recorder.close(timeout_s=30)
    # when the summary may list only 10
    monkeypatch.setattr(query, "SUMMARY_MAX_SEGMENTS", 10)
    doc = History(tmp_path).summary("gate", since=NOW - 7200)
    # then it lists the 10 that lasted, in time order, and says how many there were
    assert doc["segments_total"] == 30
    assert [s["caption"] for s in doc["segments"]] == [f"scene {n} at the gate" for n in range(0, 30, 3)]


def test_a_history_whose_tables_are_not_written_yet_is_not_there_yet(tmp_path):
    import sqlite3

    sqlite3.connect(tmp_path / "history.db").execute("PRAGMA journal_mode = WAL").fetchall()  # the file, no tables yet
    with pytest.raises(QueryError, match="is being created; try again in a moment"):
        History(tmp_path).search("van")
