import os

import pytest

from protocol.records import decode_batch, encode_batch, iter_batches

from kbroker.log import (
    CorruptRecord,
    InvalidOffset,
    InvalidProducerEpoch,
    OffsetOutOfRange,
    OutOfOrderSequence,
    PartitionLog,
)
from kbroker.log.partition_log import LOG_START_OFFSET_FILE, log_dir_name, parse_log_dir_name

from ._util import batch, batch_headers, read_all_records, small_config


def open_log(tmp_path, name="topic-0", **cfg):
    return PartitionLog.open(str(tmp_path / name), small_config(**cfg), now_ms=0)


def fill(log, nbatches, per_batch=3, ts=1000, size=10, now_ms=0):
    infos = []
    for i in range(nbatches):
        infos.append(log.append(batch(per_batch, ts=ts + i * per_batch, size=size), now_ms=now_ms))
    return infos


# ---------------------------------------------------------------- append / read


def test_append_assigns_offsets_and_reads_back(tmp_path):
    log = open_log(tmp_path)
    assert (log.log_start_offset, log.log_end_offset) == (0, 0)
    a = log.append(batch(3), now_ms=0)
    b = log.append(batch(2), now_ms=0)
    assert (a.first_offset, a.last_offset, b.first_offset, b.last_offset) == (0, 2, 3, 4)
    assert a.num_records == 3 and a.num_batches == 1 and not a.duplicate
    assert log.log_end_offset == 5
    r = log.read(0, 1 << 20)
    hs = batch_headers(r.records)
    assert [h.base_offset for h in hs] == [0, 3]
    assert r.first_offset == 0 and r.next_offset == 5
    assert [rec.offset for rec in read_all_records(log)] == [0, 1, 2, 3, 4]


def test_append_many_batches_in_one_call(tmp_path):
    log = open_log(tmp_path)
    data = bytearray(batch(2) + batch(4) + batch(1))
    info = log.append(data, leader_epoch=7, now_ms=0)
    assert (info.first_offset, info.last_offset, info.num_batches) == (0, 6, 3)
    hs = batch_headers(log.read(0, 1 << 20).records)
    assert [(h.base_offset, h.partition_leader_epoch) for h in hs] == [(0, 7), (2, 7), (6, 7)]
    # patched in place in the caller's buffer (no copy)
    assert [h.base_offset for h in batch_headers(data)] == [0, 2, 6]


def test_append_accepts_bytes(tmp_path):
    log = open_log(tmp_path)
    log.append(bytes(batch(2)), now_ms=0)
    assert log.log_end_offset == 2


def test_read_at_every_offset_returns_containing_batch(tmp_path):
    log = open_log(tmp_path, segment_bytes=700, index_interval_bytes=100)
    fill(log, 40)
    assert log.num_segments > 3
    for off in range(log.log_end_offset):
        r = log.read(off, 1 << 20)
        first = batch_headers(r.records)[0]
        assert first.base_offset <= off <= first.last_offset
        assert r.first_offset == first.base_offset
    assert log.read(log.log_end_offset, 100).records == b""


def test_kip74_first_batch_even_if_larger_than_max_bytes(tmp_path):
    log = open_log(tmp_path)
    log.append(batch(1, size=500), now_ms=0)
    log.append(batch(1, size=10), now_ms=0)
    r = log.read(0, 50)
    hs = batch_headers(r.records)
    assert len(hs) == 1 and hs[0].base_offset == 0 and r.next_offset == 1
    r = log.read(0, 50, min_one_batch=False)
    assert r.records == b"" and r.first_offset == -1


def test_max_bytes_returns_whole_batches_only(tmp_path):
    log = open_log(tmp_path)
    fill(log, 10, per_batch=1, size=20)
    size1 = batch_headers(log.read(0, 1).records)[0].total_size
    r = log.read(0, size1 * 3 + size1 // 2)
    assert len(r.records) == size1 * 3
    assert r.next_offset == 3
    r = log.read(0, size1 * 3)
    assert len(batch_headers(r.records)) == 3


def test_max_offset_limits_visibility(tmp_path):
    log = open_log(tmp_path)
    fill(log, 5, per_batch=2)  # offsets 0..9
    r = log.read(0, 1 << 20, max_offset=6)
    assert [h.base_offset for h in batch_headers(r.records)] == [0, 2, 4]
    assert log.read(6, 1 << 20, max_offset=6).records == b""
    assert log.read(7, 1 << 20, max_offset=7).records == b""  # straddling batch is not visible


def test_offset_out_of_range(tmp_path):
    log = open_log(tmp_path)
    fill(log, 2)
    with pytest.raises(OffsetOutOfRange) as ei:
        log.read(7, 100)
    assert ei.value.error_code == 1
    log.delete_records_before(3)
    with pytest.raises(OffsetOutOfRange):
        log.read(2, 100)
    assert batch_headers(log.read(3, 100).records)[0].base_offset == 3
    with pytest.raises(OffsetOutOfRange):
        log.read(-1, 100)


def test_malformed_input_rejected(tmp_path):
    log = open_log(tmp_path)
    with pytest.raises(CorruptRecord):
        log.append(bytearray(b""))
    with pytest.raises(CorruptRecord):
        log.append(bytearray(batch(1))[:-3])
    assert log.log_end_offset == 0


def test_log_append_time(tmp_path):
    log = open_log(tmp_path)
    info = log.append(batch(3, ts=5), log_append_time_ms=99999, now_ms=0)
    assert info.log_append_time == 99999 and info.max_timestamp == 99999
    h, recs = decode_batch(bytes(log.read(0, 1000).records))
    assert h.timestamp_type == 1 and all(r.timestamp == 99999 for r in recs)
    assert log.offset_for_timestamp(50000) == (0, 99999)


# ---------------------------------------------------------------- segments and indexes


def test_roll_by_size_never_splits_batches(tmp_path):
    log = open_log(tmp_path, segment_bytes=500)
    fill(log, 20)
    assert log.num_segments > 3
    for seg in log.segments[:-1]:
        assert 0 < seg.size <= 500
        data = seg.read_all()
        hs = [h for _p, h in iter_batches(data)]
        assert hs[0].base_offset == seg.base_offset
        assert hs[-1].next_offset == seg.next_offset
    bases = [s.base_offset for s in log.segments]
    assert bases == sorted(bases)
    names = sorted(n for n in os.listdir(log.path) if n.endswith(".log"))
    assert names == [f"{b:020d}.log" for b in bases]


def test_oversized_batch_gets_own_segment(tmp_path):
    log = open_log(tmp_path, segment_bytes=300)
    log.append(batch(1, size=10), now_ms=0)
    log.append(batch(1, size=1000), now_ms=0)
    log.append(batch(1, size=10), now_ms=0)
    assert [s.base_offset for s in log.segments] == [0, 1, 2]


def test_roll_by_time_uses_first_batch_timestamp(tmp_path):
    log = open_log(tmp_path, segment_ms=1000)
    log.append(batch(1, ts=10_000), now_ms=0)
    log.append(batch(1, ts=10_500), now_ms=0)
    assert log.num_segments == 1
    info = log.append(batch(1, ts=11_001), now_ms=0)
    assert info.rolled and log.num_segments == 2
    assert log.active_segment.base_offset == 2


def test_roll_by_time_without_timestamps_uses_creation_time(tmp_path):
    log = open_log(tmp_path, segment_ms=1000)
    log.append(batch(1, ts=-1), now_ms=0)
    log.append(batch(1, ts=-1), now_ms=500)
    assert log.num_segments == 1
    log.append(batch(1, ts=-1), now_ms=1001)
    assert log.num_segments == 2


def test_roll_when_index_full(tmp_path):
    log = open_log(tmp_path, index_interval_bytes=0, segment_index_bytes=8 * 12)
    fill(log, 30, per_batch=1)
    assert log.num_segments >= 3


def _index_snapshot(log):
    return [(s.base_offset, list(s.idx_rel), list(s.idx_pos), list(s.ts_ts), list(s.ts_rel),
             s.next_offset, s.max_timestamp, s.size) for s in log.segments]


def test_indexes_survive_clean_reopen(tmp_path):
    log = open_log(tmp_path, segment_bytes=2000, index_interval_bytes=100)
    fill(log, 60)
    before = _index_snapshot(log)
    log.close()
    log = open_log(tmp_path, segment_bytes=2000, index_interval_bytes=100)
    assert _index_snapshot(log) == before
    for off in range(0, log.log_end_offset, 7):
        assert batch_headers(log.read(off, 10).records)[0].last_offset >= off


@pytest.mark.parametrize("damage", ["delete", "garbage", "truncate"])
def test_broken_index_is_rebuilt(tmp_path, damage):
    log = open_log(tmp_path, segment_bytes=2000, index_interval_bytes=100)
    fill(log, 60)
    before = _index_snapshot(log)
    log.close()
    seg0 = os.path.join(log.path, f"{0:020d}")
    for suffix in (".index", ".timeindex"):
        p = seg0 + suffix
        if damage == "delete":
            os.unlink(p)
        elif damage == "garbage":
            with open(p, "r+b") as f:
                f.seek(8)
                f.write(b"\xff" * 8)
        else:
            os.truncate(p, os.path.getsize(p) - 3)
    log = open_log(tmp_path, segment_bytes=2000, index_interval_bytes=100)
    assert _index_snapshot(log) == before
    for off in range(log.log_end_offset):
        h = batch_headers(log.read(off, 10).records)[0]
        assert h.base_offset <= off <= h.last_offset


def test_index_entries_are_sparse(tmp_path):
    log = open_log(tmp_path, index_interval_bytes=1000)
    fill(log, 50, size=20)  # ~ 110 bytes per batch
    seg = log.active_segment
    assert 0 < len(seg.idx_rel) < 10
    gaps = [b - a for a, b in zip([0, *seg.idx_pos], seg.idx_pos)]
    assert all(g >= 1000 for g in gaps)


# ---------------------------------------------------------------- timestamps


def test_offset_for_timestamp_is_exact_per_record(tmp_path):
    log = open_log(tmp_path, segment_bytes=600, index_interval_bytes=64)
    # 20 batches of 3 records; record at offset o has timestamp 1000 + 10*o
    for i in range(20):
        recs = [(b"k", b"v", (), 1000 + 10 * (3 * i + j)) for j in range(3)]
        log.append(bytearray(encode_batch(recs)), now_ms=0)
    for o in range(60):
        ts = 1000 + 10 * o
        assert log.offset_for_timestamp(ts) == (o, ts)
        assert log.offset_for_timestamp(ts - 5) == (o, ts)
    assert log.offset_for_timestamp(0) == (0, 1000)
    assert log.offset_for_timestamp(1000 + 10 * 59 + 1) is None
    assert log.latest_timestamp() == (59, 1590)


def test_offset_for_timestamp_non_monotonic(tmp_path):
    log = open_log(tmp_path)
    for ts in (100, 500, 300, 900, 200, 900):
        log.append(batch(1, ts=ts), now_ms=0)
    assert log.offset_for_timestamp(250) == (1, 500)
    assert log.offset_for_timestamp(600) == (3, 900)
    assert log.latest_timestamp() == (3, 900)  # first record with the max
    log.close()
    log = open_log(tmp_path)
    assert log.offset_for_timestamp(600) == (3, 900)
    assert log.latest_timestamp() == (3, 900)


def test_offset_for_timestamp_respects_log_start(tmp_path):
    log = open_log(tmp_path)
    fill(log, 3)  # offsets 0..8, ts 1000..1008
    log.delete_records_before(4)
    assert log.offset_for_timestamp(0) == (4, 1004)


def test_empty_log_timestamps(tmp_path):
    log = open_log(tmp_path)
    assert log.offset_for_timestamp(0) is None
    assert log.latest_timestamp() is None


# ---------------------------------------------------------------- retention / delete records


def test_retention_by_time(tmp_path):
    log = open_log(tmp_path, segment_bytes=400, retention_ms=1000)
    for i in range(12):
        log.append(batch(2, ts=i * 100), now_ms=0)  # timestamps 0..1101
    nseg = log.num_segments
    assert nseg >= 3
    ts_of = [s.max_timestamp for s in log.segments]
    deleted = log.apply_retention(now_ms=ts_of[1] + 1001)
    assert deleted == 2
    assert log.log_start_offset == log.segments[0].base_offset > 0
    with pytest.raises(OffsetOutOfRange):
        log.read(0, 100)


def test_retention_deletes_everything_and_offsets_continue(tmp_path):
    log = open_log(tmp_path, segment_bytes=400, retention_ms=1000)
    fill(log, 10, ts=0)
    end = log.log_end_offset
    n = log.num_segments
    assert log.apply_retention(now_ms=10_000) == n
    assert log.log_start_offset == log.log_end_offset == end
    assert log.num_segments == 1 and log.active_segment.size == 0
    assert log.read(end, 100).records == b""
    assert log.append(batch(1), now_ms=0).first_offset == end
    log.close()
    log = open_log(tmp_path, segment_bytes=400, retention_ms=1000)
    assert log.log_start_offset == end and log.log_end_offset == end + 1
    assert log.append(batch(1), now_ms=0).first_offset == end + 1


def test_retention_after_full_deletion_then_reopen(tmp_path):
    log = open_log(tmp_path, retention_ms=1000)
    fill(log, 3, ts=0)
    log.apply_retention(now_ms=10_000)
    log.close()
    log = open_log(tmp_path, retention_ms=1000)
    assert (log.log_start_offset, log.log_end_offset) == (9, 9)
    assert log.append(batch(1), now_ms=0).first_offset == 9


def test_retention_by_bytes(tmp_path):
    log = open_log(tmp_path, segment_bytes=400, retention_bytes=1000)
    fill(log, 20)
    total = log.size_in_bytes
    deleted = log.apply_retention(now_ms=0)
    assert deleted > 0
    assert log.size_in_bytes <= 1000 + 400
    assert total - log.size_in_bytes >= total - 1000 - 400
    # the deleted prefix: what remains can still be read
    assert read_all_records(log)[-1].offset == log.log_end_offset - 1


def test_retention_respects_high_watermark(tmp_path):
    log = open_log(tmp_path, segment_bytes=400, retention_ms=1000)
    fill(log, 10, ts=0)
    second = log.segments[1].base_offset
    assert log.apply_retention(now_ms=10_000, high_watermark=second) == 1
    assert log.log_start_offset == second


def test_retention_unlimited_and_compact_only(tmp_path):
    log = open_log(tmp_path, segment_bytes=400, retention_ms=-1, retention_bytes=-1)
    fill(log, 10, ts=0)
    assert log.apply_retention(now_ms=10**12) == 0
    log2 = open_log(tmp_path, name="c-0", segment_bytes=400, retention_ms=1, cleanup_policy=("compact",))
    fill(log2, 10, ts=0)
    assert log2.apply_retention(now_ms=10**12) == 0


def test_delete_records_before(tmp_path):
    log = open_log(tmp_path, segment_bytes=400)
    fill(log, 12)
    bases = [s.base_offset for s in log.segments]
    target = bases[2] + 1
    assert log.delete_records_before(target) == target
    assert log.log_start_offset == target
    assert log.segments[0].base_offset == bases[2]
    assert read_all_records(log)[0].offset == target
    assert log.delete_records_before(1) == target  # never goes back
    with pytest.raises(OffsetOutOfRange):
        log.delete_records_before(log.log_end_offset + 1)
    log.close()
    log = open_log(tmp_path, segment_bytes=400)
    assert log.log_start_offset == target
    assert open(os.path.join(log.path, LOG_START_OFFSET_FILE)).read().strip() == str(target)


def test_delete_records_up_to_end_then_append(tmp_path):
    log = open_log(tmp_path)
    fill(log, 2)
    log.delete_records_before(6)
    assert log.log_start_offset == log.log_end_offset == 6
    assert log.append(batch(1), now_ms=0).first_offset == 6
    log.close()
    log = open_log(tmp_path)
    assert (log.log_start_offset, log.log_end_offset) == (6, 7)


def test_deferred_file_deletion(tmp_path):
    log = open_log(tmp_path, segment_bytes=400, retention_ms=1000)
    fill(log, 10, ts=0)
    n = log.num_segments
    assert log.apply_retention(now_ms=10_000, defer_file_deletion=True) == n
    leftovers = [p for p in os.listdir(log.path) if p.endswith(".deleted")]
    assert leftovers
    log.close()
    log = open_log(tmp_path, segment_bytes=400, retention_ms=1000)  # open removes .deleted files
    assert not [p for p in os.listdir(log.path) if p.endswith(".deleted")]


# ---------------------------------------------------------------- follower paths


def test_follower_append_keeps_offsets(tmp_path):
    leader = open_log(tmp_path, name="l-0")
    fill(leader, 5)
    follower = open_log(tmp_path, name="f-0")
    data = bytearray(leader.read(0, 1 << 20).records)
    info = follower.append(data, assign_offsets=False, now_ms=0)
    assert (info.first_offset, info.last_offset) == (0, 14)
    assert bytes(follower.read(0, 1 << 20).records) == bytes(data)
    with pytest.raises(InvalidOffset):
        follower.append(bytearray(leader.read(3, 1 << 20).records), assign_offsets=False, now_ms=0)


def test_truncate_to(tmp_path):
    log = open_log(tmp_path, segment_bytes=400)
    fill(log, 12)  # 36 offsets, batches of 3
    log.truncate_to(20)  # batch 18..20 straddles -> cut at 18
    assert log.log_end_offset == 18
    assert read_all_records(log)[-1].offset == 17
    assert log.append(batch(1), now_ms=0).first_offset == 18
    log.close()
    log = open_log(tmp_path, segment_bytes=400)
    assert log.log_end_offset == 19
    log.truncate_to(0)
    assert (log.log_start_offset, log.log_end_offset) == (0, 0)
    log.truncate_fully_and_start_at(100)
    assert (log.log_start_offset, log.log_end_offset) == (100, 100)
    assert log.append(batch(1), now_ms=0).first_offset == 100


# ---------------------------------------------------------------- idempotent producers


def pbatch(pid, epoch, seq, n=1):
    return batch(n, producer_id=pid, producer_epoch=epoch, base_sequence=seq)


def test_duplicate_batch_returns_original_offsets(tmp_path):
    log = open_log(tmp_path)
    log.append(batch(2), now_ms=0)
    a = log.append(pbatch(7, 0, 0, 3), now_ms=0)
    log.append(pbatch(7, 0, 3, 2), now_ms=0)
    end = log.log_end_offset
    d = log.append(pbatch(7, 0, 0, 3), now_ms=0)
    assert d.duplicate and (d.first_offset, d.last_offset) == (a.first_offset, a.last_offset)
    assert log.log_end_offset == end


def test_sequence_gap_and_fencing_raise(tmp_path):
    log = open_log(tmp_path)
    log.append(pbatch(7, 1, 0, 3), now_ms=0)
    with pytest.raises(OutOfOrderSequence) as ei:
        log.append(pbatch(7, 1, 5), now_ms=0)
    assert ei.value.error_code == 45
    with pytest.raises(InvalidProducerEpoch) as ei:
        log.append(pbatch(7, 0, 3), now_ms=0)
    assert ei.value.error_code == 47
    with pytest.raises(OutOfOrderSequence):
        log.append(pbatch(7, 2, 3), now_ms=0)  # new epoch must start at 0
    assert log.log_end_offset == 3
    log.append(pbatch(7, 2, 0), now_ms=0)
    assert log.log_end_offset == 4


def test_failed_check_in_multi_batch_append_changes_nothing(tmp_path):
    log = open_log(tmp_path)
    log.append(pbatch(7, 0, 0), now_ms=0)
    with pytest.raises(OutOfOrderSequence):
        log.append(bytearray(pbatch(7, 0, 1) + pbatch(7, 0, 5)), now_ms=0)
    assert log.log_end_offset == 1
    log.append(bytearray(pbatch(7, 0, 1) + pbatch(7, 0, 2)), now_ms=0)
    assert log.log_end_offset == 3


@pytest.mark.parametrize("clean", [True, False])
def test_producer_state_rebuilt_after_reopen(tmp_path, clean):
    log = open_log(tmp_path, segment_bytes=400)
    infos = [log.append(pbatch(7, 0, i * 2, 2), now_ms=0) for i in range(20)]
    log.append(pbatch(8, 3, 0), now_ms=0)
    if clean:
        log.close()
    else:
        log.close_without_flush()
        for name in os.listdir(log.path):
            if name.endswith(".snapshot"):
                os.unlink(os.path.join(log.path, name))
    log = PartitionLog.open(log.path, small_config(segment_bytes=400), recover=not clean, now_ms=0)
    d = log.append(pbatch(7, 0, 38, 2), now_ms=0)
    assert d.duplicate and d.first_offset == infos[-1].first_offset
    d = log.append(pbatch(7, 0, 30, 2), now_ms=0)  # 5th newest is still in the window
    assert d.duplicate and d.first_offset == infos[15].first_offset
    with pytest.raises(OutOfOrderSequence):
        log.append(pbatch(7, 0, 28, 2), now_ms=0)  # 6th newest fell out
    with pytest.raises(InvalidProducerEpoch):
        log.append(pbatch(8, 2, 1), now_ms=0)
    assert not log.append(pbatch(7, 0, 40), now_ms=0).duplicate


def test_producer_state_after_truncation(tmp_path):
    log = open_log(tmp_path)
    for i in range(5):
        log.append(pbatch(7, 0, i), now_ms=0)
    log.truncate_to(3)
    assert log.append(pbatch(7, 0, 3), now_ms=0).first_offset == 3  # seq 3 is new again


def test_producer_forgotten_after_its_data_is_deleted(tmp_path):
    log = open_log(tmp_path)
    log.append(pbatch(7, 0, 0), now_ms=0)
    log.append(batch(1), now_ms=0)
    log.delete_records_before(1)
    assert log.append(pbatch(7, 0, 50), now_ms=0).first_offset == 2  # no state: any sequence


# ---------------------------------------------------------------- flush


def test_flush_and_recovery_point(tmp_path):
    log = open_log(tmp_path, flush_messages=5)
    fill(log, 1)
    assert log.recovery_point == 0 and not log.needs_flush(0)
    fill(log, 1)
    assert log.needs_flush(0)
    log.flush(now_ms=0)
    assert log.recovery_point == 6 and not log.needs_flush(0)
    assert open(os.path.join(log.path, "recovery-point")).read().strip() == "6"
    log2 = open_log(tmp_path, name="t2-0", flush_ms=100)
    fill(log2, 1)
    log2.last_flush_ms = 0
    assert not log2.needs_flush(50) and log2.needs_flush(100)


# ---------------------------------------------------------------- misc


def test_dir_name_parsing():
    assert parse_log_dir_name("my-topic.v2_x-12") == ("my-topic.v2_x", 12)
    assert parse_log_dir_name("a-0") == ("a", 0)
    assert parse_log_dir_name("topic") is None
    assert parse_log_dir_name("topic-x") is None
    assert parse_log_dir_name("-3") is None
    assert parse_log_dir_name("t-0.abcdef-delete") is None
    assert log_dir_name("a-b", 3) == "a-b-3"


def test_delete_removes_directory(tmp_path):
    log = open_log(tmp_path)
    fill(log, 2)
    log.delete()
    assert not os.path.exists(log.path)


def test_first_unstable_offset_tracks_open_transactions(tmp_path):
    from protocol.records import encode_control_batch

    log = open_log(tmp_path)
    log.append(batch(1), now_ms=0)
    assert log.first_unstable_offset() is None
    log.append(batch(2, producer_id=3, producer_epoch=0, base_sequence=0, is_transactional=True), now_ms=0)
    assert log.first_unstable_offset() == 1
    log.append(bytearray(encode_control_batch(producer_id=3, producer_epoch=0, commit=True,
                                              coordinator_epoch=0, timestamp=5)), now_ms=0)
    assert log.first_unstable_offset() is None
    log.append(batch(1, producer_id=3, producer_epoch=0, base_sequence=2, is_transactional=True), now_ms=0)
    log.close()
    log = open_log(tmp_path)
    assert log.first_unstable_offset() == 4


def test_follower_append_with_offset_gaps(tmp_path):
    from protocol.records import set_base_offset

    f = open_log(tmp_path, name="f-0")
    data = bytearray(batch(2))
    set_base_offset(data, 0, 10)  # e.g. replicated from a compacted leader
    info = f.append(data, assign_offsets=False, now_ms=0)
    assert (info.first_offset, info.last_offset, f.log_end_offset) == (10, 11, 12)
    assert f.read(0, 1000).first_offset == 10  # offsets 0..9 simply do not exist
    data = bytearray(batch(1))
    set_base_offset(data, 0, 20)
    f.append(data, assign_offsets=False, now_ms=0)
    assert f.read(12, 1000).first_offset == 20 and f.log_end_offset == 21
    f.close()
    f = open_log(tmp_path, name="f-0")
    assert f.log_end_offset == 21
    assert [r.offset for r in read_all_records(f)] == [10, 11, 20]
