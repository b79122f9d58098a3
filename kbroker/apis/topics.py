"""CreateTopics, DeleteTopics, CreatePartitions: admin requests decided by the controller."""

import uuid

from protocol import ApiKey, ErrorCode

from . import handles

ZERO_UUID = uuid.UUID(int=0)


@handles(ApiKey.CREATE_TOPICS)
async def create_topics(broker, header, body):
    names = [t.name for t in body.topics]
    dupes = {n for n in names if names.count(n) > 1}
    specs = [
        {
            "name": t.name,
            "num_partitions": t.num_partitions,
            "replication_factor": t.replication_factor,
            "assignments": {a.partition_index: list(a.broker_ids) for a in t.assignments} or None,
            "configs": {c.name: c.value for c in t.configs},
        }
        for t in body.topics
        if t.name not in dupes
    ]
    created = iter(await broker.create_topics(specs, validate_only=body.validate_only))
    results = []
    for name in names:
        if name in dupes:
            results.append(
                {"name": name, "error_code": ErrorCode.INVALID_REQUEST,
                 "error_message": f"Create topics request from client `{header.client_id}` contains multiple entries for the following topics: {name}",
                 "num_partitions": -1, "replication_factor": -1, "configs": None}
            )
            continue
        r = next(created)
        entry = {
            "name": r.name,
            "topic_id": r.topic_id if not body.validate_only else ZERO_UUID,
            "error_code": r.error,
            "error_message": r.message,
            "num_partitions": r.num_partitions,
            "replication_factor": r.replication_factor,
            "configs": None,
        }
        if r.error == ErrorCode.NONE:
            cfg = broker.log_config_for(r.name) if not body.validate_only else None
            entry["configs"] = [
                {"name": k, "value": v, "read_only": False, "config_source": 1 if k in r.configs else 5, "is_sensitive": False}
                for k, v in sorted((cfg.to_topic_configs() if cfg else r.configs).items())
            ]
        results.append(entry)
    return {"throttle_time_ms": 0, "topics": results}


@handles(ApiKey.DELETE_TOPICS)
async def delete_topics(broker, header, body):
    requested = []
    if header.api_version >= 6:
        requested = [(t.name, t.topic_id if t.name is None else None) for t in body.topics]
    else:
        requested = [(n, None) for n in body.topic_names]
    responses, records = [], []
    removing = set()
    for name, tid in requested:
        if name is not None and tid is None and not broker.config["delete.topic.enable"]:
            responses.append({"name": name, "topic_id": ZERO_UUID, "error_code": ErrorCode.TOPIC_DELETION_DISABLED,
                              "error_message": "Topic deletion is disabled."})
            continue
        recs, code, msg, rname, rid = broker.controller.delete_topic(name=name, topic_id=tid)
        if code == ErrorCode.NONE and rid in removing:
            recs = []
        if code == ErrorCode.NONE and rname in ("__consumer_offsets", "__transaction_state"):
            recs, code, msg = [], ErrorCode.TOPIC_AUTHORIZATION_FAILED, "Internal topics cannot be deleted."
        removing.add(rid)
        records.extend(recs)
        responses.append({"name": rname, "topic_id": rid or ZERO_UUID, "error_code": code, "error_message": msg})
    await broker.submit(records)
    return {"throttle_time_ms": 0, "responses": responses}


@handles(ApiKey.CREATE_PARTITIONS)
async def create_partitions(broker, header, body):
    results, records = [], []
    seen = set()
    for t in body.topics:
        if t.name in seen:
            results.append({"name": t.name, "error_code": ErrorCode.INVALID_REQUEST, "error_message": "Duplicate topic in request."})
            continue
        seen.add(t.name)
        assignments = [list(a.broker_ids) for a in t.assignments] if t.assignments is not None else None
        recs, code, msg = broker.controller.create_partitions(t.name, t.count, assignments)
        if code == ErrorCode.NONE:
            records.extend(recs)
        results.append({"name": t.name, "error_code": code, "error_message": msg})
    if not body.validate_only:
        await broker.submit(records)
    return {"throttle_time_ms": 0, "results": results}
