"""DescribeTopicPartitions (KIP-966): topic metadata, paginated by partitions.

Topics are answered in name order.  At most ``min(response_partition_limit,
max.request.partition.size.limit=2000)`` partitions go into one response; when
a topic does not fit, the answer stops there and ``next_cursor`` names the
topic and the first partition left out, and the client asks again with it as
``cursor``.  An empty topic list means every topic (topics before the cursor
topic skipped); an explicit list must then contain the cursor topic.
Unknown names are answered with UNKNOWN_TOPIC_OR_PARTITION (illegal ones
with INVALID_TOPIC_EXCEPTION) and take no room in the partition budget.

There is no authorizer, so ``topic_authorized_operations`` is every
operation Kafka supports on a topic, as Kafka answers without one.
"""

import uuid

from protocol import ApiKey, ErrorCode

from ..controller.controller import topic_name_error
from . import handles

ZERO_UUID = uuid.UUID(int=0)
MAX_PARTITIONS_PER_RESPONSE = 2000  # Kafka's max.request.partition.size.limit default
INTERNAL_TOPICS = frozenset({"__consumer_offsets", "__transaction_state", "__share_group_state"})
# READ WRITE CREATE DELETE ALTER DESCRIBE DESCRIBE_CONFIGS ALTER_CONFIGS
TOPIC_OPERATIONS = (3, 4, 5, 6, 7, 8, 10, 11)


def _ops_bitfield() -> int:
    bits = 0
    for op in TOPIC_OPERATIONS:
        bits |= 1 << op
    return bits


TOPIC_OPERATIONS_BITS = _ops_bitfield()


def _partition_entry(image, p) -> dict:
    offline = [r for r in p.replicas if r not in image.brokers or image.brokers[r].fenced]
    leader = p.leader if p.leader in image.brokers else -1
    return {
        "error_code": ErrorCode.NONE,
        "partition_index": p.partition_id,
        "leader_id": leader,
        "leader_epoch": p.leader_epoch,
        "replica_nodes": list(p.replicas),
        "isr_nodes": list(p.isr),
        "eligible_leader_replicas": [],
        "last_known_elr": [],
        "offline_replicas": offline,
    }


def describe(image, names: list[str], fetch_all: bool, cursor, limit: int) -> dict:
    topics = []
    next_cursor = None
    remaining = limit
    cursor_topic = cursor.topic_name if cursor is not None else ""
    for name in names:
        if remaining > 0:
            t = image.topics.get(name)
            if t is None:
                if not fetch_all:
                    err = (ErrorCode.INVALID_TOPIC_EXCEPTION if topic_name_error(name)
                           else ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
                    topics.append({"error_code": err, "name": name, "topic_id": ZERO_UUID,
                                   "is_internal": name in INTERNAL_TOPICS, "partitions": [],
                                   "topic_authorized_operations": TOPIC_OPERATIONS_BITS})
                continue
            count = len(t.partitions)
            start = cursor.partition_index if (cursor is not None and name == cursor_topic) else 0
            upper = min(count, start + remaining)
            parts = [_partition_entry(image, t.partitions[i]) for i in range(start, upper) if i in t.partitions]
            topics.append({"error_code": ErrorCode.NONE, "name": name, "topic_id": t.topic_id,
                           "is_internal": name in INTERNAL_TOPICS, "partitions": parts,
                           "topic_authorized_operations": TOPIC_OPERATIONS_BITS})
            if upper < count:
                next_cursor = {"topic_name": name, "partition_index": upper}
                break
            remaining -= len(parts)
        elif remaining == 0:
            next_cursor = {"topic_name": name, "partition_index": 0}
            break
    return {"throttle_time_ms": 0, "topics": topics, "next_cursor": next_cursor}


@handles(ApiKey.DESCRIBE_TOPIC_PARTITIONS)
async def handle(broker, header, body):
    image = broker.image
    cursor = body.cursor
    fetch_all = len(body.topics) == 0
    cursor_topic = cursor.topic_name if cursor is not None else ""
    if fetch_all:
        names = sorted(n for n in image.topics if n >= cursor_topic)
    else:
        names = sorted({t.name for t in body.topics if t.name >= cursor_topic})
    problem = None
    if cursor is not None and cursor.partition_index < 0:
        problem = f"Invalid cursor partition index: {cursor.partition_index}"
    elif cursor is not None and not fetch_all and cursor_topic not in names:
        problem = f"DescribeTopicPartitionsRequest topic list should contain the cursor topic: {cursor_topic}"
    if problem is not None:
        # Kafka fails the whole request; every requested topic carries the error.
        return {"throttle_time_ms": 0, "next_cursor": None,
                "topics": [{"error_code": ErrorCode.INVALID_REQUEST, "name": t.name, "topic_id": ZERO_UUID,
                            "partitions": []} for t in body.topics]}
    limit = min(MAX_PARTITIONS_PER_RESPONSE, body.response_partition_limit)
    return describe(image, names, fetch_all, cursor, limit)
