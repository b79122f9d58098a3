"""ListOffsets: earliest, latest, by timestamp, and the record with the largest timestamp.

A lookup by timestamp is answered from batch headers when they suffice; a
batch that has to be decoded is decoded in a worker thread when it is large,
so one client's lookup on a batch of millions of records does not stall the
others (see :meth:`kbroker.partition.Partition.offset_for_timestamp`).
"""

from protocol import ApiKey, ErrorCode

from ..log.errors import LogError

from . import handles

LATEST = -1
EARLIEST = -2
MAX_TIMESTAMP = -3
EARLIEST_LOCAL = -4
LATEST_TIERED = -5
EARLIEST_PENDING_UPLOAD = -6


async def _lookup(part, timestamp: int):
    """(error, timestamp, offset) for one partition."""
    if timestamp == LATEST:
        return ErrorCode.NONE, -1, part.high_watermark
    if timestamp in (EARLIEST, EARLIEST_LOCAL):
        return ErrorCode.NONE, -1, part.log_start_offset
    if timestamp in (LATEST_TIERED, EARLIEST_PENDING_UPLOAD):
        # No tiered storage: nothing is uploaded or pending.
        return ErrorCode.NONE, -1, -1
    try:
        if timestamp == MAX_TIMESTAMP:
            found = await part.latest_timestamp()
        elif timestamp < 0:
            return ErrorCode.INVALID_REQUEST, -1, -1
        else:
            found = await part.offset_for_timestamp(timestamp)
    except LogError as e:
        return ErrorCode(e.error_code), -1, -1
    if found is None:
        return ErrorCode.NONE, -1, -1
    offset, ts = found
    if offset >= part.high_watermark:
        return ErrorCode.NONE, -1, -1
    return ErrorCode.NONE, ts, offset


@handles(ApiKey.LIST_OFFSETS)
async def handle(broker, header, body):
    topics = []
    for topic in body.topics:
        t = broker.image.topics.get(topic.name)
        parts = []
        for rp in topic.partitions:
            entry = {"partition_index": rp.partition_index, "error_code": 0, "timestamp": -1, "offset": -1, "leader_epoch": -1}
            part, err = broker.leader_partition(t, rp.partition_index, rp.current_leader_epoch)
            if part is None:
                entry["error_code"] = err
            else:
                err, ts, off = await _lookup(part, rp.timestamp)
                # leader_epoch exists from v4 on; older versions must leave it at its default.
                epoch = part.leader_epoch if off >= 0 and header.api_version >= 4 else -1
                entry.update(error_code=err, timestamp=ts, offset=off, leader_epoch=epoch)
            parts.append(entry)
        topics.append({"name": topic.name, "partitions": parts})
    return {"throttle_time_ms": 0, "topics": topics}
