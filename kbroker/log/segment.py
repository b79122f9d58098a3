"""One log segment: ``<base>.log`` plus its sparse ``.index`` and ``.timeindex``.

Files (20-digit zero-padded base offset, as Kafka names them):

``<base>.log``
    Concatenated magic-2 record batches, byte-for-byte what Kafka stores.
``<base>.index``
    Offset index, 8-byte big-endian entries ``(relative offset u32, position
    u32)``.  An entry is added for a batch when it starts at least
    ``index.interval.bytes`` after the previous entry's batch (position 0 is
    implicitly indexed).  The relative offset is the batch's *base* offset.
``<base>.timeindex``
    Time index, 12-byte big-endian entries ``(timestamp i64, relative offset
    u32)``.  Added together with an offset-index entry when the largest batch
    timestamp seen so far has grown; entry ``(T, O)`` means "every batch whose
    base offset is below ``base + O`` has max timestamp <= T", and ``O`` is
    always an offset-index point.

Both indexes are kept in memory as arrays and written to disk incrementally
(only new entries) by :meth:`Segment.persist_indexes`; they can always be
rebuilt from the ``.log`` by scanning batch headers.

Appends are ``os.pwrite`` at the end of the file (page cache, no fsync);
reads are ``os.pread``.  Not thread-safe: the owning :class:`PartitionLog`
serialises access.
"""

from __future__ import annotations

import operator
import os
import struct
import sys
from array import array
from bisect import bisect_right
from itertools import islice
from typing import Iterator

from protocol.records import BATCH_HEADER_SIZE, LOG_OVERHEAD, BatchHeader, split_batches_lenient

from ..crashpoints import crash_point
from .errors import CorruptRecord

LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".index"
TIMEINDEX_SUFFIX = ".timeindex"

_HEADER = struct.Struct(">qiibIhiqqqhii")
_BASE_AND_LENGTH = struct.Struct(">qi")
_INT32 = struct.Struct(">i")
_TIME_ENTRY = struct.Struct(">qI")
_OFFSET_ENTRY = struct.Struct(">II")
_LAST_OFFSET_DELTA_AT = 23
_MIN_BATCH_LENGTH = BATCH_HEADER_SIZE - LOG_OVERHEAD
_SWAP_BYTES = sys.byteorder == "little"
_SCAN_CHUNK = 8192
_RECOVER_CHUNK = 8 << 20
MAX_RELATIVE_OFFSET = (1 << 31) - 1


def file_stem(base_offset: int) -> str:
    return f"{base_offset:020d}"


def _header_at(buf, pos: int) -> BatchHeader:
    h = BatchHeader._make(_HEADER.unpack_from(buf, pos))
    if h.batch_length < _MIN_BATCH_LENGTH or h.magic != 2 or h.last_offset_delta < 0:
        raise CorruptRecord(f"bad batch header at position {pos}")
    return h


class SegmentCorrupt(Exception):
    """A trusted (clean) segment failed a consistency check; rebuild or recover it."""


class Segment:
    """A segment of a partition log.  See the module docstring for the format."""

    def __init__(
        self,
        directory: str,
        base_offset: int,
        fd: int,
        *,
        index_interval: int,
        index_bytes: int,
        created_ms: int,
        log_path: str | None = None,
    ) -> None:
        self.directory = directory
        self.base_offset = base_offset
        stem = os.path.join(directory, file_stem(base_offset))
        self.log_path = log_path or stem + LOG_SUFFIX
        self.index_path = stem + INDEX_SUFFIX
        self.timeindex_path = stem + TIMEINDEX_SUFFIX
        self.fd = fd
        self.size = 0
        self.next_offset = base_offset  # offset after the last batch (== base when empty)
        self.max_timestamp = -1  # largest batch max timestamp, -1 if none
        self.first_batch_timestamp = -1  # max timestamp of the first batch (segment.ms rolling)
        self.created_ms = created_ms
        self.index_interval = index_interval
        self.max_index_entries = max(1, index_bytes // _OFFSET_ENTRY.size)
        self.max_time_entries = max(1, index_bytes // _TIME_ENTRY.size)
        self.rolling_jitter_ms = 0
        # offset index
        self.idx_rel = array("I")
        self.idx_pos = array("I")
        # time index
        self.ts_ts = array("q")
        self.ts_rel = array("I")
        self._idx_saved = 0  # entries already on disk
        self._ts_saved = 0
        self._idx_dirty_tail = False  # file may hold entries past the in-memory ones
        self._read_cache: tuple[int, int] | None = None  # (offset, position) of the next batch
        self._ts_dirty_tail = False

    # ------------------------------------------------------------------ open

    @classmethod
    def create(
        cls,
        directory: str,
        base_offset: int,
        *,
        index_interval: int,
        index_bytes: int,
        now_ms: int,
        log_path: str | None = None,
    ) -> "Segment":
        """A new empty segment (any existing files of that name are truncated)."""
        stem = os.path.join(directory, file_stem(base_offset))
        path = log_path or stem + LOG_SUFFIX
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        seg = cls(directory, base_offset, fd, index_interval=index_interval,
                  index_bytes=index_bytes, created_ms=now_ms, log_path=path)
        if log_path is None:
            for p in (seg.index_path, seg.timeindex_path):
                _unlink(p)
        return seg

    @classmethod
    def open(
        cls,
        directory: str,
        base_offset: int,
        *,
        index_interval: int,
        index_bytes: int,
        now_ms: int,
        recover: bool,
        log_path: str | None = None,
    ) -> tuple["Segment", int]:
        """Open an existing segment.

        ``recover=True`` validates every batch (CRC), truncates the file at the
        first bad or torn batch and rebuilds the indexes; returns the number of
        bytes truncated.  ``recover=False`` trusts the files but checks the
        indexes against the log and rebuilds them (from batch headers) if they
        do not fit.
        """
        stem = os.path.join(directory, file_stem(base_offset))
        path = log_path or stem + LOG_SUFFIX
        fd = os.open(path, os.O_RDWR)
        seg = cls(directory, base_offset, fd, index_interval=index_interval,
                  index_bytes=index_bytes, created_ms=now_ms, log_path=path)
        try:
            seg.size = os.fstat(fd).st_size
            truncated = 0
            if recover:
                truncated = seg.recover()
            else:
                try:
                    seg._load_indexes()
                    seg._recompute_tail()
                except (SegmentCorrupt, CorruptRecord, OSError, ValueError):
                    seg.rebuild_indexes()
            seg._load_first_batch_timestamp()
        except BaseException:
            os.close(fd)
            raise
        return seg, truncated

    # ------------------------------------------------------------------ scanning

    def iter_headers(self, start: int = 0, end: int | None = None) -> Iterator[tuple[int, BatchHeader]]:
        """(position, header) of the batches in [start, end), headers only (no CRC).

        Raises :class:`CorruptRecord` if a header is malformed or a batch runs
        past ``end``.
        """
        end = self.size if end is None else end
        fd = self.fd
        buf = b""
        buf_start = 0
        pos = start
        while pos < end:
            rel = pos - buf_start
            if rel + BATCH_HEADER_SIZE > len(buf):
                buf = os.pread(fd, _SCAN_CHUNK, pos)
                buf_start = pos
                rel = 0
                if len(buf) < BATCH_HEADER_SIZE:
                    raise CorruptRecord(f"{self.log_path}: truncated batch header at {pos}")
            h = _header_at(buf, rel)
            nxt = pos + h.batch_length + LOG_OVERHEAD
            if nxt > end:
                raise CorruptRecord(f"{self.log_path}: batch at {pos} runs past {end}")
            yield pos, h
            pos = nxt

    def read_header(self, pos: int) -> BatchHeader:
        buf = os.pread(self.fd, BATCH_HEADER_SIZE, pos)
        if len(buf) < BATCH_HEADER_SIZE:
            raise CorruptRecord(f"{self.log_path}: truncated batch header at {pos}")
        return _header_at(buf, 0)

    # ------------------------------------------------------------------ index upkeep

    def _index_batch(self, pos: int, base_offset: int) -> None:
        """Maybe add index entries for a batch about to start at ``pos``."""
        last = self.idx_pos[-1] if self.idx_pos else 0
        if pos - last >= self.index_interval and (pos > 0 or not self.idx_pos):
            if len(self.idx_rel) < self.max_index_entries:
                rel = base_offset - self.base_offset
                self.idx_rel.append(rel)
                self.idx_pos.append(pos)
                mt = self.max_timestamp
                if mt >= 0 and (not self.ts_ts or mt > self.ts_ts[-1]) and len(self.ts_ts) < self.max_time_entries:
                    self.ts_ts.append(mt)
                    self.ts_rel.append(rel)

    def index_full(self) -> bool:
        return len(self.idx_rel) >= self.max_index_entries or len(self.ts_ts) >= self.max_time_entries

    def rebuild_indexes(self) -> None:
        """Rebuild both indexes and the in-memory summary from batch headers."""
        self._reset_indexes()
        self.next_offset = self.base_offset
        self.max_timestamp = -1
        for pos, h in self.iter_headers(0, self.size):
            self._accept(pos, h)

    def _reset_indexes(self) -> None:
        self.idx_rel = array("I")
        self.idx_pos = array("I")
        self.ts_ts = array("q")
        self.ts_rel = array("I")
        self._idx_saved = self._ts_saved = 0
        self._idx_dirty_tail = self._ts_dirty_tail = True

    def _accept(self, pos: int, h: BatchHeader) -> None:
        if h.base_offset < self.next_offset or h.last_offset - self.base_offset > MAX_RELATIVE_OFFSET:
            raise CorruptRecord(
                f"{self.log_path}: batch at {pos} has base offset {h.base_offset}, expected >= {self.next_offset}"
            )
        self._index_batch(pos, h.base_offset)
        if h.max_timestamp > self.max_timestamp:
            self.max_timestamp = h.max_timestamp
        self.next_offset = h.next_offset

    def recover(self) -> int:
        """CRC-validate the whole segment; truncate at the first bad batch.

        Rebuilds the indexes.  Returns the number of bytes cut off.
        """
        self._reset_indexes()
        self.next_offset = self.base_offset
        self.max_timestamp = -1
        file_size = self.size
        pos = 0  # everything before pos is valid and accepted
        while pos < file_size:
            chunk = os.pread(self.fd, min(_RECOVER_CHUNK, file_size - pos), pos)
            batches, valid = split_batches_lenient(chunk)
            bad_at = None
            for p, h in batches:
                try:
                    self._accept(pos + p, h)
                except CorruptRecord:  # offsets going backwards: corrupt from here
                    bad_at = pos + p
                    break
            if bad_at is not None:
                pos = bad_at
                break
            pos += valid
            rest = len(chunk) - valid
            if rest == 0:
                continue
            if pos + rest >= file_size:
                break  # the bad bytes reach the end of the file: torn or corrupt tail
            # The chunk stopped short of EOF; the failing batch may just be cut
            # by the chunk boundary.
            if rest < LOG_OVERHEAD:
                continue  # re-read from pos
            (length,) = _INT32.unpack_from(chunk, valid + 8)
            need = length + LOG_OVERHEAD
            if length < _MIN_BATCH_LENGTH or need <= rest or pos + need > file_size:
                break  # genuinely bad
            if valid:
                continue  # re-read starting at the cut batch
            big = os.pread(self.fd, need, pos)  # one batch larger than a chunk
            b2, v2 = split_batches_lenient(big)
            if v2 != need:
                break
            try:
                self._accept(pos, b2[0][1])
            except CorruptRecord:
                break
            pos += need
        truncated = file_size - pos
        if truncated:
            os.ftruncate(self.fd, pos)
            self.size = pos
            self._trim_indexes_to_size()
        return truncated

    def _trim_indexes_to_size(self) -> None:
        n = bisect_right(self.idx_pos, self.size - 1) if self.size else 0
        if n < len(self.idx_rel):
            del self.idx_rel[n:]
            del self.idx_pos[n:]
            self._idx_saved = min(self._idx_saved, n)
            self._idx_dirty_tail = True
        last_rel = self.idx_rel[-1] if self.idx_rel else -1
        m = len(self.ts_rel)
        while m and self.ts_rel[m - 1] > last_rel:
            m -= 1
        if m < len(self.ts_rel):
            del self.ts_ts[m:]
            del self.ts_rel[m:]
            self._ts_saved = min(self._ts_saved, m)
            self._ts_dirty_tail = True

    def _recompute_tail(self) -> None:
        """next_offset / max_timestamp from the last index entry to the end of file."""
        start = self.idx_pos[-1] if self.idx_pos else 0
        if self.idx_pos:
            h = self.read_header(start)
            if h.base_offset != self.base_offset + self.idx_rel[-1]:
                raise SegmentCorrupt("last offset-index entry does not point at its batch")
        self.next_offset = self.base_offset + (self.idx_rel[-1] if self.idx_rel else 0)
        self.max_timestamp = self.ts_ts[-1] if self.ts_ts else -1
        for _pos, h in self.iter_headers(start, self.size):
            if h.base_offset < self.next_offset:
                raise SegmentCorrupt("offsets go backwards")
            if h.max_timestamp > self.max_timestamp:
                self.max_timestamp = h.max_timestamp
            self.next_offset = h.next_offset

    def _load_first_batch_timestamp(self) -> None:
        if self.size >= BATCH_HEADER_SIZE:
            self.first_batch_timestamp = self.read_header(0).max_timestamp
        else:
            self.first_batch_timestamp = -1

    def _load_indexes(self) -> None:
        try:
            with open(self.index_path, "rb") as f:
                raw = f.read()
            with open(self.timeindex_path, "rb") as f:
                traw = f.read()
        except FileNotFoundError:
            raise SegmentCorrupt("index file missing") from None
        if len(raw) % _OFFSET_ENTRY.size or len(traw) % _TIME_ENTRY.size:
            raise SegmentCorrupt("index file size is not a whole number of entries")
        both = array("I", raw)
        if _SWAP_BYTES:
            both.byteswap()
        rel, pos = both[0::2], both[1::2]
        if len(rel) > 1 and not (
            all(map(operator.lt, rel, islice(rel, 1, None)))
            and all(map(operator.lt, pos, islice(pos, 1, None)))
        ):
            raise SegmentCorrupt("offset index not increasing")
        if pos and pos[-1] >= self.size:
            raise SegmentCorrupt("offset index points past the end of the log")
        ts, trel = _unpack_time_entries(traw)
        if len(ts) > 1 and not (
            all(map(operator.lt, ts, islice(ts, 1, None)))
            and all(map(operator.le, trel, islice(trel, 1, None)))
        ):
            raise SegmentCorrupt("time index not increasing")
        if trel:
            i = bisect_right(rel, trel[-1]) - 1
            if i < 0 or rel[i] != trel[-1]:
                raise SegmentCorrupt("time index entry not at an offset-index point")
        self.idx_rel, self.idx_pos, self.ts_ts, self.ts_rel = rel, pos, ts, trel
        self._idx_saved = len(rel)
        self._ts_saved = len(ts)
        self._idx_dirty_tail = self._ts_dirty_tail = False

    def persist_indexes(self) -> None:
        """Write index entries not yet on disk (and cut stale ones)."""
        offsets_due = self._idx_saved < len(self.idx_rel) or self._idx_dirty_tail
        times_due = self._ts_saved < len(self.ts_ts) or self._ts_dirty_tail
        if offsets_due:
            n = len(self.idx_rel)
            data = _pack_offset_entries(self.idx_rel[self._idx_saved:], self.idx_pos[self._idx_saved:])
            _write_tail(self.index_path, self._idx_saved * _OFFSET_ENTRY.size, data,
                        n * _OFFSET_ENTRY.size, self._idx_dirty_tail)
            self._idx_saved = n
            self._idx_dirty_tail = False
        if offsets_due or times_due:
            crash_point("index.write")  # offset index written, time index not yet
        if times_due:
            n = len(self.ts_ts)
            data = _pack_time_entries(self.ts_ts[self._ts_saved:], self.ts_rel[self._ts_saved:])
            _write_tail(self.timeindex_path, self._ts_saved * _TIME_ENTRY.size, data,
                        n * _TIME_ENTRY.size, self._ts_dirty_tail)
            self._ts_saved = n
            self._ts_dirty_tail = False

    # ------------------------------------------------------------------ append

    def append(self, data, batches: list[tuple[int, int, int, int]]) -> None:
        """Append ``data`` (whole batches) at the end of the file.

        ``batches`` = ``[(position in data, base offset, next offset, max
        timestamp), ...]`` describing every batch of ``data`` in order.  On an
        I/O error the file is cut back to its previous size and OSError raised.
        """
        start = self.size
        _pwrite_all(self.fd, data, start, self.size)
        interval = self.index_interval
        last_indexed = self.idx_pos[-1] if self.idx_pos else 0
        max_ts = self.max_timestamp
        if start == 0:
            self.first_batch_timestamp = batches[0][3]
        for pos, base, _nxt, bts in batches:
            at = start + pos
            if at - last_indexed >= interval and (at > 0 or not self.idx_pos):
                self.max_timestamp = max_ts
                self._index_batch(at, base)
                last_indexed = at
            if bts > max_ts:
                max_ts = bts
        self.max_timestamp = max_ts
        self.size = start + len(data)
        self.next_offset = batches[-1][2]

    # ------------------------------------------------------------------ lookup / read

    def find(self, offset: int) -> tuple[int, BatchHeader] | None:
        """Position and header of the first batch whose last offset >= ``offset``."""
        if offset >= self.next_offset or self.size == 0:
            return None
        rel = offset - self.base_offset
        i = bisect_right(self.idx_rel, rel) - 1 if rel >= 0 else -1
        start = self.idx_pos[i] if i >= 0 else 0
        for pos, h in self.iter_headers(start, self.size):
            if h.last_offset >= offset:
                return pos, h
        return None

    def position_of_index_point(self, rel: int) -> int:
        i = bisect_right(self.idx_rel, rel) - 1
        return self.idx_pos[i] if i >= 0 else 0

    def find_by_timestamp(self, ts: int) -> tuple[int, BatchHeader] | None:
        """Position and header of the first batch whose max timestamp >= ``ts``."""
        if self.max_timestamp < ts or self.size == 0:
            return None
        # largest time entry with T < ts: every batch before its offset is too old
        lo, hi = 0, len(self.ts_ts)
        while lo < hi:
            mid = (lo + hi) // 2
            if self.ts_ts[mid] < ts:
                lo = mid + 1
            else:
                hi = mid
        start = self.position_of_index_point(self.ts_rel[lo - 1]) if lo > 0 else 0
        for pos, h in self.iter_headers(start, self.size):
            if h.max_timestamp >= ts:
                return pos, h
        return None

    def find_position(self, offset: int) -> int | None:
        """Like :meth:`find` but only the position; sequential reads hit a cache."""
        c = self._read_cache
        if c is not None and c[0] == offset and c[1] < self.size:
            return c[1]
        found = self.find(offset)
        return found[0] if found is not None else None

    def read(
        self, pos: int, max_bytes: int, limit_offset: int, min_one_batch: bool
    ) -> tuple[bytes | memoryview, int, int]:
        """Whole batches starting at batch position ``pos``, normally with one pread.

        Stops before a batch whose last offset is >= ``limit_offset`` and
        within ``max_bytes`` (except that with ``min_one_batch`` the first
        batch is returned whatever its size).  Returns (data, base offset of
        the first batch or -1, next offset after the data).
        """
        avail = self.size - pos
        if avail < BATCH_HEADER_SIZE:
            raise CorruptRecord(f"{self.log_path}: no batch at position {pos}")
        data = os.pread(self.fd, min(max(max_bytes, BATCH_HEADER_SIZE), avail), pos)
        n = len(data)
        if n < BATCH_HEADER_SIZE:
            raise CorruptRecord(f"{self.log_path}: short read at {pos}")
        first_base, length = _BASE_AND_LENGTH.unpack_from(data, 0)
        first_size = length + LOG_OVERHEAD
        first_next = first_base + _INT32.unpack_from(data, _LAST_OFFSET_DELTA_AT)[0] + 1
        if first_next > limit_offset:
            return b"", -1, first_base
        if first_size > max_bytes:
            if not min_one_batch:
                return b"", -1, first_base
            if first_size > n:
                data = os.pread(self.fd, first_size, pos)
                if len(data) != first_size:
                    raise CorruptRecord(f"{self.log_path}: short read at {pos}")
                self._read_cache = (first_next, pos + first_size)
                return data, first_base, first_next
            self._read_cache = (first_next, pos + first_size)
            return memoryview(data)[:first_size], first_base, first_next
        if n < first_size:
            raise CorruptRecord(f"{self.log_path}: short read at {pos}")
        p = first_size
        next_offset = first_next
        unpack_bl = _BASE_AND_LENGTH.unpack_from
        unpack_i = _INT32.unpack_from
        while p + BATCH_HEADER_SIZE <= n:
            base, length = unpack_bl(data, p)
            end = p + length + LOG_OVERHEAD
            if end > n:
                break
            last = base + unpack_i(data, p + _LAST_OFFSET_DELTA_AT)[0]
            if last >= limit_offset:
                break
            next_offset = last + 1
            p = end
        self._read_cache = (next_offset, pos + p)
        if p < n:
            return memoryview(data)[:p], first_base, next_offset
        return data, first_base, next_offset

    def read_all(self) -> bytes:
        return os.pread(self.fd, self.size, 0) if self.size else b""

    # ------------------------------------------------------------------ truncate / close

    def truncate_to(self, offset: int) -> int:
        """Drop every batch whose last offset >= ``offset``; returns bytes removed."""
        found = self.find(offset)
        if found is None:
            return 0
        pos = found[0]
        removed = self.size - pos
        self._read_cache = None
        os.ftruncate(self.fd, pos)
        self.size = pos
        self._trim_indexes_to_size()
        if pos == 0:
            self.next_offset = self.base_offset
            self.max_timestamp = -1
            self.first_batch_timestamp = -1
        else:
            self._recompute_tail()
        return removed

    def largest_timestamp(self) -> int:
        """Largest batch timestamp, or the file's mtime if the segment has none (retention)."""
        if self.max_timestamp >= 0:
            return self.max_timestamp
        try:
            return int(os.stat(self.log_path).st_mtime * 1000)
        except OSError:
            return self.created_ms

    def fsync(self) -> None:
        os.fsync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def delete_files(self) -> None:
        self.close()
        for p in (self.log_path, self.index_path, self.timeindex_path):
            _unlink(p)

    def __repr__(self) -> str:
        return f"Segment(base={self.base_offset}, next={self.next_offset}, size={self.size})"


# ---------------------------------------------------------------------- helpers


_TIME_CHUNK = 1024
_TIME_CHUNK_STRUCT = struct.Struct(">" + "qI" * _TIME_CHUNK)


def _pack_offset_entries(rel: array, pos: array) -> bytes:
    both = array("I", bytes(8 * len(rel)))
    both[0::2] = rel
    both[1::2] = pos
    if _SWAP_BYTES:
        both.byteswap()
    return both.tobytes()


def _pack_time_entries(ts: array, rel: array) -> bytes:
    vals: list[int] = [0] * (2 * len(ts))
    vals[0::2] = ts
    vals[1::2] = rel
    out = []
    full = len(ts) // _TIME_CHUNK * _TIME_CHUNK * 2
    for i in range(0, full, 2 * _TIME_CHUNK):
        out.append(_TIME_CHUNK_STRUCT.pack(*vals[i:i + 2 * _TIME_CHUNK]))
    rest = vals[full:]
    if rest:
        out.append(struct.pack(">" + "qI" * (len(rest) // 2), *rest))
    return b"".join(out)


def _unpack_time_entries(raw: bytes) -> tuple[array, array]:
    n = len(raw) // _TIME_ENTRY.size
    ts = array("q")
    rel = array("I")
    step = _TIME_CHUNK * _TIME_ENTRY.size
    full = n // _TIME_CHUNK * step
    for off in range(0, full, step):
        vals = _TIME_CHUNK_STRUCT.unpack_from(raw, off)
        ts.extend(vals[0::2])
        rel.extend(vals[1::2])
    k = n - full // _TIME_ENTRY.size
    if k:
        vals = struct.unpack_from(">" + "qI" * k, raw, full)
        ts.extend(vals[0::2])
        rel.extend(vals[1::2])
    return ts, rel


def _pwrite_all(fd: int, data, pos: int, restore_size: int) -> None:
    view = memoryview(data)
    total = len(view)
    done = 0
    try:
        while done < total:
            n = os.pwrite(fd, view[done:], pos + done)
            if n <= 0:
                raise OSError("pwrite wrote nothing")
            done += n
    except OSError:
        try:
            os.ftruncate(fd, restore_size)
        except OSError:
            pass
        raise


def _write_tail(path: str, at: int, data: bytes, total: int, cut: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        if data:
            _pwrite_all(fd, data, at, at)
        if cut:
            os.ftruncate(fd, total)
    finally:
        os.close(fd)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
