"""The on-disk log of one partition (Kafka's ``UnifiedLog`` / ``LocalLog``).

A directory ``<log.dir>/<topic>-<partition>/`` holding segments (see
:mod:`kbroker.log.segment`) plus small checkpoint files:

``log-start-offset``  first offset visible to readers (DeleteRecords, retention)
``recovery-point``    every batch below this offset has been fsynced
``cleaner-checkpoint`` compaction bookkeeping (JSON)
``<offset>.snapshot`` idempotent-producer state as of ``offset``

No trio in here and no clock reads where it matters: callers pass ``now_ms``.

Deleted segments (retention, DeleteRecords, truncation, compaction) are first
renamed to ``*.deleted`` and then unlinked at once -- or, with
``defer_file_deletion=True``, by :meth:`PartitionLog.purge_deleted_files`
from a worker thread.  ``file.delete.delay.ms`` is *not* waited for: Kafka
needs the delay because in-flight fetches may still be sending from the
files (mmap/sendfile); here every read copies its bytes with ``pread`` before
returning, so nothing can refer to a file once it is out of the segment list.
Leftover ``*.deleted`` files are removed when the log is opened.
The object is not thread-safe; the few slow operations (fsync, compaction,
deleting files) are split into a *prepare* step (caller's thread), a *run*
step that touches only private file descriptors and paths (safe in a worker
thread) and a *commit* step (caller's thread again); the plain methods
(:meth:`flush`, :meth:`compact`, ...) just do all three in a row.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import struct
import threading
import time
from bisect import bisect_right
from dataclasses import dataclass
from typing import Callable

from protocol.errors import ProtocolError
from protocol.records import BATCH_HEADER_SIZE, LOG_OVERHEAD, BatchHeader, set_log_append_time

from ..crashpoints import crash_point
from . import producer_state as ps
from .config import LogConfig
from .errors import (
    CorruptRecord,
    InvalidOffset,
    InvalidProducerEpoch,
    KafkaStorageError,
    LogClosed,
    OffsetOutOfRange,
    OutOfOrderSequence,
)
from .segment import (
    INDEX_SUFFIX,
    LOG_SUFFIX,
    MAX_RELATIVE_OFFSET,
    TIMEINDEX_SUFFIX,
    Segment,
    file_stem,
)

LOG_START_OFFSET_FILE = "log-start-offset"
RECOVERY_POINT_FILE = "recovery-point"
CLEANER_CHECKPOINT_FILE = "cleaner-checkpoint"
CLEANED_SUFFIX = ".cleaned"
SWAP_SUFFIX = ".swap"
DELETED_SUFFIX = ".deleted"
SNAPSHOTS_TO_KEEP = 2
_HEADER = struct.Struct(">qiibIhiqqqhii")  # the 61-byte v2 batch header
_INT64 = struct.Struct(">q")
_INT32 = struct.Struct(">i")
_MIN_BATCH_LENGTH = BATCH_HEADER_SIZE - LOG_OVERHEAD


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class AppendInfo:
    """Result of :meth:`PartitionLog.append`."""

    first_offset: int
    last_offset: int
    log_append_time: int  # -1 unless the batches were stamped with LogAppendTime
    max_timestamp: int
    num_batches: int
    num_records: int  # offsets consumed (sum of last_offset_delta + 1)
    valid_bytes: int
    log_start_offset: int
    duplicate: bool = False  # idempotent retry: nothing written, offsets are the original ones
    rolled: bool = False


@dataclass
class ReadResult:
    """Result of :meth:`PartitionLog.read`."""

    records: bytes | memoryview  # whole batches, possibly empty
    log_start_offset: int
    log_end_offset: int
    first_offset: int  # base offset of the first returned batch, -1 if none
    next_offset: int  # offset to fetch next after consuming ``records``


@dataclass
class CompactionStats:
    segments_cleaned: int = 0
    segments_written: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    records_removed: int = 0
    tombstones_removed: int = 0
    aborted: bool = False


@dataclass
class FlushJob:
    """fsync work captured by :meth:`PartitionLog.prepare_flush` (run it anywhere).

    After the data is durable the job also writes the recovery-point
    checkpoint (``checkpoint``), so the whole flush -- the slow part of it
    being fsyncs -- stays off the owner's thread; the in-memory recovery
    point moves only in :meth:`PartitionLog.complete_flush`, after success.
    """

    target_offset: int
    fds: list[int]  # dup'ed descriptors, closed by run()
    paths: list[str]  # index files / directory to fsync by path
    checkpoint: Callable[[int], None] | None = None
    done: bool = False

    def run(self) -> None:
        try:
            for fd in self.fds:
                os.fsync(fd)
            for p in self.paths:
                try:
                    fd = os.open(p, os.O_RDONLY)
                except FileNotFoundError:
                    continue
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        finally:
            self.close()
        if self.checkpoint is not None:
            self.checkpoint(self.target_offset)
        self.done = True

    def close(self) -> None:
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds = []


@dataclass
class TimestampDecode:
    """One batch to decode for :meth:`PartitionLog.timestamp_lookup` (bytes are private: any thread)."""

    data: bytes
    target: int
    min_offset: int
    resume_offset: int  # where to continue if this batch holds no match
    records_count: int  # as the header claims: how costly run() may be
    where: str

    def run(self) -> tuple[int, int] | None:
        from protocol.records import decode_batch

        try:
            _h, records = decode_batch(self.data, 0)
        except ProtocolError as e:
            raise CorruptRecord(f"{self.where}: {e}") from None
        for r in records:
            if r.timestamp >= self.target and r.offset >= self.min_offset:
                return r.offset, r.timestamp
        return None


def parse_log_dir_name(name: str) -> tuple[str, int] | None:
    """``"my.topic-name-3"`` -> ``("my.topic-name", 3)``; None if not a log dir name."""
    topic, sep, part = name.rpartition("-")
    if not sep or not topic or not part.isdigit():
        return None
    return topic, int(part)


def log_dir_name(topic: str, partition: int) -> str:
    return f"{topic}-{partition}"


class PartitionLog:
    """Segments of one partition plus offsets, flush state and producer state."""

    def __init__(self, path: str, config: LogConfig) -> None:
        self.path = path
        self.config = config
        parsed = parse_log_dir_name(os.path.basename(os.path.normpath(path)))
        self.topic, self.partition = parsed if parsed else (os.path.basename(path), 0)
        self.segments: list[Segment] = []
        self._bases: list[int] = []
        self.log_start_offset = 0
        self.recovery_point = 0
        self.producer_state = ps.ProducerStateManager()
        self.last_flush_ms = _now_ms()
        self.generation = 0  # bumped by truncation (invalidates in-flight compaction)
        self.pending_file_deletions: list[str] = []
        self._dir_dirty = False
        self._cleaner_state: dict = {}
        self.closed = False
        self.recovered_bytes_truncated = 0
        # Set once an I/O error made this log (its whole log dir) unusable;
        # every later read or write answers KafkaStorageError, as Kafka's
        # offline log dirs do.  Cleared only by a restart (which recovers).
        self.offline = False
        # Called with (log, error) when an OSError becomes a KafkaStorageError;
        # the LogManager uses it to take the whole log dir offline.
        self.on_storage_error: Callable[["PartitionLog", KafkaStorageError], None] | None = None
        # The log-start-offset and recovery-point checkpoints are written from
        # worker threads too (DeleteRecords, flushes); the lock keeps two
        # writers off the same temp file and orders them against truncation.
        self._checkpoint_lock = threading.Lock()
        self._lso_persisted = 0

    # ================================================================== open

    @classmethod
    def open(
        cls, path: str, config: LogConfig, *, recover: bool = False, now_ms: int | None = None
    ) -> "PartitionLog":
        """Open (creating if needed) the log in directory ``path``.

        ``recover=True`` after an unclean shutdown: every segment from the one
        holding the recovery point on is CRC-checked, a torn/corrupt tail is
        cut off (and all later segments dropped), and their indexes rebuilt.
        ``recover=False`` trusts the files but still sanity-checks the indexes.
        """
        now = _now_ms() if now_ms is None else now_ms
        os.makedirs(path, exist_ok=True)
        log = cls(path, config)
        log._load(recover, now)
        return log

    def _seg_kwargs(self) -> dict:
        return dict(index_interval=self.config.index_interval_bytes,
                    index_bytes=self.config.segment_index_bytes)

    def _load(self, recover: bool, now: int) -> None:
        d = self.path
        self._finish_interrupted_swaps()
        names = os.listdir(d)
        bases = []
        for name in names:
            full = os.path.join(d, name)
            if name.endswith((CLEANED_SUFFIX, DELETED_SUFFIX, ".tmp")):
                _unlink(full)
            elif name.endswith(LOG_SUFFIX) and name[:-len(LOG_SUFFIX)].isdigit():
                bases.append(int(name[:-len(LOG_SUFFIX)]))
        bases.sort()
        base_set = set(bases)
        for name in names:
            for suffix in (INDEX_SUFFIX, TIMEINDEX_SUFFIX):
                if name.endswith(suffix):
                    stem = name[:-len(suffix)]
                    if not stem.isdigit() or int(stem) not in base_set:
                        _unlink(os.path.join(d, name))

        log_start_ckpt = _read_int_file(os.path.join(d, LOG_START_OFFSET_FILE))
        self._lso_persisted = log_start_ckpt or 0
        rp_ckpt = _read_int_file(os.path.join(d, RECOVERY_POINT_FILE)) or 0
        self._cleaner_state = _read_json_file(os.path.join(d, CLEANER_CHECKPOINT_FILE))

        # the segment holding the recovery point and everything after it are checked
        first_unflushed = 0
        if recover:
            i = bisect_right(bases, rp_ckpt) - 1
            first_unflushed = bases[i] if i >= 0 else -1
        truncated_total = 0
        segments: list[Segment] = []
        kw = self._seg_kwargs()
        drop_rest = False
        for base in bases:
            if drop_rest:
                _delete_segment_files(d, base)
                continue
            if segments and base < segments[-1].next_offset:
                # overlapping segments: only possible after corruption
                if not recover:
                    raise KafkaStorageError(f"{d}: segment {base} overlaps the previous one")
                _delete_segment_files(d, base)
                drop_rest = True
                continue
            do_recover = recover and base >= first_unflushed
            try:
                seg, truncated = Segment.open(d, base, now_ms=now, recover=do_recover, **kw)
            except CorruptRecord:
                seg, truncated = Segment.open(d, base, now_ms=now, recover=True, **kw)
            segments.append(seg)
            if truncated:
                truncated_total += truncated
                drop_rest = True
        self.recovered_bytes_truncated = truncated_total
        self.segments = segments
        self._bases = [s.base_offset for s in segments]
        if not segments:
            start = log_start_ckpt or 0
            self._add_segment(start, now)
        self.log_start_offset = max(log_start_ckpt or 0, self.segments[0].base_offset)
        if self.log_start_offset > self.log_end_offset:
            # recovery cut below the log start: never hand out offsets twice
            self._truncate_fully(self.log_start_offset, now)
        # After a clean shutdown everything was flushed; after recovery what
        # was kept is fsynced just below.  Either way the whole log is durable.
        self.recovery_point = self.log_end_offset
        if recover:
            # what recovery kept is made durable before the recovery point says so
            for seg in self.segments:
                if seg.base_offset >= first_unflushed:
                    seg.persist_indexes()
                    seg.fsync()
            _fsync_dir(d)
            self._write_recovery_point()
        self._load_producer_state()

    def _finish_interrupted_swaps(self) -> None:
        """Complete compaction swaps that were renamed to ``.swap`` before a crash.

        ``<base>-<end>.swap`` is a complete, fsynced replacement for every
        segment whose base offset is in [base, end).
        """
        d = self.path
        swapped = False
        for name in sorted(os.listdir(d)):
            if not name.endswith(SWAP_SUFFIX):
                continue
            swapped = True
            stem = name[:-len(SWAP_SUFFIX)]
            lo, sep, hi = stem.partition("-")
            if not sep or not lo.isdigit() or not hi.isdigit():
                _unlink(os.path.join(d, name))
                continue
            lo_i, hi_i = int(lo), int(hi)
            for other in os.listdir(d):
                if other.endswith(LOG_SUFFIX) and other[:-len(LOG_SUFFIX)].isdigit():
                    b = int(other[:-len(LOG_SUFFIX)])
                    if lo_i <= b < hi_i:
                        _delete_segment_files(d, b)
            os.replace(os.path.join(d, name), os.path.join(d, file_stem(lo_i) + LOG_SUFFIX))
        if swapped:
            # only then is there a rename to make durable; a new partition's
            # open (CreateTopics, on the trio thread) pays no fsync here
            _fsync_dir(d)

    def _load_producer_state(self) -> None:
        self._rebuild_producer_state_to(self.log_end_offset)

    def _replay_producer_state(self, from_offset: int) -> None:
        """Feed batch headers from ``from_offset`` to the log end (header reads only)."""
        mgr = self.producer_state
        i = max(0, bisect_right(self._bases, from_offset) - 1)
        for seg in self.segments[i:]:
            if seg.next_offset <= from_offset:
                continue
            found = seg.find(from_offset) if seg.base_offset < from_offset else None
            start = found[0] if found else 0
            for _pos, h in seg.iter_headers(start, seg.size):
                if h.last_offset >= from_offset:
                    mgr.record_header(h)

    # ================================================================== I/O failures

    def storage_error(self, what: str, exc: OSError) -> KafkaStorageError:
        """Turn an OSError into KAFKA_STORAGE_ERROR and report it (the dir goes offline).

        Kafka treats any IOException on a log as a failure of its log dir:
        after a failed write nobody knows what reached the disk, so the
        only safe answers are errors until a restart has recovered the log.
        """
        err = KafkaStorageError(f"{self.path}: {what} failed: {exc}")
        self.offline = True
        if self.on_storage_error is not None:
            self.on_storage_error(self, err)
        return err

    def _check_online(self) -> None:
        if self.closed:
            raise LogClosed(f"{self.path}: the log is closed")
        if self.offline:
            raise KafkaStorageError(f"{self.path}: the log directory is offline")

    # ================================================================== properties

    @property
    def active_segment(self) -> Segment:
        return self.segments[-1]

    @property
    def log_end_offset(self) -> int:
        return self.segments[-1].next_offset

    @property
    def size_in_bytes(self) -> int:
        return sum(s.size for s in self.segments)

    @property
    def num_segments(self) -> int:
        return len(self.segments)

    def first_unstable_offset(self) -> int | None:
        """First offset of the oldest open transaction (the LSO bound), None if none."""
        return self.producer_state.first_unstable_offset()

    def update_config(self, config: LogConfig) -> None:
        """New topic config; takes effect for future appends/rolls/retention."""
        self.config = config
        for seg in self.segments:
            seg.index_interval = config.index_interval_bytes

    # ================================================================== append

    def append(
        self,
        batches,
        *,
        assign_offsets: bool = True,
        log_append_time_ms: int | None = None,
        leader_epoch: int = 0,
        now_ms: int | None = None,
        check_producer_state: bool | None = None,
    ) -> AppendInfo:
        """Append one or more record batches (already CRC-validated by the caller).

        ``assign_offsets=True`` (leader): base offsets are rewritten in place
        from the log end offset, the partition leader epoch is stamped, and
        idempotent producers are checked (raises :class:`OutOfOrderSequence`
        or :class:`InvalidProducerEpoch`; a retried batch returns the original
        offsets with ``duplicate=True`` and writes nothing).  With
        ``log_append_time_ms`` every batch is re-stamped as LogAppendTime.

        ``assign_offsets=False`` (follower): batches keep their offsets, which
        must not go below the log end offset (:class:`InvalidOffset`).

        ``batches`` must be writable (bytearray / writable memoryview) when
        anything is patched; bytes are copied once in that case.
        """
        self._check_online()
        now = _now_ms() if now_ms is None else now_ms
        buf = batches
        n = len(buf)
        if n == 0:
            raise CorruptRecord("empty record set")
        if assign_offsets and isinstance(buf, bytes):
            buf = bytearray(buf)
        check = assign_offsets if check_producer_state is None else check_producer_state

        # ---- pass 1: parse headers, compute offsets (per batch, never per record)
        metas: list[tuple[int, int, int, int]] = []  # (pos, base, next, max_ts)
        pid_batches: list[tuple[int, BatchHeader]] = []  # (index in metas, header) with producer id
        unpack = _HEADER.unpack_from
        pos = 0
        next_off = self.log_end_offset
        first_base = next_off if assign_offsets else None
        max_ts = -1
        n_records = 0
        while pos < n:
            if pos + BATCH_HEADER_SIZE > n:
                raise CorruptRecord(f"truncated record batch header at byte {pos}")
            t = unpack(buf, pos)
            blen = t[1]
            lod = t[6]
            size = blen + LOG_OVERHEAD
            if blen < _MIN_BATCH_LENGTH or pos + size > n or t[3] != 2 or lod < 0:
                raise CorruptRecord(f"malformed record batch at byte {pos}")
            if assign_offsets:
                base = next_off
            else:
                base = t[0]
                if base < next_off:
                    raise InvalidOffset(
                        f"batch base offset {base} is below the expected next offset {next_off}"
                    )
                if first_base is None:
                    first_base = base
            nxt = base + lod + 1
            bts = t[8] if log_append_time_ms is None else log_append_time_ms
            if bts > max_ts:
                max_ts = bts
            if t[9] >= 0:
                pid_batches.append((len(metas), BatchHeader._make(t)))
            metas.append((pos, base, nxt, bts))
            n_records += lod + 1
            next_off = nxt
            pos += size
        last_offset = next_off - 1

        # ---- producer state: judged on a scratch copy of the entries involved
        # The real state must not move until the bytes are in the file: a
        # failed roll or write followed by the client's retry must not be
        # answered "duplicate" with offsets that were never written.
        pstate = self.producer_state
        pending: ps.ProducerStateManager | None = None
        if pid_batches:
            pending = ps.ProducerStateManager()
            for pid, entry in pstate.snapshot_entries({h.producer_id for _i, h in pid_batches}).items():
                if entry is not None:
                    pending.producers[pid] = entry
            for i, h in pid_batches:
                _p, base, nxt, bts = metas[i]
                if not check or h.is_control:
                    pending.record_header(h._replace(base_offset=base, max_timestamp=bts))
                    continue
                res = pending.check(h.producer_id, h.producer_epoch, h.base_sequence, h.last_sequence)
                if res.verdict is ps.Verdict.OK:
                    pending.record(h.producer_id, h.producer_epoch, h.base_sequence, h.last_sequence,
                                   base, nxt - 1, bts, is_transactional=h.is_transactional)
                    continue
                if res.verdict is ps.Verdict.DUPLICATE:
                    d = res.duplicate
                    return AppendInfo(d.first_offset, d.last_offset, -1, d.timestamp, 0, 0, 0,
                                      self.log_start_offset, duplicate=True)
                if res.verdict is ps.Verdict.INVALID_PRODUCER_EPOCH:
                    raise InvalidProducerEpoch(res.message)
                raise OutOfOrderSequence(res.message)

        # ---- pass 2: patch in place (outside the CRC, except LogAppendTime)
        if assign_offsets:
            pack_base = _INT64.pack_into
            pack_epoch = _INT32.pack_into
            for p, base, _nxt, _ts in metas:
                pack_base(buf, p, base)
                pack_epoch(buf, p + 12, leader_epoch)
        if log_append_time_ms is not None:
            for p, _b, _n, _t in metas:
                set_log_append_time(buf, p, log_append_time_ms)

        # ---- roll if needed, then one write.  Segment.append cuts the file
        # back on a failed write and touches its in-memory summary only after
        # the bytes are in, so an OSError here leaves the log as it was.
        try:
            rolled = self._maybe_roll(n, first_base, last_offset, max_ts, now)
            self.active_segment.append(buf, metas)
        except OSError as e:
            raise self.storage_error("append", e) from e
        crash_point("log.append")
        if pending is not None:
            pstate.producers.update(pending.producers)
        pstate.map_end_offset = self.log_end_offset
        return AppendInfo(
            first_offset=first_base,
            last_offset=last_offset,
            log_append_time=-1 if log_append_time_ms is None else log_append_time_ms,
            max_timestamp=max_ts,
            num_batches=len(metas),
            num_records=n_records,
            valid_bytes=n,
            log_start_offset=self.log_start_offset,
            rolled=rolled,
        )

    def _maybe_roll(self, size: int, first_base: int, last_offset: int, max_ts: int, now: int) -> bool:
        seg = self.active_segment
        cfg = self.config
        if seg.size == 0:
            if last_offset - seg.base_offset > MAX_RELATIVE_OFFSET:
                # empty segment but the data starts later (follower gap): re-base it
                self._replace_empty_active(first_base, now)
            return False
        reason = None
        if seg.size > cfg.segment_bytes - size:
            reason = "size"
        elif seg.index_full():
            reason = "index"
        elif last_offset - seg.base_offset > MAX_RELATIVE_OFFSET:
            reason = "offset"
        else:
            rolling_ts = seg.first_batch_timestamp
            waited = (max_ts - rolling_ts) if rolling_ts >= 0 else (now - seg.created_ms)
            if waited > cfg.segment_ms - seg.rolling_jitter_ms:
                reason = "time"
        if reason is None:
            return False
        self.roll(now_ms=now, base_offset=max(first_base, self.log_end_offset))
        return True

    def _replace_empty_active(self, base: int, now: int) -> None:
        # The new segment is created before the old one is dropped, so a
        # failure (EMFILE) leaves the log with its old, still valid, active segment.
        old = self.active_segment
        self._add_segment(base, now)
        self.segments.remove(old)
        self._bases.remove(old.base_offset)
        old.delete_files()

    def _add_segment(self, base: int, now: int) -> Segment:
        seg = Segment.create(self.path, base, now_ms=now, **self._seg_kwargs())
        if self.config.segment_jitter_ms > 0:
            seg.rolling_jitter_ms = random.randrange(self.config.segment_jitter_ms)
        self.segments.append(seg)
        self._bases.append(base)
        self._dir_dirty = True
        return seg

    def roll(self, *, now_ms: int | None = None, base_offset: int | None = None) -> Segment:
        """Close the active segment and start a new one at the log end offset.

        A no-op (returns the active segment) if the active segment is empty.
        """
        now = _now_ms() if now_ms is None else now_ms
        active = self.active_segment
        if active.size == 0:
            return active
        active.persist_indexes()
        base = self.log_end_offset if base_offset is None else max(base_offset, self.log_end_offset)
        seg = self._add_segment(base, now)
        crash_point("segment.roll")
        self.producer_state.map_end_offset = self.log_end_offset
        self._take_producer_snapshot()
        return seg

    def _take_producer_snapshot(self) -> None:
        self.producer_state.map_end_offset = self.log_end_offset
        self.producer_state.save_snapshot(self.path, fsync=False)
        snaps = ps.list_snapshots(self.path)
        keep = set(snaps[-SNAPSHOTS_TO_KEEP:])
        ps.delete_snapshots(self.path, keep=lambda off: off in keep)

    # ================================================================== read

    def read(
        self,
        offset: int,
        max_bytes: int,
        *,
        max_offset: int | None = None,
        min_one_batch: bool = True,
    ) -> ReadResult:
        """Whole batches starting with the one containing ``offset``.

        At most ``max_bytes`` unless ``min_one_batch`` (KIP-74: the first
        batch is returned even if larger).  Only batches whose last offset is
        below ``max_offset`` (exclusive, e.g. the high watermark) are
        returned.  The data comes from a single segment with one pread, so a
        read may stop early at a segment boundary.  Raises
        :class:`OffsetOutOfRange` outside [log_start_offset, log_end_offset].
        """
        self._check_online()
        lso, leo = self.log_start_offset, self.log_end_offset
        if offset < lso or offset > leo:
            raise OffsetOutOfRange(offset, lso, leo)
        limit = leo if max_offset is None else min(max_offset, leo)
        if offset >= limit:
            return ReadResult(b"", lso, leo, -1, offset)
        i = max(0, bisect_right(self._bases, offset) - 1)
        segs = self.segments
        for j in range(i, len(segs)):
            seg = segs[j]
            if seg.base_offset >= limit:
                break
            pos = seg.find_position(offset)
            if pos is None:
                continue
            data, first, nxt = seg.read(pos, max_bytes, limit, min_one_batch)
            if not data:
                return ReadResult(b"", lso, leo, -1, offset)
            return ReadResult(data, lso, leo, first, nxt)
        return ReadResult(b"", lso, leo, -1, offset)

    # ================================================================== timestamps

    def timestamp_lookup(self, timestamp: int, from_offset: int = 0) -> "tuple[int, int] | TimestampDecode | None":
        """Start (or resume) a search for the first record with timestamp >= ``timestamp``.

        Returns the answer ``(offset, timestamp)``, None when no record
        qualifies, or a :class:`TimestampDecode` when one batch must be
        decoded to decide.  Decoding is the only step whose cost the client
        controls (a small compressed batch may declare millions of records),
        so it is handed back to the caller to run where it cannot stall
        other work -- a worker thread -- before calling again with
        ``from_offset=job.resume_offset`` if the batch held no match.

        Most lookups need no decoding at all: a batch whose timestamps are
        all the same (LogAppendTime) or whose first record already qualifies
        answers from its header.  The first record's timestamp is the base
        timestamp -- producers write the first record with delta 0 -- and
        the first record sits at the base offset when the batch has no
        offset gaps (records_count == last_offset_delta + 1; compaction
        leaves gaps) and no delete horizon (compaction reuses the base
        timestamp field for it).
        """
        self._check_online()
        lso = max(self.log_start_offset, from_offset)
        for seg in list(self.segments):
            if seg.max_timestamp < timestamp or seg.next_offset <= lso:
                continue
            found = seg.find_by_timestamp(timestamp)
            if found is None:
                continue
            try:
                for p, h in seg.iter_headers(found[0], seg.size):
                    if h.max_timestamp < timestamp or h.last_offset < lso:
                        continue
                    if h.base_offset >= lso and h.records_count > 0:
                        if h.timestamp_type == 1:  # LogAppendTime: every record has max_timestamp
                            return h.base_offset, h.max_timestamp
                        if (h.base_timestamp >= timestamp and not h.has_delete_horizon
                                and h.records_count == h.last_offset_delta + 1):
                            return h.base_offset, h.base_timestamp
                    data = os.pread(seg.fd, h.batch_length + LOG_OVERHEAD, p)
                    return TimestampDecode(data, timestamp, lso, h.next_offset, h.records_count,
                                           f"{seg.log_path}: batch at {p}")
            except OSError as e:
                raise self.storage_error("timestamp lookup", e) from e
        return None

    def offset_for_timestamp(self, timestamp: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record with timestamp >= ``timestamp``.

        Exact per record.  Records below the log start offset are skipped.
        None if there is no such record.  Decodes in the caller's thread;
        the broker uses :meth:`timestamp_lookup` to decode elsewhere.
        """
        step = self.timestamp_lookup(timestamp)
        while isinstance(step, TimestampDecode):
            found = step.run()
            if found is not None:
                return found
            step = self.timestamp_lookup(timestamp, step.resume_offset)
        return step

    def max_timestamp_target(self) -> int:
        """The largest batch timestamp at or above the log start offset, -1 if none."""
        best = -1
        for seg in self.segments:
            if seg.next_offset > self.log_start_offset and seg.max_timestamp > best:
                best = seg.max_timestamp
        return best

    def latest_timestamp(self) -> tuple[int, int] | None:
        """(offset, timestamp) of the record with the largest timestamp (first such record)."""
        best = self.max_timestamp_target()
        if best < 0:
            return None
        return self.offset_for_timestamp(best)

    # ================================================================== deletion

    def delete_records_before(self, offset: int) -> int:
        """DeleteRecords: raise the log start offset to ``offset``.

        Whole segments below it are deleted (the active segment is kept).
        Returns the new log start offset.  Raises OffsetOutOfRange if
        ``offset`` > log end offset.  All three steps in the caller's
        thread; the broker runs the middle one (an fsync) in a worker.
        """
        target = self.prepare_delete_records(offset)
        if target is None:
            return self.log_start_offset
        generation = self.generation
        try:
            self.persist_log_start_offset(target, generation)
        except OSError as e:
            raise self.storage_error("log start offset checkpoint", e) from e
        return self.commit_delete_records(target, generation)

    def prepare_delete_records(self, offset: int) -> int | None:
        """Validate a DeleteRecords offset; None when the log start is already there."""
        self._check_online()
        if offset > self.log_end_offset or offset < 0:
            raise OffsetOutOfRange(offset, self.log_start_offset, self.log_end_offset)
        if offset <= self.log_start_offset:
            return None
        return offset

    def persist_log_start_offset(self, value: int, generation: int) -> bool:
        """Write and fsync the log-start-offset checkpoint (any thread; raises OSError).

        The clients of DeleteRecords are told the records are gone, so the
        new start must be durable before the answer; in memory it moves
        only afterwards (:meth:`commit_delete_records`).  The checkpoint
        never goes backwards here, and a truncation (``generation``
        changed) in the meantime voids the write.  Returns whether the
        value on disk is now at least ``value``.
        """
        with self._checkpoint_lock:
            if generation != self.generation:
                return False
            if value <= self._lso_persisted:
                return True
            _write_int_file(os.path.join(self.path, LOG_START_OFFSET_FILE), value)
            self._lso_persisted = value
            return True

    def commit_delete_records(self, offset: int, generation: int, *, defer: bool = False) -> int:
        """Apply a persisted DeleteRecords in memory and retire the segments below it."""
        self._check_online()
        if offset > self.log_end_offset:
            raise OffsetOutOfRange(offset, self.log_start_offset, self.log_end_offset)
        if generation != self.generation:
            # truncated meanwhile (follower): the worker's write was skipped
            try:
                self.persist_log_start_offset(offset, self.generation)
            except OSError as e:
                raise self.storage_error("log start offset checkpoint", e) from e
        if offset > self.log_start_offset:
            self.log_start_offset = offset
            self._delete_prefix(lambda seg, nxt_base: nxt_base is not None and nxt_base <= offset, defer=defer)
            self.producer_state.truncate_head(self.log_start_offset)
        return self.log_start_offset

    def apply_retention(
        self, now_ms: int, *, high_watermark: int | None = None, defer_file_deletion: bool = False
    ) -> int:
        """Delete old segments by ``retention.ms`` / ``retention.bytes`` / log start.

        Only when ``cleanup.policy`` contains ``delete`` for the time/size
        rules; segments fully below the log start offset always go.  Only
        segments entirely below ``high_watermark`` (default: log end) are
        eligible.  An eligible non-empty active segment is rolled first, so
        everything can be deleted while offsets keep counting up.  Returns the
        number of segments deleted.
        """
        self._check_online()
        try:
            return self._apply_retention(now_ms, high_watermark, defer_file_deletion)
        except OSError as e:
            raise self.storage_error("retention", e) from e

    def _apply_retention(self, now_ms: int, high_watermark: int | None, defer_file_deletion: bool) -> int:
        hw = self.log_end_offset if high_watermark is None else high_watermark
        deleted = self._delete_prefix(
            lambda seg, nxt_base: nxt_base is not None and nxt_base <= self.log_start_offset,
            defer=defer_file_deletion,
        )
        cfg = self.config
        if not cfg.delete:
            return deleted
        if cfg.retention_ms >= 0:
            deleted += self._delete_prefix(
                lambda seg, _nb: now_ms - seg.largest_timestamp() > cfg.retention_ms,
                hw=hw, now=now_ms, defer=defer_file_deletion,
            )
        if cfg.retention_bytes >= 0:
            excess = self.size_in_bytes - cfg.retention_bytes
            if excess > 0:
                state = {"excess": excess}

                def by_size(seg: Segment, _nb) -> bool:
                    if state["excess"] - seg.size >= 0:
                        state["excess"] -= seg.size
                        return True
                    return False

                deleted += self._delete_prefix(by_size, hw=hw, now=now_ms, defer=defer_file_deletion)
        return deleted

    def _delete_prefix(
        self,
        predicate: Callable[[Segment, int | None], bool],
        *,
        hw: int | None = None,
        now: int | None = None,
        defer: bool = False,
    ) -> int:
        """Delete the longest prefix of segments matching ``predicate``."""
        victims: list[Segment] = []
        segs = self.segments
        for idx, seg in enumerate(segs):
            nxt_base = segs[idx + 1].base_offset if idx + 1 < len(segs) else None
            if hw is not None:
                upper = nxt_base if nxt_base is not None else self.log_end_offset
                if upper > hw:
                    break
            if nxt_base is None and seg.size == 0:
                break  # an empty active segment is never deleted
            if not predicate(seg, nxt_base):
                break
            victims.append(seg)
        if not victims:
            return 0
        if victims[-1] is self.active_segment:
            self.roll(now_ms=now)
        for seg in victims:
            self._remove_segment(seg, True)
        crash_point("retention.delete")
        if not defer:
            self.purge_deleted_files()
        # No checkpoint write: a start moved by whole segments is the first
        # remaining segment's base offset, which open() takes anyway
        # (max(checkpoint, first base)).  That keeps an fsync per log out
        # of every retention pass.
        new_start = self.segments[0].base_offset
        if new_start > self.log_start_offset:
            self.log_start_offset = new_start
        self.producer_state.truncate_head(self.log_start_offset)
        self._drop_cleaner_entries()
        return len(victims)

    def _remove_segment(self, seg: Segment, defer: bool) -> None:
        # Rename first so a crash leaves only *.deleted files, removed on
        # open.  The .log rename decides: if it fails nothing has changed;
        # once it is done the segment leaves the list, and an index left
        # behind by a later failure is an orphan that open() removes.
        renamed = []
        for p in (seg.log_path, seg.index_path, seg.timeindex_path):
            try:
                os.replace(p, p + DELETED_SUFFIX)
            except FileNotFoundError:
                continue
            except OSError:
                if p != seg.log_path:
                    continue
                raise
            renamed.append(p + DELETED_SUFFIX)
            if p == seg.log_path:
                idx = self.segments.index(seg)
                del self.segments[idx]
                del self._bases[idx]
                seg.close()
        if seg.fd >= 0:  # the .log file was already gone
            idx = self.segments.index(seg)
            del self.segments[idx]
            del self._bases[idx]
            seg.close()
        if defer:
            self.pending_file_deletions.extend(renamed)
        else:
            for p in renamed:
                _unlink(p)
        self._dir_dirty = True

    def purge_deleted_files(self) -> int:
        """Unlink files of segments removed with ``defer_file_deletion`` (thread-safe)."""
        paths, self.pending_file_deletions = self.pending_file_deletions, []
        for p in paths:
            _unlink(p)
        return len(paths)

    # ================================================================== truncation

    def truncate_to(self, offset: int, *, now_ms: int | None = None) -> None:
        """Remove everything at or above ``offset`` (follower truncation).

        The log is cut at a batch boundary, so the new log end offset can be
        below ``offset`` if a batch straddled it.
        """
        if offset >= self.log_end_offset:
            return
        now = _now_ms() if now_ms is None else now_ms
        self.generation += 1
        if offset <= self.segments[0].base_offset:
            self._truncate_fully(offset, now)
            return
        while len(self.segments) > 1 and self.segments[-1].base_offset >= offset:
            self._remove_segment(self.segments[-1], False)
        self.active_segment.truncate_to(offset)
        leo = self.log_end_offset
        if self.log_start_offset > leo:
            self.log_start_offset = leo
            self._write_log_start_offset()
        self.recovery_point = min(self.recovery_point, leo)
        self._write_recovery_point()
        self._rebuild_producer_state_to(leo)

    def truncate_fully_and_start_at(self, offset: int, *, now_ms: int | None = None) -> None:
        """Delete all data; the log restarts empty at ``offset`` (also the new log start)."""
        self.generation += 1
        self._truncate_fully(offset, _now_ms() if now_ms is None else now_ms)

    def _truncate_fully(self, offset: int, now: int) -> None:
        for seg in list(self.segments):
            self._remove_segment(seg, False)
        self._add_segment(offset, now)
        self.log_start_offset = offset
        self._write_log_start_offset()
        self.recovery_point = offset
        self._write_recovery_point()
        ps.delete_snapshots(self.path)
        self.producer_state = ps.ProducerStateManager()
        self.producer_state.map_end_offset = offset

    def _rebuild_producer_state_to(self, leo: int) -> None:
        ps.delete_snapshots(self.path, keep=lambda off: off <= leo)
        mgr = ps.ProducerStateManager.load_snapshot(self.path, leo)
        if mgr is None or mgr.map_end_offset < self.log_start_offset:
            mgr = ps.ProducerStateManager()
            mgr.map_end_offset = self.log_start_offset
        self.producer_state = mgr
        self._replay_producer_state(mgr.map_end_offset)
        mgr.truncate_head(self.log_start_offset)
        mgr.map_end_offset = leo

    # ================================================================== flush

    def needs_flush(self, now_ms: int) -> bool:
        """True when ``flush.messages`` or ``flush.ms`` says the log should be fsynced."""
        unflushed = self.log_end_offset - self.recovery_point
        if unflushed <= 0:
            return False
        if unflushed >= self.config.flush_messages:
            return True
        return now_ms - self.last_flush_ms >= self.config.flush_ms

    def prepare_flush(self) -> FlushJob:
        """Persist index tails and capture what to fsync (caller's thread).

        Raises KafkaStorageError (and takes the log offline) if even that
        fails -- ``os.dup`` under descriptor exhaustion, an index write on
        a full disk.
        """
        self._check_online()
        target = self.log_end_offset
        fds: list[int] = []
        paths: list[str] = []
        try:
            for seg in self.segments:
                if seg.next_offset <= self.recovery_point and seg is not self.active_segment:
                    continue
                seg.persist_indexes()
                # a private descriptor: retention may close the segment's own
                # while the worker thread is still fsyncing
                fds.append(os.dup(seg.fd))
                paths.extend((seg.index_path, seg.timeindex_path))
        except OSError as e:
            FlushJob(target, fds, []).close()
            raise self.storage_error("flush", e) from e
        if self._dir_dirty:
            paths.append(self.path)
            self._dir_dirty = False
        generation = self.generation
        return FlushJob(target, fds, paths, lambda rp: self._persist_recovery_point(rp, generation))

    def _persist_recovery_point(self, value: int, generation: int) -> None:
        with self._checkpoint_lock:
            if generation == self.generation:
                _write_int_file(os.path.join(self.path, RECOVERY_POINT_FILE), value)

    def complete_flush(self, job: FlushJob, now_ms: int | None = None) -> None:
        """Record a finished flush: advance the in-memory recovery point."""
        if not job.done or self.closed:
            return
        new_rp = min(job.target_offset, self.log_end_offset)
        if new_rp > self.recovery_point:
            self.recovery_point = new_rp
        self.last_flush_ms = _now_ms() if now_ms is None else now_ms

    def flush(self, now_ms: int | None = None) -> None:
        """fsync log and index files up to the log end; update the recovery point."""
        job = self.prepare_flush()
        try:
            job.run()
        except OSError as e:
            raise self.storage_error("flush", e) from e
        self.complete_flush(job, now_ms)

    # ================================================================== close / delete

    def close(self) -> None:
        """Flush, persist indexes and a producer-state snapshot, release files."""
        if self.closed:
            return
        if self.offline:
            # nothing more may be written to a failed dir: the next start recovers it
            self.close_without_flush()
            return
        self.flush()
        for seg in self.segments:
            seg.persist_indexes()
        self.producer_state.map_end_offset = self.log_end_offset
        self._take_producer_snapshot()
        for seg in self.segments:
            seg.close()
        _fsync_dir(self.path)
        self.closed = True

    def close_without_flush(self) -> None:
        """Release file descriptors only (simulates a crash in tests)."""
        for seg in self.segments:
            seg.close()
        self.closed = True

    def delete(self) -> None:
        """Close file descriptors and remove the whole directory."""
        for seg in self.segments:
            seg.close()
        self.closed = True
        shutil.rmtree(self.path, ignore_errors=True)

    # ================================================================== checkpoints

    def _write_log_start_offset(self) -> None:
        """Write the current log start, even if lower (truncation); owner's thread."""
        with self._checkpoint_lock:
            _write_int_file(os.path.join(self.path, LOG_START_OFFSET_FILE), self.log_start_offset)
            self._lso_persisted = self.log_start_offset

    def _write_recovery_point(self) -> None:
        with self._checkpoint_lock:
            _write_int_file(os.path.join(self.path, RECOVERY_POINT_FILE), self.recovery_point)

    def _write_cleaner_state(self) -> None:
        _write_json_file(os.path.join(self.path, CLEANER_CHECKPOINT_FILE), self._cleaner_state)

    def _drop_cleaner_entries(self) -> None:
        pass  # cleaner state is keyed by offsets, not segments; nothing to drop

    # ================================================================== compaction

    def prepare_compaction(self, now_ms: int, *, upper_offset: int | None = None):
        """Plan a compaction pass (caller's thread); None if nothing to do.

        See :mod:`kbroker.log.cleaner` for the algorithm.  Run the returned
        job's ``run()`` anywhere, then :meth:`finish_compaction`.
        """
        from .cleaner import plan_compaction

        return plan_compaction(self, now_ms, upper_offset)

    def finish_compaction(self, job) -> CompactionStats:
        from .cleaner import commit_compaction

        return commit_compaction(self, job)

    def compact(self, now_ms: int, *, upper_offset: int | None = None) -> CompactionStats:
        """One synchronous compaction pass over the closed segments."""
        job = self.prepare_compaction(now_ms, upper_offset=upper_offset)
        if job is None:
            return CompactionStats()
        try:
            job.run()
        except BaseException:
            job.discard()
            raise
        return self.finish_compaction(job)

    def compaction_needed(self, now_ms: int) -> bool:
        """Cleanable dirty ratio >= ``min.cleanable.dirty.ratio``, or tombstones are due."""
        from .cleaner import compaction_needed

        return compaction_needed(self, now_ms)

    def __repr__(self) -> str:
        return (f"PartitionLog({self.path!r}, start={self.log_start_offset}, "
                f"end={self.log_end_offset}, segments={len(self.segments)})")


# ====================================================================== file helpers


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _delete_segment_files(directory: str, base: int) -> None:
    stem = os.path.join(directory, file_stem(base))
    for suffix in (LOG_SUFFIX, INDEX_SUFFIX, TIMEINDEX_SUFFIX):
        _unlink(stem + suffix)


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_file_atomic(path: str, data: bytes) -> None:
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _write_int_file(path: str, value: int) -> None:
    _write_file_atomic(path, f"{value}\n".encode())


def _read_int_file(path: str) -> int | None:
    try:
        with open(path, "rb") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def _write_json_file(path: str, obj: dict) -> None:
    _write_file_atomic(path, json.dumps(obj, sort_keys=True).encode())


def _read_json_file(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            v = json.loads(f.read())
        return v if isinstance(v, dict) else {}
    except (OSError, ValueError):
        return {}
