"""The Raft dataclasses survive Kafka's wire: dataclass -> body -> frame -> body -> the same dataclass.

Frames go through the real codec (``protocol``), so a field put in the wrong
place or a value a version cannot carry fails here rather than between two
controllers.
"""

from __future__ import annotations

import dataclasses
import uuid

import pytest

import protocol
from protocol import ApiKey, ErrorCode, RequestHeader
from protocol.messages.data import LeaderChangeMessage
from protocol.records import decode_records

from kbroker.raft import (
    LEADER_CHANGE,
    BeginQuorumEpochRequest,
    BeginQuorumEpochResponse,
    EndQuorumEpochRequest,
    EndQuorumEpochResponse,
    Entry,
    EpochEndOffset,
    FetchRequest,
    FetchResponse,
    FetchSnapshotRequest,
    FetchSnapshotResponse,
    LeaderIdAndEpoch,
    SnapshotId,
    VoteRequest,
    VoteResponse,
)
from kbroker.raft import wire

NONE = int(ErrorCode.NONE)
INCONSISTENT_CLUSTER_ID = int(ErrorCode.INCONSISTENT_CLUSTER_ID)
INVALID_REQUEST = int(ErrorCode.INVALID_REQUEST)
NOT_LEADER = int(ErrorCode.NOT_LEADER_OR_FOLLOWER)
FENCED = int(ErrorCode.FENCED_LEADER_EPOCH)

# Two epochs of records, the second opened by its leader's LEADER_CHANGE.
ENTRIES = (
    Entry(10, 3, b"\x01first"),
    Entry(11, 3, b"\x02" * 300),
    Entry(12, 4, LEADER_CHANGE),
    Entry(13, 4, b"third"),
    Entry(14, 4, b""),
)


def _sender(msg) -> int:
    return msg.leader_id if isinstance(msg, (BeginQuorumEpochRequest, EndQuorumEpochRequest)) else msg.replica_id


def request_roundtrip(msg, version: int | None = None):
    api, v, body = wire.request_to_kafka(msg, sender_id=_sender(msg), version=version)
    frame = protocol.encode_request(api, v, body, correlation_id=msg.correlation_id)
    header, decoded = protocol.decode_request(frame[4:], strict=True)
    assert (header.api_key, header.api_version) == (api, v)
    return wire.request_from_kafka(header.api_key, header.api_version, header.correlation_id, decoded)


def response_frame(api: ApiKey, version: int, correlation_id: int, body) -> tuple[int, object]:
    frame = protocol.encode_response(RequestHeader(int(api), version, correlation_id), body)
    return protocol.decode_response(int(api), version, frame[4:])


def response_roundtrip(msg, version: int | None = None):
    api = wire.API_OF[next(req for req, resp in wire.RESPONSE_OF.items() if resp is type(msg))]
    v = wire.VERSIONS[api] if version is None else version
    cid, body = response_frame(api, v, msg.correlation_id, wire.response_to_kafka(msg, v))
    return wire.response_from_kafka(api, v, cid, body)


REQUESTS = [
    VoteRequest(1, "cluster-A", 2, 7, 1, 6, 1234, False),
    VoteRequest(2**31 - 1, None, 3, 8, 5, 0, 0, True),
    BeginQuorumEpochRequest(3, "cluster-A", 2, 1, 9),
    BeginQuorumEpochRequest(4, None, -1, 3, 0),
    EndQuorumEpochRequest(5, "cluster-A", 1, 9, (3, 2)),
    EndQuorumEpochRequest(6, None, 4, 1, ()),
    FetchRequest(7, "cluster-A", 2, 500, 9, 1000, 8, 12, 990),
    FetchRequest(8, None, 3000, 0, -1, 0, -1, -1, -1),
    FetchRequest(9, "c", 2, 500, 9, 0, 0, 0, 2**63 - 1),  # "high watermark not supported": the tag is omitted
    FetchSnapshotRequest(10, "cluster-A", 2, 9, SnapshotId(500, 7), 0),
    FetchSnapshotRequest(11, None, 4, 1, SnapshotId(1, 0), 65536),
]

RESPONSES = [
    VoteResponse(1, NONE, 2, 7, True),
    VoteResponse(2, NONE, -1, 8, False),
    VoteResponse(3, INCONSISTENT_CLUSTER_ID, -1, 8, False),
    BeginQuorumEpochResponse(4, NONE, 1, 9),
    BeginQuorumEpochResponse(5, FENCED, 3, 10),
    EndQuorumEpochResponse(6, NONE, 1, 9),
    EndQuorumEpochResponse(7, NOT_LEADER, -1, 2),
    FetchResponse(8, NONE, 11, 0, LeaderIdAndEpoch(1, 4), records=ENTRIES),
    FetchResponse(9, NONE, 11, 5, LeaderIdAndEpoch(1, 4)),
    FetchResponse(10, NONE, 11, 0, LeaderIdAndEpoch(1, 4), diverging_epoch=EpochEndOffset(3, 12)),
    # "Nothing that old here: truncate to 0" must not read as "no divergence".
    FetchResponse(11, NONE, 0, 0, LeaderIdAndEpoch(1, 4), diverging_epoch=EpochEndOffset(-1, 0)),
    FetchResponse(12, NONE, 900, 500, LeaderIdAndEpoch(1, 4), snapshot_id=SnapshotId(500, 3)),
    FetchResponse(13, NOT_LEADER, 11, 0, LeaderIdAndEpoch(-1, 4)),
    FetchResponse(14, INCONSISTENT_CLUSTER_ID, -1, -1, LeaderIdAndEpoch(2, 4)),
    FetchSnapshotResponse(15, NONE, SnapshotId(500, 3), LeaderIdAndEpoch(1, 4), 6, 0, b"\x00snap\xff"),
    FetchSnapshotResponse(16, int(ErrorCode.SNAPSHOT_NOT_FOUND), SnapshotId(7, 1), LeaderIdAndEpoch(1, 4), 0, 0, b""),
]


@pytest.mark.parametrize("msg", REQUESTS, ids=lambda m: type(m).__name__)
def test_requests_round_trip(msg):
    assert request_roundtrip(msg) == msg


@pytest.mark.parametrize("msg", RESPONSES, ids=lambda m: type(m).__name__)
def test_responses_round_trip(msg):
    assert response_roundtrip(msg) == msg


def test_versions_are_the_codecs_newest():
    assert wire.VERSIONS == {
        ApiKey.VOTE: 2,
        ApiKey.BEGIN_QUORUM_EPOCH: 1,
        ApiKey.END_QUORUM_EPOCH: 1,
        ApiKey.FETCH: 18,
        ApiKey.FETCH_SNAPSHOT: 1,
    }
    for api, v in wire.VERSIONS.items():
        assert v == protocol.supported_versions(api)[1]
    assert set(wire.API_OF) == set(wire.RESPONSE_OF)
    assert wire.METADATA_TOPIC_ID == uuid.UUID(int=1)


def test_fetch_body_as_kafka_writes_it():
    msg = FetchRequest(7, "cluster-A", 2, 500, 9, 1000, 8, 12, 990)
    api, v, body = wire.request_to_kafka(msg, sender_id=2)
    assert (api, v) == (ApiKey.FETCH, 18)
    assert body["replica_state"] == {"replica_id": 2, "replica_epoch": -1}
    assert "replica_id" not in body
    assert (body["min_bytes"], body["max_bytes"], body["isolation_level"]) == (0, 8 << 20, 0)
    (topic,) = body["topics"]
    assert topic == {"topic_id": wire.METADATA_TOPIC_ID, "partitions": topic["partitions"]}
    (p,) = topic["partitions"]
    assert p["partition"] == 0 and p["replica_directory_id"] == uuid.UUID(int=0) and p["high_watermark"] == 990

    # Before v13 the topic goes by name, before v15 the fetcher by replica_id.
    _, _, old = wire.request_to_kafka(msg, sender_id=2, version=12)
    assert old["topics"][0]["topic"] == wire.METADATA_TOPIC and "topic_id" not in old["topics"][0]
    assert old["replica_id"] == 2 and "replica_state" not in old


@pytest.mark.parametrize("api", list(wire.VERSIONS), ids=lambda a: a.name)
def test_every_version_carries_the_essentials(api):
    msg = next(m for m in REQUESTS if wire.API_OF[type(m)] == api and not getattr(m, "pre_vote", False))
    resp = next(m for m in RESPONSES if type(m) is wire.RESPONSE_OF[type(msg)])
    low, high = protocol.supported_versions(api)
    for v in range(low, high + 1):
        back = request_roundtrip(msg, v)
        assert type(back) is type(msg) and back.correlation_id == msg.correlation_id
        assert _sender(back) == _sender(msg)
        if api == ApiKey.FETCH:
            assert (back.fetch_offset, back.replica_id) == (msg.fetch_offset, msg.replica_id)
            back_resp = response_roundtrip(FetchResponse(8, NONE, 11, 0, LeaderIdAndEpoch(1, 4), records=ENTRIES), v)
            assert back_resp.records == ENTRIES and back_resp.high_watermark == 11
        else:
            assert response_roundtrip(resp, v) == resp


def test_pre_vote_is_refused_below_v2():
    with pytest.raises(ValueError, match="pre-vote"):
        wire.request_to_kafka(VoteRequest(1, "c", 2, 8, 5, 0, 0, True), sender_id=5, version=1)


def test_sender_must_be_the_message_sender():
    with pytest.raises(ValueError, match="node 2"):
        wire.request_to_kafka(REQUESTS[6], sender_id=3)
    with pytest.raises(TypeError):
        wire.request_to_kafka(RESPONSES[0], sender_id=2)


def test_leader_change_names_only_the_current_epochs_leader():
    resp = FetchResponse(8, NONE, 11, 0, LeaderIdAndEpoch(1, 4), records=(Entry(0, 2, LEADER_CHANGE),) + ENTRIES[2:])
    body = wire.response_to_kafka(resp, 18)
    records = body["responses"][0]["partitions"][0]["records"]
    leaders = []
    for header, recs in decode_records(records):
        if header.is_control:
            for r in recs:
                leaders.append((header.partition_leader_epoch, LeaderChangeMessage.decode(bytes(r.value), 0).leader_id))
    assert leaders == [(2, -1), (4, 1)]


def _request_body(msg, mutate):
    api, v, body = wire.request_to_kafka(msg, sender_id=_sender(msg))
    mutate(body)
    frame = protocol.encode_request(api, v, body, correlation_id=msg.correlation_id)
    header, decoded = protocol.decode_request(frame[4:])
    return header, decoded


def _second_partition(topics_field, index_field):
    def mutate(body):
        (topic,) = body[topics_field]
        topic["partitions"].append({**topic["partitions"][0], index_field: 1})

    return mutate


def _set(path, value):
    def mutate(body):
        target = body
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value

    return mutate


BAD = [
    (REQUESTS[0], _set(("topics", 0, "topic_name"), "orders")),
    (REQUESTS[0], _second_partition("topics", "partition_index")),
    (REQUESTS[2], _set(("topics", 0, "partitions", 0, "partition_index"), 1)),
    (REQUESTS[4], lambda body: body["topics"].append(dict(body["topics"][0], topic_name="other"))),
    (REQUESTS[4], _set(("topics",), [])),
    (REQUESTS[6], _set(("topics", 0, "topic_id"), uuid.uuid4())),
    (REQUESTS[6], _second_partition("topics", "partition")),
    (REQUESTS[9], _set(("topics", 0, "name"), "__consumer_offsets")),
    (REQUESTS[9], _second_partition("topics", "partition")),
]


@pytest.mark.parametrize("msg,mutate", BAD)
def test_requests_for_other_partitions_are_refused(msg, mutate):
    header, body = _request_body(msg, mutate)
    with pytest.raises(ValueError, match="__cluster_metadata|partition|topic"):
        wire.request_from_kafka(header.api_key, header.api_version, header.correlation_id, body)


def test_fetch_by_name_for_another_topic_is_refused():
    api, _, body = wire.request_to_kafka(REQUESTS[6], sender_id=2, version=12)
    body["topics"][0]["topic"] = "orders"
    frame = protocol.encode_request(api, 12, body, correlation_id=7)
    header, decoded = protocol.decode_request(frame[4:])
    with pytest.raises(ValueError, match="orders"):
        wire.request_from_kafka(header.api_key, header.api_version, header.correlation_id, decoded)


def test_not_a_raft_api():
    with pytest.raises(ValueError, match="not a Raft RPC"):
        wire.request_from_kafka(int(ApiKey.PRODUCE), 9, 1, {})
    with pytest.raises(ValueError, match="not a Raft RPC"):
        wire.response_from_kafka(-7, 0, 1, {})


@pytest.mark.parametrize("request_msg", REQUESTS[::2], ids=lambda m: type(m).__name__)
def test_error_response_and_error_body(request_msg):
    resp = wire.error_response(request_msg, NOT_LEADER)
    assert type(resp) is wire.RESPONSE_OF[type(request_msg)]
    assert resp.correlation_id == request_msg.correlation_id and resp.error_code == NOT_LEADER
    if hasattr(resp, "current_leader"):
        leader = resp.current_leader
    else:
        leader = LeaderIdAndEpoch(resp.leader_id, resp.leader_epoch)
    assert leader == LeaderIdAndEpoch(-1, -1)
    assert response_roundtrip(resp) == resp

    # A request rejected whole gets Kafka's answer: a top-level error, no topics.
    api = wire.API_OF[type(request_msg)]
    v = wire.VERSIONS[api]
    body = wire.error_body(api, v, INVALID_REQUEST)
    cid, decoded = response_frame(api, v, 77, body)
    back = wire.response_from_kafka(api, v, cid, decoded)
    expected = dataclasses.replace(wire.error_response(request_msg, INVALID_REQUEST), correlation_id=77)
    if isinstance(expected, FetchSnapshotResponse):
        expected = dataclasses.replace(expected, snapshot_id=SnapshotId(-1, -1))  # the answer names none
    assert back == expected


def test_top_level_error_wins_and_request_level_errors_go_there():
    body = wire.response_to_kafka(VoteResponse(3, INCONSISTENT_CLUSTER_ID, -1, 8, False), 2)
    assert body["error_code"] == INCONSISTENT_CLUSTER_ID
    assert wire.response_to_kafka(VoteResponse(3, FENCED, 2, 8, False), 2)["error_code"] == 0

    body = wire.response_to_kafka(FetchResponse(9, NONE, 11, 5, LeaderIdAndEpoch(1, 4)), 18)
    body["error_code"] = int(ErrorCode.UNKNOWN_SERVER_ERROR)
    cid, decoded = response_frame(ApiKey.FETCH, 18, 9, body)
    back = wire.response_from_kafka(ApiKey.FETCH, 18, cid, decoded)
    assert back == FetchResponse(9, int(ErrorCode.UNKNOWN_SERVER_ERROR), 11, 5, LeaderIdAndEpoch(1, 4))


def test_answer_about_another_partition_without_error_is_refused():
    body = wire.response_to_kafka(BeginQuorumEpochResponse(4, NONE, 1, 9), 1)
    body["topics"][0]["topic_name"] = "orders"
    cid, decoded = response_frame(ApiKey.BEGIN_QUORUM_EPOCH, 1, 4, body)
    with pytest.raises(ValueError, match="orders"):
        wire.response_from_kafka(ApiKey.BEGIN_QUORUM_EPOCH, 1, cid, decoded)


def test_epochs_no_real_quorum_reaches_are_refused_both_ways():
    """An epoch near the int32 limit would leave no room for the next election: refused on arrival."""
    from kbroker.raft.wire import MAX_EPOCH

    vote = VoteRequest(5, "c", 1, MAX_EPOCH, 2, 0, 0, False)
    api, version, body = wire.request_to_kafka(vote, sender_id=2)
    with pytest.raises(ValueError, match="epoch"):
        wire.request_from_kafka(api, version, 5, body)
    ok = VoteRequest(5, "c", 1, MAX_EPOCH - 1, 2, 0, 0, False)
    api, version, body = wire.request_to_kafka(ok, sender_id=2)
    assert wire.request_from_kafka(api, version, 5, body) == ok
    answer = VoteResponse(5, 0, 1, MAX_EPOCH + 7, True)
    with pytest.raises(ValueError, match="epoch"):
        wire.response_from_kafka(api, version, 5, wire.response_to_kafka(answer, version))
