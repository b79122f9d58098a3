"""Frames captured from real clients (tests/protocol/golden/, see its README.md).

Every request decodes exactly and re-encodes byte for byte from the decoded
body and the same header fields; the record batches inside Produce requests
validate (CRC-32C) and decode; every response the librdkafka mock sent
decodes, with the mock's two known deviations from Kafka checked
explicitly rather than skipped (see MOCK_QUIRKS).
"""

from __future__ import annotations

import pathlib
import re
import struct

import pytest

import protocol
from protocol import (
    API_INDEX,
    ApiKey,
    FrameReader,
    ProtocolError,
    RequestHeader,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    frame,
)

GOLDEN = pathlib.Path(__file__).resolve().parent / "golden"
NAME = re.compile(r"(\d{3})_([a-z0-9_]+)_v(\d+)\.req\.bin")
MODULE_TO_KEY = {info.module: key for key, info in API_INDEX.items()}
CLIENTS = sorted(p.name for p in GOLDEN.iterdir() if p.is_dir()) if GOLDEN.is_dir() else []

# What each client's capture must contain (the workloads in scripts/capture_frames.py).
GROUP_APIS = {"find_coordinator", "join_group", "sync_group", "heartbeat", "offset_commit", "offset_fetch", "leave_group"}
REQUIRED_APIS = {"api_versions", "metadata", "produce", "fetch"} | GROUP_APIS
# Compression codec ids (attributes & 7): none, gzip, snappy, lz4, zstd.
EXPECTED_CODECS = {
    "confluent-kafka": {0, 1, 2, 3, 4},
    "kafka-python": {0, 1, 2, 3, 4},
    "aiokafka": {0, 1, 2, 3, 4},
    "kafkajs": {0, 1},  # kafkajs has GZIP built in; the others need codec plug-ins
}


def _captures():
    out = []
    for client in CLIENTS:
        for req in sorted((GOLDEN / client).glob("*.req.bin")):
            m = NAME.fullmatch(req.name)
            assert m, req.name
            key = MODULE_TO_KEY[m.group(2)]
            resp = req.with_name(req.name.replace(".req.bin", ".resp.bin"))
            out.append((client, req, resp if resp.exists() else None, key, int(m.group(3))))
    return out


CAPTURES = _captures()
pytestmark = pytest.mark.skipif(not CAPTURES, reason="no golden frames captured")


def _id(c):
    return f"{c[0]}/{c[1].name[: -len('.req.bin')]}"


# ---------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("capture", CAPTURES, ids=_id)
def test_request_decodes_and_reencodes_identically(capture):
    client, req_path, _, key, version = capture
    data = req_path.read_bytes()
    header, body = decode_request(bytearray(data), strict=True)  # trailing bytes would raise
    assert (header.api_key, header.api_version) == (key, version)
    assert header.tagged_fields is None
    again = encode_request(key, version, body, correlation_id=header.correlation_id, client_id=header.client_id)
    # No client captured here uses a non-canonical encoding (tagged fields at
    # their default, odd null forms...), so the bytes must match exactly.
    assert again[4:] == data
    assert struct.unpack(">i", again[:4])[0] == len(data)


def _produce_batches(body):
    for topic in body.topic_data:
        for part in topic.partition_data:
            if part.records is not None:
                yield topic, part, part.records


@pytest.mark.parametrize("client", CLIENTS)
def test_produce_batches_validate_and_decode(client):
    records_mod = pytest.importorskip("protocol.records")
    seen_codecs = set()
    batches = 0
    for c, req_path, _, key, version in CAPTURES:
        if c != client or key != ApiKey.PRODUCE:
            continue
        _, body = decode_request(bytearray(req_path.read_bytes()))
        for _topic, _part, records in _produce_batches(body):
            found = list(records_mod.iter_batches(records))
            assert found, "empty records"
            end = 0
            for pos, header in found:
                assert pos == end
                end = pos + header.batch_length + records_mod.LOG_OVERHEAD
                assert header.magic == 2
                seen_codecs.add(header.attributes & 7)
                batches += 1
                if hasattr(records_mod, "decode_batch"):
                    decoded_header, recs = records_mod.decode_batch(records, pos)
                    assert decoded_header == header
                    assert len(recs) == header.records_count > 0
                    for i, rec in enumerate(recs):
                        assert rec.value is not None and b" record " in rec.value
                        assert rec.key is not None and rec.key.startswith(b"k")
                        assert [tuple(h) for h in rec.headers] == [("h", b"v")]
                        assert rec.offset == header.base_offset + i
            assert end == len(records)
            # A flipped bit in the CRC-covered span (here the last batch's last byte) is caught.
            corrupt = bytearray(records)
            corrupt[-1] ^= 0x10
            with pytest.raises(ProtocolError):
                list(records_mod.iter_batches(corrupt))
    assert batches > 0
    assert seen_codecs == EXPECTED_CODECS[client]


@pytest.mark.parametrize("client", CLIENTS)
def test_capture_covers_the_workload(client):
    apis = {API_INDEX[key].module for c, _, _, key, _ in CAPTURES if c == client}
    assert REQUIRED_APIS <= apis, sorted(REQUIRED_APIS - apis)


def test_all_frames_through_a_frame_reader():
    """Every captured frame, size-prefixed and concatenated, comes back out of a FrameReader."""
    frames = [c[1].read_bytes() for c in CAPTURES] + [c[2].read_bytes() for c in CAPTURES if c[2]]
    stream = b"".join(frame(f) for f in frames)
    reader = FrameReader(max_frame_size=1 << 20)
    out = []
    for i in range(0, len(stream), 1000):
        reader.feed(stream[i : i + 1000])
        while (f := reader.next_frame()) is not None:
            out.append(bytes(f))
    assert out == frames


def test_golden_frames_stay_small():
    total = sum(p.stat().st_size for p in GOLDEN.rglob("*.bin"))
    assert total < 2 * 1024 * 1024


# ---------------------------------------------------------------------------
# Responses (all from the librdkafka mock cluster)
# ---------------------------------------------------------------------------

# The mock (librdkafka 2.16) deviates from Kafka in three places clients tolerate:
# 1. ApiVersions requests above its maximum (v2) get error 35 in a hand-made
#    layout (an int8 element count without the compact +1, entries without
#    tagged sections, no tagged section).  Kafka answers in the v0 layout.
#    The capture proxy forwarded a Kafka-style v0 answer instead (built with
#    our codec), so the clients saw Kafka's behaviour; the file is the mock's.
# 2. Metadata v13 answers end with one extra 0 byte (a second empty tagged
#    section after the body's).
# 3. LeaveGroup is implemented in its v0-2 layout only (one member id), though
#    advertised up to v4: a v3 answer lacks the Members array (kafkajs, which
#    is leaving anyway, does not read it).


def _mock_api_versions_error(data: bytes):
    err, count = struct.unpack_from(">hb", data, 4)
    api_key, lo, hi = struct.unpack_from(">hhh", data, 7)
    return err, count, (api_key, lo, hi)


@pytest.mark.parametrize("capture", [c for c in CAPTURES if c[2] is not None], ids=_id)
def test_mock_response_decodes(capture):
    client, req_path, resp_path, key, version = capture
    data = resp_path.read_bytes()
    header, _ = decode_request(req_path.read_bytes())
    if key == ApiKey.API_VERSIONS and version > 2:
        err, count, row = _mock_api_versions_error(data)
        assert (err, count, row) == (35, 1, (18, 0, 2)), "mock quirk 1 changed"
        assert struct.unpack_from(">i", data)[0] == header.correlation_id
        with pytest.raises(ProtocolError):
            decode_response(key, version, data)
        # What the proxy sent on instead: Kafka's v0-layout answer.
        fallback = encode_response(
            RequestHeader(key, 0, header.correlation_id),
            protocol.api_versions_fallback_body([{"api_key": 18, "min_version": 0, "max_version": 2}]),
        )
        cid, body = decode_response(key, 0, fallback[4:])
        assert cid == header.correlation_id and body.error_code == 35
        return
    if key == ApiKey.METADATA and version == 13:
        with pytest.raises(ProtocolError, match="unexpected bytes"):
            decode_response(key, version, data)
        assert data[-1:] == b"\x00", "mock quirk 2 changed"
        data = data[:-1]
    if key == ApiKey.LEAVE_GROUP and version >= 3:
        with pytest.raises(ProtocolError, match="members"):
            decode_response(key, version, data)
        version = 2  # throttle_time_ms, error_code
    cid, body = decode_response(key, version, data)
    assert cid == header.correlation_id
    # The mock writes canonical encodings: ours reproduce them byte for byte.
    assert encode_response(RequestHeader(key, version, cid), body)[4:] == data


@pytest.mark.parametrize("client", CLIENTS)
def test_fetch_responses_carry_the_produced_records(client):
    records_mod = pytest.importorskip("protocol.records")
    values = []
    for c, _, resp_path, key, version in CAPTURES:
        if c != client or key != ApiKey.FETCH or resp_path is None:
            continue
        _, body = decode_response(key, version, resp_path.read_bytes())
        for topic in body.responses:
            for part in topic.partitions:
                assert part.error_code == 0
                if part.records:
                    for _pos, _header in records_mod.iter_batches(part.records):
                        pass
                    if hasattr(records_mod, "decode_records"):
                        for _h, recs in records_mod.decode_records(part.records):
                            values += [r.value for r in recs]
    assert values, "no records fetched"
    assert all(b" record " in v for v in values)
