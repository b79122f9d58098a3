"""Pre-encoded array elements (``Message.encode_elements`` / ``types.EncodedElements``).

The rule: a message encoded with some array elements spliced in as bytes is
byte-for-byte the message encoded from the plain list, in every version
(classic and compact counts), top-level, nested and tagged arrays alike; and
elements made for another layout are refused rather than misframed.
"""

from __future__ import annotations

import uuid

import pytest

from protocol import ApiKey, ProtocolError, encode_response, response_schema
from protocol.codec import RequestHeader
from protocol.types import EncodedElements

METADATA = response_schema(ApiKey.METADATA)


def _topic(i: int) -> dict:
    return {
        "error_code": 0,
        "name": f"topic-{i}",
        "topic_id": uuid.UUID(int=i + 1),
        "is_internal": False,
        "partitions": [
            {"error_code": 0, "partition_index": p, "leader_id": 1, "leader_epoch": 3,
             "replica_nodes": [1, 2], "isr_nodes": [1], "offline_replicas": []}
            for p in range(3)
        ],
    }


def _body(topics) -> dict:
    return {"throttle_time_ms": 5, "brokers": [{"node_id": 1, "host": "h", "port": 9092, "rack": None}],
            "cluster_id": "c", "controller_id": 1, "topics": topics}


@pytest.mark.parametrize("version", range(METADATA.valid[0], METADATA.valid[1] + 1))
def test_spliced_topics_encode_like_the_list(version):
    topics = [_topic(i) for i in range(4)]
    pre = METADATA.encode_elements(version, "topics", topics)
    assert pre.count == 4
    assert METADATA.encode(_body(pre), version) == METADATA.encode(_body(topics), version)


@pytest.mark.parametrize("version", [1, 9, 12])
def test_concat_keeps_order_and_mixes_with_fresh_entries(version):
    topics = [_topic(i) for i in range(5)]
    parts = [METADATA.encode_elements(version, "topics", [t]) for t in topics]
    element = METADATA.array_field(version, "topics").element
    joined = EncodedElements.concat(element, parts)
    assert METADATA.encode(_body(joined), version) == METADATA.encode(_body(topics), version)
    empty = EncodedElements.concat(element, [])
    assert METADATA.encode(_body(empty), version) == METADATA.encode(_body([]), version)


@pytest.mark.parametrize("version", [1, 12])
def test_nested_array(version):
    t = _topic(0)
    spliced = dict(t, partitions=METADATA.encode_elements(version, "topics.partitions", t["partitions"]))
    assert METADATA.encode(_body([spliced]), version) == METADATA.encode(_body([t]), version)


def test_tagged_array():
    schema = response_schema(ApiKey.API_VERSIONS)
    feats = [{"name": "metadata.version", "min_version": 1, "max_version": 27}]
    body = {"error_code": 0, "api_keys": [], "throttle_time_ms": 0, "supported_features": feats}
    pre = dict(body, supported_features=schema.encode_elements(3, "supported_features", feats))
    assert schema.encode(pre, 3) == schema.encode(body, 3)


def test_through_encode_response_with_chunks():
    topics = [_topic(i) for i in range(200)]  # over ChunkWriter.BIG: kept by reference
    pre = METADATA.encode_elements(12, "topics", topics)
    header = RequestHeader(int(ApiKey.METADATA), 12, 77)
    chunks = encode_response(header, _body(pre), chunks=True)
    assert any(c is pre.data for c in chunks)
    assert b"".join(chunks) == encode_response(header, _body(topics))


def test_elements_of_another_version_are_refused():
    pre = METADATA.encode_elements(9, "topics", [_topic(0)])
    with pytest.raises(ProtocolError, match="another layout"):
        METADATA.encode(_body(pre), 10)
    with pytest.raises(ProtocolError, match="another layout"):
        METADATA.encode(dict(_body([]), brokers=pre), 9)


def test_concat_of_different_layouts_is_refused():
    a = METADATA.encode_elements(9, "topics", [_topic(0)])
    b = METADATA.encode_elements(10, "topics", [_topic(1)])
    with pytest.raises(ProtocolError):
        EncodedElements.concat(a.element, [a, b])


def test_bad_paths_and_values():
    with pytest.raises(ProtocolError):
        METADATA.array_field(12, "nope")
    with pytest.raises(ProtocolError):
        METADATA.array_field(12, "cluster_id")
    with pytest.raises(ProtocolError):
        METADATA.array_field(12, "cluster_id.x")
    with pytest.raises(ProtocolError, match="topics"):
        METADATA.encode_elements(12, "topics", [{"error_code": "not a number"}])


@pytest.mark.parametrize("version", [1, 9, 12])
def test_spliced_list_mixes_cached_and_fresh(version):
    from protocol.types import SplicedElements

    topics = [_topic(i) for i in range(6)]
    cached = METADATA.encode_elements(version, "topics", topics[1:3])
    mixed = SplicedElements([topics[0], cached, topics[3], METADATA.encode_elements(version, "topics", topics[4:6])])
    assert METADATA.encode(_body(mixed), version) == METADATA.encode(_body(topics), version)
    assert METADATA.encode(_body(SplicedElements()), version) == METADATA.encode(_body([]), version)
    other = METADATA.encode_elements(version + 1, "topics", topics[:1])
    with pytest.raises(ProtocolError, match="another layout"):
        METADATA.encode(_body(SplicedElements([topics[0], other])), version)
