"""Log compaction for ``cleanup.policy=compact`` (Kafka's log cleaner, simplified).

One pass:

1. *Plan* (owner's thread): the cleanable range is the longest prefix of
   closed segments that lie entirely below the upper bound (the caller's high
   watermark, the log end, and the first offset of an open transaction) and
   whose newest record is older than ``min.compaction.lag.ms``.  Consecutive
   cleanable segments are grouped so each group's output fits one segment.
2. *Run* (any thread, private file descriptors only): build ``key -> highest
   offset`` over every record below the upper bound -- the whole log,
   including the active segment -- then rewrite each group into
   ``<base>-<end>.cleaned``, keeping a record only if it is the latest for its
   key (records with a null key are kept).  A batch is copied byte-for-byte
   when nothing in it changes; otherwise it is re-encoded with the same base
   offset, last offset delta, base sequence, producer id/epoch, partition
   leader epoch, attributes and compression, and with the surviving records
   at their original offsets and timestamps (so offsets have gaps, as in
   Kafka).  A batch that loses all its records is dropped, except the last
   batch of each producer, which stays as an empty batch so idempotent
   producer state survives.  Control batches (transaction markers) are kept.
3. *Commit* (owner's thread): each output is renamed ``.cleaned`` ->
   ``<base>-<end>.swap`` (fsynced), the replaced segments are renamed to
   ``.deleted`` and removed, and the swap file becomes ``<base>.log``.
   :meth:`PartitionLog.open` finishes any ``.swap`` it finds (a complete
   replacement for the segments with base offsets in [base, end)) and deletes
   ``.cleaned`` leftovers, so a crash at any point is safe.

Tombstones (null value) use Kafka's *delete horizon* (KIP-534): the first pass
that keeps a tombstone re-encodes its batch with attribute bit 6 set and the
base timestamp holding ``now + delete.retention.ms`` (record timestamp deltas
are taken relative to it, so record timestamps are unchanged); a later pass
after that time removes the tombstone.  ``cleaner-checkpoint`` remembers the
end of the cleaned range and the earliest pending horizon, for
:func:`compaction_needed`.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

from crc32c import crc32c

from protocol.errors import ProtocolError
from protocol.records import LOG_OVERHEAD, BATCH_HEADER_SIZE, Compression, decode_batch

from ..crashpoints import crash_point
from .errors import CorruptRecord
from .segment import MAX_RELATIVE_OFFSET, Segment, _header_at, file_stem

CLEANED_SUFFIX = ".cleaned"
SWAP_SUFFIX = ".swap"
DELETED_SUFFIX = ".deleted"
_READ_CHUNK = 4 << 20
_WRITE_CHUNK = 1 << 20
_DELETE_HORIZON_BIT = 0x40
_COMPRESSION_MASK = 0x07
_TIMESTAMP_TYPE_BIT = 0x08
_HEADER = struct.Struct(">qiibIhiqqqhii")
_CRC_AT = 17
_ATTRIBUTES_AT = 21


@dataclass
class _SegRef:
    seg: Segment  # identity check at commit
    base: int
    path: str
    size: int


@dataclass
class CompactionJob:
    directory: str
    generation: int
    now_ms: int
    upper_offset: int
    delete_retention_ms: int
    index_interval: int
    index_bytes: int
    groups: list[list[_SegRef]]
    group_ends: list[int]
    key_sources: list[_SegRef]
    producer_last_offsets: dict[int, int]
    outputs: list[Segment | None] = field(default_factory=list)
    stats: object = None
    min_horizon: int | None = None
    ran: bool = False

    # ---------------------------------------------------------------- run

    def run(self) -> None:
        """Build the cleaned segments (blocking; safe in a worker thread)."""
        from .partition_log import CompactionStats

        stats = CompactionStats()
        self.stats = stats
        latest = self._build_key_map()
        for group, end in zip(self.groups, self.group_ends):
            base = group[0].base
            path = os.path.join(self.directory, f"{file_stem(base)}-{file_stem(end)}{CLEANED_SUFFIX}")
            out = Segment.create(self.directory, base, index_interval=self.index_interval,
                                 index_bytes=self.index_bytes, now_ms=self.now_ms, log_path=path)
            changed = len(group) > 1
            pending = bytearray()
            metas: list[tuple[int, int, int, int]] = []
            try:
                for ref in group:
                    stats.bytes_before += ref.size
                    for h, data in _iter_file_batches(ref.path, ref.size):
                        new, max_ts, removed, tombs = self._clean_batch(h, data, latest)
                        stats.records_removed += removed
                        stats.tombstones_removed += tombs
                        if new is not data:
                            changed = True
                        if new is None:
                            continue
                        metas.append((len(pending), h.base_offset, h.next_offset, max_ts))
                        pending += new
                        if len(pending) >= _WRITE_CHUNK:
                            out.append(pending, metas)
                            pending = bytearray()
                            metas = []
                if pending:
                    out.append(pending, metas)
                if changed:
                    os.fsync(out.fd)
            except BaseException:
                out.close()
                _unlink(path)
                raise
            if changed:
                self.outputs.append(out)
                stats.segments_cleaned += len(group)
                stats.segments_written += 1
                stats.bytes_after += out.size
            else:
                out.close()
                _unlink(path)
                self.outputs.append(None)
                stats.bytes_after += sum(r.size for r in group)
        self.ran = True

    def _build_key_map(self) -> dict[bytes, int]:
        latest: dict[bytes, int] = {}
        upper = self.upper_offset
        for ref in self.key_sources:
            for h, data in _iter_file_batches(ref.path, ref.size):
                if h.base_offset >= upper:
                    break
                if h.is_control or h.records_count == 0:
                    continue
                for r in _decode(data, ref.path):
                    if r.offset >= upper:
                        break
                    if r.key is not None:
                        latest[r.key] = r.offset
        return latest

    def _clean_batch(self, h, data, latest):
        """-> (new bytes | data unchanged | None dropped, max_ts, removed, tombstones removed)."""
        if h.is_control or h.records_count == 0:
            return data, h.max_timestamp, 0, 0
        records = _decode(data, self.directory)
        horizon = h.base_timestamp if h.has_delete_horizon else None
        now = self.now_ms
        keep = []
        removed = tombs = 0
        has_tomb = False
        for r in records:
            if r.key is not None:
                lat = latest.get(r.key)
                if lat is not None and r.offset < lat:
                    removed += 1
                    continue
            if r.value is None:
                if horizon is not None and now >= horizon:
                    removed += 1
                    tombs += 1
                    continue
                has_tomb = True
            keep.append(r)
        if has_tomb:
            new_horizon = horizon if horizon is not None else now + self.delete_retention_ms
            if self.min_horizon is None or new_horizon < self.min_horizon:
                self.min_horizon = new_horizon
        if len(keep) == len(records) and (not has_tomb or horizon is not None):
            return data, h.max_timestamp, 0, 0
        is_last_of_producer = h.producer_id >= 0 and (
            h.base_offset <= self.producer_last_offsets.get(h.producer_id, -1) <= h.last_offset
        )
        if not keep and not is_last_of_producer:
            return None, -1, removed, tombs
        new_horizon = None
        if has_tomb:
            new_horizon = horizon if horizon is not None else now + self.delete_retention_ms
        new, max_ts = encode_compacted_batch(h, keep, new_horizon)
        return new, max_ts, removed, tombs

    def is_stale(self, log) -> bool:
        """True when the log changed under the job (commit would abort anyway)."""
        live = {id(s) for s in log.segments}
        return log.closed or self.generation != log.generation or any(
            id(ref.seg) not in live for g in self.groups for ref in g
        )

    def discard(self) -> None:
        """Close and delete the outputs (abort)."""
        for out in self.outputs:
            if out is not None:
                out.close()
                _unlink(out.log_path)
        self.outputs = []


# ---------------------------------------------------------------------- plan / commit


def _upper_bound(log, upper_offset: int | None) -> int:
    upper = log.log_end_offset if upper_offset is None else min(upper_offset, log.log_end_offset)
    fuo = log.producer_state.first_unstable_offset()
    if fuo is not None:
        upper = min(upper, fuo)
    return upper


def _cleanable_segments(log, now_ms: int, upper: int) -> list[Segment]:
    lag = log.config.min_compaction_lag_ms
    out = []
    for seg in log.segments[:-1]:
        if seg.next_offset > upper:
            break
        if lag > 0 and seg.max_timestamp > now_ms - lag:
            break
        out.append(seg)
    return out


def plan_compaction(log, now_ms: int, upper_offset: int | None) -> CompactionJob | None:
    cfg = log.config
    if not cfg.compact:
        return None
    upper = _upper_bound(log, upper_offset)
    cleanable = _cleanable_segments(log, now_ms, upper)
    if not cleanable:
        return None
    segs = log.segments
    groups: list[list[_SegRef]] = []
    ends: list[int] = []
    cur: list[_SegRef] = []
    cur_size = 0
    for seg in cleanable:
        ref = _SegRef(seg, seg.base_offset, seg.log_path, seg.size)
        if cur and (cur_size + seg.size > cfg.segment_bytes
                    or seg.next_offset - 1 - cur[0].base > MAX_RELATIVE_OFFSET):
            groups.append(cur)
            cur, cur_size = [], 0
        cur.append(ref)
        cur_size += seg.size
    if cur:
        groups.append(cur)
    for g in groups:
        last = g[-1].seg
        ends.append(segs[segs.index(last) + 1].base_offset)
    key_sources = [_SegRef(s, s.base_offset, s.log_path, s.size) for s in segs if s.base_offset < upper]
    return CompactionJob(
        directory=log.path,
        generation=log.generation,
        now_ms=now_ms,
        upper_offset=upper,
        delete_retention_ms=cfg.delete_retention_ms,
        index_interval=cfg.index_interval_bytes,
        index_bytes=cfg.segment_index_bytes,
        groups=groups,
        group_ends=ends,
        key_sources=key_sources,
        producer_last_offsets=log.producer_state.last_batch_offsets(),
    )


def commit_compaction(log, job: CompactionJob):
    """Swap the cleaned segments in (owner's thread)."""
    from .partition_log import CompactionStats, _fsync_dir

    if not job.ran:
        job.discard()
        return CompactionStats(aborted=True)
    if job.is_stale(log):
        job.discard()
        return CompactionStats(aborted=True)
    d = log.path
    # 1. cleaned -> swap (the point of no return for a crash)
    swaps = []
    for group, end, out in zip(job.groups, job.group_ends, job.outputs):
        if out is None:
            continue
        swap = os.path.join(d, f"{file_stem(group[0].base)}-{file_stem(end)}{SWAP_SUFFIX}")
        os.replace(out.log_path, swap)
        out.log_path = swap
        swaps.append((group, out))
    _fsync_dir(d)
    crash_point("compaction.swap")  # .swap files complete, old segments still in place
    # 2. retire the old segments, 3. swap -> .log
    for group, out in swaps:
        idx = log.segments.index(group[0].seg)
        # like Kafka, the cleaned segment keeps the newest modification time of
        # what it replaces, so time retention of (empty) cleaned segments is unchanged
        mtime = max((_mtime(ref.path) for ref in group), default=None)
        for ref in group:
            log._remove_segment(ref.seg, False)
        final = os.path.join(d, file_stem(out.base_offset) + ".log")
        os.replace(out.log_path, final)
        out.log_path = final
        if mtime is not None:
            os.utime(final, (mtime, mtime))
        out._idx_dirty_tail = out._ts_dirty_tail = True
        out.persist_indexes()
        out._load_first_batch_timestamp()
        log.segments.insert(idx, out)
        log._bases.insert(idx, out.base_offset)
    _fsync_dir(d)
    state = dict(log._cleaner_state)
    state["first_dirty_offset"] = job.group_ends[-1]
    state["next_horizon_ms"] = job.min_horizon
    log._cleaner_state = state
    log._write_cleaner_state()
    return job.stats


def compaction_needed(log, now_ms: int) -> bool:
    cfg = log.config
    if not cfg.compact:
        return False
    upper = _upper_bound(log, None)
    cleanable = _cleanable_segments(log, now_ms, upper)
    if not cleanable:
        return False
    state = log._cleaner_state
    nh = state.get("next_horizon_ms")
    if nh is not None and now_ms >= nh:
        return True
    first_dirty = state.get("first_dirty_offset", 0) or 0
    total = sum(s.size for s in cleanable)
    dirty_segs = [s for s in cleanable if s.base_offset >= first_dirty]
    dirty = sum(s.size for s in dirty_segs)
    if total and dirty / total >= cfg.min_cleanable_dirty_ratio and dirty > 0:
        return True
    max_lag = cfg.max_compaction_lag_ms
    for s in dirty_segs:
        if s.first_batch_timestamp >= 0 and now_ms - s.first_batch_timestamp > max_lag:
            return True
    return False


# ---------------------------------------------------------------------- batch helpers


def _decode(data, where: str):
    try:
        return decode_batch(data, 0)[1]
    except ProtocolError as e:
        raise CorruptRecord(f"{where}: {e}") from None


def _iter_file_batches(path: str, size: int):
    """Yield (header, memoryview of the whole batch) for a segment file's first ``size`` bytes."""
    fd = os.open(path, os.O_RDONLY)
    try:
        pos = 0
        while pos < size:
            chunk = os.pread(fd, min(_READ_CHUNK, size - pos), pos)
            view = memoryview(chunk)
            p = 0
            n = len(chunk)
            while p + BATCH_HEADER_SIZE <= n:
                h = _header_at(chunk, p)
                total = h.batch_length + LOG_OVERHEAD
                if p + total > n:
                    break
                yield h, view[p:p + total]
                p += total
            if p == 0:
                # one batch larger than the chunk
                if n < BATCH_HEADER_SIZE:
                    raise CorruptRecord(f"{path}: truncated batch at {pos}")
                h = _header_at(chunk, 0)
                total = h.batch_length + LOG_OVERHEAD
                big = os.pread(fd, total, pos)
                if len(big) != total:
                    raise CorruptRecord(f"{path}: truncated batch at {pos}")
                yield h, memoryview(big)
                p = total
            pos += p
    finally:
        os.close(fd)


def _varint(out: bytearray, value: int) -> None:
    z = (value << 1) ^ (value >> 63)
    z &= (1 << 64) - 1
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)


def _put_bytes(out: bytearray, data: bytes | None) -> None:
    if data is None:
        _varint(out, -1)
    else:
        _varint(out, len(data))
        out += data


def encode_compacted_batch(h, records, delete_horizon: int | None) -> tuple[bytes, int]:
    """Re-encode batch ``h`` with only ``records`` kept (original offsets).

    Keeps base offset, last offset delta, base sequence, producer fields,
    partition leader epoch, attributes and codec.  With ``delete_horizon``
    the delete-horizon attribute bit is set and the base timestamp holds it.
    Returns (batch bytes, max timestamp).
    """
    attributes = h.attributes
    log_append = bool(attributes & _TIMESTAMP_TYPE_BIT)
    if delete_horizon is not None:
        base_ts = delete_horizon
        attributes |= _DELETE_HORIZON_BIT
    elif h.has_delete_horizon:
        base_ts = h.base_timestamp
    else:
        base_ts = records[0].timestamp if records and not log_append else h.base_timestamp
    if log_append or not records:
        max_ts = h.max_timestamp
    else:
        max_ts = max(r.timestamp for r in records)
    section = bytearray()
    body = bytearray()
    for r in records:
        body.clear()
        body.append(r.attributes & 0xFF)
        _varint(body, 0 if log_append else r.timestamp - base_ts)
        _varint(body, r.offset - h.base_offset)
        _put_bytes(body, r.key)
        _put_bytes(body, r.value)
        _varint(body, len(r.headers))
        for hk, hv in r.headers:
            _put_bytes(body, hk.encode("utf-8"))
            _put_bytes(body, hv)
        _varint(section, len(body))
        section += body
    codec = attributes & _COMPRESSION_MASK
    if not records:
        attributes &= ~_COMPRESSION_MASK
        payload = b""
    elif codec:
        from protocol.compression import compress

        payload = compress(Compression(codec), bytes(section))
    else:
        payload = bytes(section)
    out = bytearray(BATCH_HEADER_SIZE + len(payload))
    _HEADER.pack_into(
        out, 0, h.base_offset, BATCH_HEADER_SIZE - LOG_OVERHEAD + len(payload), h.partition_leader_epoch,
        2, 0, attributes, h.last_offset_delta, base_ts, max_ts, h.producer_id, h.producer_epoch,
        h.base_sequence, len(records),
    )
    out[BATCH_HEADER_SIZE:] = payload
    struct.pack_into(">I", out, _CRC_AT, crc32c(memoryview(out)[_ATTRIBUTES_AT:]))
    return bytes(out), max_ts


def _mtime(path: str) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
