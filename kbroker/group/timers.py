"""Deadlines for the group state machine, without a clock of its own.

A timer is a key (so scheduling again replaces it and cancelling is cheap)
plus a deadline in milliseconds and an action.  Nothing here sleeps: the
caller asks for the earliest deadline, waits however it likes (the trio
shell waits on an event with a deadline, a test just moves its fake clock)
and then pops what is due.  Replaced and cancelled entries stay in the heap
and are skipped when they surface.
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

    def schedule(self, key: Hashable, deadline_ms: int, action: Callable[[], Any]) -> None:
        seq = next(self._seq)
        self._live[key] = (deadline_ms, seq, action)
        heapq.heappush(self._heap, (deadline_ms, seq, key))

    def cancel(self, key: Hashable) -> None:
        self._live.pop(key, None)

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
        return key, action

    def __len__(self) -> int:
        return len(self._live)
