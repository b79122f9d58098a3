"""Produce: validate each partition's record batches by header and CRC, append, answer.

No per-record work: batches stay the bytes the client sent, with only their
base offset and leader epoch patched in place (and the timestamp for
LogAppendTime topics).  The one exception, the key check of compacted
topics, runs in a worker thread for large batches (see :mod:`kbroker.partition`).
acks=0 gets no answer at all; with one replica, acks=all is satisfied as soon
as the leader has appended.  A write that fails on disk is answered
KAFKA_STORAGE_ERROR for that partition (its log dir is then offline); the
other partitions of the request and the connection carry on.
"""

from protocol import ApiKey, ErrorCode

from . import handles


@handles(ApiKey.PRODUCE)
async def handle(broker, header, body):
    if body.acks not in (-1, 0, 1):
        code = ErrorCode.INVALID_REQUIRED_ACKS
        return _all_failed(body, code)
    now = broker.now_ms()
    responses = []
    for topic in body.topic_data:
        t, missing = broker.resolve_topic(topic.name, topic.topic_id)
        cfg = broker.log_config_for(t.name) if t is not None else None
        parts = []
        for pd in topic.partition_data:
            entry = {"index": pd.index, "error_code": 0, "base_offset": -1, "log_append_time_ms": -1,
                     "log_start_offset": -1, "record_errors": [], "error_message": None}
            part, err = broker.leader_partition(t, pd.index, missing=missing)
            if part is None:
                entry["error_code"] = err
            elif t.is_internal:
                # Internal topics are written by their coordinators only.
                entry["error_code"] = ErrorCode.INVALID_TOPIC_EXCEPTION
            else:
                res = await part.produce(pd.records, cfg, now)
                entry.update(
                    error_code=res.error,
                    base_offset=res.base_offset,
                    log_append_time_ms=res.log_append_time,
                    log_start_offset=res.log_start_offset,
                    error_message=res.message,
                )
            parts.append(entry)
        responses.append({"name": topic.name, "topic_id": topic.topic_id, "partition_responses": parts})
    if body.acks == 0:
        return None
    return {"responses": responses, "throttle_time_ms": 0}


def _all_failed(body, code):
    return {
        "responses": [
            {
                "name": t.name,
                "topic_id": t.topic_id,
                "partition_responses": [
                    {"index": p.index, "error_code": code, "base_offset": -1} for p in t.partition_data
                ],
            }
            for t in body.topic_data
        ],
        "throttle_time_ms": 0,
    }
