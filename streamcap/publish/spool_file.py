"""The spool's SQLite file: who owns the folder, opening (or setting aside) the database, commits, compaction.

One process owns a spool folder at a time: an flock on `spool.lock`, which
names the owner's pid, so a second process can say who holds it.

The database runs in WAL mode with exclusive locking: the WAL index then
lives in this process's memory, never in an mmap'ed -shm file that could
fault on a full tmpfs. A checkpoint every `WAL_PAGES` pages and
`journal_size_limit` keep the WAL near 4 MiB; `compact` gives the WAL and
free pages back to the filesystem once the spool is empty (auto_vacuum is
incremental), so a spool that held a long outage does not keep the disk full.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import time
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
DB_NAME = "alarms.sqlite3"
LOCK_NAME = "spool.lock"
WAL_PAGES = 1000  # checkpoint this often (about 4 MiB of 4 KiB pages; each checkpoint is an fsync) ...
WAL_LIMIT_BYTES = 4 << 20  # ... and trim the WAL file back to this afterwards
COMPACT_ABOVE_BYTES = 1 << 20  # an empty spool gives back its free pages beyond this ...
COMPACT_STEP_PAGES = 128  # ... this many pages per step
COMPACT_MAX_STEPS = 4096  # (a 2 GiB spool)


class SpoolLockedError(RuntimeError):
    pass


def take_folder_lock(directory: Path):
    """The open lock file, flocked and holding our pid; SpoolLockedError naming the owner if another process has it."""
    f = open(directory / LOCK_NAME, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        pid = f.read().strip()
        f.close()
        owner = f" (pid {pid})" if pid.isdigit() else ""
        raise SpoolLockedError(f"{directory}: spool directory is in use by another streamcap process{owner}; "
                               "give each instance its own mqtt.spool_dir") from None
    try:  # best effort: on a full disk the lock still holds without the pid
        f.truncate(0)
        f.write(str(os.getpid()))
        f.flush()
    except OSError:
        pass
    return f


def spool_owner(directory: str | os.PathLike) -> int | None:
    """The pid of the process holding this spool folder (0 if it did not say); None when nobody holds it."""
    try:
        f = open(Path(directory) / LOCK_NAME)
    except FileNotFoundError:
        return None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = f.read().strip()
            return int(text) if text.isdigit() else 0
        return None


def open_db(path: Path, durable: bool) -> sqlite3.Connection:
    """Open (or create) the spool database; a damaged file is set aside and an empty one started."""
    try:
        return _connect(path, durable)
    except sqlite3.DatabaseError as exc:
        if not _is_damaged(exc):
            raise  # a full disk or an I/O error says nothing about the file: never set good alarms aside
        # A damaged file must not stop the alarms that come next.
        aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
        log.error("%s: alarm spool is unreadable (%s); moved it to %s and started an empty one", path, exc, aside)
        os.replace(path, aside)
        for suffix in ("-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        return _connect(path, durable)


def _connect(path: Path, durable: bool) -> sqlite3.Connection:
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        # Before the first WAL access: the WAL index then lives in memory, never in an mmap'ed -shm file.
        db.execute("PRAGMA locking_mode=EXCLUSIVE")
        if db.execute("PRAGMA page_count").fetchone()[0] == 0:  # a new file; an older one is converted below
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        db.execute("PRAGMA journal_mode=WAL")
        # FULL fsyncs every commit (survives power loss); NORMAL survives a
        # process crash but may lose the last commits on power loss.
        db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        db.execute(f"PRAGMA wal_autocheckpoint={WAL_PAGES}")
        db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
        db.execute(SCHEMA)
        db.execute(OPEN_ALARMS_SCHEMA)
        if db.execute("PRAGMA auto_vacuum").fetchone()[0] != 2 and not db.execute("SELECT 1 FROM spool").fetchone():
            with contextlib.suppress(sqlite3.OperationalError):  # a full disk: stays as it is
                db.execute("PRAGMA auto_vacuum=INCREMENTAL")
                db.execute("VACUUM")  # empty, so cheap: from now on its free pages can be given back
    except BaseException:
        db.close()
        raise
    return db


def _is_damaged(exc: sqlite3.DatabaseError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
    return "not a database" in str(exc) or "malformed" in str(exc)


def last_seq(db: sqlite3.Connection) -> int:
    """The highest seq ever given: AUTOINCREMENT remembers it after the entry is gone."""
    row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'spool'").fetchone()
    (highest,) = db.execute("SELECT COALESCE(MAX(seq), 0) FROM spool").fetchone()
    return max(row[0] if row else 0, highest)


@contextlib.contextmanager
def transaction(db: sqlite3.Connection):
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        # SQLite often rolls back by itself on SQLITE_FULL or an I/O error; a second ROLLBACK then fails
        # ("no transaction is active") and must never replace the error that matters.
        if db.in_transaction:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error as cleanup:
                log.debug("alarm spool: rollback after a failed write: %s", cleanup)
        raise


def record_alarm(db: sqlite3.Connection, alarm_id: str, record: tuple[str, bytes] | None) -> None:
    """Set (topic, last payload) as the open alarm's record, or None: the alarm has ended."""
    if record is None:
        db.execute("DELETE FROM open_alarms WHERE alarm_id = ?", (alarm_id,))
    else:
        db.execute("INSERT OR REPLACE INTO open_alarms (alarm_id, topic, payload) VALUES (?, ?, ?)", (alarm_id, *record))


def compact(db: sqlite3.Connection, path: Path) -> None:
    """The spool is empty: give the WAL and free pages back to the filesystem, when there is more than a little."""
    try:
        if path.stat().st_size <= COMPACT_ABOVE_BYTES:
            return  # the common case, a small file: one stat per drain, no query
        # What can be given back: the free pages, and the file beyond the database's own size (pages the
        # WAL already dropped). Not what is still in use (open alarms), or the WAL journal_size_limit keeps.
        (page_size,) = db.execute("PRAGMA page_size").fetchone()
        (pages,) = db.execute("PRAGMA page_count").fetchone()
        (free_pages,) = db.execute("PRAGMA freelist_count").fetchone()
        if free_pages * page_size + max(0, path.stat().st_size - pages * page_size) <= COMPACT_ABOVE_BYTES:
            return
        # In steps with a checkpoint after each: the vacuum writes to the WAL, and on a nearly full disk
        # the WAL has room for a step, not for the whole; each checkpoint also shortens the database file.
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        for _ in range(COMPACT_MAX_STEPS):
            (free_pages,) = db.execute("PRAGMA freelist_count").fetchone()
            if not free_pages:
                break
            db.executescript(f"PRAGMA incremental_vacuum({COMPACT_STEP_PAGES});")  # execute() frees one page per call
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except (OSError, sqlite3.Error) as exc:
        log.debug("alarm spool %s: compaction skipped: %s", path, exc)


def is_disk_full(exc: sqlite3.Error, directory: Path, margin_bytes: int) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if (code is not None and code & 0xFF == sqlite3.SQLITE_FULL) or "disk is full" in str(exc):
        return True
    try:  # an I/O error on a disk without room is a full disk too
        return free_bytes(directory) < margin_bytes
    except OSError:
        return False


def free_bytes(directory: Path) -> int:
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize
