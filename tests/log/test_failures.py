"""I/O failures in the log layer: state moves only after a successful write,
an OSError takes the log dir offline, and background passes survive anything.

Failures are injected deterministically by patching the one OS call (or
constructor) that should fail; everything else runs on real files.
"""

from __future__ import annotations

import errno
import os

import pytest
import trio

from protocol.records import encode_batch

from kbroker.log import KafkaStorageError
from kbroker.log import manager as manager_mod
from kbroker.log import partition_log as pl_mod
from kbroker.log.manager import CLEAN_SHUTDOWN_FILE, LogManager
from kbroker.log.partition_log import PartitionLog
from kbroker.log.segment import Segment

from ._util import batch, read_all_records, small_config

PID = 4242


def idem(seq: int, value: bytes = b"v") -> bytearray:
    return bytearray(encode_batch([(b"k", value, (), 1000)], producer_id=PID, producer_epoch=0, base_sequence=seq))


def _raise(err: int):
    def fail(*_a, **_kw):
        raise OSError(err, os.strerror(err))

    return fail


# ---------------------------------------------------------------- append


def test_failed_roll_keeps_producer_state_and_retry_is_written(tmp_path, monkeypatch):
    """Defect 2: the retry after a failed roll must be written, not answered 'duplicate'."""
    path = str(tmp_path / "t-0")
    log = PartitionLog.open(path, small_config(segment_bytes=200))
    assert log.append(idem(0, b"a" * 100), now_ms=0).first_offset == 0
    with monkeypatch.context() as m:
        m.setattr(Segment, "create", classmethod(_raise(errno.EMFILE)))
        with pytest.raises(KafkaStorageError):
            log.append(idem(1, b"b" * 100), now_ms=0)  # needs a roll: segment is full
    assert log.producer_state.producers[PID].last_seq == 0
    assert log.log_end_offset == 1
    assert log.offline
    with pytest.raises(KafkaStorageError):  # offline until restart
        log.append(idem(1, b"b" * 100), now_ms=0)
    log.close()

    log = PartitionLog.open(path, small_config(segment_bytes=200), recover=True)
    info = log.append(idem(1, b"b" * 100), now_ms=0)
    assert not info.duplicate and info.first_offset == 1
    assert log.append(idem(2, b"c"), now_ms=0).first_offset == 2
    assert [r.value[:1] for r in read_all_records(log)] == [b"a", b"b", b"c"]


def test_failed_write_changes_nothing(tmp_path, monkeypatch):
    log = PartitionLog.open(str(tmp_path / "t-0"), small_config())
    log.append(idem(0), now_ms=0)
    size = log.active_segment.size
    monkeypatch.setattr(os, "pwrite", _raise(errno.ENOSPC))
    with pytest.raises(KafkaStorageError):
        log.append(idem(1), now_ms=0)
    assert (log.log_end_offset, log.active_segment.size) == (1, size)
    assert os.path.getsize(log.active_segment.log_path) == size
    assert log.producer_state.producers[PID].last_seq == 0
    assert log.producer_state.map_end_offset == 1


def test_failed_rebase_of_empty_active_segment_keeps_it(tmp_path, monkeypatch):
    log = PartitionLog.open(str(tmp_path / "t-0"), small_config())
    far = bytearray(encode_batch([(None, b"x")], base_offset=(1 << 31) + 5))
    monkeypatch.setattr(Segment, "create", classmethod(_raise(errno.EMFILE)))
    with pytest.raises(KafkaStorageError):
        log.append(far, assign_offsets=False, now_ms=0)
    assert log.num_segments == 1 and log.log_end_offset == 0


def test_delete_records_moves_the_start_only_after_the_checkpoint(tmp_path, monkeypatch):
    log = PartitionLog.open(str(tmp_path / "t-0"), small_config())
    for _ in range(5):
        log.append(batch(1), now_ms=0)
    monkeypatch.setattr(pl_mod, "_write_int_file", _raise(errno.ENOSPC))
    with pytest.raises(KafkaStorageError):
        log.delete_records_before(3)
    assert log.log_start_offset == 0
    assert log.offline


def test_flush_failure_leaves_recovery_point(tmp_path, monkeypatch):
    log = PartitionLog.open(str(tmp_path / "t-0"), small_config())
    log.append(batch(3), now_ms=0)
    monkeypatch.setattr(os, "fsync", _raise(errno.EIO))
    with pytest.raises(KafkaStorageError):
        log.flush()
    assert log.recovery_point == 0 and log.offline


# ---------------------------------------------------------------- offline log dirs


def test_failed_log_takes_its_dir_offline_and_the_other_dir_serves(tmp_path, monkeypatch):
    d1, d2 = str(tmp_path / "d1"), str(tmp_path / "d2")
    m = LogManager([d1, d2], small_config())
    a = m.create("a", 0, log_dir=d1)
    a2 = m.create("a", 1, log_dir=d1)
    b = m.create("b", 0, log_dir=d2)
    a.append(batch(1), now_ms=0)
    with monkeypatch.context() as p:
        p.setattr(os, "pwrite", _raise(errno.ENOSPC))
        with pytest.raises(KafkaStorageError):
            a.append(batch(1), now_ms=0)
    assert m.is_offline(d1) and not m.is_offline(d2)
    assert a.offline and a2.offline and not b.offline
    with pytest.raises(KafkaStorageError):
        a2.read(0, 1000)
    b.append(batch(2), now_ms=0)
    assert m.create("c", 0).path.startswith(os.path.abspath(d2))  # new logs avoid the failed dir
    with pytest.raises(KafkaStorageError):
        m.create("c", 1, log_dir=d1)
    m.close()
    assert not os.path.exists(os.path.join(d1, CLEAN_SHUTDOWN_FILE))  # recovered next time
    assert os.path.exists(os.path.join(d2, CLEAN_SHUTDOWN_FILE))

    m = LogManager([d1, d2], small_config())
    assert m.had_clean_shutdown == {os.path.abspath(d1): False, os.path.abspath(d2): True}
    assert m.get("a", 0).log_end_offset == 1  # what was acknowledged survives
    assert m.get("b", 0).log_end_offset == 2


def test_mark_offline_logs_once(tmp_path, caplog):
    d = str(tmp_path / "d")
    m = LogManager([d], small_config())
    m.create("a", 0)
    m.mark_offline(d, "first")
    m.mark_offline(d, "second")
    errors = [r for r in caplog.records if r.levelname == "ERROR" and "offline" in r.getMessage()]
    assert len(errors) == 1
    assert m.offline_dirs == {os.path.abspath(d): "first"}


async def test_flusher_emfile_takes_one_dir_offline_and_flushes_the_rest(tmp_path, monkeypatch):
    """Defect 7: os.dup failing with EMFILE in the flusher must not end the process."""
    d1, d2 = str(tmp_path / "d1"), str(tmp_path / "d2")
    m = LogManager([d1, d2], small_config(flush_messages=1))
    a = m.create("a", 0, log_dir=d1)
    b = m.create("b", 0, log_dir=d2)
    a.append(batch(1), now_ms=0)
    b.append(batch(1), now_ms=0)
    real_dup = os.dup

    def dup(fd):
        if fd == a.active_segment.fd:
            raise OSError(errno.EMFILE, "Too many open files")
        return real_dup(fd)

    monkeypatch.setattr(os, "dup", dup)
    assert await m.flush_pass(now_ms=0) == 1
    assert m.is_offline(d1) and not m.is_offline(d2)
    assert b.recovery_point == 1 and a.recovery_point == 0


async def test_retention_oserror_in_one_log_spares_the_others(tmp_path, monkeypatch):
    d1, d2 = str(tmp_path / "d1"), str(tmp_path / "d2")
    m = LogManager([d1, d2], small_config(retention_ms=10, segment_bytes=100))
    a = m.create("a", 0, log_dir=d1)
    b = m.create("b", 0, log_dir=d2)
    for log in (a, b):
        for _ in range(3):
            log.append(batch(1, ts=0, size=80), now_ms=0)
    real_replace = os.replace

    def replace(src, dst, *args, **kw):
        if src.startswith(a.path):
            raise OSError(errno.EIO, "I/O error")
        return real_replace(src, dst, *args, **kw)

    monkeypatch.setattr(os, "replace", replace)
    assert await m.retention_pass(now_ms=10_000) > 0
    assert m.is_offline(d1)
    assert b.log_start_offset == 3 and a.log_start_offset == 0


async def test_cleaner_bug_marks_log_uncleanable_and_continues(tmp_path, monkeypatch, caplog):
    d = str(tmp_path / "d")
    m = LogManager([d], small_config(cleanup_policy="compact", segment_bytes=200, min_cleanable_dirty_ratio=0.01))
    bad = m.create("bad", 0)
    good = m.create("good", 0)
    for log in (bad, good):
        for i in range(6):
            log.append(batch(1, key=b"same", size=60), now_ms=0)
    real = PartitionLog.prepare_compaction

    def prepare(self, *a, **kw):
        if self is bad:
            raise ValueError("a bug")
        return real(self, *a, **kw)

    monkeypatch.setattr(PartitionLog, "prepare_compaction", prepare)
    assert await m.cleaner_pass(now_ms=10_000) == 1
    assert ("bad", 0) in m.uncleanable and not bad.offline
    assert any(r.exc_info for r in caplog.records if r.levelname == "ERROR")


@pytest.mark.parametrize("loop", ["run_retention", "run_cleaner", "run_flusher"])
async def test_background_loop_survives_a_failing_pass(tmp_path, monkeypatch, loop):
    """Defect 7: an unexpected exception in a pass is logged and the loop runs again."""
    m = LogManager([str(tmp_path / "d")], small_config())
    attr = {"run_retention": "retention_pass", "run_cleaner": "cleaner_pass", "run_flusher": "flush_pass"}[loop]
    calls = 0
    again = trio.Event()

    async def failing_pass(*_a):
        nonlocal calls
        calls += 1
        if calls >= 3:
            again.set()
        if calls == 1:
            raise OSError(errno.EMFILE, "Too many open files")
        raise RuntimeError("a bug")

    monkeypatch.setattr(m, attr, failing_pass)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(getattr(m, loop), 1)
            await again.wait()
            nursery.cancel_scope.cancel()
    assert calls >= 3


async def test_retention_pass_yields_between_logs(tmp_path, monkeypatch):
    """Item 10: a pass over many logs lets other tasks run while it works."""
    monkeypatch.setattr(manager_mod, "SLICE_SECONDS", 0.0)
    m = LogManager([str(tmp_path / "d")], small_config())
    n = 50
    for i in range(n):
        m.create("t", i)
    calls = 0
    real = PartitionLog.apply_retention

    def counting(self, *a, **kw):
        nonlocal calls
        calls += 1
        return real(self, *a, **kw)

    monkeypatch.setattr(PartitionLog, "apply_retention", counting)
    seen: set[int] = set()
    done = False

    async def observer():
        while not done:
            seen.add(calls)
            await trio.sleep(0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(observer)
        await trio.sleep(0)
        await m.retention_pass(now_ms=0)
        done = True
    assert calls == n
    assert any(0 < c < n for c in seen)


def test_retention_writes_no_checkpoint(tmp_path, monkeypatch):
    """Item 10: whole-segment retention needs no fsync; open() derives the start."""
    path = str(tmp_path / "t-0")
    log = PartitionLog.open(path, small_config(retention_ms=10, segment_bytes=100))
    for _ in range(3):
        log.append(batch(1, ts=0, size=80), now_ms=0)
    writes = []
    monkeypatch.setattr(pl_mod, "_write_int_file", lambda p, v: writes.append((p, v)))
    assert log.apply_retention(10_000) == 3
    assert writes == [] and log.log_start_offset == 3
    monkeypatch.undo()
    log.close()
    assert PartitionLog.open(path, small_config()).log_start_offset == 3


def test_new_log_open_does_no_fsync(tmp_path, monkeypatch):
    """Item 10: creating a partition (CreateTopics, on the trio thread) pays no fsync."""
    calls = []
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append(fd))
    PartitionLog.open(str(tmp_path / "t-0"), small_config())
    assert calls == []


# ---------------------------------------------------------------- crash points


def test_every_log_crash_point_is_reached(tmp_path, monkeypatch):
    """The named points sit on the paths the crash tests drive (see the report for settings)."""
    from kbroker.log import cleaner, segment

    hit: list[str] = []
    for mod in (pl_mod, segment, cleaner, manager_mod):
        monkeypatch.setattr(mod, "crash_point", hit.append)
    m = LogManager([str(tmp_path / "d")], small_config(segment_bytes=1000, retention_ms=10))
    log = m.create("t", 0)
    log.append(batch(1, size=900, ts=0), now_ms=0)
    assert "log.append" in hit
    log.append(batch(1, size=10, ts=0), now_ms=0)  # rolls
    assert "segment.roll" in hit
    for _ in range(4):  # index entries (index.interval.bytes=128) for the flush to write
        log.append(batch(1, size=10, ts=0), now_ms=0)
    log.flush()
    assert "index.write" in hit
    log.apply_retention(10_000)
    assert "retention.delete" in hit
    c = m.create("c", 0, small_config(cleanup_policy="compact", segment_bytes=200, min_cleanable_dirty_ratio=0.01))
    for _ in range(4):
        c.append(batch(1, key=b"same", size=120), now_ms=0)
    assert c.compact(10_000).segments_written >= 1
    assert "compaction.swap" in hit
    m.delete("t", 0)
    assert "topic.delete" in hit
