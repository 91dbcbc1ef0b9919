"""A bounded FIFO of alarm messages waiting for the broker's acknowledgement: on disk, and in memory while the disk is full.

Every alarm goes through the spool, connected or not: it is written (and, by
default, fsync'ed) before `publish_alarm` returns and removed only when the
broker has acknowledged it. A crash at any point therefore loses nothing;
the worst case is one re-send of an alarm the broker had already taken, which
consumers can drop by its id.

SQLite in WAL mode: one file, atomic commits. `seq` is assigned here, one
more than the last ever assigned (AUTOINCREMENT keeps that across restarts),
so it is the delivery order, across restarts and the memory queue too. When
the disk holds `max_messages` alarms, the oldest are dropped to make room and
counted: during a long outage the newest alarms are the ones worth keeping.

Beside the queue, the spool keeps the last message of every alarm that has
not ended (`open_alarms`, updated in the same commit as the message): a
process killed before it could end its alarms leaves them there, and the
next start ends them (`orphaned_alarms`), so no subscriber is left showing
an alarm that nothing will ever end.

A full disk is a state, not an error (`status`). SQLite says "database or
disk is full" at INSERT or COMMIT and has often rolled back by itself, so a
rollback runs only while a transaction is still open and never replaces the
first error. While nothing can be written, new messages wait in a bounded
memory queue after those on disk (the sender delivers them from there when
the broker is up), acknowledgements that cannot be written are remembered so
this process never sends those messages again, and `retry()` (the sender
calls it) tries to write once a second; the first write that succeeds ends
the state. What the memory queue cannot hold is dropped, oldest first, and
counted: exactly the messages that could not be stored anywhere.

The SQLite file itself (the folder lock, WAL, compaction) is spool_file.py.
"""
from __future__ import annotations

import collections
import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

from streamcap.publish.spool_file import (
    COLUMNS, DB_NAME, SpoolLockedError, compact, free_bytes, is_disk_full, last_seq, open_db, record_alarm,
    spool_owner, take_folder_lock, transaction,
)
from streamcap.util.strenum import StrEnum

log = logging.getLogger(__name__)

__all__ = ["AlarmSpool", "SpoolEntry", "SpoolLockedError", "SpoolState", "SpoolStatus", "spool_owner"]

RETRY_S = 1.0  # while the disk is full, how often to try writing again
STORE_CHUNK = 64  # messages per commit when the memory queue moves to disk
PROBE_FREE_BYTES = 256 << 10  # nothing waits: the disk counts as usable again with this much free


class SpoolState(StrEnum):
    ok = "ok"
    full = "full"  # the filesystem is full (SQLITE_FULL, ENOSPC)
    unwritable = "unwritable"  # another write error (I/O error, read-only filesystem)


@dataclass(frozen=True)
class SpoolStatus:
    state: SpoolState
    detail: str  # the error that started this state, as SQLite said it
    in_memory: int  # messages waiting in memory
    dropped: int  # messages the memory queue could not hold since the state began


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


@dataclass(frozen=True)
class _Waiting:
    """A message not on disk yet, with its open-alarm change."""

    entry: SpoolEntry
    alarm: tuple[str, bool] | None


class AlarmSpool:
    def __init__(
        self,
        directory: str | os.PathLike,
        max_messages: int = 10_000,
        durable: bool = True,
        on_drop: Callable[[int], None] | None = None,
        memory_max: int = 1000,
        on_state: Callable[[SpoolStatus], None] | None = None,
    ) -> None:
        if max_messages < 1 or memory_max < 1:
            raise ValueError(f"spool bounds must be >= 1, got max_messages={max_messages}, memory_max={memory_max}")
        self.directory = Path(directory)
        self.max_messages, self.memory_max = max_messages, memory_max
        self.dropped = 0  # dropped by this instance: disk bound reached, or memory queue full while the disk was
        self._on_drop, self._on_state = on_drop, on_state
        self._lock = threading.Lock()
        self._memory: collections.OrderedDict[int, _Waiting] = collections.OrderedDict()
        self._delivered: set[int] = set()  # on disk and acknowledged, not deleted yet (the disk was full)
        self._alarm_records: dict[str, tuple[str, bytes] | None] = {}  # open-alarm changes not on disk yet
        self._state, self._detail, self._episode_dropped = SpoolState.ok, "", 0
        self._next_retry = 0.0
        self._pending_notes: list[SpoolStatus | int] = []  # reported outside the lock
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_file = take_folder_lock(self.directory)
        try:
            self.path = self.directory / DB_NAME
            self._durable = durable
            self._db = open_db(self.path, durable)
            (self._on_disk,) = self._db.execute("SELECT COUNT(*) FROM spool").fetchone()
            self._last_seq = last_seq(self._db)
        except BaseException:
            self._lock_file.close()
            raise

    def __len__(self) -> int:
        with self._lock:
            return self._on_disk - len(self._delivered) + len(self._memory)

    @property
    def status(self) -> SpoolStatus:
        with self._lock:
            return self._status_locked()

    # --- writing ---------------------------------------------------------------
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
        """Append one alarm message; returns its seq. Never raises for a full disk (see the module's docstring).

        `alarm` is (alarm id, still open after this message): the open-alarm
        record changes in the same commit, so a crash cannot separate them.
        """
        with self._lock:
            self._last_seq += 1
            entry = SpoolEntry(self._last_seq, key, topic, payload, qos, bool(retain), snapshot_topic, snapshot,
                               time.time())
            self._memory[entry.seq] = _Waiting(entry, alarm)
            if self._state is SpoolState.ok:
                self._store_locked()
            self._bound_memory_locked()
            if self._state is not SpoolState.ok:
                self._pending_notes.append(self._status_locked())  # how many wait, for /healthz
            notes = self._take_notes_locked()
        self._report(notes)
        return entry.seq

    def retry(self) -> None:
        """While the disk cannot be written, try again (at most once per RETRY_S); the first success ends the state."""
        with self._lock:
            if self._state is SpoolState.ok or self._db is None or time.monotonic() < self._next_retry:
                return
            self._next_retry = time.monotonic() + RETRY_S
            if self._memory or self._delivered or self._alarm_records:
                recovered = self._store_locked()
            else:
                recovered = self._probe_locked()
            if recovered:
                self._recover_locked()
            notes = self._take_notes_locked()
        self._report(notes)

    def _store_locked(self) -> bool:
        """Move what waits in memory to disk, oldest first, with the deferred deletes; False at the first failure."""
        size = STORE_CHUNK
        while True:
            chunk = [waiting for _, waiting in zip(range(size), self._memory.values())]
            if not chunk and not self._delivered and not self._alarm_records:
                return True
            try:
                removed, dropped = self._write_locked(chunk)
            except sqlite3.Error as exc:
                if len(chunk) > 1:  # a disk with room for a few messages takes them a few at a time
                    size = len(chunk) // 2
                    continue
                self._degrade_locked(exc)
                return False
            for waiting in chunk:
                del self._memory[waiting.entry.seq]
            self._on_disk += len(chunk) - removed - dropped
            self._delivered.clear()
            self._alarm_records.clear()
            if dropped:
                self.dropped += dropped
                self._pending_notes.append(dropped)
                log.warning("alarm spool full (%d): dropped the %d oldest alarm(s)", self.max_messages, dropped)
            if not self._memory:
                return True

    def _write_locked(self, chunk: list[_Waiting]) -> tuple[int, int]:
        """One commit: deferred deletes, open-alarm changes, the chunk, the disk bound. Returns (deleted, dropped)."""
        with transaction(self._db) as db:
            removed = sum(db.execute("DELETE FROM spool WHERE seq = ?", (seq,)).rowcount for seq in self._delivered)
            for alarm_id, record in self._alarm_records.items():
                record_alarm(db, alarm_id, record)
            for waiting in chunk:
                e = waiting.entry
                db.execute(f"INSERT INTO spool ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           (e.seq, e.key, e.topic, e.payload, e.qos, int(e.retain), e.snapshot_topic, e.snapshot,
                            e.enqueued_at))
                if waiting.alarm is not None:
                    alarm_id, still_open = waiting.alarm
                    record_alarm(db, alarm_id, (e.topic, e.payload) if still_open else None)
            excess = self._on_disk - removed + len(chunk) - self.max_messages
            if excess > 0:
                db.execute("DELETE FROM spool WHERE seq IN (SELECT seq FROM spool ORDER BY seq LIMIT ?)", (excess,))
        return removed, max(0, excess)

    def _bound_memory_locked(self) -> None:
        excess = len(self._memory) - self.memory_max
        if excess <= 0:
            return
        for _ in range(excess):
            self._memory.popitem(last=False)
        if not self._episode_dropped:
            log.error("alarm spool %s: the memory queue is full too (%d messages): dropping the oldest alarm messages "
                      "until the disk has room; counted in streamcap_drops_total{cause=\"spool_full\"}",
                      self.directory, self.memory_max)
        self._episode_dropped += excess
        self.dropped += excess
        self._pending_notes.append(excess)

    # --- state ------------------------------------------------------------------
    def _degrade_locked(self, exc: sqlite3.Error) -> None:
        self._next_retry = time.monotonic() + RETRY_S
        state = SpoolState.full if is_disk_full(exc, self.directory, PROBE_FREE_BYTES) else SpoolState.unwritable
        if state is not self._state:
            if self._state is SpoolState.ok:
                self._episode_dropped = 0
            self._state, self._detail = state, str(exc)
            log.error("alarm spool %s: cannot write (%s); alarm messages wait in memory (up to %d) and are delivered "
                      "from there, and go to disk once it has room", self.directory, exc, self.memory_max)
            self._pending_notes.append(self._status_locked())
        # A checkpoint can hand WAL pages back when the database file has free pages for them.
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _recover_locked(self) -> None:
        log.warning("alarm spool %s: writable again; every waiting alarm message is on disk (%d dropped while it was %s)",
                    self.directory, self._episode_dropped, self._state)
        self._state, self._detail = SpoolState.ok, ""
        self._pending_notes.append(self._status_locked())

    def _probe_locked(self) -> bool:
        """Nothing waits: is the disk usable again? Enough free space, and a write that commits."""
        try:
            free = free_bytes(self.directory)
            if free < PROBE_FREE_BYTES:
                return False
            with transaction(self._db) as db:
                (version,) = db.execute("PRAGMA user_version").fetchone()
                db.execute(f"PRAGMA user_version={(version + 1) % (1 << 30)}")
            return True
        except (OSError, sqlite3.Error):
            return False

    def _status_locked(self) -> SpoolStatus:
        return SpoolStatus(self._state, self._detail, len(self._memory), self._episode_dropped)

    def _take_notes_locked(self) -> list[SpoolStatus | int]:
        notes, self._pending_notes = self._pending_notes, []
        return notes

    def _report(self, notes: list[SpoolStatus | int]) -> None:
        for note in notes:
            callback = self._on_drop if isinstance(note, int) else self._on_state
            if callback is not None:
                try:
                    callback(note)
                except Exception:  # noqa: BLE001 - a reporting hook must not lose the alarm
                    log.exception("alarm spool: report hook failed")

    # --- reading and acknowledging -------------------------------------------
    def orphaned_alarms(self) -> list[tuple[str, str, bytes]]:
        """(alarm id, topic, last payload) of the alarms recorded open: at start, those a killed process left."""
        with self._lock:
            rows = self._db.execute("SELECT alarm_id, topic, payload FROM open_alarms ORDER BY rowid").fetchall()
        return [(alarm_id, topic, bytes(payload)) for alarm_id, topic, payload in rows]

    def forget_open_alarm(self, alarm_id: str) -> None:
        with self._lock:
            try:
                with transaction(self._db) as db:
                    record_alarm(db, alarm_id, None)
            except sqlite3.Error as exc:
                self._alarm_records[alarm_id] = None
                self._degrade_locked(exc)
            notes = self._take_notes_locked()
        self._report(notes)

    def peek(self, after_seq: int = 0, limit: int = 1, skip_topics: Collection[str] = ()) -> list[SpoolEntry]:
        """The oldest `limit` entries with seq > after_seq and a topic not in skip_topics, in order: those on
        disk, then those in memory."""
        skip = list(skip_topics)
        not_in = f"AND topic NOT IN ({','.join('?' * len(skip))})" if skip else ""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {COLUMNS} FROM spool WHERE seq > ? {not_in} ORDER BY seq LIMIT ?",
                (after_seq, *skip, limit + len(self._delivered)),
            ).fetchall()
            entries = [
                SpoolEntry(seq, key, topic, bytes(payload), qos, bool(retain), snap_topic,
                           None if snap is None else bytes(snap), at)
                for seq, key, topic, payload, qos, retain, snap_topic, snap, at in rows
                if seq not in self._delivered
            ][:limit]
            for seq, waiting in self._memory.items():
                if len(entries) >= limit:
                    break
                if seq > after_seq and waiting.entry.topic not in skip:
                    entries.append(waiting.entry)
        return entries

    def ack(self, seq: int) -> bool:
        """Remove exactly this entry; False if it was already gone (e.g. dropped)."""
        return self.ack_many([seq]) == 1

    def ack_many(self, seqs: list[int]) -> int:
        """Remove exactly these entries (one commit for those on disk); returns how many were there."""
        if not seqs:
            return 0
        with self._lock:
            removed = 0
            for seq in dict.fromkeys(seqs):
                waiting = self._memory.pop(seq, None)
                if waiting is not None:
                    removed += 1
                    if waiting.alarm is not None:
                        self._remember_alarm_locked(waiting)
            on_disk = [seq for seq in dict.fromkeys(seqs) if seq not in self._delivered and seq not in self._memory]
            if on_disk:
                removed += self._delete_locked(on_disk)
            if self._on_disk == 0 and not self._memory and self._state is SpoolState.ok:
                compact(self._db, self.path)
            if self._state is not SpoolState.ok:
                self._pending_notes.append(self._status_locked())
            notes = self._take_notes_locked()
        self._report(notes)
        return removed

    def _delete_locked(self, seqs: list[int]) -> int:
        db = self._db
        if self._state is SpoolState.ok:
            # An ack lost to a power cut only means one re-send, so acks skip
            # the fsync; the next durable put syncs them along with itself.
            if self._durable:
                db.execute("PRAGMA synchronous=NORMAL")
            try:
                with transaction(db):
                    removed = sum(db.execute("DELETE FROM spool WHERE seq = ?", (seq,)).rowcount for seq in seqs)
                self._on_disk -= removed
                return removed
            except sqlite3.Error as exc:
                self._degrade_locked(exc)
            finally:
                if self._durable:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("PRAGMA synchronous=FULL")
        # Reading works on a full disk: remember what was delivered, delete it with the next write that succeeds.
        marks = ",".join("?" * len(seqs))
        present = [seq for (seq,) in db.execute(f"SELECT seq FROM spool WHERE seq IN ({marks})", seqs)]
        self._delivered.update(present)
        return len(present)

    def _remember_alarm_locked(self, waiting: _Waiting) -> None:
        """A message delivered straight from memory: its open-alarm change still has to reach the disk."""
        alarm_id, still_open = waiting.alarm
        if still_open:
            self._alarm_records[alarm_id] = (waiting.entry.topic, waiting.entry.payload)
        elif self._db.execute("SELECT 1 FROM open_alarms WHERE alarm_id = ?", (alarm_id,)).fetchone():
            self._alarm_records[alarm_id] = None
        else:
            self._alarm_records.pop(alarm_id, None)  # opened and ended while the disk was full: nothing to record

    # --- closing ----------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            if self._db is None:
                return
            try:
                if self._memory or self._delivered or self._alarm_records:
                    self._store_locked()
                if self._memory:
                    lost = len(self._memory)
                    log.error("alarm spool %s: %d alarm message(s) waiting in memory are lost: the disk is still full",
                              self.directory, lost)
                    self.dropped += lost
                    self._pending_notes.append(lost)
                    self._memory.clear()
                self._db.close()
            finally:
                self._db = None
                self._lock_file.close()  # releases the flock
            notes = self._take_notes_locked()
        self._report(notes)

    def __enter__(self) -> "AlarmSpool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
