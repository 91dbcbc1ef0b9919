"""A bounded on-disk FIFO of alarms waiting for the broker's acknowledgement.

Every alarm goes through the spool, connected or not: it is written (and, by
default, fsync'ed) before `publish_alarm` returns and removed only when the
broker has acknowledged it. A crash at any point therefore loses nothing;
the worst case is one re-send of an alarm the broker had already taken, which
consumers can drop by its id.

SQLite in WAL mode: one file, atomic commits, and readers never block the
writer. `seq` (INTEGER PRIMARY KEY AUTOINCREMENT) never reuses a value, so it
is the delivery order, across restarts too. When the spool holds
`max_messages` alarms, the oldest are dropped to make room and counted: during
a long outage the newest alarms are the ones worth keeping.

Beside the queue, the spool keeps the last message of every alarm that has
not ended (`open_alarms`, updated in the same commit as the message): a
process killed before it could end its alarms leaves them there, and the
next start ends them (`orphaned_alarms`), so no subscriber is left showing
an alarm that nothing will ever end.

One process owns a spool directory at a time (an flock on `spool.lock`);
two publishers draining one spool would send every alarm twice.
"""
from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    snapshot_topic TEXT,
    snapshot BLOB,
    enqueued_at REAL NOT NULL
)
"""
OPEN_ALARMS_SCHEMA = """
CREATE TABLE IF NOT EXISTS open_alarms (
    alarm_id TEXT PRIMARY KEY,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL
)
"""
COLUMNS = "seq, key, topic, payload, qos, retain, snapshot_topic, snapshot, enqueued_at"


class SpoolLockedError(RuntimeError):
    pass


@dataclass(frozen=True)
class SpoolEntry:
    seq: int
    key: str  # the alarm id
    topic: str
    payload: bytes
    qos: int
    retain: bool
    snapshot_topic: str | None
    snapshot: bytes | None
    enqueued_at: float

    def __repr__(self) -> str:  # keep JPEG bytes out of logs
        return f"SpoolEntry(seq={self.seq}, key={self.key!r}, topic={self.topic!r})"


class AlarmSpool:
    def __init__(
        self,
        directory: str | os.PathLike,
        max_messages: int = 10_000,
        durable: bool = True,
        on_drop: Callable[[int], None] | None = None,
    ) -> None:
        if max_messages < 1:
            raise ValueError(f"spool max_messages must be >= 1, got {max_messages}")
        self.directory = Path(directory)
        self.max_messages = max_messages
        self.dropped = 0  # dropped by this instance because the spool was full
        self._on_drop = on_drop
        self._lock = threading.Lock()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_file = self._take_dir_lock()
        try:
            self.path = self.directory / "alarms.sqlite3"
            self._durable = durable
            self._db = self._open(durable)
            (self._depth,) = self._db.execute("SELECT COUNT(*) FROM spool").fetchone()
        except BaseException:
            self._lock_file.close()
            raise

    def _take_dir_lock(self):
        f = open(self.directory / "spool.lock", "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise SpoolLockedError(
                f"{self.directory}: spool directory is in use by another streamcap process; "
                "give each instance its own mqtt.spool_dir"
            ) from None
        return f

    def _open(self, durable: bool) -> sqlite3.Connection:
        try:
            return self._connect(durable)
        except sqlite3.DatabaseError as exc:
            # A damaged file must not stop the alarms that come next.
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            log.error("%s: alarm spool is unreadable (%s); moved it to %s and started an empty one",
                      self.path, exc, aside)
            os.replace(self.path, aside)
            for suffix in ("-wal", "-shm"):
                Path(str(self.path) + suffix).unlink(missing_ok=True)
            return self._connect(durable)

    def _connect(self, durable: bool) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            # FULL fsyncs every commit (survives power loss); NORMAL survives a
            # process crash but may lose the last commits on power loss.
            db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            db.execute(SCHEMA)
            db.execute(OPEN_ALARMS_SCHEMA)
            db.execute("SELECT COUNT(*) FROM spool").fetchone()
        except BaseException:
            db.close()
            raise
        return db

    def __len__(self) -> int:
        with self._lock:
            return self._depth

    def put(
        self,
        key: str,
        topic: str,
        payload: bytes,
        qos: int = 1,
        retain: bool = False,
        snapshot_topic: str | None = None,
        snapshot: bytes | None = None,
        alarm: tuple[str, bool] | None = None,
    ) -> int:
        """Append one alarm message; returns its seq. Drops the oldest when full.

        `alarm` is (alarm id, still open after this message): the open-alarm
        record changes in the same commit, so a crash cannot separate them.
        """
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                cur = db.execute(
                    "INSERT INTO spool (key, topic, payload, qos, retain, snapshot_topic, snapshot, enqueued_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (key, topic, payload, qos, int(retain), snapshot_topic, snapshot, time.time()),
                )
                seq = cur.lastrowid
                if alarm is not None:
                    alarm_id, still_open = alarm
                    if still_open:
                        db.execute("INSERT OR REPLACE INTO open_alarms (alarm_id, topic, payload) VALUES (?, ?, ?)",
                                   (alarm_id, topic, payload))
                    else:
                        db.execute("DELETE FROM open_alarms WHERE alarm_id = ?", (alarm_id,))
                excess = self._depth + 1 - self.max_messages
                if excess > 0:
                    db.execute(
                        "DELETE FROM spool WHERE seq IN (SELECT seq FROM spool ORDER BY seq LIMIT ?)", (excess,)
                    )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            dropped = max(0, excess)
            self._depth += 1 - dropped
            self.dropped += dropped
        if dropped:
            log.warning("alarm spool full (%d): dropped the %d oldest alarm(s)", self.max_messages, dropped)
            if self._on_drop is not None:
                self._on_drop(dropped)
        return seq

    def orphaned_alarms(self) -> list[tuple[str, str, bytes]]:
        """(alarm id, topic, last payload) of the alarms recorded open: at start, those a killed process left."""
        with self._lock:
            rows = self._db.execute("SELECT alarm_id, topic, payload FROM open_alarms ORDER BY rowid").fetchall()
        return [(alarm_id, topic, bytes(payload)) for alarm_id, topic, payload in rows]

    def forget_open_alarm(self, alarm_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM open_alarms WHERE alarm_id = ?", (alarm_id,))

    def peek(self, after_seq: int = 0, limit: int = 1) -> list[SpoolEntry]:
        """The oldest `limit` entries with seq > after_seq, in order."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {COLUMNS} FROM spool WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)
            ).fetchall()
        return [
            SpoolEntry(seq, key, topic, bytes(payload), qos, bool(retain), snap_topic,
                       None if snap is None else bytes(snap), at)
            for seq, key, topic, payload, qos, retain, snap_topic, snap, at in rows
        ]

    def ack(self, seq: int) -> bool:
        """Remove exactly this entry; False if it was already gone (e.g. dropped)."""
        return self.ack_many([seq]) == 1

    def ack_many(self, seqs: list[int]) -> int:
        """Remove exactly these entries in one commit; returns how many were there."""
        if not seqs:
            return 0
        with self._lock:
            db = self._db
            # An ack lost to a power cut only means one re-send, so acks skip
            # the fsync; the next durable put syncs them along with itself.
            if self._durable:
                db.execute("PRAGMA synchronous=NORMAL")
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    removed = sum(db.execute("DELETE FROM spool WHERE seq = ?", (seq,)).rowcount for seq in seqs)
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
            finally:
                if self._durable:
                    db.execute("PRAGMA synchronous=FULL")
            self._depth -= removed
        return removed

    def close(self) -> None:
        with self._lock:
            if self._db is None:
                return
            try:
                self._db.close()
            finally:
                self._db = None
                self._lock_file.close()  # releases the flock

    def __enter__(self) -> "AlarmSpool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
