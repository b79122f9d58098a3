import os

import pytest

from kbroker.log.producer_state import (
    INT32_MAX,
    ProducerStateManager,
    Verdict,
    delete_snapshots,
    list_snapshots,
)


def rec(m, pid, epoch, first, last, off):
    m.record(pid, epoch, first, last, off, off + (last - first), 100 + off)


def test_unknown_producer_accepted_at_any_sequence():
    m = ProducerStateManager()
    assert m.check(1, 0, 0, 4).ok
    assert m.check(1, 0, 77, 80).ok  # Kafka 4.x: no state -> any sequence


def test_in_sequence_and_gap():
    m = ProducerStateManager()
    rec(m, 1, 0, 0, 4, 0)
    assert m.check(1, 0, 5, 9).ok
    r = m.check(1, 0, 6, 9)
    assert r.verdict is Verdict.OUT_OF_ORDER_SEQUENCE and r.message
    assert m.check(1, 0, 4, 9).verdict is Verdict.OUT_OF_ORDER_SEQUENCE


def test_duplicate_returns_original_offsets():
    m = ProducerStateManager()
    rec(m, 1, 0, 0, 4, 100)
    rec(m, 1, 0, 5, 9, 200)
    r = m.check(1, 0, 0, 4)
    assert r.verdict is Verdict.DUPLICATE
    assert (r.duplicate.first_offset, r.duplicate.last_offset) == (100, 104)
    assert m.check(1, 0, 5, 9).duplicate.first_offset == 200


def test_window_of_five_batches():
    m = ProducerStateManager()
    for i in range(7):
        rec(m, 1, 0, i * 2, i * 2 + 1, i * 10)
    # batches 2..6 are retained, 0 and 1 fell out of the window
    assert m.check(1, 0, 4, 5).verdict is Verdict.DUPLICATE
    assert m.check(1, 0, 12, 13).verdict is Verdict.DUPLICATE
    assert m.check(1, 0, 2, 3).verdict is Verdict.OUT_OF_ORDER_SEQUENCE
    assert m.check(1, 0, 0, 1).verdict is Verdict.OUT_OF_ORDER_SEQUENCE
    assert len(m.producers[1].batches) == 5


def test_epoch_fencing_and_bump():
    m = ProducerStateManager()
    rec(m, 1, 3, 0, 4, 0)
    assert m.check(1, 2, 5, 5).verdict is Verdict.INVALID_PRODUCER_EPOCH
    assert m.check(1, 4, 5, 5).verdict is Verdict.OUT_OF_ORDER_SEQUENCE  # new epoch must start at 0
    assert m.check(1, 4, 0, 0).ok
    rec(m, 1, 4, 0, 0, 10)
    assert m.producers[1].epoch == 4
    assert len(m.producers[1].batches) == 1
    # the old epoch's batches are no duplicates any more
    assert m.check(1, 3, 0, 4).verdict is Verdict.INVALID_PRODUCER_EPOCH


def test_sequence_wraps_at_int32_max():
    m = ProducerStateManager()
    rec(m, 1, 0, INT32_MAX - 1, INT32_MAX, 0)
    assert m.check(1, 0, 0, 3).ok
    assert m.check(1, 0, 1, 3).verdict is Verdict.OUT_OF_ORDER_SEQUENCE


def test_producers_are_independent():
    m = ProducerStateManager()
    rec(m, 1, 0, 0, 0, 0)
    rec(m, 2, 0, 0, 0, 1)
    assert m.check(1, 0, 1, 1).ok
    assert m.check(2, 0, 1, 1).ok
    assert m.check(2, 0, 0, 0).verdict is Verdict.DUPLICATE


def test_transactions_and_first_unstable_offset():
    m = ProducerStateManager()
    m.record(1, 0, 0, 0, 10, 10, 5, is_transactional=True)
    m.record(2, 0, 0, 0, 11, 11, 5, is_transactional=True)
    m.record(1, 0, 1, 1, 12, 12, 5, is_transactional=True)
    assert m.first_unstable_offset() == 10
    m.record(1, 0, -1, -1, 13, 13, 5, is_control=True)
    assert m.first_unstable_offset() == 11
    assert m.check(1, 0, 2, 2).ok  # the marker keeps the sequence


def test_truncate_head_and_expire():
    m = ProducerStateManager()
    rec(m, 1, 0, 0, 0, 5)
    rec(m, 2, 0, 0, 0, 50)
    assert m.truncate_head(10) == 1
    assert set(m.producers) == {2}
    assert m.check(1, 0, 99, 99).ok  # forgotten: any sequence again
    assert m.expire(now_ms=150 + 1000, expiration_ms=1000) == 1
    assert not m.producers


def test_snapshot_round_trip(tmp_path):
    m = ProducerStateManager()
    for i in range(7):
        rec(m, 1, 2, i, i, i)
    m.record(9, 0, 0, 3, 40, 43, 77, is_transactional=True)
    m.map_end_offset = 44
    path = m.save_snapshot(str(tmp_path))
    assert os.path.basename(path) == "00000000000000000044.snapshot"
    assert list_snapshots(str(tmp_path)) == [44]
    m2 = ProducerStateManager.load_snapshot(str(tmp_path), 100)
    assert m2.map_end_offset == 44
    assert m2.producers[1].epoch == 2
    assert list(m2.producers[1].batches) == list(m.producers[1].batches)
    assert m2.first_unstable_offset() == 40
    assert ProducerStateManager.load_snapshot(str(tmp_path), 43) is None  # too new


def test_damaged_snapshot_is_skipped(tmp_path):
    m = ProducerStateManager()
    rec(m, 1, 0, 0, 0, 0)
    m.map_end_offset = 1
    m.save_snapshot(str(tmp_path))
    m.map_end_offset = 2
    p2 = m.save_snapshot(str(tmp_path))
    with open(p2, "r+b") as f:
        f.seek(30)
        f.write(b"\xff\xff")
    m2 = ProducerStateManager.load_snapshot(str(tmp_path), 10)
    assert m2.map_end_offset == 1
    assert not os.path.exists(p2)
    delete_snapshots(str(tmp_path))
    assert list_snapshots(str(tmp_path)) == []


def test_decode_rejects_garbage():
    with pytest.raises(ValueError):
        ProducerStateManager.decode_snapshot(b"nonsense" * 4)
