"""Consumer groups: FindCoordinator, the classic group protocol, offsets, group admin.

This broker coordinates every group (and, later, no transactions yet).  The
handlers translate between wire versions and the version-free requests of
:mod:`kbroker.group.state`; the group coordinator does the rest.  Answers
that depend on the version:

* JoinGroup v4+ requires a member id (KIP-394); v0 has no rebalance
  timeout, so the session timeout stands in; before v7 the protocol name is
  not nullable.
* LeaveGroup before v3 names one member and reports its error at the top.
* OffsetCommit/OffsetFetch v10 name topics by id.
* OffsetFetch v8+ batches groups; older versions have a top-level error
  (v2+) and name one group.
* DescribeGroups v6 reports unknown groups as GROUP_ID_NOT_FOUND.

KIP-848 (ConsumerGroupHeartbeat, ConsumerGroupDescribe) is registered only
when :data:`SERVE_CONSUMER_PROTOCOL` is set.
"""

from __future__ import annotations

import uuid

from protocol import ApiKey, ErrorCode

from ..group.state import (
    CommitPartition,
    ConsumerHeartbeatRequest,
    CommitRequest,
    HeartbeatRequest,
    JoinRequest,
    LeaveMember,
    LeaveRequest,
    SyncRequest,
)
from . import client_host, endpoint_of, handles

ZERO_UUID = uuid.UUID(int=0)
INT_MIN = -(1 << 31)
GROUP_KEY = 0
TRANSACTION_KEY = 1
# ACL operations a group supports: READ (3), DELETE (6), DESCRIBE (8).
GROUP_AUTHORIZED_OPERATIONS = (1 << 3) | (1 << 6) | (1 << 8)
# Serve the KIP-848 consumer group protocol (group.protocol=consumer).
SERVE_CONSUMER_PROTOCOL = True


# ============================================================ FindCoordinator


def _endpoint(broker):
    me = broker.image.brokers.get(broker.node_id)
    e = endpoint_of(me) if me is not None else None
    if e is not None:
        return e.host, e.port
    listeners = broker.config.advertised_listeners
    return listeners[0].host, listeners[0].port


async def _find_one(broker, key: str, key_type: int) -> dict:
    entry = {"key": key, "node_id": -1, "host": "", "port": -1, "error_code": ErrorCode.NONE, "error_message": None}
    if key_type == GROUP_KEY:
        err = await broker.groups.ensure_topic()
        if err:
            entry.update(error_code=err, error_message="The coordinator is not available.")
        elif broker.quorum is not None:
            # A cluster: the leader of the group's __consumer_offsets partition.
            node = broker.groups.coordinator_of(key)
            reg = broker.image.brokers.get(node) if node is not None else None
            e = endpoint_of(reg) if reg is not None and not reg.fenced else None
            if e is None:
                entry.update(error_code=ErrorCode.COORDINATOR_NOT_AVAILABLE,
                             error_message="The coordinator is not available.")
            else:
                entry.update(node_id=node, host=e.host, port=e.port)
        else:
            host, port = _endpoint(broker)
            entry.update(node_id=broker.node_id, host=host, port=port)
    elif key_type == TRANSACTION_KEY:
        # Not retriable on purpose: a transactional producer fails at once with
        # this message instead of retrying until its timeout.
        entry.update(error_code=ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
                     error_message="kbroker does not support transactions yet.")
    else:
        entry.update(error_code=ErrorCode.INVALID_REQUEST, error_message=f"Unknown coordinator key type {key_type}.")
    return entry


@handles(ApiKey.FIND_COORDINATOR)
async def find_coordinator(broker, header, body):
    v = header.api_version
    key_type = body.key_type if v >= 1 else GROUP_KEY
    if v >= 4:
        entries = [await _find_one(broker, k, key_type) for k in body.coordinator_keys]
        return {"throttle_time_ms": 0, "coordinators": entries}
    e = await _find_one(broker, body.key, key_type)
    return {
        "throttle_time_ms": 0,
        "error_code": e["error_code"],
        "error_message": e["error_message"],
        "node_id": e["node_id"],
        "host": e["host"],
        "port": e["port"],
    }


# ============================================================ membership


def _join_response(resp: dict, v: int) -> dict:
    out = dict(resp)
    out["throttle_time_ms"] = 0
    if v < 7 and out.get("protocol_name") is None:
        out["protocol_name"] = ""
    if out.get("leader") is None:
        out["leader"] = ""
    return out


@handles(ApiKey.JOIN_GROUP)
async def join_group(broker, header, body):
    v = header.api_version
    coord = broker.groups
    err = await coord.ensure_topic()
    if err:
        return _join_response({"error_code": err, "generation_id": -1, "protocol_name": None, "leader": "",
                               "member_id": body.member_id, "members": []}, v)
    rebalance_timeout = body.rebalance_timeout_ms if v >= 1 else body.session_timeout_ms
    req = JoinRequest(
        group_id=body.group_id,
        member_id=body.member_id,
        group_instance_id=body.group_instance_id if v >= 5 else None,
        protocol_type=body.protocol_type,
        protocols=[(p.name, bytes(p.metadata)) for p in body.protocols],
        session_timeout_ms=body.session_timeout_ms,
        rebalance_timeout_ms=rebalance_timeout,
        client_id=header.client_id or "",
        client_host=client_host(),
        version=v,
        reason=body.reason if v >= 8 else None,
    )
    return _join_response(await coord.join(req), v)


@handles(ApiKey.SYNC_GROUP)
async def sync_group(broker, header, body):
    v = header.api_version
    coord = broker.groups
    err = await coord.ensure_topic()
    if err:
        return {"throttle_time_ms": 0, "error_code": err, "assignment": b""}
    req = SyncRequest(
        group_id=body.group_id,
        generation_id=body.generation_id,
        member_id=body.member_id,
        group_instance_id=body.group_instance_id if v >= 3 else None,
        protocol_type=body.protocol_type if v >= 5 else None,
        protocol_name=body.protocol_name if v >= 5 else None,
        assignments={a.member_id: bytes(a.assignment) for a in body.assignments},
    )
    resp = await coord.sync(req)
    return {"throttle_time_ms": 0, **resp}


@handles(ApiKey.HEARTBEAT)
async def heartbeat(broker, header, body):
    v = header.api_version
    req = HeartbeatRequest(body.group_id, body.generation_id, body.member_id,
                           body.group_instance_id if v >= 3 else None)
    resp = await broker.groups.heartbeat(req)
    return {"throttle_time_ms": 0, "error_code": resp["error_code"]}


@handles(ApiKey.LEAVE_GROUP)
async def leave_group(broker, header, body):
    v = header.api_version
    coord = broker.groups
    err = await coord.ensure_topic()
    if v >= 3:
        members = [LeaveMember(m.member_id, m.group_instance_id, m.reason if v >= 5 else None) for m in body.members]
    else:
        members = [LeaveMember(body.member_id)]
    if err:
        resp = {"error_code": err, "members": []}
    else:
        resp = await coord.leave(LeaveRequest(body.group_id, members))
    if v >= 3:
        return {"throttle_time_ms": 0, "error_code": resp["error_code"], "members": resp["members"]}
    code = resp["error_code"]
    if not code:
        code = next((m["error_code"] for m in resp["members"] if m["error_code"]), ErrorCode.NONE)
    return {"throttle_time_ms": 0, "error_code": code}


# ============================================================ offsets


def _resolve_topic(broker, name, topic_id, by_id: bool):
    """(name or None, error for unknown topics)."""
    if by_id:
        t = broker.image.topics_by_id.get(topic_id)
        return (t.name if t else None), ErrorCode.UNKNOWN_TOPIC_ID
    t = broker.image.topics.get(name)
    return (t.name if t else None), ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


@handles(ApiKey.OFFSET_COMMIT)
async def offset_commit(broker, header, body):
    v = header.api_version
    by_id = v >= 10
    coord = broker.groups
    # Per request topic: (wire name, topic id, resolved name, [(partition, error or None)])
    plan = []
    to_commit: dict[str, list] = {}
    for t in body.topics:
        name, missing = _resolve_topic(broker, t.name, t.topic_id, by_id)
        image_topic = broker.image.topics.get(name) if name else None
        rows = []
        for p in t.partitions:
            if image_topic is None:  # like Kafka, only the topic is checked, not the partition index
                rows.append((p.partition_index, missing))
                continue
            rows.append((p.partition_index, None))
            to_commit.setdefault(name, []).append(
                CommitPartition(p.partition_index, p.committed_offset,
                                p.committed_leader_epoch if v >= 6 else -1, p.committed_metadata)
            )
        plan.append((t.name, t.topic_id, name, rows))
    answer: dict = {}
    if to_commit:
        err = await coord.ensure_topic()
        if err:
            answer = {n: {p.partition: err for p in parts} for n, parts in to_commit.items()}
        else:
            req = CommitRequest(
                group_id=body.group_id,
                topics=to_commit,
                generation_id=body.generation_id_or_member_epoch,
                member_id=body.member_id,
                group_instance_id=body.group_instance_id if v >= 7 else None,
                retention_time_ms=body.retention_time_ms if 2 <= v <= 4 else -1,
                version=v,
            )
            answer = await coord.commit_offsets(req)
    topics = []
    for wire_name, topic_id, name, rows in plan:
        parts = []
        for partition, error in rows:
            code = error if error is not None else answer.get(name, {}).get(partition, ErrorCode.UNKNOWN_SERVER_ERROR)
            parts.append({"partition_index": partition, "error_code": code})
        topics.append({"name": wire_name, "topic_id": topic_id, "partitions": parts})
    return {"throttle_time_ms": 0, "topics": topics}


async def _fetch_group(broker, coord, group_id, topics, by_id: bool, require_stable: bool,
                       member_id=None, member_epoch=-1) -> tuple[int, list]:
    """(group error, [{name, topic_id, partitions: [...]}]) for one group."""
    if topics is None:
        err, rows = await coord.fetch_offsets(group_id, None, require_stable=require_stable,
                                              member_id=member_id, member_epoch=member_epoch)
        out = []
        for name, parts in rows:
            t = broker.image.topics.get(name)
            if by_id and t is None:
                continue  # a deleted topic has no id to report
            out.append({"name": name, "topic_id": t.topic_id if t else ZERO_UUID, "partitions": parts})
        return err, out
    wanted = []
    unknown = []
    for t in topics:
        if by_id:
            image_topic = broker.image.topics_by_id.get(t.topic_id)
            if image_topic is None:
                unknown.append(t)
                continue
            wanted.append((image_topic.name, list(t.partition_indexes), t.topic_id))
        else:
            image_topic = broker.image.topics.get(t.name)
            wanted.append((t.name, list(t.partition_indexes), image_topic.topic_id if image_topic else ZERO_UUID))
    err, rows = await coord.fetch_offsets(group_id, [(n, ps) for n, ps, _ in wanted],
                                          require_stable=require_stable, member_id=member_id,
                                          member_epoch=member_epoch)
    out = []
    ids = {n: tid for n, _, tid in wanted}
    for name, parts in rows:
        out.append({"name": name, "topic_id": ids.get(name, ZERO_UUID), "partitions": parts})
    for t in unknown:
        out.append({
            "name": "", "topic_id": t.topic_id,
            "partitions": [(p, -1, -1, "", ErrorCode.UNKNOWN_TOPIC_ID) for p in t.partition_indexes],
        })
    return err, out


def _partition_rows(parts):
    return [
        {"partition_index": p, "committed_offset": off, "committed_leader_epoch": epoch, "metadata": meta,
         "error_code": code}
        for p, off, epoch, meta, code in parts
    ]


@handles(ApiKey.OFFSET_FETCH)
async def offset_fetch(broker, header, body):
    v = header.api_version
    coord = broker.groups
    require_stable = bool(body.require_stable) if v >= 7 else False
    if v >= 8:
        groups = []
        for g in body.groups:
            err, topics = await _fetch_group(
                broker, coord, g.group_id, g.topics, v >= 10, require_stable,
                g.member_id if v >= 9 else None, g.member_epoch if v >= 9 else -1,
            )
            groups.append({
                "group_id": g.group_id,
                "error_code": err,
                "topics": [{"name": t["name"], "topic_id": t["topic_id"], "partitions": _partition_rows(t["partitions"])}
                           for t in topics],
            })
        return {"throttle_time_ms": 0, "groups": groups}
    err, topics = await _fetch_group(broker, coord, body.group_id, body.topics, False, require_stable)
    return {
        "throttle_time_ms": 0,
        "error_code": err,
        "topics": [{"name": t["name"], "partitions": _partition_rows(t["partitions"])} for t in topics],
    }


@handles(ApiKey.OFFSET_DELETE)
async def offset_delete(broker, header, body):
    coord = broker.groups
    requested = []
    unknown = {}
    for t in body.topics:
        parts = [p.partition_index for p in t.partitions]
        if t.name not in broker.image.topics:
            unknown[t.name] = parts
        else:
            requested.append((t.name, parts))
    err = await coord.ensure_topic()
    if err:
        return {"error_code": err, "throttle_time_ms": 0, "topics": []}
    err, answer = await coord.delete_offsets(body.group_id, requested)
    if err:
        return {"error_code": err, "throttle_time_ms": 0, "topics": []}
    topics = []
    for t in body.topics:
        if t.name in unknown:
            codes = {p: ErrorCode.UNKNOWN_TOPIC_OR_PARTITION for p in unknown[t.name]}
        else:
            codes = answer.get(t.name, {})
        topics.append({
            "name": t.name,
            "partitions": [{"partition_index": p.partition_index, "error_code": codes.get(p.partition_index, 0)}
                           for p in t.partitions],
        })
    return {"error_code": ErrorCode.NONE, "throttle_time_ms": 0, "topics": topics}


# ============================================================ admin


@handles(ApiKey.LIST_GROUPS)
async def list_groups(broker, header, body):
    v = header.api_version
    states = list(body.states_filter) if v >= 4 else []
    types = list(body.types_filter) if v >= 5 else []
    groups = await broker.groups.list_groups(states, types)
    return {"throttle_time_ms": 0, "error_code": ErrorCode.NONE, "groups": groups}


@handles(ApiKey.DESCRIBE_GROUPS)
async def describe_groups(broker, header, body):
    v = header.api_version
    coord = broker.groups
    ops = GROUP_AUTHORIZED_OPERATIONS if v >= 3 and body.include_authorized_operations else INT_MIN
    out = []
    for gid in body.groups:
        d = await coord.describe_group(gid)
        if d is None:
            d = {"error_code": ErrorCode.NONE, "group_id": gid, "group_state": "Dead", "protocol_type": "",
                 "protocol_data": "", "members": []}
            if v >= 6:
                d["error_code"] = ErrorCode.GROUP_ID_NOT_FOUND
                d["error_message"] = f"Group {gid} not found."
        d["authorized_operations"] = ops
        out.append(d)
    return {"throttle_time_ms": 0, "groups": out}


@handles(ApiKey.DELETE_GROUPS)
async def delete_groups(broker, header, body):
    coord = broker.groups
    err = await coord.ensure_topic()
    if err:
        return {"throttle_time_ms": 0, "results": [{"group_id": g, "error_code": err} for g in body.groups_names]}
    answers = await coord.delete_groups(list(body.groups_names))
    return {"throttle_time_ms": 0, "results": [{"group_id": g, "error_code": e} for g, e in answers]}


# ============================================================ KIP-848


async def consumer_group_heartbeat(broker, header, body):
    v = header.api_version
    coord = broker.groups
    err = await coord.ensure_topic()
    if err:
        return {"throttle_time_ms": 0, "error_code": err, "error_message": None, "member_id": None,
                "member_epoch": -1, "heartbeat_interval_ms": 0, "assignment": None}
    req = ConsumerHeartbeatRequest(
        group_id=body.group_id,
        member_id=body.member_id,
        member_epoch=body.member_epoch,
        instance_id=body.instance_id,
        rack_id=body.rack_id,
        rebalance_timeout_ms=body.rebalance_timeout_ms,
        subscribed_topic_names=None if body.subscribed_topic_names is None else list(body.subscribed_topic_names),
        subscribed_topic_regex=body.subscribed_topic_regex if v >= 1 else None,
        server_assignor=body.server_assignor,
        owned=None if body.topic_partitions is None else [
            (tp.topic_id, list(tp.partitions)) for tp in body.topic_partitions],
        client_id=header.client_id or "",
        client_host=client_host(),
        version=v,
    )
    resp = await coord.consumer_heartbeat(req)
    return {"throttle_time_ms": 0, **resp}


async def consumer_group_describe(broker, header, body):
    coord = broker.groups
    ops = GROUP_AUTHORIZED_OPERATIONS if body.include_authorized_operations else INT_MIN
    out = []
    for gid in body.group_ids:
        d = await coord.consumer_group_describe(gid)
        if d is None:
            known = gid in coord.state.groups
            d = {"error_code": ErrorCode.GROUP_ID_NOT_FOUND,
                 "error_message": f"Group {gid} is not a consumer group." if known else f"Group {gid} not found.",
                 "group_id": gid, "group_state": "Dead", "group_epoch": -1, "assignment_epoch": -1,
                 "assignor_name": "", "members": []}
        d["authorized_operations"] = ops
        out.append(d)
    return {"throttle_time_ms": 0, "groups": out}


if SERVE_CONSUMER_PROTOCOL:
    handles(ApiKey.CONSUMER_GROUP_HEARTBEAT)(consumer_group_heartbeat)
    handles(ApiKey.CONSUMER_GROUP_DESCRIBE)(consumer_group_describe)
