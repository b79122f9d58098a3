"""Produce: validate each partition's record batches by header and CRC, append, answer.

No per-record work: batches stay the bytes the client sent, with only their
base offset and leader epoch patched in place (and the timestamp for
LogAppendTime topics).  acks=0 gets no answer at all; with one replica,
acks=all is satisfied as soon as the leader has appended.
"""

import uuid

from protocol import ApiKey, ErrorCode

from . import handles

ZERO_UUID = uuid.UUID(int=0)


@handles(ApiKey.PRODUCE)
async def handle(broker, header, body):
    if body.acks not in (-1, 0, 1):
        code = ErrorCode.INVALID_REQUIRED_ACKS
        return _all_failed(body, code)
    now = broker.now_ms()
    responses = []
    for topic in body.topic_data:
        if topic.topic_id != ZERO_UUID:
            t = broker.image.topics_by_id.get(topic.topic_id)
            missing = ErrorCode.UNKNOWN_TOPIC_ID
        else:
            t = broker.image.topics.get(topic.name)
            missing = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        cfg = broker.log_config_for(t.name) if t is not None else None
        parts = []
        for pd in topic.partition_data:
            entry = {"index": pd.index, "error_code": 0, "base_offset": -1, "log_append_time_ms": -1,
                     "log_start_offset": -1, "record_errors": [], "error_message": None}
            part = broker.partition(t.name, pd.index) if t is not None else None
            if t is None or pd.index not in t.partitions:
                entry["error_code"] = missing if t is None else ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            elif part is None or t.partitions[pd.index].leader != broker.node_id:
                entry["error_code"] = ErrorCode.NOT_LEADER_OR_FOLLOWER
            elif t.is_internal and not header.client_id == "__kbroker_internal":
                entry["error_code"] = ErrorCode.INVALID_TOPIC_EXCEPTION
            else:
                res = part.append_records(pd.records, cfg, now)
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
