import os

import pytest

from protocol.records import Compression, decode_records, encode_batch

from kbroker.log import PartitionLog
from kbroker.log.cleaner import CLEANED_SUFFIX, SWAP_SUFFIX

from ._util import batch_headers, read_all_records, small_config

CFG = dict(segment_bytes=600, index_interval_bytes=64, cleanup_policy=("compact",), delete_retention_ms=1000)


def open_log(path, **kw):
    cfg = dict(CFG)
    cfg.update(kw)
    return PartitionLog.open(str(path), small_config(**cfg), now_ms=0)


def put(log, key, value, ts=1000, **kw):
    return log.append(bytearray(encode_batch([(key, value, (), ts)], **kw)), now_ms=0)


def state(log):
    """key -> (offset, value) of the latest record per key, as a consumer sees it."""
    out = {}
    for r in read_all_records(log):
        out[r.key] = (r.offset, r.value)
    return out


def build(log, n=60, keys=6, compression=0):
    written = {}
    for i in range(n):
        k = b"key%d" % (i % keys)
        v = b"value-%d" % i
        put(log, k, v, ts=1000 + i, compression=compression)
        written[k] = (i, v)
    return written


@pytest.mark.parametrize("compression", [Compression.NONE, Compression.GZIP, Compression.ZSTD])
def test_keeps_latest_per_key_with_original_offsets(tmp_path, compression):
    log = open_log(tmp_path / "c-0")
    written = build(log, compression=compression)
    log.roll(now_ms=0)
    before = log.size_in_bytes
    stats = log.compact(now_ms=5000)
    assert stats.records_removed == 60 - 6 and not stats.aborted
    assert log.size_in_bytes < before
    recs = read_all_records(log)
    assert [(r.key, r.offset, r.value) for r in recs] == sorted(
        [(k, o, v) for k, (o, v) in written.items()], key=lambda t: t[1])
    assert all(r.timestamp == 1000 + r.offset for r in recs)
    assert log.log_end_offset == 60 and log.log_start_offset == 0
    # offsets with gaps: reading a removed offset returns the next batch
    r = log.read(1, 1 << 20)
    assert batch_headers(r.records)[0].base_offset == recs[0].offset
    log.close()
    log = open_log(tmp_path / "c-0")
    assert state(log) == written


def test_active_segment_is_not_cleaned_but_its_keys_count(tmp_path):
    log = open_log(tmp_path / "c-0")
    build(log, n=30, keys=3)
    put(log, b"key0", b"newest")  # stays in the active segment
    log.compact(now_ms=5000)
    recs = read_all_records(log)
    key0 = [r for r in recs if r.key == b"key0"]
    assert [r.value for r in key0][-1] == b"newest"
    closed_keys = [r.key for r in recs if r.offset < log.active_segment.base_offset]
    assert b"key0" not in closed_keys or log.active_segment.base_offset > 30


def test_upper_offset_bounds_cleaning(tmp_path):
    log = open_log(tmp_path / "c-0")
    build(log, n=30, keys=3)
    log.roll(now_ms=0)
    # nothing at or above offset 10 is committed: only segments entirely below it are cleaned
    first_dirty = next(s.base_offset for s in log.segments if s.next_offset > 10)
    assert 0 < first_dirty <= 10
    stats = log.compact(now_ms=5000, upper_offset=10)
    assert stats.segments_cleaned > 0
    recs = read_all_records(log)
    assert [r.offset for r in recs if r.offset >= first_dirty] == list(range(first_dirty, 30))
    assert len([r for r in recs if r.offset < first_dirty]) <= 3


def test_tombstones_removed_after_delete_retention(tmp_path):
    log = open_log(tmp_path / "c-0")
    build(log, n=30, keys=3)
    put(log, b"key1", None, ts=2000)  # tombstone at 30
    put(log, b"other", b"x", ts=2001)
    log.roll(now_ms=0)
    log.compact(now_ms=10_000)
    recs = read_all_records(log)
    assert (b"key1", None) in [(r.key, r.value) for r in recs]
    assert not [r for r in recs if r.key == b"key1" and r.value is not None]
    assert not log.compaction_needed(10_500)
    assert log.compaction_needed(11_000)  # the delete horizon (10_000 + 1000) has passed
    stats = log.compact(now_ms=10_999)
    assert (b"key1", None) in [(r.key, r.value) for r in read_all_records(log)]
    stats = log.compact(now_ms=11_000)
    assert stats.tombstones_removed == 1
    recs = read_all_records(log)
    assert b"key1" not in [r.key for r in recs]
    # timestamps of the records that were re-encoded with a horizon stay right
    assert {r.key: r.timestamp for r in recs}[b"other"] == 2001
    assert log.offset_for_timestamp(2001)[0] == 31


def test_horizon_survives_reopen(tmp_path):
    log = open_log(tmp_path / "c-0")
    put(log, b"a", b"1")
    put(log, b"a", None)
    log.roll(now_ms=0)
    log.compact(now_ms=100)
    log.close()
    log = open_log(tmp_path / "c-0")
    log.compact(now_ms=1099)
    assert [(r.key, r.value) for r in read_all_records(log)] == [(b"a", None)]
    log.compact(now_ms=1100)
    assert read_all_records(log) == []
    assert log.log_end_offset == 2


def test_min_compaction_lag(tmp_path):
    log = open_log(tmp_path / "c-0", min_compaction_lag_ms=10_000)
    build(log, n=30, keys=3)  # timestamps 1000..1029
    log.roll(now_ms=0)
    assert log.compact(now_ms=5000).segments_cleaned == 0
    assert log.compact(now_ms=20_000).segments_cleaned > 0


def test_null_keys_kept_and_last_producer_batch_retained(tmp_path):
    log = open_log(tmp_path / "c-0")
    put(log, None, b"nokey")
    put(log, b"k", b"1", producer_id=5, producer_epoch=0, base_sequence=0)
    put(log, b"k", b"2")
    log.roll(now_ms=0)
    log.compact(now_ms=5000)
    recs = read_all_records(log)
    assert [(r.key, r.value) for r in recs] == [(None, b"nokey"), (b"k", b"2")]
    # the producer's last batch survives as an empty batch so its sequence state is kept
    hs = batch_headers(log.read(0, 1 << 20).records)
    assert [(h.base_offset, h.records_count, h.producer_id) for h in hs] == [(0, 1, -1), (1, 0, 5), (2, 1, -1)]
    log.close()
    log = open_log(tmp_path / "c-0")
    assert log.append(bytearray(encode_batch([(b"k", b"1", (), 1)], producer_id=5, producer_epoch=0,
                                             base_sequence=0)), now_ms=0).duplicate


def test_compaction_aborts_when_log_changes_underneath(tmp_path):
    log = open_log(tmp_path / "c-0", retention_ms=1, cleanup_policy=("compact", "delete"))
    build(log, n=30, keys=3)
    log.roll(now_ms=0)
    job = log.prepare_compaction(5000)
    job.run()
    put(log, b"key0", b"during")  # appends are fine
    log.apply_retention(now_ms=10**9)  # ... but the cleaned segments are gone now
    stats = log.finish_compaction(job)
    assert stats.aborted
    assert not [n for n in os.listdir(log.path) if n.endswith((CLEANED_SUFFIX, SWAP_SUFFIX))]


def test_compaction_concurrent_append_commits(tmp_path):
    log = open_log(tmp_path / "c-0")
    build(log, n=30, keys=3)
    log.roll(now_ms=0)
    job = log.prepare_compaction(5000)
    job.run()
    put(log, b"key0", b"during")
    stats = log.finish_compaction(job)
    assert not stats.aborted
    assert state(log)[b"key0"] == (30, b"during")


def _crash_files(log):
    return sorted(os.listdir(log.path))


def test_crash_before_swap_keeps_old_segments(tmp_path):
    log = open_log(tmp_path / "c-0")
    written = build(log)
    log.roll(now_ms=0)
    all_before = [(r.offset, r.key, r.value) for r in read_all_records(log)]
    job = log.prepare_compaction(5000)
    job.run()
    assert any(n.endswith(CLEANED_SUFFIX) for n in _crash_files(log))
    log.close_without_flush()  # crash: .cleaned files are left behind
    log = PartitionLog.open(log.path, small_config(**CFG), recover=True, now_ms=0)
    assert not any(n.endswith(CLEANED_SUFFIX) for n in os.listdir(log.path))
    assert [(r.offset, r.key, r.value) for r in read_all_records(log)] == all_before
    assert state(log) == written


@pytest.mark.parametrize("stage", ["swapped", "old-partly-deleted", "old-deleted"])
def test_crash_mid_swap_completes_on_open(tmp_path, stage):
    log = open_log(tmp_path / "c-0")
    written = build(log)
    log.roll(now_ms=0)
    job = log.prepare_compaction(5000)
    job.run()
    # do the commit's first step by hand: .cleaned -> .swap, then crash
    d = log.path
    swaps = []
    for name in os.listdir(d):
        if name.endswith(CLEANED_SUFFIX):
            swap = name[: -len(CLEANED_SUFFIX)] + SWAP_SUFFIX
            os.replace(os.path.join(d, name), os.path.join(d, swap))
            swaps.append(swap)
    assert swaps
    log.close_without_flush()
    lo, hi = (int(x) for x in swaps[0][: -len(SWAP_SUFFIX)].split("-"))
    olds = sorted(int(n[:-4]) for n in os.listdir(d) if n.endswith(".log") and lo <= int(n[:-4]) < hi)
    if stage == "old-partly-deleted":
        os.unlink(os.path.join(d, f"{olds[-1]:020d}.log"))
    elif stage == "old-deleted":
        for b in olds:
            for suffix in (".log", ".index", ".timeindex"):
                p = os.path.join(d, f"{b:020d}{suffix}")
                if os.path.exists(p):
                    os.replace(p, p + ".deleted")
    log = PartitionLog.open(d, small_config(**CFG), recover=True, now_ms=0)
    assert not any(n.endswith((SWAP_SUFFIX, CLEANED_SUFFIX, ".deleted")) for n in os.listdir(d))
    assert state(log) == written
    assert len(read_all_records(log)) == len(written)
    assert log.log_end_offset == 60
    assert log.append(bytearray(encode_batch([(b"n", b"n", (), 1)])), now_ms=0).first_offset == 60


def test_segments_are_merged(tmp_path):
    log = open_log(tmp_path / "c-0", segment_bytes=400)
    build(log, n=60, keys=2)
    log.roll(now_ms=0)
    n_before = log.num_segments
    log.compact(now_ms=5000)
    log.compact(now_ms=5000)
    assert log.num_segments < n_before
    assert len(read_all_records(log)) == 2


def test_compaction_needed_by_dirty_ratio(tmp_path):
    log = open_log(tmp_path / "c-0", min_cleanable_dirty_ratio=0.5)
    assert not log.compaction_needed(0)
    build(log, n=30, keys=3)
    log.roll(now_ms=0)
    assert log.compaction_needed(5000)
    log.compact(now_ms=5000)
    assert not log.compaction_needed(5000)
    non_compact = PartitionLog.open(str(tmp_path / "d-0"), small_config(), now_ms=0)
    assert non_compact.compact(now_ms=0).segments_cleaned == 0
    assert not non_compact.compaction_needed(0)


def test_compaction_keeps_control_and_transactional_batches(tmp_path):
    from protocol.records import encode_control_batch

    log = open_log(tmp_path / "c-0")
    log.append(bytearray(encode_batch([(b"t", b"1", (), 1)], producer_id=9, producer_epoch=0,
                                      base_sequence=0, is_transactional=True)), now_ms=0)
    log.append(bytearray(encode_control_batch(producer_id=9, producer_epoch=0, commit=True,
                                              coordinator_epoch=1, timestamp=2)), now_ms=0)
    put(log, b"t", b"2")
    log.roll(now_ms=0)
    log.compact(now_ms=5000)
    hs = batch_headers(log.read(0, 1 << 20).records)
    assert any(h.is_control for h in hs)
    assert [(r.key, r.value) for r in read_all_records(log) if r.key == b"t"] == [(b"t", b"2")]
    decoded = decode_records(bytes(log.read(0, 1 << 20).records))
    assert decoded[0][0].producer_id == 9 and decoded[0][0].records_count == 0


def test_compact_and_delete_retention_removes_cleaned_segments(tmp_path):
    import time

    log = open_log(tmp_path / "c-0", cleanup_policy=("compact", "delete"), retention_ms=1000)
    build(log, n=60, keys=3)
    log.roll(now_ms=0)
    log.compact(now_ms=5000)
    assert any(s.size == 0 for s in log.segments[:-1])  # fully superseded segments stay, empty
    later = int(time.time() * 1000) + 60_000
    n = log.num_segments  # the last one is the empty active segment, which stays
    assert log.apply_retention(now_ms=later) == n - 1
    assert log.log_start_offset == log.log_end_offset == 60
