"""Exactness rules of the wire codec (protocol.types / schema / codec / framing).

Each test pins one rule Kafka's own serialisers follow, with the bytes spelled
out where that is short enough to read.  The last group round-trips every
(api, version) request and response, once with every field at its default and
once richly populated by a value generator that walks the generated field
tables (``Message.fields`` and the struct definitions), not the codec's own
construct tree, so the two are checked against each other.

The generator (``body_for`` / ``field_default``) is also used by
test_oracle_kafka_python.py and test_fuzz.py.
"""

from __future__ import annotations

import json
import pathlib
import re
import struct
import tracemalloc
import uuid

import pytest

import protocol
from protocol import (
    API_INDEX,
    ApiKey,
    FrameReader,
    FrameTooLarge,
    ProtocolError,
    RequestHeader,
    UnsupportedVersion,
    advertised_versions,
    api_info,
    api_versions_fallback_body,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    frame,
    request_schema,
    response_schema,
    supported_versions,
)
from protocol import types as T
from protocol.schema import Message

REPO = pathlib.Path(__file__).resolve().parents[2]
SPEC = REPO.parent / "shared" / "kafka-protocol"

# ---------------------------------------------------------------------------
# A value generator driven by the field tables
# ---------------------------------------------------------------------------

_TYPE_DEFAULTS = {
    "bool": False,
    "int8": 0,
    "int16": 0,
    "uint16": 0,
    "int32": 0,
    "uint32": 0,
    "int64": 0,
    "float64": 0.0,
    "uuid": uuid.UUID(int=0),
    "string": "",
    "bytes": b"",
    "records": None,
}

# Two sets of extreme values, alternated so neighbouring fields differ.
_EXTREMES = (
    {"bool": True, "int8": -128, "int16": 32767, "uint16": 65535, "int32": -(2**31), "uint32": 2**32 - 1,
     "int64": 2**63 - 1, "float64": -1.5e300},
    {"bool": True, "int8": 127, "int16": -32768, "uint16": 1, "int32": 2**31 - 1, "uint32": 1,
     "int64": -(2**63), "float64": 0.1},
)


def _in(version: int, rng) -> bool:
    return rng is not None and rng[0] <= version <= rng[1]


def struct_fields(msg: Message, type_name: str) -> tuple:
    """The fields of a named (common or inline) struct of ``msg``."""
    return msg._structs[type_name]


def field_default(msg: Message, f, version: int):
    """What a field holds when it is absent or left out, per the spec's rules."""
    t = f.type
    if t.startswith("[]"):
        return None if (f.has_default and f.default is None) else []
    if t in _TYPE_DEFAULTS:
        return f.default if f.has_default else _TYPE_DEFAULTS[t]
    if f.has_default and f.default is None:
        return None
    return {g.name: field_default(msg, g, version) for g in struct_fields(msg, t)}


def defaults_body(msg: Message, version: int) -> dict:
    return {f.name: field_default(msg, f, version) for f in msg.fields}


def primitive_value(t: str, i: int):
    if t in _EXTREMES[0]:
        return _EXTREMES[i % 2][t]
    if t == "string":
        return f"s{i}-\u00fc\u20ac\U0001f600"
    if t == "bytes":
        return bytes([0, 255, i & 255]) * 3
    if t == "records":
        return bytes((i + k) & 255 for k in range(70))
    if t == "uuid":
        return uuid.UUID(int=(0x0123456789ABCDEF << 64) | (i + 1))
    raise KeyError(t)


class _Gen:
    def __init__(self, msg: Message, version: int, mode: str, width: int = 2, max_depth: int = 4):
        self.msg = msg
        self.version = version
        self.mode = mode  # "rich": every field set, nothing null; "nulls": nullable fields null
        self.width = width
        self.max_depth = max_depth
        self.flexible = msg.is_flexible(version)
        self.i = 0

    def struct(self, fields, depth: int) -> dict:
        out = {}
        for f in fields:
            present = _in(self.version, f.versions) and not (f.tag is not None and not self.flexible)
            out[f.name] = self.field(f, depth) if present else field_default(self.msg, f, self.version)
        return out

    def field(self, f, depth: int):
        self.i += 1
        if self.mode == "nulls" and _in(self.version, f.nullable):
            return None
        t = f.type
        if t.startswith("[]"):
            elem = t[2:]
            n = self.width if depth < self.max_depth else 0
            if elem in _TYPE_DEFAULTS:
                return [primitive_value(elem, self.i + k) for k in range(n)]
            return [self.struct(struct_fields(self.msg, elem), depth + 1) for _ in range(n)]
        if t in _TYPE_DEFAULTS:
            return primitive_value(t, self.i)
        return self.struct(struct_fields(self.msg, t), depth + 1)


def body_for(msg: Message, version: int, mode: str = "rich", **kw) -> dict:
    """A body for ``msg`` in ``version`` with every field of that version set.

    Fields the version lacks hold their defaults, so the body equals what
    decoding its encoding must give back.
    """
    return _Gen(msg, version, mode, **kw).struct(msg.fields, 0)


def all_pairs():
    for key in sorted(API_INDEX):
        lo, hi = supported_versions(key)
        for v in range(lo, hi + 1):
            yield key, v


def _load_spec(name: str) -> dict:
    path = SPEC / "message" / f"{name}.json"
    text = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("//"))
    return json.loads(text)


def _spec_range(text: str):
    if text == "none":
        return None
    if text.endswith("+"):
        return int(text[:-1]), 0x7FFF
    lo, _, hi = text.partition("-")
    return int(lo), int(hi or lo)


needs_spec = pytest.mark.skipif(not (SPEC / "message").is_dir(), reason=f"no Kafka specs at {SPEC}")


def _roundtrip_request(key, version, body, **kw):
    data = encode_request(key, version, body, correlation_id=kw.get("cid", 77), client_id=kw.get("client_id", "cid"))
    header, decoded = decode_request(bytearray(data[4:]))
    return data, header, decoded


def _roundtrip_response(key, version, body):
    data = encode_response(RequestHeader(key, version, 77), body)
    cid, decoded = decode_response(key, version, data[4:])
    assert cid == 77
    return data, decoded


# ---------------------------------------------------------------------------
# Tagged fields: omitted at their default
# ---------------------------------------------------------------------------

API_VERSION_ROW = {"api_key": 18, "min_version": 0, "max_version": 4}


def test_tagged_fields_at_default_are_omitted():
    schema = response_schema(ApiKey.API_VERSIONS)
    explicit_defaults = {
        "error_code": 0,
        "api_keys": [API_VERSION_ROW],
        "throttle_time_ms": 0,
        "supported_features": [],
        "finalized_features_epoch": -1,
        "finalized_features": [],
        "zk_migration_ready": False,
    }
    expected = bytes.fromhex(
        "0000"  # error_code
        "02" "0012" "0000" "0004" "00"  # api_keys: 1 element, its (empty) tagged section
        "00000000"  # throttle_time_ms
        "00"  # tagged fields: none
    )
    assert schema.encode(explicit_defaults, 3) == expected
    assert schema.encode({"api_keys": [API_VERSION_ROW]}, 3) == expected


def test_tagged_fields_not_at_default_are_written_in_tag_order():
    schema = response_schema(ApiKey.API_VERSIONS)
    body = {
        "api_keys": [],
        "zk_migration_ready": True,  # tag 3
        "finalized_features_epoch": 5,  # tag 1
        "supported_features": [{"name": "f", "min_version": 1, "max_version": 2}],  # tag 0
    }
    data = schema.encode(body, 3)
    assert data == bytes.fromhex(
        "0000" "01" "00000000"
        "03"  # three tagged fields
        "00" "08" "02" "0266" "0001" "0002" "00"  # tag 0, 8 bytes: [1 x (name "f", 1, 2, no tags)]
        "01" "08" "0000000000000005"  # tag 1, int64 5
        "03" "01" "01"  # tag 3, bool true
    )
    decoded = schema.decode(data, 3)
    assert decoded.finalized_features_epoch == 5
    assert decoded.zk_migration_ready is True
    assert decoded.supported_features == [{"name": "f", "min_version": 1, "max_version": 2}]
    assert decoded.finalized_features == []


def test_nullable_tagged_field_default_null():
    fetch = request_schema(ApiKey.FETCH)
    without = fetch.encode({"cluster_id": None}, 12)
    assert without.endswith(b"\x00") and without == fetch.encode({}, 12)
    with_id = fetch.encode({"cluster_id": "abc"}, 12)
    assert with_id[len(without) - 1 :] == bytes.fromhex("01" "00" "04" "04616263")
    assert fetch.decode(with_id, 12).cluster_id == "abc"
    assert fetch.decode(without, 12).cluster_id is None


def test_request_header_v2_has_an_empty_tagged_section():
    data = encode_request(ApiKey.HEARTBEAT, 4, {}, correlation_id=1, client_id="ab")
    assert data[4:4 + 8 + 2 + 2 + 1] == bytes.fromhex("000c" "0004" "00000001" "0002" "6162" "00")


# ---------------------------------------------------------------------------
# Fields a version lacks
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key,version,body,field",
    [
        # MetadataRequest.AllowAutoTopicCreation: "4+", default true, not ignorable.
        (ApiKey.METADATA, 3, {"allow_auto_topic_creation": False}, "allow_auto_topic_creation"),
        # HeartbeatRequest.GroupInstanceId: "3+", nullable, default null.
        (ApiKey.HEARTBEAT, 2, {"group_instance_id": "instance-1"}, "group_instance_id"),
        # FetchRequest.ReplicaId: "0-14" (moved into ReplicaState in 15).
        (ApiKey.FETCH, 15, {"replica_id": 3}, "replica_id"),
        # FetchRequest.ReplicaState: tagged, "15+", not ignorable.
        (ApiKey.FETCH, 14, {"replica_state": {"replica_id": 1, "replica_epoch": 2}}, "replica_state"),
        # FetchRequest.Topics.Partitions.LastFetchedEpoch: "12+", nested two levels down.
        (ApiKey.FETCH, 11,
         {"topics": [{"topic": "t", "partitions": [{"partition": 0, "last_fetched_epoch": 4}]}]},
         "last_fetched_epoch"),
        # FindCoordinatorRequest.Key: "0-3" (replaced by CoordinatorKeys).
        (ApiKey.FIND_COORDINATOR, 4, {"key": "group"}, "key"),
        # InitProducerIdRequest.Enable2Pc: "6+".
        (ApiKey.INIT_PRODUCER_ID, 5, {"enable2_pc": True}, "enable2_pc"),
    ],
)
def test_non_default_value_for_missing_field_is_refused(key, version, body, field):
    with pytest.raises(ProtocolError, match=field):
        encode_request(key, version, body, correlation_id=1)
    # The field's default is fine: it is simply not written.
    default = field_default(request_schema(key), _find_field(request_schema(key), field), version)
    path_body = _replace_leaf(body, field, default)
    encode_request(key, version, path_body, correlation_id=1)


def _find_field(msg, name):
    def walk(fields):
        for f in fields:
            if f.name == name:
                return f
            found = walk(f.fields) if f.fields else None
            if found:
                return found
        return None

    for fields in (msg.fields, *msg._structs.values()):
        found = walk(fields)
        if found:
            return found
    raise AssertionError(f"{msg.name} has no field {name}")


def _replace_leaf(obj, name, value):
    if isinstance(obj, dict):
        return {k: (value if k == name else _replace_leaf(v, name, value)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_replace_leaf(v, name, value) for v in obj]
    return obj


@pytest.mark.parametrize(
    "kind,key,version,body,field,decoded_default",
    [
        # JoinGroupRequest.Reason: "8+", ignorable.
        ("req", ApiKey.JOIN_GROUP, 7, {"group_id": "g", "reason": "why"}, "reason", None),
        # FetchRequest.ClusterId: tagged "12+", ignorable.
        ("req", ApiKey.FETCH, 11, {"cluster_id": "c"}, "cluster_id", None),
        # FetchRequest.RackId: "11+", ignorable.
        ("req", ApiKey.FETCH, 10, {"rack_id": "rack"}, "rack_id", ""),
        # ApiVersionsResponse.SupportedFeatures: tagged "3+", ignorable.
        ("resp", ApiKey.API_VERSIONS, 2,
         {"supported_features": [{"name": "x", "min_version": 0, "max_version": 1}]}, "supported_features", []),
        # MetadataResponse.ClusterId: "2+", ignorable.
        ("resp", ApiKey.METADATA, 1, {"cluster_id": "cl"}, "cluster_id", None),
    ],
)
def test_ignorable_field_is_dropped_silently(kind, key, version, body, field, decoded_default):
    if kind == "req":
        data = encode_request(key, version, body, correlation_id=1)
        _, decoded = decode_request(data[4:])
        assert data == encode_request(key, version, {k: v for k, v in body.items() if k != field}, correlation_id=1)
    else:
        data = encode_response(RequestHeader(key, version, 1), body)
        _, decoded = decode_response(key, version, data[4:])
        assert data == encode_response(RequestHeader(key, version, 1), {k: v for k, v in body.items() if k != field})
    assert decoded[field] == decoded_default


def test_unknown_field_name_is_refused():
    with pytest.raises(ProtocolError, match="no_such_field"):
        encode_request(ApiKey.HEARTBEAT, 4, {"no_such_field": 1}, correlation_id=1)


# ---------------------------------------------------------------------------
# Headers
# ---------------------------------------------------------------------------


def test_request_header_versions_follow_flexible_versions():
    # Heartbeat is flexible from v4: header v2 (tagged section) from v4, v1 before.
    v3 = encode_request(ApiKey.HEARTBEAT, 3, {}, correlation_id=1, client_id="ab")
    v4 = encode_request(ApiKey.HEARTBEAT, 4, {}, correlation_id=1, client_id="ab")
    assert v3[4:] == bytes.fromhex("000c" "0003" "00000001" "0002" "6162") + bytes.fromhex(
        "0000" "00000000" "0000" "ffff"  # group_id "", generation 0, member_id "", group_instance_id null
    )
    assert v4[4:] == bytes.fromhex("000c" "0004" "00000001" "0002" "6162" "00") + bytes.fromhex(
        "01" "00000000" "01" "00" "00"
    )
    assert struct.unpack(">i", v4[:4])[0] == len(v4) - 4
    # The client id stays a classic (int16) string in header v2, and may be null.
    v4_null = encode_request(ApiKey.HEARTBEAT, 4, {}, correlation_id=1, client_id=None)
    assert v4_null[4 + 8 : 4 + 8 + 3] == bytes.fromhex("ffff" "00")
    header, _ = decode_request(v4_null[4:])
    assert header == RequestHeader(ApiKey.HEARTBEAT, 4, 1, None, None)


def test_request_header_v2_unknown_tagged_fields_are_kept():
    raw = bytes.fromhex("000c" "0004" "0000002a" "0001" "78" "01" "05" "02" "abcd") + bytes.fromhex(
        "02" "67" "00000001" "01" "00" "00"
    )
    header, body = decode_request(raw)
    assert header.correlation_id == 42 and header.client_id == "x"
    assert header.tagged_fields == {5: b"\xab\xcd"}
    assert body.group_id == "g" and body.generation_id == 1


def test_response_header_versions_follow_flexible_versions():
    assert encode_response(RequestHeader(ApiKey.HEARTBEAT, 3, 7), {}) == bytes.fromhex(
        "0000000a" "00000007" "00000000" "0000"
    )
    assert encode_response(RequestHeader(ApiKey.HEARTBEAT, 4, 7), {}) == bytes.fromhex(
        "0000000c" "00000007" "00" "00000000" "0000" "00"
    )
    cid, body = decode_response(ApiKey.HEARTBEAT, 4, bytes.fromhex("00000007" "00" "00000000" "0000" "00"))
    assert cid == 7 and body.error_code == 0


@pytest.mark.parametrize("version", range(0, 5))
def test_api_versions_response_always_uses_header_v0(version):
    data = encode_response(RequestHeader(ApiKey.API_VERSIONS, version, 9), {"api_keys": [API_VERSION_ROW]})
    body_bytes = response_schema(ApiKey.API_VERSIONS).encode({"api_keys": [API_VERSION_ROW]}, version)
    assert data == struct.pack(">ii", 4 + len(body_bytes), 9) + body_bytes
    cid, body = decode_response(ApiKey.API_VERSIONS, version, data[4:])
    assert cid == 9 and body.api_keys == [API_VERSION_ROW]


def test_api_versions_request_v3_uses_header_v2():
    data = encode_request(ApiKey.API_VERSIONS, 3, {"client_software_name": "n", "client_software_version": "1"},
                          correlation_id=3, client_id="c")
    assert data[4:] == bytes.fromhex("0012" "0003" "00000003" "0001" "63" "00" "026e" "0231" "00")


def test_unknown_api_versions_version_gets_v0_error_answer():
    # An ApiVersions v99 request: we cannot know its body (or even its header) layout.
    raw = struct.pack(">hhih", 18, 99, 1234, 3) + b"cli" + b"\x00\x05whatever"
    with pytest.raises(UnsupportedVersion) as info:
        decode_request(raw)
    header = info.value.header
    assert (header.api_key, header.api_version, header.correlation_id) == (18, 99, 1234)
    assert header.client_id == "cli"
    data = encode_response(header, api_versions_fallback_body())
    lo, hi = advertised_versions(ApiKey.API_VERSIONS)
    assert (lo, hi) == (0, 4)
    assert data == bytes.fromhex(
        "00000010"  # size
        "000004d2"  # correlation id, response header v0
        "0023"  # error 35 UNSUPPORTED_VERSION
        "00000001" "0012" "0000" "0004"  # classic array: ApiVersions 0-4; nothing more in v0
    )
    cid, body = decode_response(ApiKey.API_VERSIONS, 0, data[4:])
    assert cid == 1234 and body.error_code == 35


def test_unsupported_versions_of_other_apis_carry_the_correlation_id():
    for key, version in ((ApiKey.METADATA, 99), (ApiKey.PRODUCE, 2), (ApiKey.FETCH, 3), (ApiKey.METADATA, -1)):
        raw = struct.pack(">hhih", key, version, 555, -1)
        with pytest.raises(UnsupportedVersion) as info:
            decode_request(raw)
        assert info.value.header.correlation_id == 555
        assert info.value.header.api_key == key
        assert isinstance(info.value, ProtocolError)


# ---------------------------------------------------------------------------
# Advertised versions
# ---------------------------------------------------------------------------

REMOVED_APIS = {4: "LeaderAndIsr", 5: "StopReplica", 6: "UpdateMetadata", 7: "ControlledShutdown"}


def test_advertised_versions_quirks():
    assert advertised_versions(ApiKey.PRODUCE) == (0, 13)
    assert supported_versions(ApiKey.PRODUCE) == (3, 13)
    lo, hi = supported_versions(ApiKey.INIT_PRODUCER_ID)
    assert api_info(ApiKey.INIT_PRODUCER_ID).latest_unstable
    assert advertised_versions(ApiKey.INIT_PRODUCER_ID) == (lo, hi - 1) == (0, 5)
    assert advertised_versions(ApiKey.FETCH) == (4, 18)
    assert advertised_versions(ApiKey.METADATA) == (0, 13)
    assert advertised_versions(ApiKey.API_VERSIONS) == (0, 4)


@needs_spec
def test_advertised_versions_match_spec():
    seen = set()
    for path in sorted((SPEC / "message").glob("*Request.json")):
        d = _load_spec(path.stem)
        key = d["apiKey"]
        rng = _spec_range(d["validVersions"])
        if rng is None:
            assert api_info(key) is None, d["name"]
            continue
        seen.add(key)
        assert API_INDEX[key].name + "Request" == d["name"]
        expected = rng
        if key == ApiKey.PRODUCE:
            expected = (0, rng[1])
        if d.get("latestVersionUnstable"):
            expected = (rng[0], rng[1] - 1)
            assert key == ApiKey.INIT_PRODUCER_ID
        assert advertised_versions(key) == expected, d["name"]
        assert supported_versions(key) == rng, d["name"]
    assert seen == set(API_INDEX)


@pytest.mark.parametrize("key", sorted(REMOVED_APIS))
def test_removed_apis_are_unknown(key):
    if (SPEC / "message").is_dir():
        d = _load_spec(REMOVED_APIS[key] + "Request")
        assert d["apiKey"] == key and d["validVersions"] == "none"
    assert api_info(key) is None
    assert key not in API_INDEX
    with pytest.raises(Exception):
        advertised_versions(key)
    with pytest.raises(UnsupportedVersion) as info:
        decode_request(struct.pack(">hhih", key, 0, 8, -1))
    assert info.value.header.correlation_id == 8
    with pytest.raises(ProtocolError):
        encode_request(key, 0, {}, correlation_id=1)


# ---------------------------------------------------------------------------
# Framing
# ---------------------------------------------------------------------------


def _frames(n, size=50):
    return [bytes((i * 7 + k) & 255 for k in range(size + i)) for i in range(n)]


def test_frame_reader_huge_prefix_raises_without_allocating():
    tracemalloc.start()
    try:
        reader = FrameReader(max_frame_size=100 * 1024 * 1024)
        reader.feed(b"\x7f\xff\xff\xff" + b"x" * 100)
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        with pytest.raises(FrameTooLarge) as info:
            reader.next_frame()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.size == 0x7FFFFFFF
    assert isinstance(info.value, ProtocolError)
    assert peak - base < 1 << 20


def test_frame_reader_negative_prefix():
    reader = FrameReader()
    reader.feed(b"\xff\xff\xff\xfe")
    with pytest.raises(FrameTooLarge):
        reader.next_frame()


def test_frame_reader_big_allowed_prefix_waits_without_allocating():
    tracemalloc.start()
    try:
        reader = FrameReader(max_frame_size=0x7FFFFFFF)
        reader.feed(b"\x7f\xff\xff\xff" + b"abc")
        assert reader.pending_frame_size() == 0x7FFFFFFF
        for _ in range(100):
            assert reader.next_frame() is None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_frame_reader_limit_is_inclusive():
    reader = FrameReader(max_frame_size=10)
    reader.feed(frame(b"0123456789"))
    assert reader.next_frame() == b"0123456789"
    reader.feed(frame(b"0123456789a"))
    with pytest.raises(FrameTooLarge):
        reader.next_frame()


def test_frame_reader_split_at_every_byte():
    payloads = _frames(3) + [b""]
    stream = b"".join(frame(p) for p in payloads)
    for cut in range(len(stream) + 1):
        reader = FrameReader()
        got = []
        for part in (stream[:cut], stream[cut:]):
            reader.feed(part)
            while (f := reader.next_frame()) is not None:
                got.append(bytes(f))
        assert got == payloads, cut
        assert reader.at_frame_boundary() and reader.buffered == 0


def test_frame_reader_byte_by_byte():
    payloads = _frames(5)
    stream = b"".join(frame(p) for p in payloads)
    reader = FrameReader()
    got = []
    for i in range(len(stream)):
        reader.feed(stream[i : i + 1])
        while (f := reader.next_frame()) is not None:
            got.append(bytes(f))
        assert reader.at_frame_boundary() == (len(got) and sum(len(p) + 4 for p in got) == i + 1)
    assert got == payloads


def test_frame_reader_many_frames_in_one_feed():
    payloads = _frames(3000, size=40)
    stream = b"".join(frame(p) for p in payloads)
    reader = FrameReader()
    reader.feed(stream + b"\x00\x00")  # and the start of a next prefix
    got = []
    while (f := reader.next_frame()) is not None:
        got.append(f)
    assert [bytes(g) for g in got] == payloads
    assert all(isinstance(g, bytearray) for g in got)
    assert reader.buffered == 2 and not reader.at_frame_boundary()
    reader.feed(b"\x00\x01Z")
    assert reader.next_frame() == b"Z"


def test_frame_reader_frames_decode_as_requests():
    frames = [
        encode_request(ApiKey.HEARTBEAT, v, {"group_id": f"g{v}", "generation_id": v}, correlation_id=v)
        for v in range(0, 5)
    ]
    reader = FrameReader()
    reader.feed(b"".join(frames))
    decoded = []
    while (f := reader.next_frame()) is not None:
        decoded.append(decode_request(f))
    assert [(h.api_version, b.group_id) for h, b in decoded] == [(v, f"g{v}") for v in range(5)]


# ---------------------------------------------------------------------------
# Primitive types, classic and compact
# ---------------------------------------------------------------------------


def _enc(con, value) -> bytes:
    w = T.ChunkWriter()
    con._build(value, w, None, "")
    return w.getvalue()


def _dec(con, data: bytes, exact=True):
    r = T.BufferReader(data)
    value = con._parse(r, None, "")
    if exact:
        assert r.pos == r.end
    return value


@pytest.mark.parametrize(
    "con,value,wire",
    [
        (T.String(False, True), None, "ffff"),
        (T.String(False, True), "", "0000"),
        (T.String(False, False), "ab", "00026162"),
        (T.String(True, True), None, "00"),
        (T.String(True, True), "", "01"),
        (T.String(True, False), "ab", "036162"),
        (T.String(True, False), "\u00e9", "03c3a9"),
        (T.Bytes(False, True), None, "ffffffff"),
        (T.Bytes(False, False), b"", "00000000"),
        (T.Bytes(False, False), b"\x01\x02", "000000020102"),
        (T.Bytes(True, True), None, "00"),
        (T.Bytes(True, False), b"", "01"),
        (T.Bytes(True, False), b"\x01\x02", "030102"),
        (T.Array(T.INT32, False, True), None, "ffffffff"),
        (T.Array(T.INT32, False, False), [], "00000000"),
        (T.Array(T.INT32, False, False), [1, -1], "0000000200000001ffffffff"),
        (T.Array(T.INT32, True, True), None, "00"),
        (T.Array(T.INT32, True, False), [], "01"),
        (T.Array(T.INT32, True, False), [1, -1], "0300000001ffffffff"),
        (T.Array(T.String(True, False), True, False), ["a", ""], "03026101"),
        (T.UUID, uuid.UUID("01234567-89ab-cdef-fedc-ba9876543210"), "0123456789abcdeffedcba9876543210"),
        (T.UUID, uuid.UUID(int=0), "00" * 16),
        (T.FLOAT64, 1.5, "3ff8000000000000"),
        (T.FLOAT64, -0.1, "bfb999999999999a"),
        (T.UINT16, 65535, "ffff"),
        (T.UINT16, 443, "01bb"),
        (T.INT16, -2, "fffe"),
        (T.INT8, -1, "ff"),
        (T.INT64, -(2**63), "8000000000000000"),
        (T.BOOL, True, "01"),
        (T.BOOL, False, "00"),
        (T.UVarint(), 300, "ac02"),
        (T.UVarint(), 2**32 - 1, "ffffffff0f"),
    ],
)
def test_primitive_wire_forms(con, value, wire):
    assert _enc(con, value).hex() == wire
    assert _dec(con, bytes.fromhex(wire)) == value


@pytest.mark.parametrize(
    "con,value",
    [
        (T.String(False, False), None),
        (T.String(True, False), None),
        (T.Bytes(False, False), None),
        (T.Array(T.INT32, True, False), None),
        (T.String(False, False), "x" * 0x8000),  # too long for an int16 length
        (T.UINT16, -1),
        (T.UINT16, 65536),
        (T.INT8, 128),
        (T.INT32, 2**31),
        (T.INT64, "1"),
        (T.UUID, b"short"),
        (T.UUID, "not-a-uuid"),
        (T.String(True, False), b"bytes"),
        (T.String(True, False), "\ud800"),  # a lone surrogate has no UTF-8 form
        (T.String(False, True), "a\udfffb"),
        (T.Bytes(True, False), "str"),
        (T.Array(T.INT32, True, False), "abc"),
    ],
)
def test_unencodable_values_raise_protocol_error(con, value):
    with pytest.raises(ProtocolError):
        _enc(con, value)


@pytest.mark.parametrize(
    "con,wire",
    [
        (T.String(False, False), "ffff"),  # null where not nullable
        (T.String(True, False), "00"),
        (T.Bytes(False, False), "ffffffff"),
        (T.Array(T.INT32, False, False), "ffffffff"),
        (T.String(False, True), "fffe"),  # -2 is never a length
        (T.Bytes(False, True), "fffffffe"),
        (T.String(False, False), "0005616263"),  # longer than the data
        (T.String(True, False), "0a61"),
        (T.String(False, False), "0002c328"),  # not UTF-8
        (T.Array(T.INT32, False, False), "7fffffff"),  # count beyond the data
        (T.Array(T.INT32, True, False), "ffffffff0f"),
        (T.UUID, "0011"),
        (T.FLOAT64, "3ff8"),
        (T.UVarint(), "ffffffffff01"),  # more than 5 bytes
    ],
)
def test_malformed_primitives_raise_protocol_error(con, wire):
    with pytest.raises(ProtocolError):
        _dec(con, bytes.fromhex(wire), exact=False)


def test_nullable_fields_in_messages_classic_and_compact():
    # MetadataResponse: Brokers.Rack is a nullable string, Topics a non-null array.
    # v8 is classic, v9+ compact.
    body = {"brokers": [{"node_id": 1, "host": "h", "port": 9092, "rack": None}], "cluster_id": None}
    for version in (8, 9, 12):
        _, decoded = _roundtrip_response(ApiKey.METADATA, version, body)
        assert decoded.brokers[0].rack is None and decoded.cluster_id is None
    classic = response_schema(ApiKey.METADATA).encode(body, 8)
    compact = response_schema(ApiKey.METADATA).encode(body, 9)
    # Classic: rack null = int16 -1, cluster id null = int16 -1.
    assert bytes.fromhex("00000001" "00000001" "0001" "68" "00002384" "ffff" "ffff") in classic
    # Compact: rack null = 0, cluster id null = 0.
    assert bytes.fromhex("02" "00000001" "0268" "00002384" "00" "00" "00") in compact
    # A null topics list (MetadataRequest.Topics, nullable from v1) vs an empty one.
    for version, null, empty in ((1, "ffffffff", "00000000"), (9, "00", "01")):
        req = request_schema(ApiKey.METADATA)
        assert req.encode({"topics": None}, version).hex().startswith(null)
        assert req.encode({"topics": []}, version).hex().startswith(empty)
        assert req.decode(req.encode({"topics": None}, version), version).topics is None
        assert req.decode(req.encode({"topics": []}, version), version).topics == []
    with pytest.raises(ProtocolError):
        request_schema(ApiKey.METADATA).encode({"topics": None}, 0)  # not nullable in v0


def test_nullable_bytes_in_messages():
    # SaslAuthenticateResponse.AuthBytes is bytes (not nullable); JoinGroup metadata bytes.
    # FetchResponse partitions' Records: nullable records, classic (v11) and compact (v12).
    for version in (11, 12):
        body = {"responses": [{"topic": "t", "partitions": [{"partition_index": 0, "records": None}]}]}
        _, decoded = _roundtrip_response(ApiKey.FETCH, version, body)
        assert decoded.responses[0].partitions[0].records is None
        body["responses"][0]["partitions"][0]["records"] = b"\x00" * 5
        _, decoded = _roundtrip_response(ApiKey.FETCH, version, body)
        assert bytes(decoded.responses[0].partitions[0].records) == b"\x00" * 5


def test_uuid_float64_uint16_in_messages():
    topic_id = uuid.UUID("a1b2c3d4-0000-4000-8000-0123456789ab")
    _, decoded = _roundtrip_response(ApiKey.METADATA, 12, {"topics": [{"name": "t", "topic_id": topic_id}]})
    assert decoded.topics[0].topic_id == topic_id
    # A uuid may also be given as its 16 bytes or its text form.
    for given in (topic_id.bytes, str(topic_id)):
        _, decoded = _roundtrip_response(ApiKey.METADATA, 12, {"topics": [{"name": "t", "topic_id": given}]})
        assert decoded.topics[0].topic_id == topic_id

    quota = {"entries": [{"entity": [{"entity_type": "user", "entity_name": None}],
                          "values": [{"key": "producer_byte_rate", "value": 1048576.5}]}]}
    data, decoded = _roundtrip_response(ApiKey.DESCRIBE_CLIENT_QUOTAS, 1, quota)
    assert decoded.entries[0]["values"][0].value == 1048576.5
    assert struct.pack(">d", 1048576.5) in data

    reg = {"broker_id": 1, "listeners": [{"name": "PLAINTEXT", "host": "h", "port": 65535, "security_protocol": 0}]}
    data, header, decoded = _roundtrip_request(ApiKey.BROKER_REGISTRATION, 4, reg)
    assert decoded.listeners[0].port == 65535
    with pytest.raises(ProtocolError):
        reg["listeners"][0]["port"] = 65536
        encode_request(ApiKey.BROKER_REGISTRATION, 4, reg, correlation_id=1)


# ---------------------------------------------------------------------------
# Tagged sections: unknown tags, order, sizes; trailing bytes
# ---------------------------------------------------------------------------

_AV_REQ_HEAD = bytes.fromhex("0012" "0003" "00000001" "0001" "63" "00")


def test_unknown_tagged_fields_are_skipped_and_preserved():
    body = bytes.fromhex("026e" "0231") + bytes.fromhex("02" "05" "03" "aabbcc" "0a" "00")
    header, decoded = decode_request(_AV_REQ_HEAD + body)
    assert decoded.client_software_name == "n" and decoded.client_software_version == "1"
    assert decoded[T.UNKNOWN_TAGS] == {5: b"\xaa\xbb\xcc", 10: b""}
    again = encode_request(ApiKey.API_VERSIONS, 3, decoded, correlation_id=1, client_id="c")
    assert again[4:] == _AV_REQ_HEAD + body


def test_unknown_tags_merge_in_order_with_known_ones():
    schema = response_schema(ApiKey.API_VERSIONS)
    data = bytes.fromhex("0000" "01" "00000000" "03" "01" "08" "0000000000000007" "04" "01" "ff" "07" "00")
    decoded = schema.decode(data, 3)
    assert decoded.finalized_features_epoch == 7
    assert decoded[T.UNKNOWN_TAGS] == {4: b"\xff", 7: b""}
    assert schema.encode(decoded, 3) == data
    # Unknown tags inside a nested struct are preserved too.
    nested = bytes.fromhex("0000" "02" "0012" "0000" "0004" "01" "09" "01" "77" "00000000" "00")
    decoded = schema.decode(nested, 3)
    assert decoded.api_keys[0][T.UNKNOWN_TAGS] == {9: b"\x77"}
    assert schema.encode(decoded, 3) == nested


@pytest.mark.parametrize(
    "tags",
    [
        "02" "01" "08" "0000000000000007" "00" "00",  # tag 1 then tag 0
        "02" "05" "00" "05" "00",  # tag 5 twice
        "02" "07" "00" "03" "01" "01",  # unknown 7 then known 3
    ],
)
def test_out_of_order_or_repeated_tags_are_refused(tags):
    data = bytes.fromhex("0000" "01" "00000000" + tags)
    with pytest.raises(ProtocolError):
        response_schema(ApiKey.API_VERSIONS).decode(data, 3)


@pytest.mark.parametrize(
    "tags",
    [
        "01" "01" "09" "0000000000000007" "00",  # int64 in 9 bytes: trailing byte inside the field
        "01" "01" "07" "00000000000000",  # int64 in 7 bytes
        "01" "03" "05" "01",  # size beyond the data
        "02" "03" "01" "01",  # count beyond the data
    ],
)
def test_badly_sized_tagged_fields_are_refused(tags):
    data = bytes.fromhex("0000" "01" "00000000" + tags)
    with pytest.raises(ProtocolError):
        response_schema(ApiKey.API_VERSIONS).decode(data, 3)


def test_trailing_bytes_are_refused_when_strict_and_ignored_otherwise():
    data = encode_request(ApiKey.HEARTBEAT, 4, {"group_id": "g"}, correlation_id=1)
    decode_request(data[4:], strict=True)
    with pytest.raises(ProtocolError, match="unexpected bytes"):
        decode_request(data[4:] + b"\x00", strict=True)
    # Like Kafka, the broker side stops reading at the end of the message.
    _, body = decode_request(data[4:] + b"\x01\x00\x00")
    assert body.group_id == "g"
    resp = encode_response(RequestHeader(ApiKey.HEARTBEAT, 2, 5), {})
    decode_response(ApiKey.HEARTBEAT, 2, resp[4:])
    with pytest.raises(ProtocolError):
        decode_response(ApiKey.HEARTBEAT, 2, resp[4:] + b"\x01\x02")
    with pytest.raises(ProtocolError):
        request_schema(ApiKey.HEARTBEAT).decode(b"\x00\x01g\x00\x00\x00\x01\x00\x00\x00", 0)


def test_truncated_messages_are_refused():
    data = encode_request(ApiKey.JOIN_GROUP, 9, body_for(request_schema(ApiKey.JOIN_GROUP), 9), correlation_id=1)
    for cut in range(8, len(data) - 4):
        with pytest.raises(ProtocolError):
            decode_request(data[4 : 4 + cut])


# ---------------------------------------------------------------------------
# Decoded bodies
# ---------------------------------------------------------------------------


def test_decoded_body_has_defaults_for_absent_fields():
    _, _, body = _roundtrip_request(ApiKey.METADATA, 3, {"topics": [{"name": "t"}]})
    assert body.allow_auto_topic_creation is True  # "4+", default true
    assert body.include_topic_authorized_operations is False
    assert body.topics[0].topic_id == uuid.UUID(int=0)  # "10+"
    _, _, body = _roundtrip_request(ApiKey.JOIN_GROUP, 0, {"group_id": "g", "session_timeout_ms": 10})
    assert body.rebalance_timeout_ms == -1  # "1+", default -1
    assert body.group_instance_id is None and body.reason is None
    _, body = _roundtrip_response(ApiKey.FETCH, 4, {"responses": [{"topic": "t", "partitions": [{}]}]})
    part = body.responses[0].partitions[0]
    assert body.error_code == 0 and body.session_id == 0 and body.node_endpoints == []
    assert part.log_start_offset == -1 and part.preferred_read_replica == -1
    assert part.diverging_epoch == {"epoch": -1, "end_offset": -1}
    assert part.current_leader == {"leader_id": -1, "leader_epoch": -1}
    assert part.records is None


def test_records_decode_zero_copy_from_the_frame():
    records = bytes(range(100))
    body = {"topic_data": [{"name": "t", "partition_data": [{"index": 0, "records": records}]}]}
    data = encode_request(ApiKey.PRODUCE, 11, body, correlation_id=1)
    buf = bytearray(data[4:])
    _, decoded = decode_request(buf)
    view = decoded.topic_data[0].partition_data[0].records
    assert isinstance(view, memoryview) and view == records
    buf[buf.find(records)] = 0xEE  # patch the frame: the view sees it
    assert view[0] == 0xEE


def _all_field_names(msg: Message):
    def walk(fields):
        for f in fields:
            yield f.name
            if f.fields:
                yield from walk(f.fields)

    yield from walk(msg.fields)
    for fields in msg._structs.values():
        yield from walk(fields)


def test_field_names_are_snake_case():
    bad = []
    for key in API_INDEX:
        for msg in (request_schema(key), response_schema(key)):
            bad += [f"{msg.name}.{n}" for n in _all_field_names(msg) if not re.fullmatch(r"[a-z][a-z0-9_]*", n)]
    assert not bad
    names = set()
    for key in (ApiKey.METADATA, ApiKey.FETCH, ApiKey.INIT_PRODUCER_ID, ApiKey.API_VERSIONS, ApiKey.DESCRIBE_CLUSTER):
        for msg in (request_schema(key), response_schema(key)):
            names |= set(_all_field_names(msg))
    for expected in (
        "allow_auto_topic_creation",
        "include_topic_authorized_operations",
        "cluster_authorized_operations",
        "max_wait_ms",
        "isolation_level",
        "last_fetched_epoch",
        "transactional_id",
        "enable2_pc",
        "zk_migration_ready",
        "api_keys",
        "throttle_time_ms",
        "preferred_read_replica",
    ):
        assert expected in names, expected


# ---------------------------------------------------------------------------
# Every (api, version): defaults and rich bodies round-trip exactly
# ---------------------------------------------------------------------------

PAIRS = list(all_pairs())


def _pair_id(p):
    key, v = p
    return f"{API_INDEX[key].name}-v{v}"


@pytest.mark.parametrize("pair", PAIRS, ids=_pair_id)
def test_every_request_roundtrips(pair):
    key, version = pair
    msg = request_schema(key)
    data, header, decoded = _roundtrip_request(key, version, {})
    assert header == RequestHeader(key, version, 77, "cid", None)
    assert decoded == defaults_body(msg, version)
    assert encode_request(key, version, decoded, correlation_id=77, client_id="cid") == data
    for mode in ("rich", "nulls"):
        body = body_for(msg, version, mode)
        data, header, decoded = _roundtrip_request(key, version, body)
        assert decoded == body, mode
        assert encode_request(key, version, decoded, correlation_id=77, client_id="cid") == data


@pytest.mark.parametrize("pair", PAIRS, ids=_pair_id)
def test_every_response_roundtrips(pair):
    key, version = pair
    msg = response_schema(key)
    data, decoded = _roundtrip_response(key, version, {})
    assert decoded == defaults_body(msg, version)
    assert encode_response(RequestHeader(key, version, 77), decoded) == data
    for mode in ("rich", "nulls"):
        body = body_for(msg, version, mode)
        data, decoded = _roundtrip_response(key, version, body)
        assert decoded == body, mode
        assert encode_response(RequestHeader(key, version, 77), decoded) == data
        assert b"".join(encode_response(RequestHeader(key, version, 77), body, chunks=True)) == data


def test_roundtrip_coverage():
    """Every API the codec knows is covered in every version it supports."""
    assert len(PAIRS) == sum(hi - lo + 1 for lo, hi in (supported_versions(k) for k in API_INDEX))
    assert {k for k, _ in PAIRS} == set(API_INDEX)
    assert len(PAIRS) > 250


def test_records_scatter_gather_is_kept_by_reference():
    big = bytes(64 * 1024)
    body = {"responses": [{"topic_id": uuid.uuid4(), "partitions": [{"partition_index": i, "records": big}
                                                                      for i in range(3)]}]}
    parts = encode_response(RequestHeader(ApiKey.FETCH, 16, 1), body, chunks=True)
    assert sum(1 for p in parts if p is big) == 3
    joined = b"".join(parts)
    assert joined == encode_response(RequestHeader(ApiKey.FETCH, 16, 1), body)
    assert struct.unpack(">i", joined[:4])[0] == len(joined) - 4


@pytest.mark.parametrize("n", [10, 2000])  # below and above ChunkWriter.BIG bytes
@pytest.mark.parametrize("chunks", [False, True])
def test_typed_buffers_are_sized_in_bytes(n, chunks):
    """A records value with items wider than a byte (array('I'), a typed memoryview) is
    written with its size in bytes, in the length field and in the frame's size prefix."""
    import array

    arr = array.array("I", range(n))
    for records in (arr, memoryview(arr), [arr, b"xy"]):
        body = {"responses": [{"topic": "t", "partitions": [{"partition_index": 0, "records": records}]}]}
        out = encode_response(RequestHeader(ApiKey.FETCH, 11, 1), body, chunks=chunks)
        data = b"".join(out) if chunks else out
        assert struct.unpack(">i", data[:4])[0] == len(data) - 4
        _, decoded = decode_response(ApiKey.FETCH, 11, data[4:])
        expected = arr.tobytes() + (b"xy" if isinstance(records, list) else b"")
        assert bytes(decoded.responses[0].partitions[0].records) == expected


def test_non_buffer_in_records_list_raises_protocol_error():
    body = {"responses": [{"topic": "t", "partitions": [{"partition_index": 0, "records": [b"ok", 5]}]}]}
    with pytest.raises(ProtocolError):
        encode_response(RequestHeader(ApiKey.FETCH, 11, 1), body)
