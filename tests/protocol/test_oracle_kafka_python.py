"""kafka-python as an independent oracle for the wire codec.

kafka-python 3.0 carries two implementations of the Kafka protocol, and both
are used here:

* the JSON-driven one (``kafka.protocol.<area>.<module>``: one ``ApiMessage``
  class per API, built from its own copy of Kafka's message JSON with its own
  encoder/decoder generator), and
* the legacy hand-written one (``kafka.protocol.old``: one ``Struct`` class
  per API *and version*, with positional ``Schema`` definitions), which
  shares nothing with the JSON files at all.

For every (API, version) that both we and the oracle know, each test builds
bodies (all defaults, richly populated, nullable fields null) with the
schema-walking generator from test_codec.py and checks, for requests and
responses alike:

1. oracle encodes (with its header) -> ``protocol`` decodes -> equal field by field;
2. ``protocol`` encodes -> oracle decodes -> equal field by field;
3. both encodings are byte-identical.

Oracle disagreements with Kafka's JSON specs are marked xfail with the
reason, each checked against /work/shared/kafka-protocol (see LEGACY_XFAIL).
Coverage is asserted and printed by ``test_oracle_coverage``.
"""

from __future__ import annotations

import importlib
import importlib.util
import pathlib
import pkgutil
import uuid
import warnings

import pytest

with warnings.catch_warnings():
    # kafka-python reads its JSON with importlib.resources' deprecated calls.
    warnings.simplefilter("ignore", DeprecationWarning)
    kafka_protocol = pytest.importorskip("kafka.protocol")
    from kafka.protocol.api_message import ApiMessage  # noqa: E402
    from kafka.protocol.old import types as OT  # noqa: E402
    from kafka.protocol.old.api import Request as OldRequest  # noqa: E402
    from kafka.protocol.old.api import Response as OldResponse  # noqa: E402

import protocol  # noqa: E402
from protocol import (  # noqa: E402
    API_INDEX,
    ApiKey,
    RequestHeader,
    UnsupportedVersion,
    api_versions_fallback_body,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    request_schema,
    response_schema,
)


def _load_sibling(name: str):
    path = pathlib.Path(__file__).with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"_kbroker_protocol_tests_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tc = _load_sibling("test_codec")

MODES = ("defaults", "rich", "nulls")
CID = 0x1234567
CLIENT_ID = "kafka-python-oracle"


def _schema(key: int, kind: str):
    return request_schema(key) if kind == "request" else response_schema(key)


def _present(f, version: int, flexible: bool) -> bool:
    return tc._in(version, f.versions) and not (f.tag is not None and not flexible)


def _body(msg, key: int, kind: str, version: int, mode: str) -> dict:
    body = tc.defaults_body(msg, version) if mode == "defaults" else tc.body_for(msg, version, mode)
    if key == ApiKey.API_VERSIONS and kind == "response":
        # Both kafka-python decoders (like Kafka's Java client) reread an
        # ApiVersions response with a non-zero error code in the v0 layout.
        body["error_code"] = 0
    return body


def _ours_encode(key, kind, version, body) -> bytes:
    if kind == "request":
        return encode_request(key, version, body, correlation_id=CID, client_id=CLIENT_ID)[4:]
    return encode_response(RequestHeader(key, version, CID), body)[4:]


def _ours_decode(key, kind, version, data):
    if kind == "request":
        header, body = decode_request(data)
        assert header == RequestHeader(key, version, CID, CLIENT_ID, None)
        return body
    cid, body = decode_response(key, version, data)
    assert cid == CID
    return body


# ---------------------------------------------------------------------------
# Oracle 1: kafka-python's JSON-driven ApiMessage classes
# ---------------------------------------------------------------------------


def _json_classes() -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for info in pkgutil.walk_packages(kafka_protocol.__path__, "kafka.protocol."):
            if ".old" in info.name or info.name.endswith("generate_stubs"):
                continue
            importlib.import_module(info.name)

    def subclasses(c):
        for s in c.__subclasses__():
            yield s
            yield from subclasses(s)

    return {(c.API_KEY, c.type): c for c in subclasses(ApiMessage) if c._class_version is None}


JSON_CLASSES = _json_classes()


def _kp_name(name: str, kmap: dict) -> str:
    if name in kmap:
        return name
    # kafka-python renames Metadata's and DescribeCluster's
    # {Cluster,Topic}AuthorizedOperations to "authorized_operations".
    if name.endswith("authorized_operations") and "authorized_operations" in kmap:
        return "authorized_operations"
    raise KeyError(f"kafka-python has no field for {name} (has {sorted(kmap)})")


def _int_to_bits(value: int):
    # kafka-python turns the authorized-operations int32 into a set of bit numbers
    # (None for Kafka's "not requested" value, INT32_MIN).
    bits = {b for b in range(32) if ((value & 0xFFFFFFFF) >> b) & 1}
    return None if bits == {31} else bits


def _bits_to_int(bits) -> int:
    u = sum(1 << b for b in ({31} if bits is None else bits))
    return u - (1 << 32) if u >= 1 << 31 else u


def _to_kp(msg, fields, version, flexible, kstruct, value, data_class):
    kmap = {f.name: f for f in kstruct._fields}
    kwargs = {}
    for f in fields:
        if not _present(f, version, flexible):
            continue
        kf = kmap[_kp_name(f.name, kmap)]
        val = value[f.name]
        if val is not None:
            if kf.is_struct_array():
                sub = tc.struct_fields(msg, f.type[2:])
                val = [_to_kp(msg, sub, version, flexible, kf.array_of, x, kf.data_class) for x in val]
            elif kf.is_struct():
                if f.tag is not None and val == tc.field_default(msg, f, version):
                    # kafka-python's "absent" for a tagged struct is None (see _from_kp);
                    # given the default struct itself it would write it out.
                    val = None
                else:
                    val = _to_kp(msg, tc.struct_fields(msg, f.type), version, flexible, kf, val, kf.data_class)
            elif kf.type_str == "bitfield":
                val = _int_to_bits(val)
        kwargs[kf.name] = val
    return data_class(version=version, **kwargs)


def _from_kp(msg, fields, version, flexible, kstruct, obj) -> dict:
    kmap = {f.name: f for f in kstruct._fields}
    out = {}
    for f in fields:
        if not _present(f, version, flexible):
            out[f.name] = tc.field_default(msg, f, version)
            continue
        kf = kmap[_kp_name(f.name, kmap)]
        val = getattr(obj, kf.name)
        if kf.is_struct_array():
            sub = tc.struct_fields(msg, f.type[2:])
            val = None if val is None else [_from_kp(msg, sub, version, flexible, kf.array_of, x) for x in val]
        elif kf.is_struct():
            if val is None and f.tag is not None and not tc._in(version, f.nullable):
                # kafka-python leaves an absent tagged struct as None; in Kafka
                # its default is the struct with every field at its default.
                val = tc.field_default(msg, f, version)
            elif val is not None:
                val = _from_kp(msg, tc.struct_fields(msg, f.type), version, flexible, kf, val)
        elif kf.type_str == "bitfield":
            val = _bits_to_int(val)
        elif isinstance(val, memoryview):
            val = bytes(val)
        out[f.name] = val
    return out


def _json_cases():
    cases = []
    for key in sorted(API_INDEX):
        for kind in ("request", "response"):
            cls = JSON_CLASSES.get((key, kind))
            if cls is None:
                continue
            ours = _schema(key, kind).valid
            theirs = cls._valid_versions
            for v in range(max(ours[0], theirs[0]), min(ours[1], theirs[1]) + 1):
                cases.append((key, kind, v))
    return cases


JSON_CASES = _json_cases()


def _case_id(case):
    key, kind, v = case
    return f"{API_INDEX[key].name}-{kind}-v{v}"


@pytest.mark.parametrize("case", JSON_CASES, ids=_case_id)
def test_json_oracle(case):
    key, kind, version = case
    cls = JSON_CLASSES[(key, kind)]
    msg = _schema(key, kind)
    flexible = msg.is_flexible(version)
    for mode in MODES:
        body = _body(msg, key, kind, version, mode)
        # kafka-python encodes, we decode.
        obj = _to_kp(msg, msg.fields, version, flexible, cls._struct, body, cls)
        if kind == "request":
            obj.with_header(correlation_id=CID, client_id=CLIENT_ID)
        else:
            obj.with_header(correlation_id=CID)
        theirs = bytes(obj.encode(header=True))
        assert _ours_decode(key, kind, version, theirs) == body, mode
        # We encode, kafka-python decodes.
        ours = _ours_encode(key, kind, version, body)
        decoded = cls.decode(ours, version=version, header=True)
        assert decoded.header.correlation_id == CID
        assert _from_kp(msg, msg.fields, version, flexible, cls._struct, decoded) == body, mode
        # And the bytes agree.
        assert ours == theirs, mode


# kafka-python's own defaults that differ from the spec on purpose (its json_patch):
KP_DEFAULT_PATCHES = {
    # ListOffsetsRequest.ReplicaId has no default in the spec (0); kafka-python
    # patches it to -1 (a consumer) for convenience.
    (ApiKey.LIST_OFFSETS, "request"): {"replica_id": -1},
}


@pytest.mark.parametrize("case", JSON_CASES, ids=_case_id)
def test_json_oracle_defaults(case):
    """An object kafka-python builds from its own defaults decodes to our defaults."""
    key, kind, version = case
    cls = JSON_CLASSES[(key, kind)]
    obj = cls(version=version)
    if kind == "request":
        obj.with_header(correlation_id=CID, client_id=CLIENT_ID)
    else:
        obj.with_header(correlation_id=CID)
    decoded = _ours_decode(key, kind, version, bytes(obj.encode(header=True)))
    expected = tc.defaults_body(_schema(key, kind), version)
    expected.update(KP_DEFAULT_PATCHES.get((key, kind), {}))
    assert decoded == expected


# ---------------------------------------------------------------------------
# Oracle 2: kafka-python's legacy hand-written Struct schemas
# ---------------------------------------------------------------------------


def _legacy_classes() -> dict:
    import kafka.protocol.old as old

    found = {}
    for info in pkgutil.iter_modules(old.__path__, "kafka.protocol.old."):
        module = importlib.import_module(info.name)
        for c in vars(module).values():
            if (
                isinstance(c, type)
                and issubclass(c, (OldRequest, OldResponse))
                and isinstance(getattr(c, "API_VERSION", None), int)
                and isinstance(getattr(c, "SCHEMA", None), OT.Schema)
            ):
                found[(c.API_KEY, "request" if c.is_request() else "response", c.API_VERSION)] = c
    return found


LEGACY_CLASSES = _legacy_classes()

# Where kafka-python's legacy schemas disagree with Kafka 4.2's JSON specs
# (checked against /work/shared/kafka-protocol/message/*.json):
LEGACY_XFAIL = {
    (ApiKey.OFFSET_FOR_LEADER_EPOCH, "request", 4): (
        "kafka.protocol.old OffsetForLeaderEpochRequest_v4 uses compact fields but not FLEXIBLE_VERSION, "
        "so it writes request header v1; OffsetForLeaderEpochRequest.json has flexibleVersions 4+ (header v2)"
    ),
    (ApiKey.OFFSET_FOR_LEADER_EPOCH, "response", 4): (
        "kafka.protocol.old OffsetForLeaderEpochResponse_v4 lacks FLEXIBLE_VERSION: response header v0 "
        "instead of v1 (spec: flexibleVersions 4+)"
    ),
    (ApiKey.DESCRIBE_ACLS, "request", 2): (
        "kafka.protocol.old DescribeAclsRequest_v2 reuses the v1 classic schema and header; "
        "DescribeAclsRequest.json has flexibleVersions 2+ (compact strings, tagged fields, header v2)"
    ),
    (ApiKey.DESCRIBE_ACLS, "response", 2): (
        "kafka.protocol.old DescribeAclsResponse_v2 reuses the v1 classic schema and header; "
        "DescribeAclsResponse.json has flexibleVersions 2+"
    ),
}


def _untag(msg, fields, version, flexible, value) -> dict:
    """``value`` with every tagged field at its default (the legacy schemas keep raw tag bytes only)."""
    out = {}
    for f in fields:
        val = value[f.name]
        if not _present(f, version, flexible) or f.tag is not None:
            out[f.name] = tc.field_default(msg, f, version)
            continue
        elem = f.type[2:] if f.type.startswith("[]") else f.type
        if val is not None and elem in msg._structs:
            sub = tc.struct_fields(msg, elem)
            if f.type.startswith("[]"):
                val = [_untag(msg, sub, version, flexible, x) for x in val]
            else:
                val = _untag(msg, sub, version, flexible, val)
        out[f.name] = val
    return out


def _to_legacy(msg, f_type, value, old_type, version, flexible):
    """Our value (a dict tree) as the positional tuples of a legacy Schema."""
    if value is None:
        return None
    if old_type is OT.BitField:
        return _int_to_bits(value)
    if isinstance(old_type, OT.Array) and f_type is not None and f_type.startswith("[]"):
        return [_to_legacy(msg, f_type[2:], x, old_type.array_of, version, flexible) for x in value]
    if f_type is None or f_type in msg._structs:
        fields = msg.fields if f_type is None else tc.struct_fields(msg, f_type)
        fields = [f for f in fields if _present(f, version, flexible) and f.tag is None]
        if isinstance(old_type, OT.Schema):
            return _fields_to_legacy(msg, fields, value, old_type, version, flexible)
        # The legacy schema writes a one-field struct as its field (e.g. Metadata topics as strings).
        assert len(fields) == 1, (f_type, [f.name for f in fields])
        return _to_legacy(msg, fields[0].type, value[fields[0].name], old_type, version, flexible)
    return value


def _fields_to_legacy(msg, fields, value, old_type, version, flexible):
    ofields = list(old_type.fields)
    tagged = bool(ofields) and ofields[-1] is OT.TaggedFields
    if tagged:
        ofields = ofields[:-1]
    mismatch = AssertionError(f"fields differ: ours {[f.name for f in fields]}, legacy {old_type.names}")
    out = []
    i = 0
    for ot in ofields:
        if i >= len(fields):
            raise mismatch
        f = fields[i]
        if isinstance(ot, OT.Schema) and f.type not in msg._structs:
            # The legacy schema groups consecutive fields into an inline struct
            # (CreatePartitions v0-1 "new_partitions"); same bytes.
            k = len(ot.fields)
            out.append(_fields_to_legacy(msg, fields[i : i + k], value, ot, version, flexible))
            i += k
        else:
            out.append(_to_legacy(msg, f.type, value[f.name], ot, version, flexible))
            i += 1
    if i != len(fields):
        raise mismatch
    return tuple(out) + ({},) if tagged else tuple(out)


def _legacy_normalise(old_type, value):
    """Legacy decode output in the shape _to_legacy builds (empty tag dicts back, zero uuids)."""
    if value is None:
        return None
    if isinstance(old_type, OT.Schema):
        vals = list(value)
        if old_type.has_tagged_fields() and len(vals) == len(old_type.fields) - 1:
            vals.append({})
        return tuple(_legacy_normalise(t, x) for t, x in zip(old_type.fields, vals))
    if isinstance(old_type, OT.Array):
        return [_legacy_normalise(old_type.array_of, x) for x in value]
    if old_type is OT.UUID and value is None:
        return uuid.UUID(int=0)  # the legacy decoder turns the zero uuid into None
    if isinstance(value, memoryview):
        return bytes(value)
    return value


def _legacy_cases():
    cases = []
    for (key, kind, v) in sorted(LEGACY_CLASSES):
        if key in API_INDEX and _schema(key, kind).supports(v):
            marks = ()
            if (key, kind, v) in LEGACY_XFAIL:
                marks = pytest.mark.xfail(reason=LEGACY_XFAIL[(key, kind, v)], strict=True)
            cases.append(pytest.param((key, kind, v), marks=marks, id=_case_id((key, kind, v))))
    return cases


LEGACY_CASES = _legacy_cases()


@pytest.mark.parametrize("case", LEGACY_CASES)
def test_legacy_oracle(case):
    key, kind, version = case
    cls = LEGACY_CLASSES[case]
    msg = _schema(key, kind)
    flexible = msg.is_flexible(version)
    for mode in MODES:
        body = _untag(msg, msg.fields, version, flexible, _body(msg, key, kind, version, mode))
        positional = _to_legacy(msg, None, body, cls.SCHEMA, version, flexible)
        obj = cls(*positional)
        if kind == "request":
            obj.with_header(correlation_id=CID, client_id=CLIENT_ID)
        else:
            obj.with_header(correlation_id=CID)
        theirs = obj.encode(header=True)
        assert _ours_decode(key, kind, version, theirs) == body, mode
        ours = _ours_encode(key, kind, version, body)
        decoded = cls.decode(ours, header=True)
        assert decoded.header.correlation_id == CID
        got = tuple(getattr(decoded, name) for name in cls.SCHEMA.names)
        assert _legacy_normalise(cls.SCHEMA, got) == _legacy_normalise(cls.SCHEMA, positional), mode
        assert ours == theirs, mode


# ---------------------------------------------------------------------------
# Specific interop checks
# ---------------------------------------------------------------------------


def test_api_versions_fallback_is_readable_by_kafka_python():
    """Our answer to an ApiVersions version we do not know decodes in kafka-python (v0 on error)."""
    from kafka.protocol.metadata.api_versions import ApiVersionsRequest, ApiVersionsResponse

    req = ApiVersionsRequest(version=4, client_software_name="x", client_software_version="1")
    req.with_header(correlation_id=77, client_id="c")
    data = bytearray(req.encode(header=True))
    data[2:4] = (5).to_bytes(2, "big")  # pretend it is a v5 request, newer than ours
    with pytest.raises(UnsupportedVersion) as info:
        decode_request(data)
    answer = encode_response(info.value.header, api_versions_fallback_body())
    decoded = ApiVersionsResponse.decode(answer[4:], version=4, header=True)
    assert decoded.header.correlation_id == 77
    assert decoded.error_code == 35
    assert [(k.api_key, k.min_version, k.max_version) for k in decoded.api_keys] == [(18, 0, 4)]


def test_kafka_python_tagged_struct_at_default_is_accepted():
    """kafka-python writes a tagged struct it was given even when every field is at its default
    (FetchRequest.ReplicaState {-1, -1}); Kafka leaves such a field out.  We read its bytes
    and write the canonical form."""
    cls = JSON_CLASSES[(ApiKey.FETCH, "request")]
    msg = request_schema(ApiKey.FETCH)
    default_state = {"replica_id": -1, "replica_epoch": -1}
    obj = cls(version=15, replica_state=cls.ReplicaState(version=15, **default_state))
    obj.with_header(correlation_id=CID, client_id=CLIENT_ID)
    theirs = bytes(obj.encode(header=True))
    body = _ours_decode(ApiKey.FETCH, "request", 15, theirs)
    assert body.replica_state == default_state
    ours = _ours_encode(ApiKey.FETCH, "request", 15, body)
    assert len(ours) < len(theirs)
    assert ours == _ours_encode(ApiKey.FETCH, "request", 15, tc.defaults_body(msg, 15))


def test_oracle_coverage(capsys):
    """How many (api, version) pairs each oracle checks, requests and responses together."""
    json_pairs = {(k, v) for k, _, v in JSON_CASES}
    legacy = [p.values[0] for p in LEGACY_CASES]
    legacy_ok = {(k, v) for (k, kind, v) in legacy if (k, kind, v) not in LEGACY_XFAIL}
    all_pairs = set(tc.all_pairs())
    json_apis = {k for k, _ in json_pairs}
    report = (
        f"kafka-python oracle coverage: JSON classes {len(JSON_CASES)} message versions = "
        f"{len(json_pairs)} (api, version) pairs over {len(json_apis)} APIs; legacy Struct schemas "
        f"{len(legacy)} message versions ({len(LEGACY_XFAIL)} xfail) = {len(legacy_ok)} pairs; "
        f"union {len(json_pairs | legacy_ok)} of the codec's {len(all_pairs)} pairs"
    )
    with capsys.disabled():
        print("\n" + report)
    assert len(json_pairs) >= 200 and len(json_apis) >= 50
    assert len(legacy_ok) >= 100
    # Every API kafka-python's JSON classes know is covered in every version both support.
    for (key, kind), cls in JSON_CLASSES.items():
        if key in API_INDEX:
            lo, hi = API_INDEX[key].valid
            for v in range(max(lo, cls._valid_versions[0]), min(hi, cls._valid_versions[1]) + 1):
                assert (key, kind, v) in JSON_CASES
