"""Work a client can make expensive, run off the trio thread and a few at a time.

Every client shares the trio thread, so anything whose cost a request
chooses -- decoding a large frame, reading the records of a batch that
declares millions of them -- must not run there: one hostile request would
freeze every other connection.  Such work goes to worker threads through one
small :class:`trio.CapacityLimiter`, so that a burst of such requests takes a
bounded number of threads (and the memory they hold) rather than all of
trio's.  The GIL still shares the CPU, but trio gets its turn every switch
interval, which keeps other clients answered.
"""

from __future__ import annotations

from typing import Callable, TypeVar

import trio

T = TypeVar("T")

WORKERS = 2

_limiter: trio.lowlevel.RunVar = trio.lowlevel.RunVar("kbroker_offload_limiter")


def limiter() -> trio.CapacityLimiter:
    # A limiter belongs to one trio run (tests start many), hence a RunVar.
    try:
        return _limiter.get()
    except LookupError:
        made = trio.CapacityLimiter(WORKERS)
        _limiter.set(made)
        return made


async def run(fn: Callable[[], T]) -> T:
    """``fn()`` in a worker thread, at most :data:`WORKERS` at a time."""
    return await trio.to_thread.run_sync(fn, limiter=limiter())
