"""Property tests (hypothesis) for the wire codec.

* Random bodies, drawn from strategies built from the field tables, round-trip
  exactly for every API and version, requests and responses.
* Random bytes and mutated valid frames (bit flips, truncations, insertions,
  deletions, huge length prefixes and varints) fed to ``decode_request``,
  ``decode_response`` and ``FrameReader`` raise nothing but ProtocolError:
  no IndexError, struct.error, UnicodeDecodeError, MemoryError,
  RecursionError, no hang and no giant allocation.

Example counts are kept small so the file runs in well under a minute.
"""

from __future__ import annotations

import importlib.util
import pathlib
import struct
import time
import tracemalloc
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import (
    API_INDEX,
    FrameReader,
    ProtocolError,
    RequestHeader,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    frame,
    request_schema,
    response_schema,
    supported_versions,
)


def _load_sibling(name: str):
    path = pathlib.Path(__file__).with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"_kbroker_protocol_tests_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tc = _load_sibling("test_codec")

GOLDEN = pathlib.Path(__file__).resolve().parent / "golden"
FAST = settings(deadline=None, suppress_health_check=list(HealthCheck), database=None)

# ---------------------------------------------------------------------------
# Strategies from the field tables
# ---------------------------------------------------------------------------

_INT_RANGES = {
    "int8": (-(2**7), 2**7 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
}


def _primitive(t: str):
    if t in _INT_RANGES:
        lo, hi = _INT_RANGES[t]
        return st.integers(lo, hi)
    if t == "bool":
        return st.booleans()
    if t == "float64":
        return st.floats(allow_nan=False)
    if t == "string":
        return st.text(max_size=12)
    if t in ("bytes", "records"):
        return st.binary(max_size=24)
    if t == "uuid":
        return st.integers(0, 2**128 - 1).map(lambda i: uuid.UUID(int=i))
    raise KeyError(t)


def _field(msg, f, version: int, depth: int):
    t = f.type
    if t.startswith("[]"):
        elem = t[2:]
        inner = _primitive(elem) if elem in tc._TYPE_DEFAULTS else _struct(msg, tc.struct_fields(msg, elem), version, depth + 1)
        s = st.lists(inner, max_size=3 if depth < 2 else 1)
    elif t in tc._TYPE_DEFAULTS:
        s = _primitive(t)
    else:
        s = _struct(msg, tc.struct_fields(msg, t), version, depth + 1)
    if tc._in(version, f.nullable):
        s = st.none() | s
    return s


def _struct(msg, fields, version: int, depth: int = 0):
    flexible = msg.is_flexible(version)
    parts = {}
    for f in fields:
        default = tc.field_default(msg, f, version)
        if not tc._in(version, f.versions) or (f.tag is not None and not flexible):
            parts[f.name] = st.just(default)
            continue
        s = _field(msg, f, version, depth)
        if f.tag is not None:
            s = st.just(default) | s  # tagged fields are often left at their default
        parts[f.name] = s
    return st.fixed_dictionaries(parts)


_STRATEGIES: dict = {}


def body_strategy(msg, version: int):
    key = (msg.name, version)
    if key not in _STRATEGIES:
        _STRATEGIES[key] = _struct(msg, msg.fields, version)
    return _STRATEGIES[key]


def _versions(key):
    lo, hi = supported_versions(key)
    return list(range(lo, hi + 1))


API_KINDS = [(key, kind) for key in sorted(API_INDEX) for kind in ("request", "response")]


@pytest.mark.parametrize("api_kind", API_KINDS, ids=lambda ak: f"{API_INDEX[ak[0]].name}-{ak[1]}")
@settings(FAST, max_examples=25)
@given(data=st.data())
def test_random_bodies_roundtrip(api_kind, data):
    key, kind = api_kind
    version = data.draw(st.sampled_from(_versions(key)), label="version")
    msg = request_schema(key) if kind == "request" else response_schema(key)
    body = data.draw(body_strategy(msg, version), label="body")
    if kind == "request":
        wire = encode_request(key, version, body, correlation_id=1, client_id="fuzz")
        _, decoded = decode_request(wire[4:])
        again = encode_request(key, version, decoded, correlation_id=1, client_id="fuzz")
    else:
        wire = encode_response(RequestHeader(key, version, 1), body)
        _, decoded = decode_response(key, version, wire[4:])
        again = encode_response(RequestHeader(key, version, 1), decoded)
    assert decoded == body
    assert again == wire


_JUNK = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=5)
    | st.binary(max_size=5) | st.sampled_from(["\ud800", uuid.UUID(int=5), object()]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=6,
)


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, prefix + (i,))


def _replace(value, path, new):
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _replace(value[head], rest, new)}
    out = list(value)
    out[head] = _replace(out[head], rest, new)
    return out


@settings(FAST, max_examples=600)
@given(pair=st.sampled_from(list(tc.all_pairs())), kind=st.sampled_from(["request", "response"]), data=st.data())
def test_encoding_wrong_values_raises_only_protocol_error(pair, kind, data):
    """A body with one value anywhere replaced by junk either encodes or raises ProtocolError."""
    key, version = pair
    msg = request_schema(key) if kind == "request" else response_schema(key)
    body = data.draw(body_strategy(msg, version), label="body")
    path = data.draw(st.sampled_from(list(_paths(body))), label="path")
    body = _replace(body, path, data.draw(_JUNK, label="junk"))
    try:
        if kind == "request":
            encode_request(key, version, body, correlation_id=1)
        else:
            encode_response(RequestHeader(key, version, 1), body)
    except ProtocolError:
        pass


# ---------------------------------------------------------------------------
# Hostile input
# ---------------------------------------------------------------------------


def _corpus():
    """Valid frames: (kind, api_key, version, frame without size prefix)."""
    out = []
    for key, version in tc.all_pairs():
        req = request_schema(key)
        resp = response_schema(key)
        out.append(("request", key, version, encode_request(key, version, tc.body_for(req, version, width=1, max_depth=2), correlation_id=9)[4:]))
        out.append(("response", key, version, encode_response(RequestHeader(key, version, 9), tc.body_for(resp, version, "nulls", width=1, max_depth=2))[4:]))
    if GOLDEN.is_dir():
        for req_path in sorted(GOLDEN.glob("*/*.req.bin")):
            data = req_path.read_bytes()
            key, version = struct.unpack_from(">hh", data)
            out.append(("request", key, version, data))
            resp_path = req_path.with_name(req_path.name.replace(".req.", ".resp."))
            if resp_path.exists():
                out.append(("response", key, version, resp_path.read_bytes()))
    return out


CORPUS = _corpus()

# Length prefixes and counts a hostile peer would pick.
BOMBS = [
    b"\x7f\xff\xff\xff",  # int32 max as a bytes/array length
    b"\x7f\xff",  # int16 max as a string length
    b"\xff\xff\xff\xfe",  # -2
    b"\x80\x00\x00\x00",  # int32 min
    b"\xff\xff\xff\xff\x07",  # uvarint 2**31 - 1 (compact length)
    b"\xff\xff\xff\xff\x0f",  # uvarint 2**32 - 1
    b"\xff\xff\xff\xff\xff\xff",  # an over-long varint
    b"\x80\x80\x80\x80\x80",
]


def _decode(kind, key, version, data):
    """Decode and return True on success; only ProtocolError may escape."""
    try:
        if kind == "request":
            decode_request(data)
        else:
            decode_response(key, version, data)
    except ProtocolError:
        return False
    return True


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 20), st.integers(0, 7)),
    st.tuples(st.just("truncate"), st.integers(0, 1 << 20)),
    st.tuples(st.just("insert"), st.integers(0, 1 << 20), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("delete"), st.integers(0, 1 << 20), st.integers(1, 8)),
    st.tuples(st.just("bomb"), st.integers(0, 1 << 20), st.sampled_from(BOMBS)),
    st.tuples(st.just("set"), st.integers(0, 1 << 20), st.integers(0, 255)),
)


def _mutate(data: bytes, ops) -> bytes:
    buf = bytearray(data)
    for op in ops:
        pos = op[1] % (len(buf) + 1)
        if op[0] == "flip" and buf:
            buf[pos % len(buf)] ^= 1 << op[2]
        elif op[0] == "truncate":
            del buf[pos:]
        elif op[0] == "insert":
            buf[pos:pos] = op[2]
        elif op[0] == "delete":
            del buf[pos : pos + op[2]]
        elif op[0] == "bomb":
            buf[pos : pos + len(op[2])] = op[2]
        elif op[0] == "set" and buf:
            buf[pos % len(buf)] = op[2]
    return bytes(buf)


@settings(FAST, max_examples=3000)
@given(index=st.integers(0, len(CORPUS) - 1), ops=st.lists(mutation, min_size=1, max_size=4))
def test_mutated_frames_raise_only_protocol_error(index, ops):
    kind, key, version, data = CORPUS[index]
    _decode(kind, key, version, _mutate(data, ops))


@settings(FAST, max_examples=1000)
@given(
    pair=st.sampled_from(list(tc.all_pairs())),
    flexible_header=st.booleans(),
    tail=st.binary(max_size=64),
)
def test_random_bodies_after_a_valid_header(pair, flexible_header, tail):
    key, version = pair
    head = struct.pack(">hhih", key, version, 5, 3) + b"cli" + (b"\x00" if flexible_header else b"")
    _decode("request", key, version, head + tail)
    _decode("response", key, version, struct.pack(">i", 5) + (b"\x00" if flexible_header else b"") + tail)


@settings(FAST, max_examples=300)
@given(data=st.binary(max_size=128))
def test_random_bytes(data):
    _decode("request", 0, 0, data)
    for key, version in ((3, 12), (1, 16), (18, 3), (0, 9)):
        _decode("response", key, version, data)


@settings(FAST, max_examples=200)
@given(chunks=st.lists(st.binary(max_size=64), max_size=20), limit=st.integers(0, 1 << 20))
def test_frame_reader_random_chunks(chunks, limit):
    reader = FrameReader(max_frame_size=limit)
    try:
        for chunk in chunks:
            reader.feed(chunk)
            while (f := reader.next_frame()) is not None:
                assert len(f) <= limit
    except ProtocolError:
        pass
    assert reader.buffered >= 0


@settings(FAST, max_examples=100)
@given(
    payloads=st.lists(st.binary(max_size=300), min_size=1, max_size=10),
    cuts=st.lists(st.integers(1, 200), max_size=30),
)
def test_frame_reader_any_chunking(payloads, cuts):
    stream = b"".join(frame(p) for p in payloads)
    reader = FrameReader()
    got = []
    pos = 0
    for n in cuts + [len(stream)]:
        reader.feed(stream[pos : pos + n])
        pos += n
        while (f := reader.next_frame()) is not None:
            got.append(bytes(f))
    assert got == payloads


def test_length_bombs_everywhere_cost_no_memory():
    """Every bomb at every offset of every golden frame (and a sample of the
    generated ones): only ProtocolError, bounded time, bounded allocation."""
    frames = [c for c in CORPUS if c[3] in _golden_frames()] + CORPUS[:: max(1, len(CORPUS) // 40)]
    tracemalloc.start()
    worst = 0.0
    try:
        for kind, key, version, data in frames:
            for bomb in (BOMBS[0], BOMBS[1], BOMBS[4]):
                for pos in range(0, len(data), 3 if len(data) < 2000 else 37):
                    mutated = data[:pos] + bomb + data[pos + len(bomb) :]
                    start = time.perf_counter()
                    _decode(kind, key, version, mutated)
                    worst = max(worst, time.perf_counter() - start)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 * 1024 * 1024, f"peak allocation {peak} bytes"
    assert worst < 0.5, f"slowest decode took {worst:.3f}s"


_GOLDEN_CACHE: set = set()


def _golden_frames():
    if not _GOLDEN_CACHE and GOLDEN.is_dir():
        _GOLDEN_CACHE.update(p.read_bytes() for p in GOLDEN.glob("*/*.bin"))
    return _GOLDEN_CACHE


def test_every_truncation_is_refused():
    """Parsing is prefix-deterministic, so no strict prefix of a valid frame decodes."""
    frames = [c for c in CORPUS if c[3] in _golden_frames()] + CORPUS[:: max(1, len(CORPUS) // 60)]
    checked = 0
    for kind, key, version, data in frames:
        if not _decode(kind, key, version, data):
            continue  # the mock's known malformed answers (see test_golden.py)
        for cut in range(len(data)):
            assert not _decode(kind, key, version, data[:cut]), (kind, key, version, cut)
        checked += 1
    assert checked > 100


def test_count_larger_than_frame_is_refused_before_allocating():
    # A Metadata v12 request whose topics array claims 2**31 - 2 elements.
    body = struct.pack(">hhih", 3, 12, 1, -1) + b"\x00" + b"\xff\xff\xff\xff\x07" + b"\x01\x00\x00"
    tracemalloc.start()
    try:
        with pytest.raises(ProtocolError, match="count"):
            decode_request(body)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
