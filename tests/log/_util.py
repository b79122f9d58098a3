"""Helpers shared by the kbroker.log tests."""

from __future__ import annotations

from protocol.records import decode_records, encode_batch, iter_batches

from kbroker.log.config import LogConfig
from kbroker.log.partition_log import PartitionLog


def batch(n: int = 1, *, ts: int = 1000, size: int = 10, key: bytes | None = b"k", **kw) -> bytearray:
    """An n-record batch (base offset 0), record i has timestamp ts + i."""
    recs = [(key, b"v" * size, (), ts + i) for i in range(n)]
    return bytearray(encode_batch(recs, **kw))


def kv_batch(pairs, *, ts: int = 1000, **kw) -> bytearray:
    return bytearray(encode_batch([(k, v, (), ts + i) for i, (k, v) in enumerate(pairs)], **kw))


def small_config(**kw) -> LogConfig:
    base = dict(segment_bytes=1 << 20, index_interval_bytes=128, retention_ms=-1)
    base.update(kw)
    return LogConfig(**base)


def read_all_records(log: PartitionLog, start: int | None = None):
    """Every record from ``start`` (default log start) to the log end, in order."""
    off = log.log_start_offset if start is None else start
    out = []
    while off < log.log_end_offset:
        r = log.read(off, 1 << 20)
        if not r.records:
            break
        for _h, recs in decode_records(bytes(r.records)):
            out.extend(x for x in recs if x.offset >= off)
        off = r.next_offset
    return out


def batch_headers(data):
    return [h for _pos, h in iter_batches(bytes(data))]
