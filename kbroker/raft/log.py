"""The replicated log as the Raft state machine sees it, and an in-memory one.

Theory of operation
-------------------
Raft needs very little from its log: append entries tagged with the leader
epoch that wrote them, truncate a suffix that diverged from the leader, and
answer "where does epoch *e* end?" -- Kafka's leader-epoch cache, which is how
a follower finds the point where it diverged (KIP-101/KIP-595).  Offsets are
dense from ``start_offset`` to ``end_offset`` (exclusive); epochs never go down
along the log.

A snapshot covers every offset below its ``end_offset``; ``epoch`` is the
epoch of the entry at ``end_offset - 1``.  Taking one drops the log prefix it
covers, so afterwards ``start_offset == snapshot.end_offset`` and questions
about epochs before the snapshot can no longer be answered (a follower that
far behind is sent the snapshot instead).  Installing one received from the
leader keeps the local suffix only if it provably continues the snapshot, and
otherwise replaces the whole log.

:class:`RaftLog` is the protocol; :class:`MemoryRaftLog` implements it with a
list and an epoch index, and is what the simulation uses as its "disk" (it
survives a simulated crash because the test keeps the object).  The real
``__cluster_metadata`` log implements the same protocol over segment files.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any, Iterable, Protocol


@dataclass(frozen=True, slots=True)
class Entry:
    offset: int
    epoch: int
    payload: Any  # opaque to Raft; the shell's record batch, LEADER_CHANGE for the epoch marker


class _LeaderChange:
    """The control record a new leader appends first (Kafka's LeaderChangeMessage)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "LEADER_CHANGE"


LEADER_CHANGE = _LeaderChange()


@dataclass(frozen=True, slots=True, order=True)
class SnapshotId:
    end_offset: int
    epoch: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    snapshot_id: SnapshotId
    blob: bytes


class RaftLog(Protocol):
    @property
    def start_offset(self) -> int: ...

    @property
    def end_offset(self) -> int: ...

    @property
    def last_epoch(self) -> int:
        """Epoch of the last entry, or of the snapshot when the log is empty after one; 0 when both are absent."""

    def append(self, entries: Iterable[Entry]) -> None:
        """Append entries whose offsets continue ``end_offset`` exactly."""

    def truncate_to(self, offset: int) -> None:
        """Drop every entry at ``offset`` and above."""

    def epoch_of(self, offset: int) -> int | None:
        """Epoch of the entry at ``offset``; None when it is not in the log."""

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int] | None:
        """``(e, end)``: the largest epoch ``e <= epoch`` in the log and the offset just after its last entry.

        ``(-1, 0)`` when no entry is that old and the log starts at 0; None when the answer lies before the
        log start (only a snapshot can settle it)."""

    def entries(self, start: int, max_entries: int) -> list[Entry]: ...

    @property
    def latest_snapshot(self) -> Snapshot | None: ...

    def take_snapshot(self, snapshot: Snapshot) -> None:
        """Record a snapshot of the committed prefix and drop the entries it covers."""

    def install_snapshot(self, snapshot: Snapshot) -> None:
        """Adopt a snapshot fetched from the leader (see the module docstring)."""


class MemoryRaftLog:
    """:class:`RaftLog` over a Python list; ``_epochs`` is the leader-epoch cache: sorted (epoch, start offset)."""

    def __init__(self) -> None:
        self._entries: list[Entry] = []
        self._start = 0
        self._snapshot: Snapshot | None = None
        self._epochs: list[tuple[int, int]] = []

    @property
    def start_offset(self) -> int:
        return self._start

    @property
    def end_offset(self) -> int:
        return self._start + len(self._entries)

    @property
    def last_epoch(self) -> int:
        if self._entries:
            return self._entries[-1].epoch
        return self._snapshot.snapshot_id.epoch if self._snapshot else 0

    @property
    def latest_snapshot(self) -> Snapshot | None:
        return self._snapshot

    def append(self, entries: Iterable[Entry]) -> None:
        for entry in entries:
            if entry.offset != self.end_offset:
                raise ValueError(f"append at {entry.offset}, log ends at {self.end_offset}")
            if entry.epoch < self.last_epoch:
                raise ValueError(f"epoch {entry.epoch} after {self.last_epoch}")
            if not self._epochs or self._epochs[-1][0] != entry.epoch:
                self._epochs.append((entry.epoch, entry.offset))
            self._entries.append(entry)

    def truncate_to(self, offset: int) -> None:
        if offset < self._start:
            raise ValueError(f"truncate to {offset} below log start {self._start}")
        if offset >= self.end_offset:
            return
        del self._entries[offset - self._start :]
        while self._epochs and self._epochs[-1][1] >= offset and not (
            self._snapshot and self._epochs[-1] == (self._snapshot.snapshot_id.epoch, self._start)
        ):
            self._epochs.pop()

    def epoch_of(self, offset: int) -> int | None:
        if self._start <= offset < self.end_offset:
            return self._entries[offset - self._start].epoch
        if self._snapshot and offset == self._start - 1:
            return self._snapshot.snapshot_id.epoch
        return None

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int] | None:
        i = bisect.bisect_right(self._epochs, (epoch, float("inf"))) - 1
        if i < 0:
            return (-1, 0) if self._start == 0 else None
        found = self._epochs[i][0]
        end = self._epochs[i + 1][1] if i + 1 < len(self._epochs) else self.end_offset
        return found, end

    def entries(self, start: int, max_entries: int) -> list[Entry]:
        if start < self._start:
            raise ValueError(f"read at {start} below log start {self._start}")
        i = start - self._start
        return self._entries[i : i + max_entries]

    def take_snapshot(self, snapshot: Snapshot) -> None:
        end = snapshot.snapshot_id.end_offset
        if not (self._start < end <= self.end_offset) or self.epoch_of(end - 1) != snapshot.snapshot_id.epoch:
            raise ValueError(
                f"snapshot {snapshot.snapshot_id} does not match the log [{self._start}, {self.end_offset})"
            )
        self._drop_prefix(snapshot)

    def install_snapshot(self, snapshot: Snapshot) -> None:
        sid = snapshot.snapshot_id
        if self._start < sid.end_offset <= self.end_offset and self.epoch_of(sid.end_offset - 1) == sid.epoch:
            self._drop_prefix(snapshot)
            return
        self._entries = []
        self._start = sid.end_offset
        self._snapshot = snapshot
        self._epochs = [(sid.epoch, sid.end_offset)]

    def _drop_prefix(self, snapshot: Snapshot) -> None:
        sid = snapshot.snapshot_id
        del self._entries[: sid.end_offset - self._start]
        self._start = sid.end_offset
        self._snapshot = snapshot
        # Epochs that ended inside the snapshot are gone; the snapshot's own
        # epoch is kept as starting at the snapshot, so that a fetcher whose
        # last epoch is the snapshot's still validates against it.
        rest = [(e, s) for e, s in self._epochs if s >= sid.end_offset and e != sid.epoch]
        self._epochs = [(sid.epoch, sid.end_offset)] + rest
