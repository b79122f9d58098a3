"""Deadlines for the group state machine, without a clock of its own.

A timer is a key (so scheduling again replaces it and cancelling is cheap)
plus a deadline in milliseconds and an action.  Nothing here sleeps: the
caller asks for the earliest deadline, waits however it likes (the trio
shell waits on an event with a deadline, a test just moves its fake clock)
and then pops what is due.  Replaced and cancelled entries stay in the heap
and are skipped when they surface.

Keys follow one convention: ``(kind, group_id, ...)`` for a group's timers
and a 1-tuple for coordinator-wide ones.  The timers are indexed by group so
that a step whose records could not be written can put exactly that group's
timers back as they were (:meth:`snapshot` / :meth:`restore`) without
copying every timer of the coordinator.
"""

from __future__ import annotations

import heapq
import itertools
from typing import Any, Callable, Hashable


class Timers:
    def __init__(self) -> None:
        self._heap: list[tuple[int, int, Hashable]] = []
        self._live: dict[Hashable, tuple[int, int, Callable[[], Any]]] = {}
        self._seq = itertools.count()
        self._by_group: dict[Any, set[Hashable]] = {}

    @staticmethod
    def group_of(key: Hashable) -> Any:
        """The group a timer key belongs to, or None for coordinator-wide timers."""
        return key[1] if isinstance(key, tuple) and len(key) >= 2 else None

    def _index(self, key: Hashable) -> None:
        gid = self.group_of(key)
        if gid is not None:
            self._by_group.setdefault(gid, set()).add(key)

    def _unindex(self, key: Hashable) -> None:
        gid = self.group_of(key)
        keys = self._by_group.get(gid)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_group[gid]

    def schedule(self, key: Hashable, deadline_ms: int, action: Callable[[], Any]) -> None:
        seq = next(self._seq)
        self._live[key] = (deadline_ms, seq, action)
        heapq.heappush(self._heap, (deadline_ms, seq, key))
        self._index(key)

    def cancel(self, key: Hashable) -> None:
        if self._live.pop(key, None) is not None:
            self._unindex(key)

    def postpone(self, key: Hashable, deadline_ms: int) -> None:
        """Move a live timer to a new deadline, keeping its action."""
        entry = self._live.get(key)
        if entry is not None:
            self.schedule(key, deadline_ms, entry[2])

    def action_of(self, key: Hashable) -> Callable[[], Any] | None:
        entry = self._live.get(key)
        return entry[2] if entry else None

    def peek_due(self, now_ms: int) -> Hashable | None:
        """The key of the earliest timer due at ``now_ms`` (left in place), or None."""
        self._skip_dead()
        if not self._heap or self._heap[0][0] > now_ms:
            return None
        return self._heap[0][2]

    def snapshot(self, group_ids) -> dict:
        """The live timers of ``group_ids``, for :meth:`restore`."""
        live = self._live
        return {gid: {key: live[key] for key in self._by_group.get(gid, ())} for gid in group_ids}

    def restore(self, snap: dict) -> None:
        """Put the timers of the snapshot's groups back exactly as they were.

        Timers scheduled since are dropped; ones cancelled or fired since come
        back with their old deadline and sequence number.  Re-pushing a heap
        entry that may still be in the heap is harmless: the duplicate is
        skipped when it surfaces, like any replaced entry.
        """
        for gid, entries in snap.items():
            for key in list(self._by_group.get(gid, ())):
                if key not in entries:
                    self.cancel(key)
            for key, entry in entries.items():
                if self._live.get(key) != entry:
                    self._live[key] = entry
                    heapq.heappush(self._heap, (entry[0], entry[1], key))
                    self._index(key)

    def is_scheduled(self, key: Hashable) -> bool:
        return key in self._live

    def deadline(self, key: Hashable) -> int | None:
        entry = self._live.get(key)
        return entry[0] if entry else None

    def _skip_dead(self) -> None:
        heap = self._heap
        while heap:
            deadline, seq, key = heap[0]
            entry = self._live.get(key)
            if entry is not None and entry[1] == seq:
                return
            heapq.heappop(heap)

    def next_deadline(self) -> int | None:
        self._skip_dead()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now_ms: int) -> tuple[Hashable, Callable[[], Any]] | None:
        """The earliest timer due at ``now_ms`` (removed), or None."""
        self._skip_dead()
        if not self._heap or self._heap[0][0] > now_ms:
            return None
        _deadline, _seq, key = heapq.heappop(self._heap)
        _d, _s, action = self._live.pop(key)
        self._unindex(key)
        return key, action

    def __len__(self) -> int:
        return len(self._live)
