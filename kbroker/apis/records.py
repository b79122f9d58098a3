"""DeleteRecords: move a partition's log start offset forward.

Per partition the offset is the new log start offset, -1 meaning the high
watermark.  Whole segments below it are removed; the records left below it
in the first remaining segment are no longer served (Fetch and ListOffsets
go by the log start offset).  The answer's ``low_watermark`` is the new log
start offset.  Offsets are never reused: the log end offset does not move.

The new start is made durable (checkpoint written and fsynced) before it is
applied or answered, and that fsync, like unlinking the retired segment
files, runs in a worker thread: DeleteRecords over many partitions must not
stall other clients.
"""

import trio

from protocol import ApiKey, ErrorCode

from ..log.errors import LogError, OffsetOutOfRange
from . import handles

HIGH_WATERMARK = -1
INTERNAL_TOPICS = frozenset({"__consumer_offsets", "__transaction_state", "__share_group_state"})


async def delete_records(broker, topic: str, index: int, offset: int) -> tuple[ErrorCode, int]:
    """(error, low watermark) for one partition."""
    t = broker.image.topics.get(topic)
    if t is not None and index in t.partitions and topic in INTERNAL_TOPICS:
        return ErrorCode.INVALID_TOPIC_EXCEPTION, -1
    part, err = broker.leader_partition(t, index)
    if part is None:
        return err, -1
    if not part.log.config.delete:
        # cleanup.policy=compact only: records are removed by compaction alone.
        return ErrorCode.POLICY_VIOLATION, -1
    hw = part.high_watermark
    target = hw if offset == HIGH_WATERMARK else offset
    if target < 0 or target > hw:
        return ErrorCode.OFFSET_OUT_OF_RANGE, -1
    log = part.log
    try:
        prepared = log.prepare_delete_records(target)
        if prepared is None:
            return ErrorCode.NONE, log.log_start_offset
        generation = log.generation
        try:
            await trio.to_thread.run_sync(log.persist_log_start_offset, prepared, generation)
        except OSError as e:
            raise log.storage_error("log start offset checkpoint", e) from e
        low = log.commit_delete_records(prepared, generation, defer=True)
        if log.pending_file_deletions:
            await trio.to_thread.run_sync(log.purge_deleted_files)
    except OffsetOutOfRange:
        return ErrorCode.OFFSET_OUT_OF_RANGE, -1
    except LogError as e:
        return ErrorCode(e.error_code), -1
    return ErrorCode.NONE, low


@handles(ApiKey.DELETE_RECORDS)
async def handle(broker, header, body):
    topics = []
    for t in body.topics:
        parts = []
        for p in t.partitions:
            err, low = await delete_records(broker, t.name, p.partition_index, p.offset)
            parts.append({"partition_index": p.partition_index, "low_watermark": low, "error_code": err})
        topics.append({"name": t.name, "partitions": parts})
    return {"throttle_time_ms": 0, "topics": topics}
