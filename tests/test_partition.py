"""Partition: produce-time batch validation, storage errors, and bounded record decoding.

The decoding tests build a zstd batch that declares hundreds of thousands of
tiny records in a few hundred bytes (the shape of the 9.5M-record batch in
issue 7) and check that, while it is being judged or searched, another task
on the trio thread keeps running -- measured as the longest gap between its
checkpoints, not with sleeps.
"""

from __future__ import annotations

import errno
import os
import struct
import time

import pytest
import trio
from crc32c import crc32c

from protocol import ErrorCode
from protocol.compression import compress
from protocol.records import BATCH_HEADER_SIZE, Compression, compute_crc, encode_batch
from protocol.types import write_uvarint

from kbroker.apis import list_offsets
from kbroker.log.config import LogConfig
from kbroker.log.partition_log import PartitionLog, TimestampDecode
from kbroker.partition import Partition

_HEADER = struct.Struct(">qiibIhiqqqhii")
NOW = 1_700_000_000_000
LAST_OFFSET_DELTA_AT = 23
RECORDS_COUNT_AT = 57


def make_partition(tmp_path, **cfg) -> tuple[Partition, LogConfig]:
    config = LogConfig(**cfg)
    log = PartitionLog.open(str(tmp_path / "t-0"), config)
    return Partition("t", 0, log), config


def patched(batch: bytes, **fields) -> bytearray:
    """``batch`` with header fields overwritten and the CRC made valid again."""
    buf = bytearray(batch)
    at = {"last_offset_delta": (LAST_OFFSET_DELTA_AT, ">i"), "records_count": (RECORDS_COUNT_AT, ">i"),
          "base_sequence": (53, ">i")}
    for name, value in fields.items():
        pos, fmt = at[name]
        struct.pack_into(fmt, buf, pos, value)
    struct.pack_into(">I", buf, 17, compute_crc(buf))
    return buf


def tiny_records_batch(n: int, *, base_ts: int, ts_step_at: int | None = None) -> bytearray:
    """A zstd batch of ``n`` records with key b"k" and an empty value, built without a per-record encoder.

    With ``ts_step_at`` the records from that index on have timestamp
    ``base_ts + 10`` (timestamp delta 10), so a lookup for ``base_ts + 5``
    must decode the batch.
    """
    def record(ts_delta: int, offset_delta: int) -> bytes:
        body = bytes([0]) + _varint(ts_delta) + _varint(offset_delta) + bytes([2]) + b"k" + bytes([0, 0])
        return _varint(len(body)) + body

    # the early records share offset delta 0 so the section is one
    # repetition, cheap to build; the late ones (few) carry their true deltas
    early = record(0, 0)
    if ts_step_at is None:
        section = early * n
    else:
        section = early * ts_step_at + b"".join(record(10, i) for i in range(ts_step_at, n))
    payload = compress(Compression.ZSTD, section)
    out = bytearray(BATCH_HEADER_SIZE + len(payload))
    max_ts = base_ts + (10 if ts_step_at is not None else 0)
    _HEADER.pack_into(out, 0, 0, BATCH_HEADER_SIZE - 12 + len(payload), -1, 2, 0, int(Compression.ZSTD), n - 1,
                      base_ts, max_ts, -1, -1, -1, n)
    out[BATCH_HEADER_SIZE:] = payload
    struct.pack_into(">I", out, 17, crc32c(memoryview(out)[21:]))
    return out


def _varint(v: int) -> bytes:
    return write_uvarint((v << 1) ^ (v >> 63))  # zigzag


async def longest_stall_while(work) -> tuple[float, object]:
    """Run ``work()`` and, beside it, a task that checkpoints continuously;
    return the longest time that task could not run, as a fraction of the
    whole run, and the work's result.

    A fraction, not seconds: on a loaded machine every stall and the whole
    run stretch alike, while work done on the trio thread in one piece
    stalls the other task for (nearly) all of it -- a fraction near 1.
    """
    result = None
    done = False
    worst = 0.0
    ticks = 0

    async def observer():
        nonlocal worst, ticks
        last = time.perf_counter()
        while not done:
            await trio.lowlevel.checkpoint()
            now = time.perf_counter()
            worst = max(worst, now - last)
            last = now
            ticks += 1

    async def run():
        nonlocal result, done
        try:
            result = await work()
        finally:
            done = True

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(observer)
        nursery.start_soon(run)
    total = time.perf_counter() - started
    assert ticks >= 10, f"the other task ran only {ticks} times during {total:.2f}s of work"
    return worst / total, result


# ---------------------------------------------------------------- header checks (defect 8)


@pytest.mark.parametrize(
    "fields, fragment",
    [
        ({"last_offset_delta": (1 << 31) - 1}, "Inconsistent batch offset range"),
        ({"last_offset_delta": 5}, "Inconsistent batch offset range"),
        ({"records_count": 0, "last_offset_delta": -0 + 0}, "Invalid reported count"),
        ({"records_count": 100_000, "last_offset_delta": 99_999}, "more than its payload"),
    ],
)
def test_header_claims_are_checked(tmp_path, fields, fragment):
    part, cfg = make_partition(tmp_path)
    bad = patched(encode_batch([(b"k", b"v", (), NOW)]), **fields)
    res = part.append_records(bad, cfg, NOW)
    assert res.error == ErrorCode.INVALID_RECORD and fragment in res.message
    assert part.log_end_offset == 0 and part.log.num_segments == 1


def test_one_record_batch_claiming_2_31_offsets_does_not_move_the_log_end(tmp_path):
    part, cfg = make_partition(tmp_path)
    for _ in range(5):
        bad = patched(encode_batch([(b"k", b"v", (), NOW)]), last_offset_delta=(1 << 31) - 1)
        assert part.append_records(bad, cfg, NOW).error == ErrorCode.INVALID_RECORD
    assert part.log_end_offset == 0 and part.log.num_segments == 1


def test_compressed_batch_claiming_more_records_than_decompression_allows(tmp_path):
    part, cfg = make_partition(tmp_path)
    n = 20_000_000
    bad = patched(encode_batch([(b"k", b"v", (), NOW)], compression=Compression.ZSTD),
                  records_count=n, last_offset_delta=n - 1)
    res = part.append_records(bad, cfg, NOW)
    assert res.error == ErrorCode.INVALID_RECORD and "decompressed size limit" in res.message


def test_idempotent_batch_needs_a_sequence(tmp_path):
    part, cfg = make_partition(tmp_path)
    bad = encode_batch([(b"k", b"v", (), NOW)], producer_id=7, producer_epoch=0, base_sequence=-1)
    res = part.append_records(bytearray(bad), cfg, NOW)
    assert res.error == ErrorCode.INVALID_RECORD and "sequence" in res.message


def test_more_than_one_batch_is_refused(tmp_path):
    part, cfg = make_partition(tmp_path)
    two = bytearray(encode_batch([(b"k", b"a", (), NOW)]) + encode_batch([(b"k", b"b", (), NOW)]))
    assert part.append_records(two, cfg, NOW).error == ErrorCode.INVALID_RECORD


def test_well_formed_batches_still_append(tmp_path):
    part, cfg = make_partition(tmp_path)
    res = part.append_records(bytearray(encode_batch([(b"k", b"v", (), NOW)] * 3)), cfg, NOW)
    assert (res.error, res.base_offset, part.log_end_offset) == (ErrorCode.NONE, 0, 3)


# ---------------------------------------------------------------- storage errors (defect 2)


def test_failed_write_is_answered_kafka_storage_error(tmp_path, monkeypatch):
    part, cfg = make_partition(tmp_path)

    def full(*_a):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full)
    res = part.append_records(bytearray(encode_batch([(b"k", b"v", (), NOW)])), cfg, NOW)
    assert res.error == ErrorCode.KAFKA_STORAGE_ERROR
    assert part.offline
    monkeypatch.undo()
    res = part.append_records(bytearray(encode_batch([(b"k", b"v", (), NOW)])), cfg, NOW)
    assert res.error == ErrorCode.KAFKA_STORAGE_ERROR  # the dir stays offline


# ---------------------------------------------------------------- bounded decoding (defect 5)

BIG = 200_000  # about 1.5 s to decode on the trio thread (measured), ~0.05 s of stall from a worker


async def test_compacted_key_check_of_a_huge_batch_does_not_stall_others(tmp_path):
    part, cfg = make_partition(tmp_path, cleanup_policy=("compact",))
    big = tiny_records_batch(BIG, base_ts=NOW)
    assert len(big) < 2000
    with trio.fail_after(60):
        stall, res = await longest_stall_while(lambda: part.produce(big, cfg, NOW))
    assert res.error == ErrorCode.NONE and part.log_end_offset == BIG
    assert stall < 0.5, f"other tasks were stalled for {stall:.0%} of the work"


async def test_timestamp_lookup_inside_a_huge_batch_does_not_stall_others(tmp_path):
    part, cfg = make_partition(tmp_path)
    big = tiny_records_batch(BIG, base_ts=NOW, ts_step_at=BIG - 3)
    assert part.append_records(big, cfg, NOW).error == ErrorCode.NONE
    with trio.fail_after(60):
        stall, found = await longest_stall_while(lambda: part.offset_for_timestamp(NOW + 5))
    assert found == (BIG - 3, NOW + 10)
    assert stall < 0.5, f"other tasks were stalled for {stall:.0%} of the work"


async def test_timestamp_lookup_from_headers_decodes_nothing(tmp_path, monkeypatch):
    part, cfg = make_partition(tmp_path)
    part.append_records(bytearray(encode_batch([(b"k", b"v", (), NOW + i) for i in range(3)])), cfg, NOW)
    big = tiny_records_batch(BIG, base_ts=NOW + 100)
    part.append_records(big, cfg, NOW)

    def no_decode(self):
        raise AssertionError("decoded a batch its header answers for")

    monkeypatch.setattr(TimestampDecode, "run", no_decode)
    assert await part.offset_for_timestamp(NOW + 50) == (3, NOW + 100)
    assert await part.offset_for_timestamp(NOW) == (0, NOW)
    assert await part.latest_timestamp() == (3, NOW + 100)


async def test_list_offsets_answers_storage_error_for_an_offline_log(tmp_path):
    part, cfg = make_partition(tmp_path)
    part.append_records(bytearray(encode_batch([(b"k", b"v", (), NOW)])), cfg, NOW)
    part.log.offline = True
    err, _ts, off = await list_offsets._lookup(part, NOW)
    assert (err, off) == (ErrorCode.KAFKA_STORAGE_ERROR, -1)
