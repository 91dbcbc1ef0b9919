"""AlarmSpool on a real filesystem that fills up (an 8 MiB tmpfs, mounted per test; skipped without root)."""
from __future__ import annotations

import logging
import os

import pytest

from streamcap.publish import spool as spool_module
from streamcap.publish.spool import AlarmSpool, SpoolState

SNAPSHOT = b"\xff\xd8" + os.urandom(20_000)  # about the size of a small alarm snapshot, incompressible


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    monkeypatch.setattr(spool_module, "RETRY_S", 0.0)


def put(spool: AlarmSpool, i: int, alarm: tuple[str, bool] | None = None) -> int:
    return spool.put(f"a{i}:0", "sc/dev/gate/alarm", f'{{"n": {i}}}'.encode(), snapshot_topic="sc/dev/gate/snapshot",
                     snapshot=SNAPSHOT, alarm=alarm)


def keys(spool: AlarmSpool) -> list[str]:
    return [e.key for e in spool.peek(limit=1_000_000)]


def test_a_full_disk_names_its_error_once_and_keeps_every_message_in_order(small_disk, caplog):
    # given a spool whose disk is full
    spool = AlarmSpool(small_disk.root / "spool", memory_max=100)
    put(spool, 0)
    small_disk.fill()
    # when more alarms come
    with caplog.at_level(logging.WARNING, logger="streamcap.publish.spool"):
        for i in range(1, 21):
            put(spool, i)
    # then none raises, they wait in memory after the one on disk, and the log says why, once
    status = spool.status
    assert status.state is SpoolState.full and status.in_memory == 20 and status.dropped == 0
    assert "disk is full" in status.detail
    assert keys(spool) == [f"a{i}:0" for i in range(21)] and len(spool) == 21
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "database or disk is full" in errors[0], errors
    assert "cannot rollback" not in caplog.text, "a failing cleanup must not hide the real error"
    # when space returns
    small_disk.free()
    spool.retry()
    # then everything is on disk, in order, and survives a restart
    assert spool.status.state is SpoolState.ok and spool.status.in_memory == 0
    assert "writable again" in caplog.text
    spool.close()
    with AlarmSpool(small_disk.root / "spool") as reopened:
        assert keys(reopened) == [f"a{i}:0" for i in range(21)]


def test_the_memory_queue_is_bounded_and_counts_exactly_what_it_dropped(small_disk):
    # given a full disk and room for 5 messages in memory
    drops: list[int] = []
    states = []
    spool = AlarmSpool(small_disk.root / "spool", memory_max=5, on_drop=drops.append, on_state=states.append)
    small_disk.fill()
    # when 12 alarms come
    for i in range(12):
        put(spool, i)
    # then the 7 oldest are dropped and counted, the 5 newest wait
    assert sum(drops) == 7 and spool.dropped == 7
    assert keys(spool) == [f"a{i}:0" for i in range(7, 12)]
    assert states[-1].dropped == 7 and states[-1].in_memory == 5
    # and once the disk has room they are stored, and nothing more is dropped
    small_disk.free()
    spool.retry()
    assert sum(drops) == 7 and spool.status.state is SpoolState.ok
    spool.close()
    with AlarmSpool(small_disk.root / "spool") as reopened:
        assert keys(reopened) == [f"a{i}:0" for i in range(7, 12)]


def test_messages_delivered_while_the_disk_is_full_are_not_sent_again(small_disk):
    # given 4 messages on disk and 2 in memory, the disk full
    spool = AlarmSpool(small_disk.root / "spool")
    on_disk = [put(spool, i) for i in range(4)]
    small_disk.fill()
    in_memory = [put(spool, i) for i in range(4, 6)]
    # when the broker acknowledges 2 of each (the deletes cannot be written)
    removed = spool.ack_many([on_disk[0], on_disk[2], in_memory[0], in_memory[1]])
    # then they are gone for this process
    assert removed == 4 and len(spool) == 2
    assert keys(spool) == ["a1:0", "a3:0"]
    # and once space returns they are deleted on disk too
    small_disk.free()
    spool.retry()
    spool.close()
    with AlarmSpool(small_disk.root / "spool") as reopened:
        assert keys(reopened) == ["a1:0", "a3:0"]


def test_an_alarm_opened_and_delivered_while_the_disk_was_full_is_still_recorded_open(small_disk):
    # given an alarm whose `new` went straight from memory to the broker while the disk was full
    spool = AlarmSpool(small_disk.root / "spool")
    small_disk.fill()
    seq = put(spool, 0, alarm=("a0", True))
    spool.ack(seq)
    # when space returns and the process is killed before ending the alarm
    small_disk.free()
    spool.retry()
    spool.close()
    # then the next start knows it is open (and sends its end)
    with AlarmSpool(small_disk.root / "spool") as reopened:
        assert [alarm_id for alarm_id, _, _ in reopened.orphaned_alarms()] == ["a0"]


def test_the_spool_gives_its_disk_space_back_once_it_drains(small_disk):
    # given a spool that held an outage's worth of alarms with snapshots (about 3 MB, and its WAL)
    spool = AlarmSpool(small_disk.root / "spool")
    free_before = small_disk.free_bytes
    seqs = [put(spool, i) for i in range(150)]
    assert small_disk.free_bytes < free_before - 3_000_000
    # when the broker takes them all
    for seq in seqs:
        spool.ack(seq)
    # then the WAL and the free pages go back to the filesystem
    files = {p.name: p.stat().st_size for p in (small_disk.root / "spool").iterdir()}
    assert files.get("alarms.sqlite3-wal", 0) <= 64 * 1024, files
    assert files["alarms.sqlite3"] <= 256 * 1024, files
    assert small_disk.free_bytes > free_before - 512 * 1024
    spool.close()


def test_a_spool_opened_on_a_full_disk_keeps_its_alarms(small_disk):
    # given a spool with alarms, closed, and then a full disk
    with AlarmSpool(small_disk.root / "spool") as spool:
        for i in range(3):
            put(spool, i)
    small_disk.fill()
    # when it is opened again (a restart while the disk is full)
    with AlarmSpool(small_disk.root / "spool") as reopened:
        # then the alarms are there to send, and nothing was set aside as damaged
        assert keys(reopened) == ["a0:0", "a1:0", "a2:0"]
    assert not list((small_disk.root / "spool").glob("*.corrupt-*"))
