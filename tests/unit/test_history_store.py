"""The history database: retention by age and by size, and a damaged database at start moved aside for a new one."""
from __future__ import annotations

import logging
import sqlite3

import pytest

from streamcap.history import store as db
from streamcap.history.segments import Segmenter
from streamcap.history.writer import record
from streamcap.messages import Caption

DAY = 86400.0


def write(store: db.HistoryStore, captions, segmenter: Segmenter | None = None) -> None:
    """(camera, time, text, concepts) into the store in one transaction, as the writer does."""
    store.conn.execute("BEGIN")
    record(store, segmenter or Segmenter(), [Caption(c, i, at, 0.0, text, "m", 0.0, p) for i, (c, at, text, p) in enumerate(captions)],
           final=True)
    store.conn.execute("COMMIT")


def count(store, table: str) -> int:
    return store.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


@pytest.fixture
def store(tmp_path):
    s = db.HistoryStore(db.open_for_writing(tmp_path))
    yield s
    s.conn.close()


def test_retention_by_age_drops_single_captions_after_raw_days_and_segments_after_retain_days(store):
    # given one hour of captions (one new scene a minute) 40, 10 and 1 days ago
    now = 100 * DAY
    for age_days in (40, 10, 1):
        start = now - age_days * DAY
        write(store, [("gate", start + s, f"scene{s // 60} on the road", {"person": 0.1}) for s in range(3600)])
    assert count(store, "segments") == 180 and count(store, "captions") == 3 * 3600
    # when retention runs with raw_days 3, retain_days 30, no size pressure
    assert store.prune(now, raw_days=3, retain_days=30, max_bytes=10**12, segment_max_s=3600, budget_s=30)
    # then the 40-day-old hour is gone, the 10-day-old one kept as segments only, the last day whole
    starts = [r[0] / 1000 for r in store.conn.execute("SELECT start_ms FROM segments ORDER BY start_ms")]
    assert len(starts) == 120 and min(starts) >= now - 10 * DAY
    raw = [r[0] / 1000 for r in store.conn.execute("SELECT t_ms FROM captions")]
    assert len(raw) == 3600 and min(raw) >= now - 1 * DAY
    # and the search index forgot the deleted segments too
    assert count(store, "segments_fts") == 120
    assert store.conn.execute("SELECT count(*) FROM segments_fts WHERE segments_fts MATCH 'scene0'").fetchone()[0] == 2


def test_retention_by_size_deletes_the_oldest_single_captions_first_then_the_oldest_segments(store):
    # given 20 days of segments (a car comes and goes every two minutes) and the last hour with its single captions
    now = 100 * DAY
    for day in range(20, 0, -1):
        start = now - day * DAY
        write(store, [("gate", start + s * 60, f"a car on the road {day} {s}", {"vehicle": s // 2 % 2}) for s in range(200)])
    write(store, [("gate", now - 3600 + s, f"a car on the road {s // 10}", {"vehicle": s // 10 % 2}) for s in range(3600)])
    assert count(store, "segments") == 20 * 100 + 360
    starts_before = [r[0] for r in store.conn.execute("SELECT start_ms FROM segments ORDER BY start_ms")]
    limit = store.used_bytes() // 2
    # when retention runs with a bound of half of that (in bounded steps, as the writer calls it)
    steps = 1
    while not store.prune(now, raw_days=30, retain_days=365, max_bytes=limit, segment_max_s=3600, budget_s=0.2):
        steps += 1
        assert steps < 200, "retention makes progress"
    # then the database is under the bound, and what is left is the newest
    assert store.used_bytes() <= limit
    oldest_left = store.conn.execute("SELECT min(start_ms) FROM segments").fetchone()[0] / 1000
    assert oldest_left > now - 20 * DAY, "the oldest day went"
    assert store.conn.execute("SELECT max(start_ms) FROM segments").fetchone()[0] / 1000 >= now - 3600, "the newest stayed"
    starts_after = [r[0] for r in store.conn.execute("SELECT start_ms FROM segments ORDER BY start_ms")]
    assert starts_after == [t for t in starts_before if t >= starts_after[0]], "only the oldest segments were deleted"
    assert count(store, "captions") == 3600, "the last hour's single captions stay"


def test_a_concept_probability_is_one_byte_at_its_place(store):
    # given two captions with different concept sets
    write(store, [("gate", 1.0, "a man at the gate", {"person": 0.9, "vehicle": 0.0}),
                  ("gate", 2.0, "a car at the gate", {"vehicle": 0.702, "fire": 1.0})])
    names = dict(store.conn.execute("SELECT name, id FROM concept_names"))
    blobs = [r[0] for r in store.conn.execute("SELECT concepts FROM captions ORDER BY t_ms")]
    # then
    assert sorted(names) == ["fire", "person", "vehicle"]
    assert blobs[0][names["person"] - 1] == round(0.9 * 255) and len(blobs[0]) == 2
    assert blobs[1][names["vehicle"] - 1] == round(0.702 * 255) and blobs[1][names["fire"] - 1] == 255


@pytest.mark.parametrize("op, threshold, passing", [
    (">=", 0.7, [179, 200, 255]), (">", 0.7, [179, 200, 255]), ("<=", 0.7, [0, 100, 178]), ("<", 0.7, [0, 100, 178]),
    (">=", 0.0, [0, 100, 178, 179, 200, 255]), (">", 1.0, []), ("<", 0.0, []), ("<=", 1.0, [0, 100, 178, 179, 200, 255]),
])
def test_a_threshold_on_probabilities_is_the_same_threshold_on_their_bytes(op, threshold, passing):
    from streamcap.rules.schema import parse_concept_condition

    condition = parse_concept_condition(f"person {op} {threshold}")
    sql_op, bound = db.probability_bound(op, threshold)
    stored = [0, 100, 178, 179, 200, 255]
    by_bytes = [q for q in stored if (q >= bound if sql_op == ">=" else q <= bound)]
    assert by_bytes == [q for q in stored if condition.holds(q / 255)] == passing


def _garbage(path):
    path.write_bytes(b"this is not an SQLite database, just bytes left by a broken disk\n" * 100)


def _torn(path):
    conn = db.open_for_writing(path.parent)
    s = db.HistoryStore(conn)
    write(s, [("gate", float(i), f"caption number {i} of a long day", {"person": 0.5}) for i in range(5000)])
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    data = bytearray(path.read_bytes())
    data[8192:len(data) - 4096] = b"\x5a" * (len(data) - 4096 - 8192)  # pages overwritten, header intact
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_garbage, _torn])
def test_a_damaged_database_at_start_is_moved_aside_with_one_line_and_a_new_one_started(tmp_path, caplog, damage):
    # given a damaged history.db
    damage(tmp_path / db.DB_NAME)
    # when the history opens it
    with caplog.at_level(logging.INFO, logger="streamcap.history"):
        conn = db.open_for_writing(tmp_path)
    # then the old file is kept aside, one line says so, and the new database works
    aside = list(tmp_path.glob("history.db.damaged-*"))
    assert len(aside) == 1 and aside[0].stat().st_size > 0
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and "moved aside" in lines[0].getMessage() and aside[0].name in lines[0].getMessage()
    s = db.HistoryStore(conn)
    write(s, [("gate", 1.0, "a car on the road", {})])
    assert count(s, "segments") == 1
    assert conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    conn.close()


def test_a_database_of_another_schema_version_is_moved_aside_too(tmp_path, caplog):
    conn = db.open_for_writing(tmp_path)
    conn.execute("UPDATE meta SET value = '999' WHERE key = 'schema'")
    conn.close()
    with caplog.at_level(logging.ERROR, logger="streamcap.history"):
        db.open_for_writing(tmp_path).close()
    assert "schema version 999" in caplog.text and len(list(tmp_path.glob("history.db.damaged-*"))) == 1


def test_the_readers_connection_cannot_write(tmp_path):
    db.open_for_writing(tmp_path).close()
    conn = db.connect_readonly(tmp_path)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        conn.execute("DELETE FROM segments")
    conn.close()
