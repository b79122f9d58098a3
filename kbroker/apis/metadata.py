"""Metadata: brokers, topics and partition leaders, from the metadata image.

Any broker answers for the whole cluster, so clients can bootstrap from any
of them.  Topics asked for by name are auto-created when both the broker
(``auto.create.topics.enable``) and the request (v4+) allow it.
"""

import uuid

from protocol import ApiKey, ErrorCode

from ..controller.controller import topic_name_error
from . import endpoint_of, handles

ZERO_UUID = uuid.UUID(int=0)


def broker_list(broker):
    out = []
    for b in sorted(broker.image.live_brokers(), key=lambda b: b.broker_id):
        e = endpoint_of(b)
        if e is None:
            continue
        out.append({"node_id": b.broker_id, "host": e.host, "port": e.port, "rack": b.rack})
    return out


def topic_entry(t, error=ErrorCode.NONE):
    parts = []
    for p in sorted(t.partitions.values(), key=lambda p: p.partition_id):
        parts.append(
            {
                "error_code": ErrorCode.NONE if p.leader >= 0 else ErrorCode.LEADER_NOT_AVAILABLE,
                "partition_index": p.partition_id,
                "leader_id": p.leader,
                "leader_epoch": p.leader_epoch,
                "replica_nodes": p.replicas,
                "isr_nodes": p.isr,
                "offline_replicas": [],
            }
        )
    return {
        "error_code": error,
        "name": t.name,
        "topic_id": t.topic_id,
        "is_internal": t.name in ("__consumer_offsets", "__transaction_state", "__share_group_state"),
        "partitions": parts,
    }


@handles(ApiKey.METADATA)
async def handle(broker, header, body):
    image = broker.image
    topics = []
    if body.topics is None:
        topics = [topic_entry(t) for t in image.topics.values()]
    else:
        to_create = []
        for req in body.topics:
            name = req.name
            if name is None and req.topic_id != ZERO_UUID:
                t = image.topics_by_id.get(req.topic_id)
                if t is None:
                    topics.append({"error_code": ErrorCode.UNKNOWN_TOPIC_ID, "name": None, "topic_id": req.topic_id,
                                   "partitions": []})
                else:
                    topics.append(topic_entry(t))
                continue
            t = image.topics.get(name)
            if t is not None:
                topics.append(topic_entry(t))
                continue
            err = topic_name_error(name or "")
            if err:
                topics.append({"error_code": ErrorCode.INVALID_TOPIC_EXCEPTION, "name": name, "partitions": []})
            elif body.allow_auto_topic_creation and broker.config["auto.create.topics.enable"] and not name.startswith("__"):
                to_create.append(name)
                topics.append(name)
            else:
                topics.append({"error_code": ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, "name": name, "partitions": []})
        if to_create:
            results = await broker.create_topics([{"name": n} for n in dict.fromkeys(to_create)])
            errors = {r.name: r for r in results}
            for i, item in enumerate(topics):
                if isinstance(item, str):
                    t = image.topics.get(item)
                    if t is not None:
                        topics[i] = topic_entry(t)
                    else:
                        r = errors.get(item)
                        code = r.error if r is not None and r.error != ErrorCode.TOPIC_ALREADY_EXISTS else ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                        topics[i] = {"error_code": code, "name": item, "partitions": []}
    return {
        "throttle_time_ms": 0,
        "brokers": broker_list(broker),
        "cluster_id": broker.cluster_id,
        "controller_id": broker.node_id,
        "topics": topics,
        "cluster_authorized_operations": -2147483648,
    }
