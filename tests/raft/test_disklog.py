"""DiskRaftLog: the RaftLog rules on real files, and what survives a reopen or a crash.

The log-protocol tests of test_node.py run here against both logs; the rest
checks the disk log against a MemoryRaftLog model (same operations, same
answers) before and after every reopen, and the crash cases the open-time
repair exists for.
"""

from __future__ import annotations

import os
import random

import pytest

from kbroker.log.config import LogConfig
from kbroker.log.partition_log import PartitionLog
from kbroker.raft import (
    LEADER_CHANGE,
    Entry,
    HighWatermarkChanged,
    MemoryQuorumStateStore,
    MemoryRaftLog,
    RaftNode,
    Snapshot,
    SnapshotId,
)
from kbroker.raft.disklog import METADATA_PARTITION_DIR, DiskRaftLog, InconsistentRaftLog, checkpoint_name

# Small segments, so that rolls and whole-segment deletions happen in small tests.
SMALL = LogConfig(retention_ms=-1, retention_bytes=-1, segment_bytes=400)


@pytest.fixture(autouse=True)
def close_every_log(monkeypatch):
    """Close whatever a test left open (assertions on a fresh reopen read best inline).

    Also makes fsync only check its descriptor: the crashes here happen
    in-process and keep the page cache, so a real fsync buys these tests no
    coverage, only time (milliseconds each on a busy disk, hundreds of them).
    """
    monkeypatch.setattr(os, "fsync", os.fstat)
    opened = []
    init = DiskRaftLog.__init__

    def tracking_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        opened.append(self)

    monkeypatch.setattr(DiskRaftLog, "__init__", tracking_init)
    yield
    for log in opened:
        log.close()


def entries_of(epochs, start=0):
    return [Entry(start + i, e, b"e%d" % (start + i)) for i, e in enumerate(epochs)]


@pytest.fixture(params=["memory", "disk"])
def make_log(request, tmp_path):
    """``make_log(*epochs)``: a log holding one entry per epoch, of the parametrized kind."""
    opened = []

    def make(*epochs):
        if request.param == "memory":
            log = MemoryRaftLog()
        else:
            log = DiskRaftLog.open(str(tmp_path / f"d{len(opened)}"))
            opened.append(log)
        log.append(entries_of(epochs))
        return log

    yield make
    for log in opened:
        log.close()


def reopened(log):
    """The same log after a close and an open (a MemoryRaftLog is its own 'disk')."""
    if isinstance(log, MemoryRaftLog):
        return log
    log.close()
    return DiskRaftLog.open(os.path.dirname(log.path), config=log.plog.config)


def state(log):
    """Everything a RaftLog answers, for comparing two logs."""
    start, end = log.start_offset, log.end_offset
    return (
        start,
        end,
        log.last_epoch,
        log.entries(start, 1 << 30),
        [log.end_offset_for_epoch(e) for e in range(-1, log.last_epoch + 3)],
        [log.epoch_of(o) for o in range(max(0, start - 2), end + 2)],
        log.latest_snapshot,
    )


# ---------------------------------------------------------------- test_node.py's log tests, on both logs
def test_end_offset_for_epoch_is_the_leader_epoch_cache(make_log):
    log = make_log(1, 1, 3, 3, 3, 5)
    assert log.end_offset_for_epoch(1) == (1, 2)
    assert log.end_offset_for_epoch(2) == (1, 2)
    assert log.end_offset_for_epoch(3) == (3, 5)
    assert log.end_offset_for_epoch(9) == (5, 6)
    assert log.end_offset_for_epoch(0) == (-1, 0)
    log.truncate_to(3)
    assert log.end_offset_for_epoch(5) == (3, 3) and log.last_epoch == 3
    log = reopened(log)
    assert log.end_offset_for_epoch(5) == (3, 3) and log.last_epoch == 3
    assert log.end_offset_for_epoch(1) == (1, 2) and log.end_offset == 3


def test_snapshot_drops_the_prefix_and_keeps_its_epoch_answerable(make_log):
    log = make_log(1, 1, 2, 2, 3)
    log.take_snapshot(Snapshot(SnapshotId(3, 2), b"s"))
    assert (log.start_offset, log.end_offset) == (3, 5)
    assert log.end_offset_for_epoch(2) == (2, 4)
    assert log.end_offset_for_epoch(1) is None
    log = reopened(log)
    assert (log.start_offset, log.end_offset) == (3, 5)
    assert log.end_offset_for_epoch(2) == (2, 4) and log.end_offset_for_epoch(1) is None
    log.truncate_to(3)
    assert log.last_epoch == 2 and log.end_offset_for_epoch(2) == (2, 3)
    with pytest.raises(ValueError):
        log.truncate_to(2)
    log = reopened(log)
    assert log.last_epoch == 2 and log.end_offset_for_epoch(2) == (2, 3)
    assert log.latest_snapshot == Snapshot(SnapshotId(3, 2), b"s")


def test_install_snapshot_keeps_a_consistent_suffix_and_replaces_a_diverging_log(make_log):
    log = make_log(1, 1, 2, 2)
    log.install_snapshot(Snapshot(SnapshotId(2, 1), b"s"))
    assert (log.start_offset, log.end_offset) == (2, 4)
    assert reopened(log).entries(2, 10) == entries_of([2, 2], start=2)
    other = make_log(1, 1, 1, 1)
    other.install_snapshot(Snapshot(SnapshotId(3, 2), b"s"))
    assert (other.start_offset, other.end_offset, other.last_epoch) == (3, 3, 2)
    other = reopened(other)
    assert (other.start_offset, other.end_offset, other.last_epoch) == (3, 3, 2)
    assert other.latest_snapshot == Snapshot(SnapshotId(3, 2), b"s")


def test_invalid_appends_are_refused_before_anything_is_written(tmp_path):
    # (MemoryRaftLog keeps the valid head of a bad append; the disk log writes nothing of it)
    log = DiskRaftLog.open(str(tmp_path))
    log.append(entries_of([1, 2]))
    with pytest.raises(ValueError):
        log.append([Entry(2, 2, b"x"), Entry(4, 2, b"y")])  # a gap
    with pytest.raises(ValueError):
        log.append([Entry(2, 2, b"x"), Entry(3, 1, b"y")])  # an epoch going down
    assert log.end_offset == 2
    assert reopened(log).end_offset == 2


# ---------------------------------------------------------------- disk against the model
def _same_ops(rng: random.Random, disk: DiskRaftLog, model: MemoryRaftLog, tmp_path, steps: int) -> DiskRaftLog:
    """Random appends, truncations, snapshots and reopens on both logs; their answers must agree throughout."""
    epoch = 1
    for _ in range(steps):
        op = rng.random()
        if op < 0.45:
            if rng.random() < 0.3:
                epoch += 1
            start = model.end_offset
            batch = [Entry(start, epoch, LEADER_CHANGE)] if rng.random() < 0.2 else []
            batch += [Entry(start + len(batch) + i, epoch, rng.randbytes(rng.randrange(0, 40)))
                      for i in range(rng.randrange(1, 8))]
            for log in (disk, model):
                log.append(batch)
        elif op < 0.6:
            to = rng.randrange(model.start_offset, model.end_offset + 1)
            for log in (disk, model):
                log.truncate_to(to)
        elif op < 0.7 and model.end_offset > model.start_offset:
            end = rng.randrange(model.start_offset + 1, model.end_offset + 1)
            snap = Snapshot(SnapshotId(end, model.epoch_of(end - 1)), rng.randbytes(16))
            for log in (disk, model):
                log.take_snapshot(snap)
        elif op < 0.77:
            if rng.random() < 0.5 and model.end_offset > model.start_offset:  # one the log continues
                end = rng.randrange(model.start_offset + 1, model.end_offset + 1)
                sid = SnapshotId(end, model.epoch_of(end - 1))
            else:  # from a leader the log diverged from, or far ahead of it
                epoch += 1
                sid = SnapshotId(model.end_offset + rng.randrange(0, 5), epoch)
            snap = Snapshot(sid, rng.randbytes(16))
            for log in (disk, model):
                log.install_snapshot(snap)
        elif op < 0.8:
            disk = reopened(disk)
        elif op < 0.85:  # every change was fsynced before it returned: a crash loses nothing
            disk = DiskRaftLog.open(_crash(disk), config=disk.plog.config)
        assert state(disk) == state(model)
    disk = reopened(disk)
    assert state(disk) == state(model)
    return disk


@pytest.mark.parametrize("seed", range(4))
def test_the_disk_log_answers_as_the_memory_log_does_across_reopens(tmp_path, seed):
    disk = DiskRaftLog.open(str(tmp_path), config=SMALL)
    disk = _same_ops(random.Random(seed), disk, MemoryRaftLog(), tmp_path, 60)
    # the snapshot is the only .checkpoint; segments wholly below it are gone
    files = os.listdir(disk.path)
    snap = disk.latest_snapshot
    assert [f for f in files if f.endswith(".checkpoint")] == ([checkpoint_name(snap.snapshot_id)] if snap else [])
    if snap is not None:
        assert len(disk.plog.segments) == 1 or disk.plog.segments[1].base_offset > snap.snapshot_id.end_offset
    disk.close()


def test_truncating_inside_a_batch_keeps_the_entries_before_the_cut(tmp_path):
    log = DiskRaftLog.open(str(tmp_path))
    log.append(entries_of([1] * 10))  # one batch
    log.truncate_to(6)
    log = reopened(log)
    assert log.entries(0, 100) == entries_of([1] * 6)
    # and a batch straddling the snapshot end: the part below the start is not rewritten
    log.take_snapshot(Snapshot(SnapshotId(3, 1), b"s"))
    log.truncate_to(5)
    log = reopened(log)
    assert (log.start_offset, log.entries(3, 100)) == (3, entries_of([1, 1], start=3))
    assert log.plog.log_start_offset == 3
    log.close()


class _Crash(BaseException):
    """Dies mid-method, like a power cut: no except clause of the log catches it."""


@pytest.mark.parametrize("step", ["truncate_to", "truncate_fully_and_start_at", "append", "flush"])
@pytest.mark.parametrize("snapshot_inside_the_batch", [False, True])
def test_a_crash_inside_a_truncation_keeps_the_head_of_the_cut_batch(tmp_path, monkeypatch, step,
                                                                      snapshot_inside_the_batch):
    log = DiskRaftLog.open(str(tmp_path))
    log.append(entries_of([1] * 10))  # one batch: the cut below falls inside it
    if snapshot_inside_the_batch:
        log.take_snapshot(Snapshot(SnapshotId(3, 1), b"s"))

    def crash(*args, **kwargs):
        raise _Crash

    monkeypatch.setattr(log.plog, step, crash)
    crashed = True
    try:
        log.truncate_to(6)
        crashed = False  # this path never took that step
    except _Crash:
        pass
    monkeypatch.undo()
    log = DiskRaftLog.open(_crash(log))
    start = 3 if snapshot_inside_the_batch else 0
    assert (log.start_offset, log.entries(start, 100)) == (start, entries_of([1] * (6 - start), start=start))
    assert not os.path.exists(os.path.join(log.path, "truncation.pending"))
    log.append(entries_of([2], start=6))  # the replay is not repeated at the next open
    log = DiskRaftLog.open(_crash(log))
    assert log.end_offset == 7 and log.last_epoch == 2
    log.close()
    assert crashed or step in ("truncate_to", "truncate_fully_and_start_at")


def test_leader_change_entries_survive_a_reopen(tmp_path):
    log = DiskRaftLog.open(str(tmp_path))
    log.append([Entry(0, 1, LEADER_CHANGE), Entry(1, 1, b"a"), Entry(2, 2, LEADER_CHANGE), Entry(3, 2, LEADER_CHANGE)])
    expected = log.entries(0, 10)
    assert reopened(log).entries(0, 10) == expected
    assert expected[2].payload is LEADER_CHANGE


def test_payloads_must_be_bytes(tmp_path):
    log = DiskRaftLog.open(str(tmp_path))
    with pytest.raises(TypeError):
        log.append([Entry(0, 1, "text")])
    log.append([Entry(0, 1, bytearray(b"ab")), Entry(1, 1, memoryview(b"cd"))])
    assert [e.payload for e in log.entries(0, 2)] == [b"ab", b"cd"]
    assert [type(e.payload) for e in reopened(log).entries(0, 2)] == [bytes, bytes]


def test_over_wraps_a_partition_log_opened_elsewhere(tmp_path):
    log = DiskRaftLog.open(str(tmp_path))
    log.append(entries_of([1, 1, 2]))
    log.take_snapshot(Snapshot(SnapshotId(1, 1), b"s"))
    log.close()
    plog = PartitionLog.open(str(tmp_path / METADATA_PARTITION_DIR), DiskRaftLog.CONFIG)  # as the LogManager does
    log = DiskRaftLog.over(plog)
    assert (log.start_offset, log.entries(1, 10), log.latest_snapshot) == (
        1, entries_of([1, 2], start=1), Snapshot(SnapshotId(1, 1), b"s"))
    log.append(entries_of([2], start=3))
    log.close()
    assert plog.closed and DiskRaftLog.open(str(tmp_path)).end_offset == 4


# ---------------------------------------------------------------- crashes
def _crash(log: DiskRaftLog) -> str:
    """Drop the log without closing it (no clean-shutdown flush), as a crash would; its directory."""
    log.plog.close_without_flush()
    return os.path.dirname(log.path)


def test_a_torn_tail_loses_only_the_torn_batch(tmp_path):
    log = DiskRaftLog.open(str(tmp_path))
    log.append(entries_of([1, 1, 1]))
    log.append(entries_of([2, 2, 2], start=3))
    segment = os.path.join(log.path, "00000000000000000000.log")
    size = os.path.getsize(segment)
    _crash(log)
    os.truncate(segment, size - 7)  # the second batch, cut short mid-write
    log = DiskRaftLog.open(str(tmp_path))
    assert log.entries(0, 10) == entries_of([1, 1, 1]) and log.last_epoch == 1
    log.append(entries_of([3], start=3))  # and the log goes on from there
    assert reopened(log).entries(0, 10) == entries_of([1, 1, 1, 3])


def test_a_leftover_part_file_is_ignored_and_removed(tmp_path):
    log = DiskRaftLog.open(str(tmp_path))
    log.append(entries_of([1, 1, 2, 2]))
    log.take_snapshot(Snapshot(SnapshotId(2, 1), b"good"))
    part = os.path.join(log.path, checkpoint_name(SnapshotId(4, 2)) + ".part")
    with open(part, "wb") as f:
        f.write(b"half a snap")
    log = DiskRaftLog.open(_crash(log))
    assert log.latest_snapshot == Snapshot(SnapshotId(2, 1), b"good")
    assert (log.start_offset, log.end_offset) == (2, 4)
    assert not os.path.exists(part)
    log.close()


def _write_checkpoint(path: str, sid: SnapshotId, blob: bytes) -> None:
    with open(os.path.join(path, checkpoint_name(sid)), "wb") as f:
        f.write(blob)


def test_a_crash_before_the_prefix_was_dropped_drops_it_at_open(tmp_path):
    log = DiskRaftLog.open(str(tmp_path), config=SMALL)
    for start in range(0, 40, 5):  # several small segments
        log.append(entries_of([1 if start < 20 else 2] * 5, start=start))
    assert len(log.plog.segments) >= 3
    _write_checkpoint(log.path, SnapshotId(25, 2), b"snap")  # as if take_snapshot stopped right after the file
    log = DiskRaftLog.open(_crash(log), config=SMALL)
    assert (log.start_offset, log.end_offset, log.latest_snapshot.blob) == (25, 40, b"snap")
    assert log.entries(25, 100) == entries_of([2] * 15, start=25)
    assert log.end_offset_for_epoch(2) == (2, 40) and log.end_offset_for_epoch(1) is None
    bases = [seg.base_offset for seg in log.plog.segments]
    assert bases[0] <= 25 and all(b > 25 for b in bases[1:])  # the segments wholly below went away
    log.close()


@pytest.mark.parametrize("sid", [SnapshotId(3, 7), SnapshotId(9, 1)], ids=["epoch-differs", "beyond-the-log"])
def test_a_log_inconsistent_with_the_snapshot_is_replaced_by_an_empty_one_at_its_end(tmp_path, sid):
    log = DiskRaftLog.open(str(tmp_path))
    log.append(entries_of([1, 1, 1, 1, 1]))
    _write_checkpoint(log.path, sid, b"leader's")  # as if install_snapshot stopped right after the file
    log = DiskRaftLog.open(_crash(log))
    assert (log.start_offset, log.end_offset, log.last_epoch) == (sid.end_offset, sid.end_offset, sid.epoch)
    assert log.latest_snapshot == Snapshot(sid, b"leader's")
    log.append([Entry(sid.end_offset, sid.epoch, b"next")])
    assert reopened(log).entries(sid.end_offset, 10) == [Entry(sid.end_offset, sid.epoch, b"next")]


def test_an_older_checkpoint_left_by_a_crash_is_removed(tmp_path):
    log = DiskRaftLog.open(str(tmp_path))
    log.append(entries_of([1, 1, 2, 2]))
    log.take_snapshot(Snapshot(SnapshotId(3, 2), b"new"))
    _write_checkpoint(log.path, SnapshotId(1, 1), b"old")
    log = DiskRaftLog.open(_crash(log))
    assert log.latest_snapshot == Snapshot(SnapshotId(3, 2), b"new")
    assert [f for f in os.listdir(log.path) if f.endswith(".checkpoint")] == [checkpoint_name(SnapshotId(3, 2))]
    log.close()


def test_a_log_starting_above_zero_without_a_snapshot_is_refused(tmp_path):
    log = DiskRaftLog.open(str(tmp_path))
    log.append(entries_of([1, 1, 1]))
    log.take_snapshot(Snapshot(SnapshotId(2, 1), b"s"))
    os.unlink(os.path.join(log.path, checkpoint_name(SnapshotId(2, 1))))
    with pytest.raises(InconsistentRaftLog):
        DiskRaftLog.open(_crash(log))


# ---------------------------------------------------------------- disk failures
def test_a_failed_fsync_leaves_memory_behind_and_refuses_further_changes(tmp_path, monkeypatch):
    log = DiskRaftLog.open(str(tmp_path))
    log.append(entries_of([1, 1]))

    def failing_flush(*args, **kwargs):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(log.plog, "flush", failing_flush)
    monkeypatch.setattr(os, "fsync", failing_flush)  # an append within a segment fsyncs it directly
    with pytest.raises(OSError):
        log.append(entries_of([1], start=2))
    assert log.end_offset == 2  # what may not be durable is not answered from memory
    monkeypatch.undo()
    with pytest.raises(OSError):
        log.append(entries_of([1], start=2))
    with pytest.raises(OSError):
        log.truncate_to(1)
    assert log.entries(0, 10) == entries_of([1, 1])
    log.close()
    # the next start recovers what the files hold
    log = DiskRaftLog.open(str(tmp_path))
    assert log.end_offset in (2, 3)
    log.close()


# ---------------------------------------------------------------- with the state machine
def test_a_raft_node_on_the_disk_log_finds_its_entries_after_a_restart(tmp_path):
    store = MemoryQuorumStateStore()
    log = DiskRaftLog.open(str(tmp_path))
    n = RaftNode(1, (1,), log, store, rng=random.Random(0), now_ms=0)
    n.tick(n.next_deadline())
    assert n.role == "leader" and n.epoch == 1
    assert n.propose([b"a", b"b"]) == 2
    assert HighWatermarkChanged(3) in n.take_events()
    log.close()

    log = DiskRaftLog.open(str(tmp_path))
    assert log.entries(0, 10) == [Entry(0, 1, LEADER_CHANGE), Entry(1, 1, b"a"), Entry(2, 1, b"b")]
    n = RaftNode(1, (1,), log, store, rng=random.Random(1), now_ms=100_000)
    for _ in range(5):
        if n.role == "leader":
            break
        n.tick(n.next_deadline())
    assert n.role == "leader" and n.epoch == 2
    offset = n.propose([b"c"])
    assert log.entries(3, 10) == [Entry(3, 2, LEADER_CHANGE), Entry(offset, 2, b"c")]
    log.close()
    assert DiskRaftLog.open(str(tmp_path)).end_offset == offset + 1
