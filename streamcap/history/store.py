"""The history database: one SQLite file in WAL mode, its schema, retention, and what to do when it is damaged.

    segments   one row per run of captions that say the same thing (segments.py): camera, start, end,
               count, best caption, the distinct captions and passing moments, every word said, highest
               concept probabilities, whose thumbnail stands for it
    segments_fts  FTS5 index over each segment's words (porter stemming: "vans" finds "van")
    captions   every single caption for `raw_days`: (segment, time) -> which variant, its probabilities
    alarms     one row per alarm: rule, title, severity, start, end, caption
    cameras, concept_names   small dictionaries, so rows hold numbers instead of repeated names

Concept probabilities are one byte each (p * 255, rounded) at the concept's
position in `concept_names`, so a filter like "vehicle >= 0.7" is a byte
comparison inside SQLite. Only what a payload shows is kept (every group, the
categories at or above 0.1); a category left out reads as 0.

Only the writer thread writes (one connection); queries open their own
read-only connections, which WAL lets run beside the writer. Retention runs on
the writer thread: by age (captions after raw_days, segments and alarms after
retain_days) and by size (over max_bytes the oldest single captions go first,
then the oldest segments), in bounded steps. A database that cannot be opened
or fails SQLite's quick check at start is moved aside with one log line and a
new one is started: the box keeps its history going rather than refusing to run.
"""
from __future__ import annotations

import errno
import logging
import math
import os
import sqlite3
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from streamcap.concepts import reported

log = logging.getLogger(__name__)

DB_NAME = "history.db"
SCHEMA_VERSION = "1"
PRUNE_STEP_ROWS = 20_000  # rows deleted per statement, so one prune never holds the writer for long
KEEP_NEWEST_S = 3600.0  # size retention never deletes the last hour
SIZE_SLACK = 0.9  # size retention deletes down to this share of the bound, so it does not run on every batch

SCHEMA = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE cameras(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE concept_names(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE segments(
    id INTEGER PRIMARY KEY,
    camera INTEGER NOT NULL,
    start_ms INTEGER NOT NULL,
    end_ms INTEGER NOT NULL,
    count INTEGER NOT NULL,
    caption TEXT NOT NULL,
    variants TEXT NOT NULL,
    moments TEXT NOT NULL,
    words TEXT NOT NULL,
    concepts BLOB NOT NULL,
    model TEXT NOT NULL,
    picture INTEGER
);
CREATE INDEX segments_by_camera ON segments(camera, start_ms);
CREATE INDEX segments_by_start ON segments(start_ms);
CREATE TABLE captions(
    segment INTEGER NOT NULL,
    t_ms INTEGER NOT NULL,
    variant INTEGER,
    text TEXT,
    concepts BLOB NOT NULL,
    PRIMARY KEY(segment, t_ms)
) WITHOUT ROWID;
CREATE TABLE alarms(
    id TEXT PRIMARY KEY,
    camera INTEGER NOT NULL,
    rule TEXT NOT NULL,
    title TEXT NOT NULL,
    severity TEXT NOT NULL,
    start_ms INTEGER NOT NULL,
    end_ms INTEGER,
    caption TEXT NOT NULL
);
CREATE INDEX alarms_by_camera ON alarms(camera, start_ms);
CREATE INDEX alarms_by_start ON alarms(start_ms);
CREATE VIRTUAL TABLE segments_fts USING fts5(words, content='segments', content_rowid='id', tokenize='porter unicode61');
CREATE TRIGGER segments_ai AFTER INSERT ON segments BEGIN
    INSERT INTO segments_fts(rowid, words) VALUES (new.id, new.words);
END;
CREATE TRIGGER segments_ad AFTER DELETE ON segments BEGIN
    INSERT INTO segments_fts(segments_fts, rowid, words) VALUES ('delete', old.id, old.words);
END;
CREATE TRIGGER segments_au AFTER UPDATE OF words ON segments BEGIN
    INSERT INTO segments_fts(segments_fts, rowid, words) VALUES ('delete', old.id, old.words);
    INSERT INTO segments_fts(rowid, words) VALUES (new.id, new.words);
END;
"""


class HistoryUnavailable(Exception):
    """The history folder cannot be used at all (not a disk problem that may pass)."""


def is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.OperationalError):
        return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in str(exc)
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def preflight(folder: Path) -> None:
    """Raise HistoryUnavailable unless `folder` can hold the history. A full disk is not a reason to refuse."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-") as probe:
            probe.write(b"x")
            probe.flush()
    except OSError as exc:
        if is_disk_full(exc):
            log.warning("history: %s: the disk is full; the history waits for space", folder)
            return
        raise HistoryUnavailable(
            f"history.path {folder}: cannot write there ({exc.strerror or exc}); give a writable folder on a real disk, "
            "or set history.enabled: false") from None


def to_ms(t: float) -> int:
    return int(round(t * 1000))


def quantize(p: float) -> int:
    return min(255, max(0, int(round(float(p) * 255))))


def probability_bound(op: str, threshold: float) -> tuple[str, int]:
    """A condition on p as the same condition on its stored byte q = round(p*255): (SQL operator, byte)."""
    scaled = threshold * 255
    if op == ">=":
        return ">=", min(256, math.ceil(scaled - 1e-9))
    if op == ">":
        return ">=", math.floor(scaled + 1e-9) + 1
    if op == "<=":
        return "<=", max(-1, math.floor(scaled + 1e-9))
    return "<=", math.ceil(scaled - 1e-9) - 1  # "<"


def open_for_writing(folder: Path) -> sqlite3.Connection:
    """Open (or create) the database; a damaged one is moved aside with one log line and a new one started."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / DB_NAME
    try:
        return _open(path)
    except sqlite3.DatabaseError as exc:
        if is_disk_full(exc):
            raise
        aside = path.with_name(f"{DB_NAME}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        for suffix in ("", "-wal", "-shm"):
            source = Path(str(path) + suffix)
            if source.exists():
                os.replace(source, Path(str(aside) + suffix))
        log.error("history: %s could not be used (%s); moved aside to %s, starting a new history", path, exc, aside.name)
        return _open(path)


def _open(path: Path) -> sqlite3.Connection:
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise sqlite3.DatabaseError("not readable and writable by this user")
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA busy_timeout = 5000")
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables:
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # lets retention give space back to a full disk
            conn.execute("PRAGMA journal_mode = WAL")
            conn.executescript("BEGIN;" + SCHEMA + "COMMIT;")
            conn.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
        else:
            version = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if version is None or version[0] != SCHEMA_VERSION:
                raise sqlite3.DatabaseError(f"schema version {version[0] if version else 'missing'}, not {SCHEMA_VERSION}")
            check = conn.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {check}")
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")  # WAL: a crash loses nothing committed; a power cut the last moments
        conn.execute("PRAGMA journal_size_limit = 67108864")
        return conn
    except BaseException:
        conn.close()
        raise


def connect_readonly(folder: Path) -> sqlite3.Connection:
    """A read-only connection for queries; raises FileNotFoundError when there is no history yet."""
    path = Path(folder) / DB_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no history database at {path}")
    conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 5000")
    return conn


class HistoryStore:
    """Writes and prunes the database. Used by one thread only (the writer)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self._cameras = dict(conn.execute("SELECT name, id FROM cameras"))
        self._concepts = dict(conn.execute("SELECT name, id FROM concept_names"))

    # --- dictionaries ------------------------------------------------------------------------
    def camera_key(self, name: str) -> int:
        key = self._cameras.get(name)
        if key is None:
            key = self.conn.execute("INSERT INTO cameras(name) VALUES (?)", (name,)).lastrowid
            self._cameras[name] = key
        return key

    def concept_bytes(self, concepts: Mapping[str, float]) -> bytes:
        """What a payload shows (groups, and categories at or above 0.1), one byte each at the concept's position.

        A category left out reads as 0; names get positions in the order they first matter, so a box
        whose cameras only ever see a few categories keeps short rows.
        """
        concepts = reported(dict(concepts))
        if not concepts:
            return b""
        positions = []
        for name, p in concepts.items():
            key = self._concepts.get(name)
            if key is None:
                key = self.conn.execute("INSERT INTO concept_names(name) VALUES (?)", (name,)).lastrowid
                self._concepts[name] = key
            positions.append((key, quantize(p)))
        blob = bytearray(max(k for k, _ in positions))
        for key, q in positions:
            blob[key - 1] = q
        return bytes(blob)

    def forget_cached_keys(self) -> None:
        """After a rollback, names inserted in it are gone again."""
        self._cameras = dict(self.conn.execute("SELECT name, id FROM cameras"))
        self._concepts = dict(self.conn.execute("SELECT name, id FROM concept_names"))

    # --- writing -------------------------------------------------------------------------------
    def insert_segment(self, segment) -> int:
        return self.conn.execute(
            "INSERT INTO segments(camera, start_ms, end_ms, count, caption, variants, moments, words, concepts, model, picture) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (self.camera_key(segment.camera_id), to_ms(segment.start), to_ms(segment.end), segment.count, segment.caption,
             _variants(segment), "\n".join(segment.moments), segment.indexed_words, self.concept_bytes(segment.concepts_max),
             segment.model, segment.picture),
        ).lastrowid

    def update_segments(self, segments) -> None:
        # `words` is rewritten only when it changed, so the FTS index is touched only then (see the trigger).
        self.conn.executemany(
            "UPDATE segments SET end_ms = ?, count = ?, caption = ?, variants = ?, moments = ?, concepts = ?, "
            "words = CASE WHEN words = ? THEN words ELSE ? END WHERE id = ?",
            [(to_ms(s.end), s.count, s.caption, _variants(s), "\n".join(s.moments), self.concept_bytes(s.concepts_max),
              s.indexed_words, s.indexed_words, s.key) for s in segments])

    def insert_captions(self, rows: list[tuple[int, int, int | None, str | None, bytes]]) -> None:
        """(segment, t_ms, variant or None, text when not a variant, concept bytes)."""
        self.conn.executemany("INSERT OR IGNORE INTO captions(segment, t_ms, variant, text, concepts) VALUES (?, ?, ?, ?, ?)", rows)

    def upsert_alarm(self, alarm) -> None:
        start = alarm.start_time if alarm.start_time is not None else alarm.captured_at
        self.conn.execute(
            "INSERT INTO alarms(id, camera, rule, title, severity, start_ms, end_ms, caption) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET end_ms = excluded.end_ms, caption = excluded.caption",
            (alarm.alarm_id, self.camera_key(alarm.camera_id), alarm.rule_id, alarm.rule_title or alarm.rule_id,
             str(alarm.severity), to_ms(start), to_ms(alarm.end_time) if alarm.end_time is not None else None, alarm.caption))

    # --- retention -----------------------------------------------------------------------------
    def used_bytes(self) -> int:
        page_size, pages, free = (self.conn.execute(f"PRAGMA {p}").fetchone()[0]
                                  for p in ("page_size", "page_count", "freelist_count"))
        return (pages - free) * page_size

    def prune(self, now: float, raw_days: float, retain_days: float, max_bytes: int, segment_max_s: float,
              budget_s: float = 1.0) -> bool:
        """Delete what is past its age, then the oldest while over `max_bytes`; False if there is more to do.

        Stops after about `budget_s` and goes on at the next call, so the writer is never held long.
        """
        deadline = time.monotonic() + budget_s
        deleted = 0
        # Captions belong to segments that began before a caption could be too old: a segment
        # lasts at most segment_max_s, so every caption of one that began that much earlier is past raw_days.
        raw_before = to_ms(now - raw_days * 86400 - segment_max_s)
        deleted += self._delete_captions_of_segments_before(raw_before, deadline)
        old = to_ms(now - retain_days * 86400)
        deleted += self._delete_segments_before(old, deadline)
        deleted += self._delete("DELETE FROM alarms WHERE rowid IN (SELECT rowid FROM alarms WHERE start_ms < ? LIMIT ?)", old, deadline)
        limit = int(max_bytes * SIZE_SLACK)
        if self.used_bytes() > max_bytes:
            keep_from = to_ms(now - KEEP_NEWEST_S)  # whatever the size, the last hour stays
            first_kept = self.conn.execute("SELECT id FROM segments WHERE start_ms >= ? ORDER BY start_ms LIMIT 1",
                                           (keep_from,)).fetchone()
            first_kept = first_kept[0] if first_kept else (self.conn.execute("SELECT max(id) FROM segments").fetchone()[0] or 0) + 1
            while self.used_bytes() > limit and time.monotonic() < deadline:
                oldest_raw = self.conn.execute("SELECT min(segment) FROM captions").fetchone()[0]
                if oldest_raw is not None and oldest_raw < first_kept:
                    deleted += self._run("DELETE FROM captions WHERE segment < ?", min(first_kept, self._segment_step(oldest_raw)))
                    continue
                oldest = self.conn.execute("SELECT min(start_ms) FROM segments").fetchone()[0]
                if oldest is None or oldest >= keep_from:
                    log.warning("history: history.max_size_mb is too small for the last hour alone (%.0f MB used)",
                                self.used_bytes() / 1e6)
                    break
                cutoff = min(oldest + 3_600_000, keep_from)  # an hour at a time
                deleted += self._delete_segments_before(cutoff, deadline)
                deleted += self._run("DELETE FROM alarms WHERE start_ms < ?", cutoff)
            log.info("history: over history.max_size_mb; deleted the oldest (now %.0f MB used)", self.used_bytes() / 1e6)
        if deleted:
            self.give_back_space()
        return time.monotonic() < deadline

    def give_back_space(self) -> None:
        """Return free pages to the file system when they are many (after retention, or to get out of a full disk)."""
        pages, free = (self.conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "freelist_count"))
        if free > max(256, pages // 4):
            self.conn.execute("PRAGMA incremental_vacuum").fetchall()  # each row is a step of the work

    def _segment_step(self, first: int) -> int:
        """The segment id PRUNE_STEP_ROWS captions after `first`'s, roughly: the end of one bounded delete."""
        row = self.conn.execute("SELECT segment FROM captions WHERE segment >= ? ORDER BY segment, t_ms LIMIT 1 OFFSET ?",
                                (first, PRUNE_STEP_ROWS)).fetchone()
        return (row[0] if row else first) + 1

    def _delete_captions_of_segments_before(self, start_ms: int, deadline: float) -> int:
        first = self.conn.execute("SELECT id FROM segments WHERE start_ms >= ? ORDER BY start_ms LIMIT 1", (start_ms,)).fetchone()
        bound = first[0] if first else (self.conn.execute("SELECT max(id) FROM segments").fetchone()[0] or 0) + 1
        deleted = 0
        while time.monotonic() < deadline:
            oldest = self.conn.execute("SELECT min(segment) FROM captions").fetchone()[0]
            if oldest is None or oldest >= bound:
                break
            deleted += self._run("DELETE FROM captions WHERE segment < ?", min(bound, self._segment_step(oldest)))
        return deleted

    def _delete_segments_before(self, start_ms: int, deadline: float) -> int:
        deleted = 0
        while time.monotonic() < deadline:
            ids = [r[0] for r in self.conn.execute("SELECT id FROM segments WHERE start_ms < ? ORDER BY start_ms LIMIT ?",
                                                   (start_ms, PRUNE_STEP_ROWS // 10))]
            if not ids:
                break
            top = max(ids)
            self.conn.execute("BEGIN")
            try:
                self.conn.execute("DELETE FROM captions WHERE segment <= ?", (top,))
                self.conn.executemany("DELETE FROM segments WHERE id = ?", [(i,) for i in ids])
                self.conn.execute("COMMIT")
            except BaseException:
                _rollback(self.conn)
                raise
            deleted += len(ids)
        return deleted

    def _delete(self, sql: str, bound: int, deadline: float) -> int:
        deleted = 0
        while time.monotonic() < deadline:
            n = self.conn.execute(sql, (bound, PRUNE_STEP_ROWS)).rowcount
            deleted += n
            if n < PRUNE_STEP_ROWS:
                break
        return deleted

    def _run(self, sql: str, *args) -> int:
        return self.conn.execute(sql, args).rowcount


def _variants(segment) -> str:
    """The distinct captions, newline-separated; '' when the only one is the caption itself (most segments)."""
    return "" if segment.variants == [segment.caption] else "\n".join(segment.variants)


def variants_of(stored: str, caption: str) -> list[str]:
    return stored.split("\n") if stored else [caption]


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back without letting a failing rollback replace the error that caused it."""
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    except sqlite3.Error as exc:
        log.warning("history: rollback failed too: %s", exc)


rollback = _rollback
