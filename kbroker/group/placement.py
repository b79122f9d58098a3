"""Which ``__consumer_offsets`` partition holds a group.

Kafka places a group with ``Utils.abs(groupId.hashCode()) % partitions``:
Java's ``String.hashCode`` (31-polynomial over UTF-16 code units, wrapping at
32 bits) and Kafka's own ``abs``, which maps ``Integer.MIN_VALUE`` to 0
instead of leaving it negative.  Clients never compute this themselves, but
tools that read the topic do, and a log written here must keep each group
where Kafka would look for it.
"""

from __future__ import annotations

_MASK = 0xFFFFFFFF
_SIGN = 0x80000000
INT_MIN = -(1 << 31)


def java_string_hashcode(s: str) -> int:
    """``s.hashCode()`` as Java computes it (a signed 32-bit int)."""
    h = 0
    data = s.encode("utf-16-be", "surrogatepass")
    for i in range(0, len(data), 2):
        h = (31 * h + (data[i] << 8 | data[i + 1])) & _MASK
    return h - (1 << 32) if h & _SIGN else h


def kafka_abs(n: int) -> int:
    """Kafka's ``Utils.abs``: like ``Math.abs`` but ``Integer.MIN_VALUE`` gives 0."""
    return 0 if n == INT_MIN else abs(n)


def partition_for(group_id: str, num_partitions: int) -> int:
    """The ``__consumer_offsets`` partition that owns ``group_id``."""
    return kafka_abs(java_string_hashcode(group_id)) % num_partitions
