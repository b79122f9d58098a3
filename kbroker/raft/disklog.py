"""The durable :class:`~kbroker.raft.log.RaftLog`: ``__cluster_metadata-0`` on disk.

Theory of operation
-------------------
The directory ``<log dir>/__cluster_metadata-0`` holds what Kafka's holds:

* a :class:`~kbroker.log.partition_log.PartitionLog` (segments, indexes,
  its own small checkpoints) whose record batches are the Raft entries,
  encoded by :mod:`kbroker.raft.records` -- a batch's
  ``partition_leader_epoch`` is the epoch of its entries, so the leader-epoch
  cache is rebuilt from the batches alone;
* at most one snapshot, ``<end_offset:020d>-<epoch:010d>.checkpoint``, whose
  bytes are the snapshot blob verbatim.

Everything since the last snapshot is also kept in memory, in a
:class:`~kbroker.raft.log.MemoryRaftLog`: the metadata log since a snapshot
is bounded by the snapshot interval, and Raft asks small questions often
(epoch of an offset, end of an epoch, a few entries for a Fetch).  So every
read is answered from memory, and every change goes to disk first -- written
and fsynced -- and only then to memory.  Memory is therefore never ahead of
disk: if a disk call raises, memory still describes a prefix of what the
files may hold, and the log refuses every later change (after a failed write
or fsync nobody knows what reached the disk; the node must stop and recover
from the files on restart).  That is also the state machine's contract: when
a method returns, everything the messages it is about to send rely on (a
Fetch offset, a vote for an up-to-date log) is durable.

Crash safety rests on one ordering: a snapshot file is complete and durable
(temp file, fsync, rename, fsync the directory) before the log prefix it
covers is dropped and before the previous snapshot file is removed.  Opening
therefore trusts the newest ``.checkpoint`` and repairs the log around it:

* a ``.checkpoint.part`` is a snapshot whose write was interrupted: deleted;
* the log still holding entries below the snapshot end (crash before the
  prefix was dropped) loses that prefix, if the entry just below the end has
  the snapshot's epoch -- otherwise the log diverged from the snapshot (crash
  in the middle of installing one from the leader) and is replaced by an
  empty log starting at the snapshot end; so is a log that does not reach
  the snapshot end, or starts after it;
* a ``truncation.pending`` is a truncation inside a batch that did not
  finish: it is completed (see below);
* a torn batch at the tail (crash mid-write) is cut off by the
  PartitionLog's own recovery, which runs on every open: the entries in that
  batch were never acknowledged, since the fsync had not returned;
* a log starting above 0 without any snapshot cannot be explained by a
  crash (the snapshot is always written first); opening refuses it with
  :class:`InconsistentRaftLog` rather than silently serving a log with a
  hole in it.

Truncation has one wrinkle: the PartitionLog cuts at batch boundaries, but
Raft may truncate inside a batch (the old leader's epoch ended, on the new
leader, in the middle of a run this follower wrote as one batch).  The
entries of that batch below the truncation point must then be written again
-- and they may be committed entries this node has acknowledged, which a
crash between the cut and the rewrite must not lose.  So they are first
saved, encoded, in a side file (``truncation.pending``, written like a
snapshot); open() finds it and redoes the cut and the rewrite, which gives
the same log whichever step the crash interrupted.

Costs: every :meth:`~DiskRaftLog.append` and :meth:`~DiskRaftLog.truncate_to`
blocks on ``fsync`` in the caller's thread -- PartitionLog.flush: the
segment and the recovery-point checkpoint (about two fsyncs an append; the
directory too after a roll).  A truncation inside a batch adds three (the
side file, the directory twice), a snapshot two or three.  The Raft state
machine is synchronous, so a trio shell should run its steps in a worker
thread or accept the stall.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from typing import Iterable, Iterator

from ..log.config import LogConfig
from ..log.errors import LogError
from ..log.partition_log import PartitionLog
from .log import LEADER_CHANGE, Entry, MemoryRaftLog, Snapshot, SnapshotId
from .records import decode_entries, encode_entries

METADATA_PARTITION_DIR = "__cluster_metadata-0"
CHECKPOINT_SUFFIX = ".checkpoint"
PART_SUFFIX = ".part"
# The kept head of a batch cut by a truncation, while it is being rewritten.
TRUNCATION_FILE = "truncation.pending"
_CHECKPOINT_NAME = re.compile(r"^(\d{20})-(\d{10})\.checkpoint$")
# One PartitionLog.read: whole batches from one segment, at least one batch.
_READ_BYTES = 1 << 20


class InconsistentRaftLog(Exception):
    """The files cannot be explained by any crash (e.g. a log starting above 0 with no snapshot)."""


def checkpoint_name(sid: SnapshotId) -> str:
    return f"{sid.end_offset:020d}-{sid.epoch:010d}{CHECKPOINT_SUFFIX}"


class DiskRaftLog:
    """:class:`~kbroker.raft.log.RaftLog` over a PartitionLog plus ``.checkpoint`` snapshot files.

    Raises OSError when the disk fails (the PartitionLog's KafkaStorageError
    is re-raised as one); after that every change raises OSError too.
    """

    # Never trimmed by retention: only snapshots drop the prefix.  Segment
    # size as the old single-node metadata log had it.
    CONFIG = LogConfig(retention_ms=-1, retention_bytes=-1, segment_bytes=64 * 1024 * 1024)

    def __init__(self, path: str, plog: PartitionLog, mem: MemoryRaftLog) -> None:
        """Use :meth:`open`."""
        self.path = path
        self.plog = plog
        self._mem = mem
        self._failed: BaseException | None = None
        self.closed = False

    # ================================================================== open / close

    @classmethod
    def open(cls, directory: str, *, config: LogConfig | None = None) -> "DiskRaftLog":
        """Open (creating it if needed) ``<directory>/__cluster_metadata-0`` and rebuild the memory index."""
        path = os.path.join(directory, METADATA_PARTITION_DIR)
        os.makedirs(path, exist_ok=True)
        snapshot = _load_newest_snapshot(path)
        # recover=True: a crash may have torn the last batch; CRC-checking
        # from the recovery point costs little, because every append moved it.
        plog = PartitionLog.open(path, config or cls.CONFIG, recover=True)
        try:
            mem = _rebuild(plog, snapshot)
        except BaseException:
            plog.close_without_flush()
            raise
        return cls(path, plog, mem)

    @classmethod
    def over(cls, plog: PartitionLog) -> "DiskRaftLog":
        """The Raft log of a ``__cluster_metadata-0`` PartitionLog the broker's LogManager already opened.

        The LogManager owns the files' lifecycle there (recovery after an
        unclean stop, flushing, closing with the clean-shutdown marker).
        """
        snapshot = _load_newest_snapshot(plog.path)
        return cls(plog.path, plog, _rebuild(plog, snapshot))

    def close(self) -> None:
        """Flush and release the files (idempotent); the object is unusable afterwards."""
        if self.closed:
            return
        self.closed = True
        if self._failed is not None:
            self.plog.close_without_flush()  # the next open recovers whatever is there
            return
        with _disk_errors():
            self.plog.close()

    # ================================================================== reads (memory)

    @property
    def start_offset(self) -> int:
        return self._mem.start_offset

    @property
    def end_offset(self) -> int:
        return self._mem.end_offset

    @property
    def last_epoch(self) -> int:
        return self._mem.last_epoch

    @property
    def latest_snapshot(self) -> Snapshot | None:
        return self._mem.latest_snapshot

    def epoch_of(self, offset: int) -> int | None:
        return self._mem.epoch_of(offset)

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int] | None:
        return self._mem.end_offset_for_epoch(epoch)

    def entries(self, start: int, max_entries: int) -> list[Entry]:
        return self._mem.entries(start, max_entries)

    # ================================================================== changes (disk, then memory)

    def append(self, entries: Iterable[Entry]) -> None:
        """Append, fsync, then remember; ValueError/TypeError before anything is written if invalid."""
        batch = self._validated(entries)
        if not batch:
            return
        buf = encode_entries(batch)
        with self._writing():
            segments = self.plog.num_segments
            self.plog.append(buf, assign_offsets=False)
            if self.plog.num_segments != segments:
                # A new segment file: the full flush also makes its directory entry durable.
                self.plog.flush()
            else:
                # The data is what must be durable before Raft acts on it;
                # indexes are rebuilt and the recovery point only shortens
                # the CRC scan after a crash (bounded by the snapshot interval),
                # so one fsync per append instead of five.
                os.fsync(self.plog.active_segment.fd)
        self._mem.append(batch)

    def truncate_to(self, offset: int) -> None:
        """Drop every entry at ``offset`` and above, durably."""
        mem = self._mem
        if offset < mem.start_offset:
            raise ValueError(f"truncate to {offset} below log start {mem.start_offset}")
        if offset >= mem.end_offset:
            return
        start = mem.start_offset
        with self._writing():
            # The PartitionLog cuts at the base of the batch holding
            # ``offset``; what of that batch is kept is written again, after
            # being saved in a side file that open() replays (see the module
            # docstring).  A batch straddling our start is cut at the start.
            res = self.plog.read(offset, 1, min_one_batch=True)
            cut = max(res.first_offset, start) if res.first_offset >= 0 else offset
            tail = encode_entries(mem.entries(cut, offset - cut)) if cut < offset else b""
            if tail:
                _write_file_durably(self.path, TRUNCATION_FILE, tail)
            _rewrite_tail(self.plog, cut, tail)
            if tail:
                # Durably gone before anything else is written: replayed
                # after later appends, it would cut them off.
                os.unlink(os.path.join(self.path, TRUNCATION_FILE))
                _fsync_dir(self.path)
        mem.truncate_to(offset)

    def take_snapshot(self, snapshot: Snapshot) -> None:
        """Write the snapshot file durably, then drop the log prefix it covers and older snapshot files."""
        sid = snapshot.snapshot_id
        mem = self._mem
        if not (mem.start_offset < sid.end_offset <= mem.end_offset) or mem.epoch_of(sid.end_offset - 1) != sid.epoch:
            raise ValueError(f"snapshot {sid} does not match the log [{mem.start_offset}, {mem.end_offset})")
        with self._writing():
            self._write_snapshot(snapshot)
            self._drop_prefix(sid.end_offset)
        mem.take_snapshot(snapshot)

    def install_snapshot(self, snapshot: Snapshot) -> None:
        """Adopt a leader's snapshot: keep a suffix that continues it, otherwise replace the whole log."""
        sid = snapshot.snapshot_id
        mem = self._mem
        consistent = (mem.start_offset < sid.end_offset <= mem.end_offset
                      and mem.epoch_of(sid.end_offset - 1) == sid.epoch)
        with self._writing():
            self._write_snapshot(snapshot)
            if consistent:
                self._drop_prefix(sid.end_offset)
            else:
                self.plog.truncate_fully_and_start_at(sid.end_offset)
                self.plog.flush()
        mem.install_snapshot(snapshot)

    # ================================================================== helpers

    def _validated(self, entries: Iterable[Entry]) -> list[Entry]:
        """The entries as a list, checked as MemoryRaftLog checks them; bytes-like payloads become bytes."""
        out: list[Entry] = []
        expected = self._mem.end_offset
        last_epoch = self._mem.last_epoch
        for entry in entries:
            if entry.offset != expected:
                raise ValueError(f"append at {entry.offset}, log ends at {expected}")
            if entry.epoch < last_epoch:
                raise ValueError(f"epoch {entry.epoch} after {last_epoch}")
            payload = entry.payload
            if payload is not LEADER_CHANGE:
                if not isinstance(payload, (bytes, bytearray, memoryview)):
                    # A str would be stored as UTF-8 and come back as bytes:
                    # the log would then answer differently after a restart.
                    raise TypeError(f"entry {entry.offset}: payload must be bytes or LEADER_CHANGE, "
                                    f"not {type(payload).__name__}")
                if type(payload) is not bytes:
                    entry = Entry(entry.offset, entry.epoch, bytes(payload))
            out.append(entry)
            expected += 1
            last_epoch = entry.epoch
        return out

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Guard a disk change: refuse after an earlier failure, remember a new one."""
        if self.closed:
            raise OSError(f"{self.path}: the raft log is closed")
        if self._failed is not None:
            raise OSError(f"{self.path}: the raft log failed earlier: {self._failed}")
        try:
            with _disk_errors():
                yield
        except OSError as e:
            self._failed = e
            raise

    def _write_snapshot(self, snapshot: Snapshot) -> None:
        """The checkpoint file, durable; then every other checkpoint removed (durably)."""
        name = checkpoint_name(snapshot.snapshot_id)
        _write_file_durably(self.path, name, snapshot.blob)
        # Only now may the previous snapshot go.  It goes before the log is
        # touched: an older-but-larger snapshot left behind would be picked at
        # the next open over the one the log was just changed to match.
        removed = False
        for other in os.listdir(self.path):
            if other != name and _CHECKPOINT_NAME.match(other):
                os.unlink(os.path.join(self.path, other))
                removed = True
        if removed:
            _fsync_dir(self.path)

    def _drop_prefix(self, end: int) -> None:
        # Raises the log start (a fsynced checkpoint) and deletes the
        # segments wholly below it; the active segment stays even if all
        # of it is below.  A crash before the deletions are durable is
        # repaired at open, from the snapshot file.
        self.plog.delete_records_before(end)

    def __repr__(self) -> str:
        snap = self.latest_snapshot
        return (f"DiskRaftLog({self.path!r}, start={self.start_offset}, end={self.end_offset}, "
                f"snapshot={snap.snapshot_id if snap else None})")


# ====================================================================== open helpers


def _load_newest_snapshot(path: str) -> Snapshot | None:
    """The newest ``.checkpoint`` (read whole); ``.part`` leftovers and older checkpoints are deleted."""
    found: list[tuple[SnapshotId, str]] = []
    for name in os.listdir(path):
        full = os.path.join(path, name)
        if name.endswith(CHECKPOINT_SUFFIX + PART_SUFFIX):
            os.unlink(full)  # an interrupted write: never renamed, never relied on
            continue
        m = _CHECKPOINT_NAME.match(name)
        if m:
            found.append((SnapshotId(int(m.group(1)), int(m.group(2))), full))
    if not found:
        return None
    found.sort()
    sid, newest = found[-1]
    for _sid, older in found[:-1]:
        os.unlink(older)  # a crash between writing the newest and removing these
    with open(newest, "rb") as f:
        blob = f.read()
    return Snapshot(sid, blob)


def _finish_truncation(path: str, plog: PartitionLog) -> None:
    """Complete a truncation inside a batch that a crash interrupted (its side file is durable)."""
    part = os.path.join(path, TRUNCATION_FILE + PART_SUFFIX)
    if os.path.exists(part):
        os.unlink(part)  # never renamed: the log was not touched yet
    full = os.path.join(path, TRUNCATION_FILE)
    try:
        with open(full, "rb") as f:
            tail = f.read()
    except FileNotFoundError:
        return
    # Whichever step the crash came after (before the cut, after it, after
    # the re-append), cutting again and re-appending ends in the same log.
    _rewrite_tail(plog, decode_entries(tail)[0].offset, tail)
    os.unlink(full)
    _fsync_dir(path)


def _rewrite_tail(plog: PartitionLog, cut: int, tail: bytes) -> None:
    """Make the log end at ``cut`` (a batch boundary, or its start), append ``tail`` there, fsync."""
    if cut <= plog.log_start_offset:
        # Nothing of the log is kept; this also drops a segment prefix below
        # the start left by the last snapshot (the cut there would fall
        # below the start and lower it).
        plog.truncate_fully_and_start_at(cut)
    else:
        plog.truncate_to(cut)
    if tail:
        plog.append(tail, assign_offsets=False)
    plog.flush()


def _read_all(plog: PartitionLog) -> list[Entry]:
    """Every entry from the log start to the log end, decoded batch by batch."""
    out: list[Entry] = []
    offset, end = plog.log_start_offset, plog.log_end_offset
    while offset < end:
        res = plog.read(offset, _READ_BYTES, min_one_batch=True)
        if not len(res.records):
            break
        out.extend(e for e in decode_entries(res.records) if e.offset >= offset)
        offset = res.next_offset
    return out


def _rebuild(plog: PartitionLog, snapshot: Snapshot | None) -> MemoryRaftLog:
    """Reconcile the PartitionLog with the snapshot (see the module docstring) and index it in memory."""
    mem = MemoryRaftLog()
    with _disk_errors():
        _finish_truncation(plog.path, plog)
        entries = _read_all(plog)
        start, end = plog.log_start_offset, plog.log_end_offset
        if snapshot is None:
            if start != 0:
                raise InconsistentRaftLog(
                    f"{plog.path}: the log starts at {start} but there is no snapshot of the offsets below"
                )
        else:
            sid = snapshot.snapshot_id
            mem.install_snapshot(snapshot)
            if start != sid.end_offset:
                below = [e for e in entries if e.offset == sid.end_offset - 1]
                if start < sid.end_offset <= end and below and below[0].epoch == sid.epoch:
                    plog.delete_records_before(sid.end_offset)
                    entries = [e for e in entries if e.offset >= sid.end_offset]
                else:
                    plog.truncate_fully_and_start_at(sid.end_offset)
                    plog.flush()
                    entries = []
    try:
        mem.append(entries)
    except ValueError as e:
        raise InconsistentRaftLog(f"{plog.path}: {e}") from None
    return mem


@contextmanager
def _disk_errors() -> Iterator[None]:
    """Re-raise the PartitionLog's storage errors (and LogClosed) as OSError: one failure type for the caller."""
    try:
        yield
    except LogError as e:
        raise OSError(f"raft log: {e}") from e


def _write_file_durably(directory: str, name: str, data: bytes) -> None:
    """``directory/name`` holding ``data``, complete or absent after a crash: temp file, fsync, rename, fsync dir."""
    final = os.path.join(directory, name)
    tmp = final + PART_SUFFIX
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)
    _fsync_dir(directory)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
