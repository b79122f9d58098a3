"""Unclean shutdown: torn and corrupt tails are cut at the last valid batch."""

import os
import random

import pytest

from kbroker.log import PartitionLog

from ._util import batch, batch_headers, read_all_records, small_config


def make_log(path, nbatches=30, **cfg):
    log = PartitionLog.open(str(path), small_config(**cfg), now_ms=0)
    ends = [0]  # byte offset in the active segment after each batch
    for i in range(nbatches):
        log.append(batch(1 + i % 3, ts=1000 + i, size=10 + (i * 7) % 30), now_ms=0)
        ends.append(log.active_segment.size)
    return log, ends


def reopen(path, recover=True, **cfg):
    return PartitionLog.open(str(path), small_config(**cfg), recover=recover, now_ms=0)


def test_torn_tail_at_random_points(tmp_path):
    rng = random.Random(42)
    src, ends = make_log(tmp_path / "src-0")
    src.close()
    seg_file = os.path.join(src.path, f"{0:020d}.log")
    full = open(seg_file, "rb").read()
    # offsets of the batches in order (from the untouched log)
    src = reopen(tmp_path / "src-0", recover=False)
    all_batches = batch_headers(src.read(0, 1 << 30).records)
    src.close()
    cuts = sorted({rng.randrange(1, len(full)) for _ in range(25)} | {ends[5], ends[5] + 1, len(full) - 1})
    for i, cut in enumerate(cuts):
        d = tmp_path / f"cut{i}-0"
        os.makedirs(d)
        with open(d / f"{0:020d}.log", "wb") as f:
            f.write(full[:cut])
        log = reopen(d)
        kept = [h for h, end in zip(all_batches, ends[1:]) if end <= cut]
        want_end = kept[-1].next_offset if kept else 0
        assert log.log_end_offset == want_end, cut
        assert log.active_segment.size == (ends[len(kept)])
        assert os.path.getsize(d / f"{0:020d}.log") == ends[len(kept)]
        assert [r.offset for r in read_all_records(log)] == list(range(want_end))
        info = log.append(batch(2), now_ms=0)
        assert info.first_offset == want_end
        log.close()
        log = reopen(d, recover=False)
        assert log.log_end_offset == want_end + 2


@pytest.mark.parametrize("where", ["crc-area", "length", "magic"])
def test_corrupt_byte_in_last_batch(tmp_path, where):
    log, ends = make_log(tmp_path / "t-0", nbatches=10)
    last_start = ends[-2]
    keep_end = log.segments[-1].next_offset
    batches = batch_headers(log.read(0, 1 << 30).records)
    log.close_without_flush()
    p = os.path.join(log.path, f"{0:020d}.log")
    data = bytearray(open(p, "rb").read())
    pos = {"crc-area": last_start + 70, "length": last_start + 9, "magic": last_start + 16}[where]
    data[pos] ^= 0x5A
    open(p, "wb").write(data)
    log = reopen(tmp_path / "t-0")
    assert log.log_end_offset == batches[-1].base_offset < keep_end
    assert log.active_segment.size == last_start
    assert log.append(batch(1), now_ms=0).first_offset == batches[-1].base_offset


def test_corruption_in_middle_segment_drops_later_segments(tmp_path):
    log, _ = make_log(tmp_path / "t-0", nbatches=40, segment_bytes=500)
    assert log.num_segments >= 4
    seg1 = log.segments[1]
    seg1_first = batch_headers(log.read(seg1.base_offset, 1).records)[0]
    log.close_without_flush()
    # recovery point is 0 (never flushed): every segment is checked
    p = seg1.log_path
    data = bytearray(open(p, "rb").read())
    data[seg1_first.total_size + 30] ^= 0xFF  # second batch of segment 1
    open(p, "wb").write(data)
    log = reopen(tmp_path / "t-0", segment_bytes=500)
    assert log.num_segments == 2
    assert log.log_end_offset == seg1_first.next_offset
    assert sorted(n for n in os.listdir(log.path) if n.endswith(".log")) == [
        f"{0:020d}.log", f"{seg1.base_offset:020d}.log"]
    assert log.append(batch(1), now_ms=0).first_offset == seg1_first.next_offset


def test_segments_below_recovery_point_are_trusted(tmp_path):
    log, _ = make_log(tmp_path / "t-0", nbatches=40, segment_bytes=500)
    log.flush()
    rp = log.recovery_point
    assert rp == log.log_end_offset
    first = log.segments[0]
    log.append(batch(1), now_ms=0)
    log.close_without_flush()
    # corrupt a record body (CRC-covered) in the first, flushed segment:
    # recovery does not re-check it, exactly as Kafka
    data = bytearray(open(first.log_path, "rb").read())
    data[100] ^= 0xFF
    open(first.log_path, "wb").write(data)
    log = reopen(tmp_path / "t-0", segment_bytes=500)
    assert log.log_end_offset == rp + 1


def test_garbage_appended_after_valid_data(tmp_path):
    log, _ = make_log(tmp_path / "t-0", nbatches=5)
    end = log.log_end_offset
    size = log.active_segment.size
    log.close_without_flush()
    with open(log.active_segment.log_path, "ab") as f:
        f.write(b"\x00" * 4096)  # preallocated zeros after a crash
    log = reopen(tmp_path / "t-0")
    assert log.log_end_offset == end and log.active_segment.size == size


def test_recovery_with_large_batches_spanning_chunks(tmp_path, monkeypatch):
    import kbroker.log.segment as segmod

    monkeypatch.setattr(segmod, "_RECOVER_CHUNK", 300)
    log = PartitionLog.open(str(tmp_path / "t-0"), small_config(), now_ms=0)
    for i in range(12):
        log.append(batch(1, size=50 + 90 * (i % 5)), now_ms=0)
    end, size = log.log_end_offset, log.active_segment.size
    log.close_without_flush()
    log = reopen(tmp_path / "t-0")
    assert (log.log_end_offset, log.active_segment.size) == (end, size)
    log.close_without_flush()
    os.truncate(log.active_segment.log_path, size - 5)
    log = reopen(tmp_path / "t-0")
    assert log.log_end_offset == end - 1


def test_empty_active_segment_and_missing_files(tmp_path):
    log = PartitionLog.open(str(tmp_path / "t-0"), small_config(), now_ms=0)
    log.close_without_flush()
    log = reopen(tmp_path / "t-0")
    assert (log.log_start_offset, log.log_end_offset) == (0, 0)
    assert log.append(batch(1), now_ms=0).first_offset == 0
