"""AlarmSpool: order, persistence across reopen, bound, exact acks, one owner."""
from __future__ import annotations

import multiprocessing

import pytest

from streamcap.publish.spool import AlarmSpool, SpoolLockedError


def put_n(spool: AlarmSpool, n: int, start: int = 0) -> list[int]:
    return [spool.put(f"a{i}", "sc/dev/gate/alarm", f"payload {i}".encode()) for i in range(start, start + n)]


def keys(spool: AlarmSpool) -> list[str]:
    return [e.key for e in spool.peek(limit=1_000_000)]


def test_entries_come_back_in_insertion_order(tmp_path):
    # given
    with AlarmSpool(tmp_path, max_messages=100) as spool:
        # when
        seqs = put_n(spool, 10)
        # then
        assert seqs == sorted(seqs), "seq must grow with each put"
        assert keys(spool) == [f"a{i}" for i in range(10)]
        assert [e.key for e in spool.peek(after_seq=seqs[3], limit=2)] == ["a4", "a5"]


def test_entry_keeps_every_field(tmp_path):
    # given
    with AlarmSpool(tmp_path) as spool:
        # when
        spool.put("a1", "sc/dev/gate/alarm", b'{"id":"a1"}', qos=2, retain=True,
                  snapshot_topic="sc/dev/gate/snapshot", snapshot=b"\xff\xd8jpeg")
        spool.put("a2", "sc/dev/yard/alarm", b"{}", qos=0)
        first, second = spool.peek(limit=2)
    # then
    assert (first.key, first.topic, first.payload, first.qos, first.retain) == (
        "a1", "sc/dev/gate/alarm", b'{"id":"a1"}', 2, True)
    assert (first.snapshot_topic, first.snapshot) == ("sc/dev/gate/snapshot", b"\xff\xd8jpeg")
    assert (second.snapshot_topic, second.snapshot, second.retain) == (None, None, False)
    assert "jpeg" not in repr(first), "snapshot bytes must stay out of logs"


@pytest.mark.parametrize("durable", [True, False])
def test_unacked_entries_survive_reopen_in_order(tmp_path, durable):
    # given
    spool = AlarmSpool(tmp_path, max_messages=100, durable=durable)
    seqs = put_n(spool, 5)
    spool.ack(seqs[0])
    spool.close()
    # when
    reopened = AlarmSpool(tmp_path, max_messages=100, durable=durable)
    later = put_n(reopened, 2, start=5)
    # then
    assert keys(reopened) == ["a1", "a2", "a3", "a4", "a5", "a6"]
    assert len(reopened) == 6
    assert min(later) > max(seqs), "seq must never be reused, even after the newest entry was acked"
    reopened.close()


def test_seq_is_not_reused_after_everything_was_acked_and_reopened(tmp_path):
    # given
    with AlarmSpool(tmp_path) as spool:
        old = put_n(spool, 3)
        for seq in old:
            spool.ack(seq)
    # when
    with AlarmSpool(tmp_path) as spool:
        (new,) = put_n(spool, 1)
    # then
    assert new > max(old)


@pytest.mark.parametrize(
    "bound, puts, expected_keys, expected_dropped",
    [
        (3, 3, ["a0", "a1", "a2"], 0),
        (3, 4, ["a1", "a2", "a3"], 1),
        (3, 10, ["a7", "a8", "a9"], 7),
        (1, 5, ["a4"], 4),
    ],
)
def test_full_spool_drops_the_oldest_and_counts(tmp_path, bound, puts, expected_keys, expected_dropped):
    # given
    dropped_reports: list[int] = []
    with AlarmSpool(tmp_path, max_messages=bound, on_drop=dropped_reports.append) as spool:
        # when
        put_n(spool, puts)
        # then
        assert keys(spool) == expected_keys
        assert len(spool) == len(expected_keys)
        assert spool.dropped == expected_dropped
        assert sum(dropped_reports) == expected_dropped


def test_ack_removes_exactly_that_entry(tmp_path):
    # given
    with AlarmSpool(tmp_path) as spool:
        seqs = put_n(spool, 5)
        # when
        removed = spool.ack(seqs[2])
        removed_again = spool.ack(seqs[2])
        # then
        assert removed is True
        assert removed_again is False, "a second ack of the same entry must remove nothing"
        assert keys(spool) == ["a0", "a1", "a3", "a4"]
        assert len(spool) == 4


def test_ack_of_an_entry_dropped_for_space_is_harmless(tmp_path):
    # given
    with AlarmSpool(tmp_path, max_messages=2) as spool:
        first, *_ = put_n(spool, 3)  # a0 dropped
        # when
        removed = spool.ack(first)
        # then
        assert removed is False
        assert keys(spool) == ["a1", "a2"]
        assert len(spool) == 2


def _try_open(path, result):
    try:
        AlarmSpool(path).close()
        result.put("opened")
    except SpoolLockedError as exc:
        result.put(str(exc))


def test_a_second_process_cannot_open_the_same_spool(tmp_path):
    # given
    spool = AlarmSpool(tmp_path)
    result = multiprocessing.get_context("spawn").Queue()
    # when
    proc = multiprocessing.get_context("spawn").Process(target=_try_open, args=(tmp_path, result))
    proc.start()
    message = result.get(timeout=60)
    proc.join(60)
    spool.close()
    # then
    assert "in use by another streamcap process" in message
    assert str(tmp_path) in message


def test_corrupt_spool_file_is_moved_aside(tmp_path, caplog):
    # given
    (tmp_path / "alarms.sqlite3").write_bytes(b"this is not a database" * 100)
    # when
    with AlarmSpool(tmp_path) as spool:
        spool.put("a0", "t", b"p")
        # then
        assert keys(spool) == ["a0"]
    assert list(tmp_path.glob("alarms.sqlite3.corrupt-*")), "the damaged file must be kept for inspection"
    assert "unreadable" in caplog.text


@pytest.mark.parametrize("durable", [True, False])
def test_ack_many_removes_exactly_those_entries_and_survives_reopen(tmp_path, durable):
    # given
    spool = AlarmSpool(tmp_path, durable=durable)
    seqs = put_n(spool, 6)
    # when
    removed = spool.ack_many([seqs[0], seqs[2], seqs[2], seqs[5]])
    spool.close()
    # then
    with AlarmSpool(tmp_path, durable=durable) as reopened:
        assert removed == 3
        assert keys(reopened) == ["a1", "a3", "a4"]
        assert len(reopened) == 3


def test_open_alarms_are_the_last_message_of_each_alarm_not_yet_ended_and_survive_reopen(tmp_path):
    # given the lifecycle of two alarms, one ended, one not, then a process that stops without ending it
    with AlarmSpool(tmp_path) as spool:
        spool.put("gone:0", "sc/dev/gate/alarm", b"gone new", alarm=("gone", True))
        spool.put("open:0", "sc/dev/yard/alarm", b"open new", alarm=("open", True))
        spool.put("gone:1", "sc/dev/gate/alarm", b"gone end", alarm=("gone", False))
        spool.put("open:1", "sc/dev/yard/alarm", b"open update", alarm=("open", True))
        spool.ack_many([e.seq for e in spool.peek(limit=10)])  # delivery does not end an alarm
    # when the next process opens the spool
    with AlarmSpool(tmp_path) as spool:
        # then it finds only the alarm left open, with its topic and last message
        assert spool.orphaned_alarms() == [("open", "sc/dev/yard/alarm", b"open update")]
        spool.put("open:2", "sc/dev/yard/alarm", b"open end", alarm=("open", False))
        assert spool.orphaned_alarms() == [] and len(spool) == 1


def test_messages_without_an_alarm_leave_the_open_alarms_alone(tmp_path):
    with AlarmSpool(tmp_path) as spool:
        spool.put("a:0", "t", b"new", alarm=("a", True))
        put_n(spool, 3)
        assert [a for a, _, _ in spool.orphaned_alarms()] == ["a"]
