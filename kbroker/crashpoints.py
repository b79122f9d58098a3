"""Deterministic crash points: a test-only way to die at an exact place.

Recovery code is only as good as the crashes it has seen.  A timer that
SIGKILLs a broker "somewhere during a roll" hits the interesting instant by
luck; a crash point hits it every time.  Code that changes durable state
calls :func:`crash_point` with a name from :data:`POINTS` at the moment a
crash would be most awkward (after the new file exists but before the
checkpoint names it, between the two renames of a swap, ...).

The environment variable ``KBROKER_CRASH_POINT`` arms one point:
``segment.roll`` dies the first time the point is reached,
``segment.roll:3`` the third time.  Dying is ``SIGKILL`` to ourselves: no
``finally``, no flush, no clean-shutdown marker -- exactly what a power cut
or the OOM killer leaves behind.  Unarmed, a crash point costs one
comparison, so it may sit on a hot path.

It is an environment variable rather than a ``server.properties`` key on
purpose: a Kafka user's config must never be able to arm it by accident,
and ``kbroker --print-config`` stays Kafka's list.
"""

from __future__ import annotations

import os
import signal

POINTS = frozenset(
    {
        "segment.roll",  # the new segment exists, the producer snapshot is not taken yet
        "index.write",  # offset/time index entries being persisted
        "log.append",  # batch bytes written, producer state not yet advanced
        "retention.delete",  # segments renamed to .deleted, files not yet unlinked
        "compaction.swap",  # the .swap file is complete, old segments not yet replaced
        "topic.delete",  # the partition dir renamed to -delete, not yet removed
        "metadata.append",  # metadata records written, not yet fsynced
        "metadata.apply",  # metadata records durable, not yet applied to the image
        "offset.commit",  # offset commit records appended, not yet applied/acknowledged
    }
)

ENV = "KBROKER_CRASH_POINT"


def _parse(value: str | None) -> tuple[str | None, int]:
    if not value:
        return None, 0
    name, _, count = value.partition(":")
    if name not in POINTS:
        raise SystemExit(f"kbroker: {ENV}={value!r}: unknown crash point (known: {', '.join(sorted(POINTS))})")
    return name, int(count) if count else 1


_armed, _remaining = _parse(os.environ.get(ENV))


def crash_point(name: str) -> None:
    """Die here if ``name`` is the armed point and its count has run down."""
    global _remaining
    if name != _armed:
        return
    _remaining -= 1
    if _remaining <= 0:
        os.kill(os.getpid(), signal.SIGKILL)


def armed() -> str | None:
    """The armed point's name (for a log line at start-up), or None."""
    return _armed
