"""The controller's APIs: KRaft's Raft RPCs, DescribeQuorum, and what brokers send the active controller.

* Vote, BeginQuorumEpoch, EndQuorumEpoch, FetchSnapshot, and Fetch of
  ``__cluster_metadata`` (routed here by :mod:`kbroker.apis.fetch`): translated
  by :mod:`kbroker.raft.wire` and handed to the Raft shell, which answers
  when the state machine does (a Fetch may be held as a long poll).
* DescribeQuorum: the leader's view of voters and observers.
* BrokerRegistration, BrokerHeartbeat, AllocateProducerIds, Envelope: served
  by the active controller only; any other node answers NOT_CONTROLLER and
  the sender tries the leader it learns of next.

On a single node (no quorum) none of these are served: they are controller
RPCs, and ApiVersions advertises them only on controller listeners.
"""

from __future__ import annotations

import logging
import time

import trio

from protocol import ApiKey, ErrorCode, ProtocolError, decode_request

from ..controller.quorum import NotControllerError, as_controller, wrap_response
from ..raft import wire
from ..raft.state import ReplicaState
from ..netclient import RequestFailed
from . import FORWARDED, CloseConnection, dispatch, handles, on_controller_listener

log = logging.getLogger("kbroker.controller")

FORWARD_TIMEOUT_S = 10.0
CONTROLLER_APIS = frozenset({
    ApiKey.VOTE, ApiKey.BEGIN_QUORUM_EPOCH, ApiKey.END_QUORUM_EPOCH, ApiKey.FETCH_SNAPSHOT,
    ApiKey.DESCRIBE_QUORUM, ApiKey.BROKER_REGISTRATION, ApiKey.BROKER_HEARTBEAT, ApiKey.ALLOCATE_PRODUCER_IDS,
    ApiKey.ENVELOPE,
})


def _quorum(broker):
    if broker.quorum is None:
        raise CloseConnection("not a node of a KRaft quorum (this is a single node)")
    return broker.quorum


async def raft_rpc(broker, header, body):
    """Any of Kafka's Raft RPCs, through the shell."""
    quorum = _quorum(broker)
    try:
        request = wire.request_from_kafka(header.api_key, header.api_version, header.correlation_id, body)
    except ValueError as e:
        log.warning("refusing a malformed %s: %s", ApiKey(header.api_key).name, e)
        return wire.error_body(header.api_key, header.api_version, int(ErrorCode.INVALID_REQUEST))
    response = await quorum.shell.serve(request)
    return wire.response_to_kafka(response, header.api_version)


for _key in (ApiKey.VOTE, ApiKey.BEGIN_QUORUM_EPOCH, ApiKey.END_QUORUM_EPOCH, ApiKey.FETCH_SNAPSHOT):
    handles(_key)(raft_rpc)


@handles(ApiKey.DESCRIBE_QUORUM)
async def describe_quorum(broker, header, body):
    quorum = _quorum(broker)
    if not on_controller_listener(broker):
        # A broker listener (kafka-metadata-quorum.sh --bootstrap-server): as
        # Kafka's brokers, ask the active controller.
        try:
            return await quorum.call(ApiKey.DESCRIBE_QUORUM, header.api_version, body, timeout=FORWARD_TIMEOUT_S)
        except RequestFailed as e:
            raise CloseConnection(f"DescribeQuorum not forwarded: {e}") from None
    node = quorum.node
    part = {"partition_index": 0, "error_code": 0, "error_message": None, "leader_id": -1, "leader_epoch": node.epoch,
            "high_watermark": node.high_watermark, "current_voters": [], "observers": []}
    states = node.replica_states()
    if not states:
        part.update(error_code=ErrorCode.NOT_LEADER_OR_FOLLOWER,
                    leader_id=-1 if quorum.leader_id is None else quorum.leader_id)
    else:
        # Kafka reports wall-clock milliseconds; the shell's clock is monotonic.
        shift = time.time() * 1000 - quorum.shell_now_ms()
        part["leader_id"] = node.node_id

        def row(rid, st):
            return {"replica_id": rid, "log_end_offset": -1 if st.end_offset is None else st.end_offset,
                    "last_fetch_timestamp": _ms(st.last_fetch_ms, shift),
                    "last_caught_up_timestamp": _ms(st.last_caught_up_ms, shift)}

        me = node.node_id
        voters = sorted(quorum.voters)
        part["current_voters"] = [row(v, states.get(v, ReplicaState())) for v in voters]
        part["observers"] = [row(o, st) for o, st in sorted(states.items()) if o not in quorum.voters]
        part["current_voters"][voters.index(me)]["last_fetch_timestamp"] = int(time.time() * 1000)
        part["current_voters"][voters.index(me)]["last_caught_up_timestamp"] = int(time.time() * 1000)
    v = header.api_version
    if v < 1:  # no timestamps before v1
        for r in part["current_voters"] + part["observers"]:
            del r["last_fetch_timestamp"], r["last_caught_up_timestamp"]
    out = {"error_code": 0, "topics": [{"topic_name": wire.METADATA_TOPIC, "partitions": [part]}]}
    if v >= 2:  # the voters' endpoints (KIP-853)
        out["nodes"] = [{"node_id": n, "listeners": [{"name": _controller_listener(broker), "host": h, "port": p}]}
                        for n, (h, p) in sorted(quorum.voters.items())]
    else:
        del part["error_message"]
    return out


def _controller_listener(broker) -> str:
    names = broker.config["controller.listener.names"]
    return names[0].upper() if names else "CONTROLLER"


def _ms(value: float, shift: float) -> int:
    return -1 if value == float("-inf") else int(value + shift)


# ------------------------------------------------------------------ the active controller's RPCs


@handles(ApiKey.BROKER_REGISTRATION)
async def broker_registration(broker, header, body):
    quorum = _quorum(broker)
    out = {"throttle_time_ms": 0, "error_code": ErrorCode.NONE, "broker_epoch": -1}
    if body.cluster_id != broker.cluster_id:
        log.warning("refusing the registration of broker %d: cluster %s is not this cluster (%s)",
                    body.broker_id, body.cluster_id, broker.cluster_id)
        return {**out, "error_code": ErrorCode.INCONSISTENT_CLUSTER_ID}
    if not quorum.is_active:
        return {**out, "error_code": ErrorCode.NOT_CONTROLLER}
    epoch = []

    def decide():
        current = broker.image.brokers.get(body.broker_id)
        if current is not None and current.incarnation_id == body.incarnation_id:
            epoch.append(current.epoch)  # a retried registration: same process, same epoch
            return []
        epoch.append(quorum.next_offset())  # Kafka: the broker epoch is its registration's offset
        return [("RegisterBrokerRecord", {
            "broker_id": body.broker_id, "is_migrating_zk_broker": False, "incarnation_id": body.incarnation_id,
            "broker_epoch": epoch[0],
            "end_points": [{"name": e.name, "host": e.host, "port": e.port, "security_protocol": e.security_protocol}
                           for e in body.listeners],
            "features": [], "rack": body.rack, "fenced": False, "in_controlled_shutdown": False,
            "log_dirs": [],
        }), *broker.controller.leaderless_for(body.broker_id)]

    try:
        await broker.submit(decide)
    except NotControllerError:
        return {**out, "error_code": ErrorCode.NOT_CONTROLLER}
    quorum.last_heartbeat[body.broker_id] = trio.current_time()
    log.info("broker %d registered (epoch %d)", body.broker_id, epoch[0])
    return {**out, "broker_epoch": epoch[0]}


def _registered(broker, quorum, body):
    """(the sender's registration, None), or (None, the error) for a broker RPC the active controller refuses."""
    if not quorum.is_active:
        return None, ErrorCode.NOT_CONTROLLER
    reg = broker.image.brokers.get(body.broker_id)
    if reg is None:
        return None, ErrorCode.BROKER_ID_NOT_REGISTERED
    if reg.epoch != body.broker_epoch:
        return None, ErrorCode.STALE_BROKER_EPOCH
    return reg, None


@handles(ApiKey.BROKER_HEARTBEAT)
async def broker_heartbeat(broker, header, body):
    quorum = _quorum(broker)
    out = {"throttle_time_ms": 0, "error_code": ErrorCode.NONE, "is_caught_up": False, "is_fenced": True,
           "should_shut_down": False}
    reg, refusal = _registered(broker, quorum, body)
    if refusal:
        return {**out, "error_code": refusal}
    quorum.last_heartbeat[body.broker_id] = trio.current_time()
    want_fenced = body.want_fence or body.want_shut_down
    if reg.fenced != want_fenced:
        def decide():
            current = broker.image.brokers.get(body.broker_id)
            if current is None or current.epoch != body.broker_epoch or current.fenced == want_fenced:
                return []
            if want_fenced:
                return broker.controller.fence_broker(body.broker_id, current.epoch)
            return broker.controller.unfence_broker(body.broker_id, current.epoch)

        try:
            await broker.submit(decide)
        except NotControllerError:
            return {**out, "error_code": ErrorCode.NOT_CONTROLLER}
        log.info("broker %d %s", body.broker_id, "fenced at its request" if want_fenced else "unfenced")
    return {**out, "is_caught_up": body.current_metadata_offset >= reg.epoch, "is_fenced": want_fenced,
            "should_shut_down": body.want_shut_down}


@handles(ApiKey.ALLOCATE_PRODUCER_IDS)
async def allocate_producer_ids(broker, header, body):
    quorum = _quorum(broker)
    out = {"throttle_time_ms": 0, "error_code": ErrorCode.NONE, "producer_id_start": -1, "producer_id_len": 0}
    _reg, refusal = _registered(broker, quorum, body)
    if refusal:
        return {**out, "error_code": refusal}
    block = []

    def decide():
        records, first = broker.controller.allocate_producer_ids(body.broker_id, body.broker_epoch)
        block.append(first)
        return records

    try:
        await broker.submit(decide)
    except NotControllerError:
        return {**out, "error_code": ErrorCode.NOT_CONTROLLER}
    return {**out, "producer_id_start": block[0], "producer_id_len": 1000}


@handles(ApiKey.ENVELOPE)
async def envelope(broker, header, body):
    _quorum(broker)
    try:
        inner_header, inner_body = decode_request(body.request_data)
    except ProtocolError as e:
        log.warning("refusing an Envelope whose request does not decode: %s", e)
        return {"response_data": None, "error_code": ErrorCode.INVALID_REQUEST}
    if inner_header.api_key not in FORWARDED:
        log.warning("refusing an Envelope around %s: only admin requests are forwarded",
                    ApiKey(inner_header.api_key).name if inner_header.api_key in ApiKey._value2member_map_
                    else inner_header.api_key)
        return {"response_data": None, "error_code": ErrorCode.INVALID_REQUEST}
    token = as_controller.set(True)
    try:
        response = await dispatch(broker, inner_header, inner_body)
    except NotControllerError:
        return {"response_data": None, "error_code": ErrorCode.NOT_CONTROLLER}
    finally:
        as_controller.reset(token)
    return {"response_data": wrap_response(inner_header, response), "error_code": ErrorCode.NONE}
