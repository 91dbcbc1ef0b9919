"""Searching and summarising the history: one implementation for the CLI and the HTTP API.

    search   segments whose words match, newest first: "white van", "vehicle" (any word of the
             group: car, bus, truck...), with camera, time window and concept filters
    summary  one camera's timeline over a window: its segments in order (the longest SUMMARY_MAX_SEGMENTS when
             there are more), its alarms, alarms per rule
    segment  one segment with its distinct captions and, within raw_days, every caption

Every input a person types is checked here and refused with one line
(`QueryError`): words are matched as words (FTS5 operators and quotes in the
text are never passed to SQLite as syntax), at most MAX_QUERY_CHARS
characters and MAX_TERMS words, and each query stops after QUERY_TIMEOUT_S.
Queries open their own read-only connection, so they run beside the writer.
"""
from __future__ import annotations

import functools
import os
import re
import sqlite3
import time
from datetime import datetime, timezone
from pathlib import Path

from streamcap.concepts import BY_NAME, GROUP_NAMES, Concept
from streamcap.history.segments import words_of
from streamcap.history.store import connect_readonly, probability_bound, variants_of
from streamcap.history.thumbnails import is_thumbnail_name
from streamcap.metrics import iso_time
from streamcap.rules.schema import ConceptCondition, parse_concept_condition

MAX_QUERY_CHARS = 500
MAX_TERMS = 16
MAX_CONCEPT_FILTERS = 8
MAX_LIMIT = 500
SUMMARY_MAX_SEGMENTS = 2000  # a busier window shows its longest segments (a busy camera-day can hold 40,000)
DETAIL_MAX_CAPTIONS = 1000
QUERY_TIMEOUT_S = 5.0
MAX_SEGMENT_MS = 86_400_000  # history.segment_max_s's upper bound: no segment began earlier than a day before it ended
_SPAN = re.compile(r"(\d{1,6}(?:\.\d{1,3})?)([smhdw])")
_SPAN_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class QueryError(ValueError):
    """A request the history cannot answer as asked; the message is one line for a person."""


class HistoryMissing(QueryError):
    pass


def parse_time(text: str, now: float, what: str = "--since") -> float:
    """Unix time from "12h" (that long ago), "1d12h", "30m", or an ISO date/time ("2026-11-25T22:00", local zone)."""
    value = (text or "").strip().lower().replace(" ", "")
    if not value or len(value) > 40:
        raise QueryError(f"{what}: give a span like 12h, 30m, 7d or a time like 2026-11-25T22:00")
    parts = _SPAN.findall(value)
    if parts and "".join(n + u for n, u in parts) == value:
        seconds = sum(float(n) * _SPAN_S[u] for n, u in parts)
        if seconds > 3650 * 86400:
            raise QueryError(f"{what}: at most ten years back")
        return now - seconds
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise QueryError(f"{what} {text[:40]!r}: give a span like 12h, 30m, 7d or a time like 2026-11-25T22:00") from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # local time of this machine
    return moment.timestamp()


def parse_concept(text: str) -> ConceptCondition:
    try:
        return parse_concept_condition(text)
    except ValueError as exc:
        raise QueryError(f"--concept: {exc}") from None


def _quote(term: str) -> str:
    return '"' + term.replace('"', '""') + '"'


def _group(term: str) -> Concept | None:
    """The concept group a search word names ("vehicle", "vehicles"), if any."""
    for form in (term, term[:-1] if term.endswith("s") else None, term[:-2] if term.endswith("es") else None):
        if form and form in BY_NAME:
            return BY_NAME[form]
    return None


def match_expression(text: str) -> tuple[str, list[Concept]]:
    """The FTS5 MATCH string for what a person typed, and the concept groups it names.

    Every word is quoted (so AND, OR, NEAR, *, ^, :, quotes and brackets are plain text); a
    group's name matches any word of the group.
    """
    if len(text) > MAX_QUERY_CHARS:
        raise QueryError(f"the search is {len(text)} characters; at most {MAX_QUERY_CHARS}")
    terms = list(dict.fromkeys(words_of(text)))
    if len(terms) > MAX_TERMS:
        raise QueryError(f"the search has {len(terms)} words; at most {MAX_TERMS}")
    parts, groups = [], []
    for term in terms:
        group = _group(term)
        if group is None:
            parts.append(_quote(term))
        else:
            groups.append(group)
            parts.append("(" + " OR ".join(_quote(w) for w in dict.fromkeys([term, *group.words])) + ")")
    return " AND ".join(parts), groups


class History:
    """Read access to one box's history folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._thumbnails = str(self.folder / "thumbnails") + os.sep

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = connect_readonly(self.folder)
        except FileNotFoundError:
            raise HistoryMissing(f"no history at {self.folder} yet (history.enabled and streamcap run write it)") from None
        except sqlite3.Error as exc:
            raise QueryError(f"cannot open the history at {self.folder}: {exc}") from None
        try:
            conn.execute("SELECT value FROM meta LIMIT 1").fetchall()
        except sqlite3.OperationalError:  # the writer has made the file but not yet its tables
            conn.close()
            raise HistoryMissing(f"the history at {self.folder} is being created; try again in a moment") from None
        deadline = time.monotonic() + QUERY_TIMEOUT_S
        conn.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0, 10_000)
        conn.create_function("names_concept", 2, _names_concept, deterministic=True)
        return conn

    def _run(self, call):
        conn = self._connect()
        try:
            return call(conn)
        except sqlite3.OperationalError as exc:
            if "interrupted" in str(exc):
                raise QueryError(f"the query took longer than {QUERY_TIMEOUT_S:.0f} s; narrow it (--camera, --since)") from None
            raise QueryError(f"the history could not be read: {exc}") from None
        except sqlite3.DatabaseError as exc:
            raise QueryError(f"the history could not be read: {exc}") from None
        finally:
            conn.close()

    # --- search ------------------------------------------------------------------------------
    def search(self, text: str = "", camera: str | None = None, since: float | None = None, until: float | None = None,
               concepts: list[ConceptCondition] | tuple = (), limit: int = 50) -> list[dict]:
        if not 1 <= limit <= MAX_LIMIT:
            raise QueryError(f"limit must be between 1 and {MAX_LIMIT}")
        if len(concepts) > MAX_CONCEPT_FILTERS:
            raise QueryError(f"at most {MAX_CONCEPT_FILTERS} concept filters")
        match, groups = match_expression(text)
        return self._run(lambda conn: self._search(conn, match, groups, camera, since, until, list(concepts), limit))

    def _search(self, conn, match, groups, camera, since, until, concepts, limit) -> list[dict]:
        names = _concept_names(conn)
        where, args = [], []
        if camera is not None:
            where.append("s.camera = ?")
            args.append(_camera_key(conn, camera))
        if since is not None:
            where.append("s.end_ms >= ?")
            args.append(int(since * 1000))
            first = conn.execute("SELECT id FROM segments WHERE start_ms >= ? ORDER BY start_ms LIMIT 1",
                                 (int(since * 1000) - MAX_SEGMENT_MS,)).fetchone()
            if first is not None:
                where.append("s.id >= ?")
                args.append(first[0])
        if until is not None:
            where.append("s.start_ms <= ?")
            args.append(int(until * 1000))
        for condition in concepts:
            position = {n: p for p, n in names.items()}.get(condition.concept)
            if position is None:
                if condition.concept not in BY_NAME:
                    raise QueryError(f"no concept {condition.concept!r}: use a group ({', '.join(GROUP_NAMES)}) or one of "
                                     f"their {len(BY_NAME) - len(GROUP_NAMES)} categories in streamcap/concepts.py (car, dog...)")
                position = 1_000_000  # a concept no caption ever had at 0.1: past every row's bytes, it reads as 0
            # A concept missing from a row's bytes was below 0.1 (not kept) and reads as 0 (its substr is the empty
            # blob, below every byte); a row with no bytes at all came from a model without a concept head and
            # matches no concept condition.
            op, bound = probability_bound(condition.op, condition.threshold)
            if (op == ">=" and bound > 255) or (op == "<=" and bound < 0):
                where.append("0")  # no probability can: "> 1", "< 0"
            elif (op == ">=" and bound <= 0) or (op == "<=" and bound >= 255):
                where.append("length(s.concepts) > 0")  # every probability does: ">= 0", "<= 1"
            else:
                where.append(f"length(s.concepts) > 0 AND substr(s.concepts, {position}, 1) {op} ?")
                args.append(bytes([bound]))
        for group in groups:  # "fire hydrant" is no fire: the group's own exceptions, checked on the sentences
            where.append("names_concept(?, s.caption || char(10) || s.variants || char(10) || s.moments)")
            args.append(group.name)
        columns = "s.id, s.camera, s.start_ms, s.end_ms, s.count, s.caption, s.concepts, s.picture"
        if match:
            sql = (f"SELECT {columns} FROM segments_fts JOIN segments s ON s.id = segments_fts.rowid "
                   f"WHERE segments_fts MATCH ? {''.join(' AND ' + w for w in where)} ORDER BY segments_fts.rowid DESC LIMIT ?")
            args = [match, *args, limit]
        else:
            sql = f"SELECT {columns} FROM segments s {'WHERE ' + ' AND '.join(where) if where else ''} ORDER BY s.id DESC LIMIT ?"
            args = [*args, limit]
        cameras = _camera_names(conn)
        # Segment ids follow the order they were written (time order, up to seconds between cameras): the
        # newest `limit` by id, shown newest first by start.
        rows = sorted(conn.execute(sql, args), key=lambda r: r[2], reverse=True)
        return [self._segment_doc(row, cameras, names) for row in rows]

    # --- summary -----------------------------------------------------------------------------
    def summary(self, camera: str, since: float, until: float | None = None) -> dict:
        until = time.time() if until is None else until
        if until < since:
            raise QueryError("--until is before --since")
        return self._run(lambda conn: self._summary(conn, camera, since, until))

    def _summary(self, conn, camera, since, until) -> dict:
        key = _camera_key(conn, camera)
        names, cameras = _concept_names(conn), _camera_names(conn)
        since_ms, until_ms = int(since * 1000), int(until * 1000)
        window = "FROM segments WHERE camera = ? AND start_ms >= ? AND start_ms <= ? AND end_ms >= ?"
        bounds = (key, since_ms - MAX_SEGMENT_MS, until_ms, since_ms)
        columns = "id, camera, start_ms, end_ms, count, caption, concepts, picture"
        total = conn.execute(f"SELECT count(*) {window}", bounds).fetchone()[0]
        if total <= SUMMARY_MAX_SEGMENTS:
            rows = conn.execute(f"SELECT {columns} {window} ORDER BY start_ms", bounds).fetchall()
        else:  # the stretches that lasted, in time order; the flicker between them is left out
            rows = sorted(conn.execute(f"SELECT {columns} {window} ORDER BY count DESC, start_ms LIMIT ?",
                                       (*bounds, SUMMARY_MAX_SEGMENTS)).fetchall(), key=lambda r: r[2])
        alarms = conn.execute(
            "SELECT id, rule, title, severity, start_ms, end_ms, caption FROM alarms "
            "WHERE camera = ? AND start_ms <= ? AND coalesce(end_ms, start_ms) >= ? ORDER BY start_ms",
            (key, until_ms, since_ms)).fetchall()
        per_rule: dict[str, int] = {}
        for alarm in alarms:
            per_rule[alarm[1]] = per_rule.get(alarm[1], 0) + 1
        return {
            "camera": camera, "since": iso_time(since), "until": iso_time(until),
            "segments": [self._segment_doc(r, cameras, names) for r in rows],
            "segments_total": total,  # more than len(segments): only the longest are listed
            "alarms": [{"id": a[0], "camera": camera, "rule": a[1], "title": a[2], "severity": a[3], "start": _iso(a[4]),
                        "end": _iso(a[5]), "caption": a[6], "thumbnail": self._thumbnail(f"a{a[0]}.jpg")} for a in alarms],
            "alarms_per_rule": per_rule,
        }

    # --- one segment ---------------------------------------------------------------------------
    def segment(self, segment_id: int) -> dict | None:
        return self._run(lambda conn: self._segment(conn, segment_id))

    def _segment(self, conn, segment_id: int) -> dict | None:
        row = conn.execute("SELECT id, camera, start_ms, end_ms, count, caption, concepts, picture, variants, moments "
                           "FROM segments WHERE id = ?", (segment_id,)).fetchone()
        if row is None:
            return None
        names = _concept_names(conn)
        doc = self._segment_doc(row[:8], _camera_names(conn), names)
        variants = variants_of(row[8], row[5])
        doc["variants"], doc["passing"] = variants, [m for m in row[9].split("\n") if m]
        captions = conn.execute("SELECT t_ms, variant, text, concepts FROM captions WHERE segment = ? ORDER BY t_ms LIMIT ?",
                                (segment_id, DETAIL_MAX_CAPTIONS)).fetchall()
        doc["captions"] = [{"time": _iso(t), "caption": variants[v] if v is not None and v < len(variants) else (text or ""),
                            "concepts": _decode(blob, names)} for t, v, text, blob in captions]
        return doc

    def cameras(self) -> list[str]:
        return self._run(lambda conn: sorted(_camera_names(conn).values()))

    # --- helpers -------------------------------------------------------------------------------
    def _segment_doc(self, row, cameras: dict[int, str], names: dict[int, str]) -> dict:
        segment_id, camera, start_ms, end_ms, count, caption, blob, picture = row
        return {"id": segment_id, "camera": cameras.get(camera, "?"), "start": _iso(start_ms), "end": _iso(end_ms),
                "count": count, "caption": caption, "concepts": _decode(blob, names),
                "thumbnail": self._thumbnail(f"s{picture if picture is not None else segment_id}.jpg")}

    def _thumbnail(self, name: str) -> str | None:
        return name if os.path.isfile(self._thumbnails + name) else None  # a string join: summaries check thousands

    def thumbnail_path(self, name: str) -> Path | None:
        path = self.folder / "thumbnails" / name
        return path if is_thumbnail_name(name) and path.is_file() else None


def _iso(ms: int | None) -> str | None:
    """As metrics.iso_time (local zone, milliseconds), the zone looked up once a quarter hour: summaries format thousands."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, _local_zone(ms // 900_000)).isoformat(timespec="milliseconds")


@functools.lru_cache(maxsize=8192)
def _local_zone(quarter: int) -> timezone:
    """The local UTC offset during that quarter hour since 1970 (zones change offset on a quarter hour at the finest)."""
    return timezone(datetime.fromtimestamp(quarter * 900 + 450).astimezone().utcoffset())


def _decode(blob: bytes, names: dict[int, str]) -> dict[str, float]:
    return {names[i + 1]: round(q / 255, 3) for i, q in enumerate(blob or b"") if i + 1 in names}


def _concept_names(conn) -> dict[int, str]:
    return dict(conn.execute("SELECT id, name FROM concept_names"))


def _camera_names(conn) -> dict[int, str]:
    return dict(conn.execute("SELECT id, name FROM cameras"))


def _camera_key(conn, camera: str) -> int:
    row = conn.execute("SELECT id FROM cameras WHERE name = ?", (camera,)).fetchone()
    if row is None:
        known = ", ".join(sorted(_camera_names(conn).values())) or "none yet"
        raise QueryError(f"no camera {camera[:64]!r} in the history (cameras: {known})")
    return row[0]


def _names_concept(name: str, variants: str) -> int:
    concept = BY_NAME.get(name)
    return 1 if concept is None or any(concept.named_in(v.lower()) for v in (variants or "").split("\n")) else 0

