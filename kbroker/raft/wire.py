"""The Raft dataclasses as Kafka's own KRaft RPCs, so that quorum traffic is what a Kafka controller sends.

:mod:`kbroker.raft.messages` flattens each RPC to the one partition the
quorum replicates; this module puts the nesting back (one topic
``__cluster_metadata``, partition 0) on the way out and checks it on the way
in.  It is sans-IO like the rest of the package: bodies are plain dicts for
:func:`protocol.encode_request` / :func:`protocol.encode_response`, and what
:func:`protocol.decode_request` / :func:`protocol.decode_response` return is
read back.

API
---
``request_to_kafka(msg, *, sender_id, version=None) -> (api_key, version, body)``
    ``sender_id`` must be the node the message comes from (the candidate,
    the leader, the fetcher); every Raft request already names it, so a
    mismatch is a caller bug and raises :class:`ValueError` rather than
    putting one node's id in another's request.  ``version`` defaults to
    :data:`VERSIONS`; a lower one is for a peer that speaks less (fields the
    version lacks are simply not sent, except that a pre-vote needs Vote v2).
``request_from_kafka(api_key, version, correlation_id, body) -> request``
    Raises :class:`ValueError` when the body is not about exactly
    ``__cluster_metadata`` partition 0; answer such a request with
    :func:`error_body` (``INVALID_REQUEST``), as Kafka does.
``response_to_kafka(msg, version) -> body``
    For the request's API, in the request's version.
``response_from_kafka(api_key, version, correlation_id, body) -> response``
    Raises :class:`ValueError` for a malformed answer (no error
    and not exactly our partition); treat that as a lost message.
``error_response(request, error_code) -> response``
    The answer to a request the node cannot handle, naming no leader.
``error_body(api_key, version, error_code) -> body``
    The answer to a request that could not even be decoded into a dataclass.

:data:`API_OF` (request type -> API key), :data:`RESPONSE_OF` (request type
-> response type), :data:`REQUEST_TYPE` / :data:`RESPONSE_TYPE` (API key ->
type) and :data:`VERSIONS` (API key -> the version we send: the newest our
codec speaks) complete the picture.

Choices that follow Kafka's KRaft client (``RaftUtil``/``KafkaRaftClient``)
---------------------------------------------------------------------------
* Fetch from v13 names the topic by id: ``__cluster_metadata`` has the fixed
  id 1 (``Uuid.METADATA_TOPIC_ID``), never a random one.  From v15 the
  fetcher goes in ``replica_state`` (epoch -1) instead of ``replica_id``.
  A fetch asks for 8 MiB (``max_bytes`` and ``partition_max_bytes``), with
  ``min_bytes`` 0 and no fetch session: waiting is the leader's business
  (``max_wait_ms``), and one partition gains nothing from a session.
* FetchSnapshot asks for the whole snapshot (``max_bytes`` 2^31-1): our
  node installs a snapshot only when it arrives in one piece.
* Directory ids are the zero uuid ("no directory id", KIP-853) and endpoint
  lists are empty: a Kafka receiver then falls back to its configured voters.
* A Fetch answer without divergence or snapshot carries ``-1/-1`` there (the
  tagged field's default, so it is not even sent).  We read an answer as
  diverging, or as pointing at a snapshot, when *either* field differs from
  -1.  Kafka's follower looks at the epoch alone (``epoch >= 0``), which is
  enough for Kafka's leader: asked about an epoch older than its whole log,
  it answers with that epoch and the log's first offset.  Our node answers
  ``(-1, 0)`` there ("nothing that old: truncate to 0"), which must not read
  as "no divergence".
* ``INCONSISTENT_CLUSTER_ID`` and ``INVALID_REQUEST`` are about the request,
  not the partition, and Kafka reports them in the top-level error code; we
  set both there and in the partition (which keeps the leader and epoch our
  node reports).  Any other error is the partition's only.  Reading an
  answer, a non-zero top-level error wins, and a missing partition means
  "leader unknown".
* Record batches are :func:`kbroker.raft.records.encode_entries`; a
  LEADER_CHANGE entry names the leader only when it belongs to the
  responder's current epoch, the one epoch whose leader the answer knows.
"""

from __future__ import annotations

import dataclasses

import itertools
import uuid
from typing import Any, Callable, Mapping

from protocol import ApiKey, ErrorCode, request_schema, response_schema, supported_versions

from .log import SnapshotId
from .messages import (
    BeginQuorumEpochRequest,
    BeginQuorumEpochResponse,
    EndQuorumEpochRequest,
    EndQuorumEpochResponse,
    EpochEndOffset,
    FetchRequest,
    FetchResponse,
    FetchSnapshotRequest,
    FetchSnapshotResponse,
    LeaderIdAndEpoch,
    Message,
    VoteRequest,
    VoteResponse,
)
from .records import decode_entries, encode_entries

METADATA_TOPIC = "__cluster_metadata"
METADATA_TOPIC_ID = uuid.UUID(int=1)
METADATA_PARTITION = 0
ZERO_UUID = uuid.UUID(int=0)
FETCH_MAX_BYTES = 8 * 1024 * 1024
SNAPSHOT_MAX_BYTES = 0x7FFFFFFF

API_OF: dict[type, ApiKey] = {
    VoteRequest: ApiKey.VOTE,
    BeginQuorumEpochRequest: ApiKey.BEGIN_QUORUM_EPOCH,
    EndQuorumEpochRequest: ApiKey.END_QUORUM_EPOCH,
    FetchRequest: ApiKey.FETCH,
    FetchSnapshotRequest: ApiKey.FETCH_SNAPSHOT,
}
RESPONSE_OF: dict[type, type] = {
    VoteRequest: VoteResponse,
    BeginQuorumEpochRequest: BeginQuorumEpochResponse,
    EndQuorumEpochRequest: EndQuorumEpochResponse,
    FetchRequest: FetchResponse,
    FetchSnapshotRequest: FetchSnapshotResponse,
}
REQUEST_TYPE: dict[ApiKey, type] = {key: cls for cls, key in API_OF.items()}
RESPONSE_TYPE: dict[ApiKey, type] = {key: RESPONSE_OF[cls] for cls, key in API_OF.items()}
_API_OF_RESPONSE: dict[type, ApiKey] = {resp: API_OF[req] for req, resp in RESPONSE_OF.items()}

VERSIONS: dict[ApiKey, int] = {key: supported_versions(key)[1] for key in API_OF.values()}

# Errors Kafka's KRaft client reports for the whole request rather than the partition.
_REQUEST_LEVEL_ERRORS = frozenset({int(ErrorCode.INCONSISTENT_CLUSTER_ID), int(ErrorCode.INVALID_REQUEST)})
_NO_LEADER = LeaderIdAndEpoch(-1, -1)


# -- the one-partition nesting -------------------------------------------------


def _topic_key(api: ApiKey, version: int) -> tuple[str, Any]:
    """The field naming the topic and its expected value: Fetch names it by id from v13."""
    if api == ApiKey.FETCH:
        return ("topic_id", METADATA_TOPIC_ID) if version >= 13 else ("topic", METADATA_TOPIC)
    if api == ApiKey.FETCH_SNAPSHOT:
        return "name", METADATA_TOPIC
    return "topic_name", METADATA_TOPIC


# (topics field, partition index field) per API, request then response.
_NESTING: dict[ApiKey, tuple[tuple[str, str], tuple[str, str]]] = {
    ApiKey.VOTE: (("topics", "partition_index"), ("topics", "partition_index")),
    ApiKey.BEGIN_QUORUM_EPOCH: (("topics", "partition_index"), ("topics", "partition_index")),
    ApiKey.END_QUORUM_EPOCH: (("topics", "partition_index"), ("topics", "partition_index")),
    ApiKey.FETCH: (("topics", "partition"), ("responses", "partition_index")),
    ApiKey.FETCH_SNAPSHOT: (("topics", "partition"), ("topics", "index")),
}


def _nest(api: ApiKey, version: int, response: bool, partition: dict) -> list[dict]:
    """The topics list (under ``topics``, or ``responses`` in a Fetch answer) holding ``partition`` alone."""
    index_field = _NESTING[api][response][1]
    name_field, name = _topic_key(api, version)
    return [{name_field: name, "partitions": [{index_field: METADATA_PARTITION, **partition}]}]


def _fit(fields, version: int, body: Mapping) -> dict:
    """``body`` without the fields ``version`` lacks: the codec refuses a non-default value it cannot send.

    Bodies are written once with every field of the newest version, and cut
    down here for an older one, rather than spelling out each version's shape.
    """
    out = {}
    for f in fields:
        if f.name not in body or not f.versions[0] <= version <= f.versions[1]:
            continue
        value = body[f.name]
        if f.fields and isinstance(value, list):
            value = [_fit(f.fields, version, v) for v in value]
        elif f.fields and isinstance(value, Mapping):
            value = _fit(f.fields, version, value)
        out[f.name] = value
    return out


def _only_partition(api: ApiKey, version: int, response: bool, body: Mapping) -> Mapping:
    """The body's one partition, after checking it is ``__cluster_metadata``-0 and alone."""
    topics_field, index_field = _NESTING[api][response]
    name_field, name = _topic_key(api, version)
    what = f"{api.name} v{version} {'response' if response else 'request'}"
    topics = body.get(topics_field) or []
    if len(topics) != 1:
        raise ValueError(f"{what} has {len(topics)} topics; the quorum speaks of {METADATA_TOPIC} alone")
    topic = topics[0]
    if topic.get(name_field) != name:
        raise ValueError(f"{what} is about topic {name_field}={topic.get(name_field)!r}, not {name!r}")
    partitions = topic.get("partitions") or []
    if len(partitions) != 1:
        raise ValueError(f"{what} has {len(partitions)} partitions of {METADATA_TOPIC}; expected only partition 0")
    partition = partitions[0]
    if partition.get(index_field) != METADATA_PARTITION:
        raise ValueError(f"{what} is about {METADATA_TOPIC}-{partition.get(index_field)}, not partition 0")
    return partition


# -- requests ------------------------------------------------------------------


def _sender_of(msg) -> int:
    if isinstance(msg, (BeginQuorumEpochRequest, EndQuorumEpochRequest)):
        return msg.leader_id
    return msg.replica_id


def request_to_kafka(msg, *, sender_id: int, version: int | None = None) -> tuple[ApiKey, int, dict]:
    """``(api_key, version, body)`` for ``protocol.encode_request`` (``msg.correlation_id`` goes in the header)."""
    api = API_OF.get(type(msg))
    if api is None:
        raise TypeError(f"not a Raft request: {msg!r}")
    if _sender_of(msg) != sender_id:
        raise ValueError(f"{type(msg).__name__} from node {_sender_of(msg)} sent as node {sender_id}")
    if version is None:
        version = VERSIONS[api]
    if isinstance(msg, VoteRequest) and msg.pre_vote and version < 2:
        # Dropping the flag would turn the pre-vote into a real vote: the voter would move to the new epoch.
        raise ValueError(f"a pre-vote needs Vote v2, not v{version}")
    return api, version, _fit(request_schema(api).fields, version, _REQUEST_TO[api](msg, version))


def _vote_request_to(msg: VoteRequest, version: int) -> dict:
    partition = {
        "replica_epoch": msg.replica_epoch,
        "replica_id": msg.replica_id,
        "replica_directory_id": ZERO_UUID,
        "voter_directory_id": ZERO_UUID,
        "last_offset_epoch": msg.last_offset_epoch,
        "last_offset": msg.last_offset,
        "pre_vote": msg.pre_vote,
    }
    return {
        "cluster_id": msg.cluster_id,
        "voter_id": msg.voter_id,
        "topics": _nest(ApiKey.VOTE, version, False, partition),
    }


def _begin_quorum_request_to(msg: BeginQuorumEpochRequest, version: int) -> dict:
    partition = {"voter_directory_id": ZERO_UUID, "leader_id": msg.leader_id, "leader_epoch": msg.leader_epoch}
    return {
        "cluster_id": msg.cluster_id,
        "voter_id": msg.voter_id,
        "topics": _nest(ApiKey.BEGIN_QUORUM_EPOCH, version, False, partition),
        "leader_endpoints": [],
    }


def _end_quorum_request_to(msg: EndQuorumEpochRequest, version: int) -> dict:
    partition = {
        "leader_id": msg.leader_id,
        "leader_epoch": msg.leader_epoch,
        # v0 lists ids, v1 voter keys (id and directory); only one is sent.
        "preferred_successors": list(msg.preferred_successors),
        "preferred_candidates": [
            {"candidate_id": c, "candidate_directory_id": ZERO_UUID} for c in msg.preferred_successors
        ],
    }
    return {
        "cluster_id": msg.cluster_id,
        "topics": _nest(ApiKey.END_QUORUM_EPOCH, version, False, partition),
        "leader_endpoints": [],
    }


def _fetch_request_to(msg: FetchRequest, version: int) -> dict:
    partition = {
        "current_leader_epoch": msg.current_leader_epoch,
        "fetch_offset": msg.fetch_offset,
        "last_fetched_epoch": msg.last_fetched_epoch,
        "log_start_offset": msg.log_start_offset,
        "partition_max_bytes": FETCH_MAX_BYTES,
        "replica_directory_id": ZERO_UUID,
        "high_watermark": msg.high_watermark,
    }
    return {
        "cluster_id": msg.cluster_id,
        "replica_id": msg.replica_id,  # up to v14
        "replica_state": {"replica_id": msg.replica_id, "replica_epoch": -1},  # v15+
        "max_wait_ms": int(msg.max_wait_ms),
        "min_bytes": 0,
        "max_bytes": FETCH_MAX_BYTES,
        "isolation_level": 0,
        "session_id": 0,
        "session_epoch": -1,
        "topics": _nest(ApiKey.FETCH, version, False, partition),
        "forgotten_topics_data": [],
        "rack_id": "",
    }


def _fetch_snapshot_request_to(msg: FetchSnapshotRequest, version: int) -> dict:
    partition = {
        "current_leader_epoch": msg.current_leader_epoch,
        "snapshot_id": {"end_offset": msg.snapshot_id.end_offset, "epoch": msg.snapshot_id.epoch},
        "position": msg.position,
        "replica_directory_id": ZERO_UUID,
    }
    return {
        "cluster_id": msg.cluster_id,
        "replica_id": msg.replica_id,
        "max_bytes": SNAPSHOT_MAX_BYTES,
        "topics": _nest(ApiKey.FETCH_SNAPSHOT, version, False, partition),
    }


_REQUEST_TO: dict[ApiKey, Callable[[Any, int], dict]] = {
    ApiKey.VOTE: _vote_request_to,
    ApiKey.BEGIN_QUORUM_EPOCH: _begin_quorum_request_to,
    ApiKey.END_QUORUM_EPOCH: _end_quorum_request_to,
    ApiKey.FETCH: _fetch_request_to,
    ApiKey.FETCH_SNAPSHOT: _fetch_snapshot_request_to,
}


def _api(api_key: int) -> ApiKey:
    try:
        api = ApiKey(api_key)
    except ValueError:
        raise ValueError(f"API key {api_key} is not a Raft RPC") from None
    if api not in REQUEST_TYPE:
        raise ValueError(f"{api.name} is not a Raft RPC")
    return api


# Epochs at or above this are refused (ValueError) in both directions.  The
# wire field is an int32 and every election adds one: a node moved to the
# last few epochs by a message (a corrupt or hostile peer) could never
# elect a leader again.  No real quorum gets near it.
MAX_EPOCH = (1 << 31) - 1 - 1_000_000


def _check_epochs(msg, what: str):
    for f in dataclasses.fields(msg):
        value = getattr(msg, f.name)
        if dataclasses.is_dataclass(value):
            _check_epochs(value, what)
        elif f.name.endswith("epoch") and isinstance(value, int) and value >= MAX_EPOCH:
            raise ValueError(f"{what}: {f.name} {value} is beyond any real quorum's epochs")
    return msg


def request_from_kafka(api_key: int, version: int, correlation_id: int, body: Mapping) -> Message:
    """The request dataclass for a decoded body; ValueError unless it is about ``__cluster_metadata``-0 alone
    with plausible epochs (see :data:`MAX_EPOCH`)."""
    return _check_epochs(_request_from_kafka(api_key, version, correlation_id, body), _api(api_key).name)


def _request_from_kafka(api_key: int, version: int, correlation_id: int, body: Mapping) -> Message:
    api = _api(api_key)
    p = _only_partition(api, version, False, body)
    if api == ApiKey.VOTE:
        return VoteRequest(
            correlation_id,
            body["cluster_id"],
            body["voter_id"],
            p["replica_epoch"],
            p["replica_id"],
            p["last_offset_epoch"],
            p["last_offset"],
            bool(p["pre_vote"]),
        )
    if api == ApiKey.BEGIN_QUORUM_EPOCH:
        return BeginQuorumEpochRequest(
            correlation_id, body["cluster_id"], body["voter_id"], p["leader_id"], p["leader_epoch"]
        )
    if api == ApiKey.END_QUORUM_EPOCH:
        if version >= 1:
            successors = tuple(c["candidate_id"] for c in p["preferred_candidates"])
        else:
            successors = tuple(p["preferred_successors"])
        return EndQuorumEpochRequest(correlation_id, body["cluster_id"], p["leader_id"], p["leader_epoch"], successors)
    if api == ApiKey.FETCH:
        replica_id = body["replica_state"]["replica_id"] if version >= 15 else body["replica_id"]
        return FetchRequest(
            correlation_id,
            body["cluster_id"],
            replica_id,
            body["max_wait_ms"],
            p["current_leader_epoch"],
            p["fetch_offset"],
            p["last_fetched_epoch"],
            p["log_start_offset"],
            p["high_watermark"],
        )
    sid = p["snapshot_id"]
    return FetchSnapshotRequest(
        correlation_id,
        body["cluster_id"],
        body["replica_id"],
        p["current_leader_epoch"],
        SnapshotId(sid["end_offset"], sid["epoch"]),
        p["position"],
    )


# -- responses -----------------------------------------------------------------


def _top_level_error(code: int) -> int:
    return code if code in _REQUEST_LEVEL_ERRORS else 0


def response_to_kafka(msg, version: int) -> dict:
    """The response body of ``msg``'s API in ``version`` (the request's; the header echoes ``msg.correlation_id``)."""
    api = _API_OF_RESPONSE.get(type(msg))
    if api is None:
        raise TypeError(f"not a Raft response: {msg!r}")
    return _fit(response_schema(api).fields, version, _response_body(api, msg, version))


def _response_body(api: ApiKey, msg, version: int) -> dict:
    top = _top_level_error(msg.error_code)
    if api in (ApiKey.VOTE, ApiKey.BEGIN_QUORUM_EPOCH, ApiKey.END_QUORUM_EPOCH):
        partition = {"error_code": msg.error_code, "leader_id": msg.leader_id, "leader_epoch": msg.leader_epoch}
        if api == ApiKey.VOTE:
            partition["vote_granted"] = msg.vote_granted
        return {"error_code": top, "topics": _nest(api, version, True, partition), "node_endpoints": []}
    cl = msg.current_leader
    leader = {"leader_id": cl.leader_id, "leader_epoch": cl.leader_epoch}
    if api == ApiKey.FETCH:
        d = msg.diverging_epoch or EpochEndOffset(-1, -1)
        s = msg.snapshot_id or SnapshotId(-1, -1)
        partition = {
            "error_code": msg.error_code,
            "high_watermark": msg.high_watermark,
            "last_stable_offset": -1,
            "log_start_offset": msg.log_start_offset,
            "diverging_epoch": {"epoch": d.epoch, "end_offset": d.end_offset},
            "current_leader": leader,
            "snapshot_id": {"end_offset": s.end_offset, "epoch": s.epoch},
            "aborted_transactions": [],
            "preferred_read_replica": -1,
            "records": _encode_records(msg.records, cl),
        }
        return {
            "throttle_time_ms": 0,
            "error_code": top,
            "session_id": 0,
            "responses": _nest(api, version, True, partition),
            "node_endpoints": [],
        }
    partition = {
        "error_code": msg.error_code,
        "snapshot_id": {"end_offset": msg.snapshot_id.end_offset, "epoch": msg.snapshot_id.epoch},
        "current_leader": leader,
        "size": msg.size,
        "position": msg.position,
        "unaligned_records": bytes(msg.unaligned_records),
    }
    topics = _nest(api, version, True, partition)
    return {"throttle_time_ms": 0, "error_code": top, "topics": topics, "node_endpoints": []}


def _encode_records(entries, leader: LeaderIdAndEpoch) -> bytes:
    # Epochs only grow along the log, so this is at most two runs: older epochs, then the leader's own.
    out = b""
    for ours, run in itertools.groupby(entries, key=lambda e: e.epoch == leader.leader_epoch):
        out += encode_entries(list(run), leader_id=leader.leader_id if ours else -1)
    return out


def _absent(*values: int) -> bool:
    return all(v == -1 for v in values)


def response_from_kafka(api_key: int, version: int, correlation_id: int, body: Mapping) -> Message:
    """The response dataclass for a decoded body (ValueError as for requests, epochs included)."""
    return _check_epochs(_response_from_kafka(api_key, version, correlation_id, body), _api(api_key).name)


def _response_from_kafka(api_key: int, version: int, correlation_id: int, body: Mapping) -> Message:
    """The response dataclass for a decoded body; ValueError for an answer that is neither an error nor ours."""
    api = _api(api_key)
    top = body.get("error_code") or 0
    try:
        p = _only_partition(api, version, True, body)
    except ValueError:
        if top == 0:
            raise
        # Kafka answers a request-level error with no topics at all.
        return _unknown_leader_response(RESPONSE_TYPE[api], correlation_id, top)
    code = top or p["error_code"]
    if api == ApiKey.VOTE:
        return VoteResponse(correlation_id, code, p["leader_id"], p["leader_epoch"], bool(p["vote_granted"]))
    if api == ApiKey.BEGIN_QUORUM_EPOCH:
        return BeginQuorumEpochResponse(correlation_id, code, p["leader_id"], p["leader_epoch"])
    if api == ApiKey.END_QUORUM_EPOCH:
        return EndQuorumEpochResponse(correlation_id, code, p["leader_id"], p["leader_epoch"])
    cl = p["current_leader"]
    leader = LeaderIdAndEpoch(cl["leader_id"], cl["leader_epoch"])
    sid = p["snapshot_id"]
    if api == ApiKey.FETCH:
        d = p["diverging_epoch"]
        records = p["records"]
        return FetchResponse(
            correlation_id,
            code,
            p["high_watermark"],
            p["log_start_offset"],
            leader,
            None if _absent(d["epoch"], d["end_offset"]) else EpochEndOffset(d["epoch"], d["end_offset"]),
            None if _absent(sid["end_offset"], sid["epoch"]) else SnapshotId(sid["end_offset"], sid["epoch"]),
            tuple(decode_entries(records)) if records else (),
        )
    return FetchSnapshotResponse(
        correlation_id,
        code,
        SnapshotId(sid["end_offset"], sid["epoch"]),
        leader,
        p["size"],
        p["position"],
        bytes(p["unaligned_records"] or b""),
    )


def _unknown_leader_response(cls: type, correlation_id: int, error_code: int, snapshot_id: SnapshotId | None = None):
    if cls is VoteResponse:
        return VoteResponse(correlation_id, error_code, -1, -1, False)
    if cls in (BeginQuorumEpochResponse, EndQuorumEpochResponse):
        return cls(correlation_id, error_code, -1, -1)
    if cls is FetchResponse:
        return FetchResponse(correlation_id, error_code, -1, -1, _NO_LEADER)
    return FetchSnapshotResponse(correlation_id, error_code, snapshot_id or SnapshotId(-1, -1), _NO_LEADER, 0, 0, b"")


def error_response(request, error_code: int) -> Message:
    """The answer to ``request`` when it cannot be handled: the error, and no leader or epoch.

    Epoch -1 claims nothing, so the requester keeps its own view of the
    quorum; echoing the request's epoch with no leader could instead read as
    "the leader of your epoch has resigned" (a Fetch answered
    ``NOT_LEADER_OR_FOLLOWER`` that way sends a follower back to election).
    """
    cls = RESPONSE_OF.get(type(request))
    if cls is None:
        raise TypeError(f"not a Raft request: {request!r}")
    sid = request.snapshot_id if isinstance(request, FetchSnapshotRequest) else None
    return _unknown_leader_response(cls, request.correlation_id, error_code, sid)


def error_body(api_key: int, version: int, error_code: int) -> dict:
    """A response body with only a top-level error and no topics, as Kafka answers a request it rejects whole."""
    api = _api(api_key)
    body: dict = {"error_code": error_code, "node_endpoints": []}
    body["responses" if api == ApiKey.FETCH else "topics"] = []
    if api in (ApiKey.FETCH, ApiKey.FETCH_SNAPSHOT):
        body["throttle_time_ms"] = 0
    return _fit(response_schema(api).fields, version, body)
