"""CreateTopics, DeleteTopics, CreatePartitions: admin requests decided by the controller.

Each request is one controller operation: Kafka's limit of 10,000 metadata
records per operation applies to the request as a whole, and a request over
it is refused for every topic with POLICY_VIOLATION (also with
``validate_only``).  Every per-request loop here is linear in the request:
a request may legally name tens of thousands of topics.
"""

import uuid
from collections import Counter

from protocol import ApiKey, ErrorCode

from ..controller.controller import (
    MAX_PARTITIONS_PER_BATCH,
    MAX_RECORDS_PER_USER_OP,
    TOO_MANY_PARTITIONS,
    TOO_MANY_RECORDS,
    requested_partitions,
)
from ..metadata.errors import MetadataWriteFailed
from . import handles

ZERO_UUID = uuid.UUID(int=0)


@handles(ApiKey.CREATE_TOPICS)
async def create_topics(broker, header, body):
    names = [t.name for t in body.topics]
    dupes = {n for n, k in Counter(names).items() if k > 1}
    if _partitions_asked(broker, body) > MAX_PARTITIONS_PER_BATCH:
        # Refused whole before anything is built per topic: a request naming
        # 40,000 topics would otherwise cost a second of the trio thread.
        return {"throttle_time_ms": 0, "topics": [
            _refused(header, name) if name in dupes else
            {"name": name, "error_code": ErrorCode.POLICY_VIOLATION, "error_message": TOO_MANY_PARTITIONS,
             "num_partitions": -1, "replication_factor": -1, "configs": None}
            for name in names
        ]}
    specs = [
        {
            "name": t.name,
            "num_partitions": t.num_partitions,
            "replication_factor": t.replication_factor,
            "assignments": [(a.partition_index, list(a.broker_ids)) for a in t.assignments] or None,
            "configs": {c.name: c.value for c in t.configs},
        }
        for t in body.topics
        if t.name not in dupes
    ]
    created = iter(await broker.create_topics(specs, validate_only=body.validate_only))
    results = []
    for name in names:
        if name in dupes:
            results.append(_refused(header, name))
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


def _partitions_asked(broker, body) -> int:
    """Kafka's upper-bound count of the partitions a CreateTopics asks for
    (see :func:`requested_partitions`), read straight off the request."""
    default = broker.controller.defaults["num.partitions"]
    return sum(requested_partitions(t.num_partitions, len(t.assignments), default) for t in body.topics)


def _refused(header, name):
    return {"name": name, "error_code": ErrorCode.INVALID_REQUEST,
            "error_message": f"Create topics request from client `{header.client_id}` contains multiple entries for the following topics: {name}",
            "num_partitions": -1, "replication_factor": -1, "configs": None}


@handles(ApiKey.DELETE_TOPICS)
async def delete_topics(broker, header, body):
    if header.api_version >= 6:
        requested = [(t.name, t.topic_id if t.name is None else None) for t in body.topics]
    else:
        requested = [(n, None) for n in body.topic_names]
    responses: list[dict] = []

    def decide():
        # Under the metadata lock (see Broker.submit): decided from the image as it is.
        responses.clear()
        records, removing = [], set()
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
        if len(records) > MAX_RECORDS_PER_USER_OP:
            # The controller operation fails as a whole, so every topic reports it.
            for r in responses:
                r["error_code"], r["error_message"] = ErrorCode.POLICY_VIOLATION, TOO_MANY_RECORDS
            return []
        return records

    try:
        await broker.submit(decide)
    except MetadataWriteFailed as e:
        _storage_error(responses, e)
    return {"throttle_time_ms": 0, "responses": responses}


@handles(ApiKey.CREATE_PARTITIONS)
async def create_partitions(broker, header, body):
    results: list[dict | None] = []
    wanted, where = [], []
    # As in Kafka, a topic named twice is refused in every entry, not handled once.
    dupes = {n for n, k in Counter(t.name for t in body.topics).items() if k > 1}
    for t in body.topics:
        if t.name in dupes:
            results.append({"name": t.name, "error_code": ErrorCode.INVALID_REQUEST, "error_message": "Duplicate topic in request."})
            continue
        assignments = [list(a.broker_ids) for a in t.assignments] if t.assignments is not None else None
        where.append(len(results))
        results.append(None)
        wanted.append((t.name, t.count, assignments))
    def decide():
        # Under the metadata lock (see Broker.submit): counts checked against the image as it is.
        records, outcomes = broker.controller.create_partitions(wanted)
        for i, (name, _count, _a), (code, msg) in zip(where, wanted, outcomes):
            results[i] = {"name": name, "error_code": code, "error_message": msg}
        return [] if body.validate_only else records

    if body.validate_only:
        decide()
    else:
        try:
            await broker.submit(decide)
        except MetadataWriteFailed as e:
            _storage_error([r for r in results if r is not None], e)
    return {"throttle_time_ms": 0, "results": results}


def _storage_error(entries: list[dict], e: Exception) -> None:
    """Nothing was applied: what would have succeeded reports the storage error."""
    for r in entries:
        if r["error_code"] == ErrorCode.NONE:
            r["error_code"], r["error_message"] = ErrorCode.KAFKA_STORAGE_ERROR, str(e)
