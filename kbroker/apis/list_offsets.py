"""ListOffsets: earliest, latest, by timestamp, and the record with the largest timestamp."""

from protocol import ApiKey, ErrorCode

from . import handles

LATEST = -1
EARLIEST = -2
MAX_TIMESTAMP = -3
EARLIEST_LOCAL = -4
LATEST_TIERED = -5
EARLIEST_PENDING_UPLOAD = -6


def _lookup(part, timestamp: int):
    """(error, timestamp, offset) for one partition."""
    if timestamp == LATEST:
        return ErrorCode.NONE, -1, part.high_watermark
    if timestamp in (EARLIEST, EARLIEST_LOCAL):
        return ErrorCode.NONE, -1, part.log_start_offset
    if timestamp in (LATEST_TIERED, EARLIEST_PENDING_UPLOAD):
        # No tiered storage: nothing is uploaded or pending.
        return ErrorCode.NONE, -1, -1
    if timestamp == MAX_TIMESTAMP:
        found = part.log.latest_timestamp()
    elif timestamp < 0:
        return ErrorCode.INVALID_REQUEST, -1, -1
    else:
        found = part.log.offset_for_timestamp(timestamp)
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
            part = broker.partition(topic.name, rp.partition_index) if t is not None else None
            if t is None or rp.partition_index not in t.partitions:
                entry["error_code"] = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            elif part is None or t.partitions[rp.partition_index].leader != broker.node_id:
                entry["error_code"] = ErrorCode.NOT_LEADER_OR_FOLLOWER
            elif rp.current_leader_epoch >= 0 and rp.current_leader_epoch != part.leader_epoch:
                entry["error_code"] = (
                    ErrorCode.FENCED_LEADER_EPOCH if rp.current_leader_epoch < part.leader_epoch else ErrorCode.UNKNOWN_LEADER_EPOCH
                )
            else:
                err, ts, off = _lookup(part, rp.timestamp)
                # leader_epoch exists from v4 on; older versions must leave it at its default.
                epoch = part.leader_epoch if off >= 0 and header.api_version >= 4 else -1
                entry.update(error_code=err, timestamp=ts, offset=off, leader_epoch=epoch)
            parts.append(entry)
        topics.append({"name": topic.name, "partitions": parts})
    return {"throttle_time_ms": 0, "topics": topics}
