"""Idempotent-producer bookkeeping for one partition (Kafka's ProducerStateManager).

Pure logic: the partition log feeds it batch headers and asks it to judge new
batches.  Only :meth:`ProducerStateManager.save_snapshot` /
:meth:`ProducerStateManager.load_snapshot` touch the disk.

Rules (Kafka 4.x ``ProducerAppendInfo``):

* An epoch older than the known one -> ``INVALID_PRODUCER_EPOCH``.
* A batch whose (first_seq, last_seq) equals one of the last 5 batches of the
  same producer and epoch -> ``DUPLICATE``; the broker answers success with the
  offsets the original append got.
* A new epoch (bump) for a known producer must start at sequence 0, otherwise
  ``OUT_OF_ORDER_SEQUENCE_NUMBER``.
* Same epoch: the first sequence must be ``last_seq + 1`` (with ``0`` following
  ``Int32.MAX``), otherwise ``OUT_OF_ORDER_SEQUENCE_NUMBER``.
* A producer id the partition has no state for (never seen, expired, or all its
  batches deleted by retention/DeleteRecords) is accepted at *any* sequence:
  Kafka stopped answering UNKNOWN_PRODUCER_ID for this case ("if there is no
  current producer epoch ... accept writes with any sequence number").
"""

from __future__ import annotations

import enum
import os
import re
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import Iterable, NamedTuple

import crc32c

NO_PRODUCER_ID = -1
NO_PRODUCER_EPOCH = -1
NO_SEQUENCE = -1
INT32_MAX = (1 << 31) - 1
MAX_CACHED_BATCHES = 5  # Kafka's NUM_BATCHES_TO_RETAIN


class BatchMetadata(NamedTuple):
    first_seq: int
    last_seq: int
    first_offset: int
    last_offset: int
    timestamp: int  # batch max timestamp (or log append time)


class Verdict(enum.Enum):
    OK = 0
    DUPLICATE = 1
    OUT_OF_ORDER_SEQUENCE = 45  # value = Kafka error code
    INVALID_PRODUCER_EPOCH = 47


class CheckResult(NamedTuple):
    verdict: Verdict
    duplicate: BatchMetadata | None = None  # set for DUPLICATE
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.OK


_OK = CheckResult(Verdict.OK)


def in_sequence(last_seq: int, next_seq: int) -> bool:
    """True if ``next_seq`` directly follows ``last_seq`` (wrapping at Int32.MAX)."""
    return next_seq == last_seq + 1 or (next_seq == 0 and last_seq == INT32_MAX)


@dataclass
class ProducerEntry:
    producer_id: int
    epoch: int = NO_PRODUCER_EPOCH
    batches: deque = field(default_factory=lambda: deque(maxlen=MAX_CACHED_BATCHES))
    last_timestamp: int = -1
    coordinator_epoch: int = -1
    # First offset of the open transaction of this producer, None if none.
    current_txn_first_offset: int | None = None

    @property
    def last_seq(self) -> int:
        return self.batches[-1].last_seq if self.batches else NO_SEQUENCE

    @property
    def last_offset(self) -> int:
        return self.batches[-1].last_offset if self.batches else -1

    def copy(self) -> "ProducerEntry":
        return ProducerEntry(
            self.producer_id,
            self.epoch,
            deque(self.batches, maxlen=MAX_CACHED_BATCHES),
            self.last_timestamp,
            self.coordinator_epoch,
            self.current_txn_first_offset,
        )


SNAPSHOT_SUFFIX = ".snapshot"
_SNAPSHOT_RE = re.compile(r"^(\d{20})\.snapshot$")
_SNAP_MAGIC = b"KBPS"
_SNAP_VERSION = 1
_SNAP_HEAD = struct.Struct(">4sHIq")  # magic, version, crc32c(body), end offset
_SNAP_ENTRY = struct.Struct(">qhiqqB")  # pid, epoch, coord epoch, last ts, txn first, n
_SNAP_BATCH = struct.Struct(">iiqqq")


def snapshot_file_name(offset: int) -> str:
    return f"{offset:020d}{SNAPSHOT_SUFFIX}"


def list_snapshots(directory: str) -> list[int]:
    """Offsets of the producer snapshots in ``directory``, ascending."""
    out = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    for name in names:
        m = _SNAPSHOT_RE.match(name)
        if m:
            out.append(int(m.group(1)))
    out.sort()
    return out


class ProducerStateManager:
    """Per-partition producer id -> :class:`ProducerEntry` map."""

    def __init__(self) -> None:
        self.producers: dict[int, ProducerEntry] = {}
        # The state reflects every batch below this offset.
        self.map_end_offset: int = 0

    # ------------------------------------------------------------- judging

    def check(self, producer_id: int, epoch: int, first_seq: int, last_seq: int) -> CheckResult:
        """Judge a batch from an idempotent producer before it is appended."""
        entry = self.producers.get(producer_id)
        if entry is None or entry.epoch == NO_PRODUCER_EPOCH:
            return _OK  # no state: any sequence is accepted (see module doc)
        if epoch < entry.epoch:
            return CheckResult(
                Verdict.INVALID_PRODUCER_EPOCH,
                message=f"Epoch of producer {producer_id} is {epoch}, which is smaller than "
                f"the last seen epoch {entry.epoch}",
            )
        if epoch != entry.epoch:
            if first_seq != 0:
                return CheckResult(
                    Verdict.OUT_OF_ORDER_SEQUENCE,
                    message=f"Invalid sequence number for new epoch {epoch} of producer "
                    f"{producer_id}: {first_seq} (must be 0)",
                )
            return _OK
        for b in entry.batches:
            if b.first_seq == first_seq and b.last_seq == last_seq:
                return CheckResult(Verdict.DUPLICATE, b)
        current = entry.last_seq
        if not in_sequence(current, first_seq):
            return CheckResult(
                Verdict.OUT_OF_ORDER_SEQUENCE,
                message=f"Out of order sequence number for producer {producer_id}: "
                f"{first_seq} (incoming seq. number), {current} (current end sequence number)",
            )
        return _OK

    # ------------------------------------------------------------- updating

    def record(
        self,
        producer_id: int,
        epoch: int,
        first_seq: int,
        last_seq: int,
        first_offset: int,
        last_offset: int,
        timestamp: int,
        *,
        is_transactional: bool = False,
        is_control: bool = False,
    ) -> None:
        """Remember a batch that was appended (or read back from the log)."""
        entry = self.producers.get(producer_id)
        if entry is None:
            entry = self.producers[producer_id] = ProducerEntry(producer_id)
        if epoch != entry.epoch:
            entry.epoch = epoch
            entry.batches.clear()
        if is_control:
            # A commit/abort marker closes the transaction; carries no sequence.
            entry.current_txn_first_offset = None
        else:
            if first_seq != NO_SEQUENCE:
                entry.batches.append(
                    BatchMetadata(first_seq, last_seq, first_offset, last_offset, timestamp)
                )
            if is_transactional and entry.current_txn_first_offset is None:
                entry.current_txn_first_offset = first_offset
        entry.last_timestamp = max(entry.last_timestamp, timestamp)
        if last_offset + 1 > self.map_end_offset:
            self.map_end_offset = last_offset + 1

    def record_header(self, h) -> None:
        """Feed one batch header (``protocol.records.BatchHeader``) read from the log."""
        if h.producer_id < 0:
            if h.next_offset > self.map_end_offset:
                self.map_end_offset = h.next_offset
            return
        self.record(
            h.producer_id,
            h.producer_epoch,
            h.base_sequence,
            h.last_sequence if h.base_sequence != NO_SEQUENCE else NO_SEQUENCE,
            h.base_offset,
            h.last_offset,
            h.max_timestamp,
            is_transactional=h.is_transactional,
            is_control=h.is_control,
        )

    def snapshot_entries(self, producer_ids: Iterable[int]) -> dict[int, ProducerEntry | None]:
        """Copies of some entries, to undo a failed append with :meth:`restore`."""
        out: dict[int, ProducerEntry | None] = {}
        for pid in producer_ids:
            e = self.producers.get(pid)
            out[pid] = e.copy() if e is not None else None
        return out

    def restore(self, saved: dict[int, ProducerEntry | None], map_end_offset: int) -> None:
        for pid, e in saved.items():
            if e is None:
                self.producers.pop(pid, None)
            else:
                self.producers[pid] = e
        self.map_end_offset = map_end_offset

    def truncate_head(self, log_start_offset: int) -> int:
        """Forget producers whose every batch is below ``log_start_offset``.

        Producers with an open transaction are kept.  Returns how many were
        removed.
        """
        gone = [
            pid
            for pid, e in self.producers.items()
            if e.last_offset < log_start_offset and e.current_txn_first_offset is None
        ]
        for pid in gone:
            del self.producers[pid]
        if self.map_end_offset < log_start_offset:
            self.map_end_offset = log_start_offset
        return len(gone)

    def expire(self, now_ms: int, expiration_ms: int) -> int:
        """Drop producers idle for longer than ``producer.id.expiration.ms``."""
        gone = [
            pid
            for pid, e in self.producers.items()
            if e.current_txn_first_offset is None and now_ms - e.last_timestamp >= expiration_ms
        ]
        for pid in gone:
            del self.producers[pid]
        return len(gone)

    def clear(self, map_end_offset: int = 0) -> None:
        self.producers.clear()
        self.map_end_offset = map_end_offset

    def first_unstable_offset(self) -> int | None:
        """Smallest first offset of an open transaction (for the LSO), or None."""
        offs = [
            e.current_txn_first_offset
            for e in self.producers.values()
            if e.current_txn_first_offset is not None
        ]
        return min(offs) if offs else None

    def last_batch_offsets(self) -> dict[int, int]:
        """producer id -> last offset of its latest batch (the cleaner keeps those)."""
        return {pid: e.last_offset for pid, e in self.producers.items() if e.batches}

    # ------------------------------------------------------------- snapshots

    def encode_snapshot(self) -> bytes:
        parts = [struct.pack(">I", len(self.producers))]
        for e in self.producers.values():
            txn = -1 if e.current_txn_first_offset is None else e.current_txn_first_offset
            parts.append(
                _SNAP_ENTRY.pack(
                    e.producer_id, e.epoch, e.coordinator_epoch, e.last_timestamp, txn, len(e.batches)
                )
            )
            for b in e.batches:
                parts.append(_SNAP_BATCH.pack(*b))
        body = b"".join(parts)
        head = _SNAP_HEAD.pack(_SNAP_MAGIC, _SNAP_VERSION, crc32c.crc32c(body), self.map_end_offset)
        return head + body

    @classmethod
    def decode_snapshot(cls, data: bytes) -> "ProducerStateManager":
        """Inverse of :meth:`encode_snapshot`; ValueError if damaged."""
        if len(data) < _SNAP_HEAD.size + 4:
            raise ValueError("producer snapshot too short")
        magic, version, crc, end = _SNAP_HEAD.unpack_from(data, 0)
        if magic != _SNAP_MAGIC or version != _SNAP_VERSION:
            raise ValueError("not a producer snapshot")
        body = memoryview(data)[_SNAP_HEAD.size :]
        if crc32c.crc32c(body) != crc:
            raise ValueError("producer snapshot CRC mismatch")
        mgr = cls()
        mgr.map_end_offset = end
        try:
            (count,) = struct.unpack_from(">I", body, 0)
            pos = 4
            for _ in range(count):
                pid, epoch, coord, last_ts, txn, n = _SNAP_ENTRY.unpack_from(body, pos)
                pos += _SNAP_ENTRY.size
                e = ProducerEntry(pid, epoch, last_timestamp=last_ts, coordinator_epoch=coord,
                                  current_txn_first_offset=None if txn < 0 else txn)
                for _ in range(n):
                    e.batches.append(BatchMetadata(*_SNAP_BATCH.unpack_from(body, pos)))
                    pos += _SNAP_BATCH.size
                mgr.producers[pid] = e
        except struct.error as exc:
            raise ValueError(f"producer snapshot truncated: {exc}") from None
        if pos != len(body):
            raise ValueError("producer snapshot has trailing bytes")
        return mgr

    def save_snapshot(self, directory: str, *, fsync: bool = True) -> str:
        """Write ``<map_end_offset>.snapshot`` atomically; return its path."""
        path = os.path.join(directory, snapshot_file_name(self.map_end_offset))
        tmp = path + ".tmp"
        data = self.encode_snapshot()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        return path

    @classmethod
    def load_snapshot(cls, directory: str, max_offset: int) -> "ProducerStateManager | None":
        """Load the newest readable snapshot with offset <= ``max_offset``.

        Damaged snapshots are deleted and older ones tried; None if none fits.
        """
        for off in reversed(list_snapshots(directory)):
            if off > max_offset:
                continue
            path = os.path.join(directory, snapshot_file_name(off))
            try:
                with open(path, "rb") as f:
                    mgr = cls.decode_snapshot(f.read())
            except (OSError, ValueError):
                _unlink(path)
                continue
            if mgr.map_end_offset != off:
                _unlink(path)
                continue
            return mgr
        return None


def delete_snapshots(directory: str, *, keep=lambda off: False) -> None:
    """Delete snapshot files whose offset does not satisfy ``keep``."""
    for off in list_snapshots(directory):
        if not keep(off):
            _unlink(os.path.join(directory, snapshot_file_name(off)))


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
