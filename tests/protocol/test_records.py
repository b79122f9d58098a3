"""Record batches (magic 2): header hot path, record codec, and cross-checks.

kafka-python's own batch builder and reader serve as the independent
oracle: batches it builds must decode identically with ours, and batches we
build must pass its CRC check and read back with equal contents.
"""

from __future__ import annotations

import struct

import pytest
from crc32c import crc32c
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from kafka.record.legacy_records import LegacyRecordBatchBuilder
from kafka.record.memory_records import MemoryRecords

from protocol.errors import ProtocolError
from protocol.records import (
    BATCH_HEADER_SIZE,
    LOG_OVERHEAD,
    BatchHeader,
    Compression,
    Header,
    Record,
    TimestampType,
    compute_crc,
    decode_batch,
    decode_records,
    encode_batch,
    encode_control_batch,
    iter_batches,
    read_batch_header,
    set_base_offset,
    set_log_append_time,
    set_partition_leader_epoch,
    split_batches_lenient,
    validate_batch,
)

CODECS = list(Compression)
_HEADER = struct.Struct(">qiibIhiqqqhii")


def sample_records(n: int = 5) -> list[tuple]:
    """Compressible records with nulls and headers, so every codec really compresses."""
    out = []
    for i in range(n):
        key = None if i % 3 == 2 else f"key-{i}".encode()
        value = None if i == 1 else (b"payload %d " % i) * 20
        headers = [("trace", b"abc"), ("empty", None)] if i % 2 == 0 else []
        out.append((key, value, headers, 1_700_000_000_000 + i * 7))
    return out


def kafka_python_batch(records, codec: Compression, *, producer=(-1, -1, -1), transactional=False) -> bytes:
    builder = DefaultRecordBatchBuilder(
        magic=2, compression_type=int(codec), is_transactional=transactional,
        producer_id=producer[0], producer_epoch=producer[1], base_sequence=producer[2], batch_size=1 << 20,
    )
    for i, (key, value, headers, ts) in enumerate(records):
        assert builder.append(i, timestamp=ts, key=key, value=value, headers=headers) is not None
    return bytes(builder.build())


def build_raw_batch(section: bytes, records_count: int, *, attributes: int = 0, last_offset_delta: int = 0,
                    base_timestamp: int = 0) -> bytes:
    """A batch around an arbitrary records section, with a correct CRC."""
    out = bytearray(_HEADER.pack(0, 49 + len(section), 0, 2, 0, attributes, last_offset_delta,
                                 base_timestamp, base_timestamp, -1, -1, -1, records_count) + section)
    struct.pack_into(">I", out, 17, crc32c(bytes(out[21:])))
    return bytes(out)


def fix_crc(buf: bytearray) -> None:
    struct.pack_into(">I", buf, 17, crc32c(bytes(buf[21:])))


# --------------------------------------------------------------- header path


def test_constants():
    assert BATCH_HEADER_SIZE == 61
    assert LOG_OVERHEAD == 12
    assert [c.value for c in Compression] == [0, 1, 2, 3, 4]
    assert TimestampType.LOG_APPEND_TIME == 1


def test_header_properties():
    h = BatchHeader(100, 49, 3, 2, 0, 0x08 | 0x10 | 0x20 | 0x40 | 4, 9, 5, 6, 7, 1, 2**31 - 3, 10)
    assert h.compression is Compression.ZSTD
    assert h.timestamp_type is TimestampType.LOG_APPEND_TIME
    assert h.is_transactional and h.is_control and h.has_delete_horizon
    assert h.total_size == 61
    assert h.last_offset == 109 and h.next_offset == 110
    assert h.last_sequence == 6  # wraps past 2**31 - 1 to 0, as Kafka does
    plain = h._replace(attributes=0, base_sequence=-1)
    assert plain.compression is Compression.NONE
    assert plain.timestamp_type is TimestampType.CREATE_TIME
    assert not (plain.is_transactional or plain.is_control or plain.has_delete_horizon)
    assert plain.last_sequence == -1
    assert h._replace(base_sequence=5).last_sequence == 14


def test_read_header_matches_kafka_python():
    data = kafka_python_batch(sample_records(), Compression.NONE, producer=(42, 3, 17))
    ours = read_batch_header(data)
    theirs = DefaultRecordBatch(data)
    assert ours.batch_length + LOG_OVERHEAD == len(data)
    assert (ours.producer_id, ours.producer_epoch, ours.base_sequence) == (42, 3, 17)
    assert ours.crc == theirs.crc
    assert ours.records_count == theirs.records_count == 5
    assert ours.last_offset_delta == theirs.last_offset_delta == 4
    assert ours.base_timestamp == theirs.first_timestamp and ours.max_timestamp == theirs.max_timestamp
    assert ours.last_sequence == theirs.last_sequence == 21


def test_read_header_from_any_buffer_type_and_position():
    data = kafka_python_batch(sample_records(2), Compression.NONE)
    padded = b"xyz" + data
    for buf in (padded, bytearray(padded), memoryview(padded)):
        assert validate_batch(buf, 3) == read_batch_header(data)
    with pytest.raises(ProtocolError, match="truncated"):
        read_batch_header(data[:60])


def test_iter_batches_and_patching():
    one = kafka_python_batch(sample_records(3), Compression.GZIP)
    buf = bytearray(one * 4)
    positions = [pos for pos, _ in iter_batches(buf)]
    assert positions == [i * len(one) for i in range(4)]
    for i, pos in enumerate(positions):
        set_base_offset(buf, pos, 1000 + 3 * i)
        set_partition_leader_epoch(buf, pos, 7)
    headers = [h for _, h in iter_batches(buf)]  # CRC still valid: patched fields are outside it
    assert [h.base_offset for h in headers] == [1000, 1003, 1006, 1009]
    assert {h.partition_leader_epoch for h in headers} == {7}
    assert headers[-1].next_offset == 1012
    mv = memoryview(buf)
    set_base_offset(mv, positions[1], 5)
    assert validate_batch(mv, positions[1]).base_offset == 5
    # kafka-python agrees with the patched batches
    batches = list(MemoryRecords(bytes(buf)))
    assert [b.base_offset for b in batches] == [1000, 5, 1006, 1009]
    assert all(b.validate_crc() for b in batches)


def test_set_log_append_time():
    data = bytearray(encode_batch(sample_records(4), compression=Compression.LZ4))
    before = validate_batch(data)
    set_log_append_time(data, 0, 1_800_000_000_123)
    after = validate_batch(data)
    assert after.timestamp_type is TimestampType.LOG_APPEND_TIME
    assert after.max_timestamp == 1_800_000_000_123
    assert after.base_timestamp == before.base_timestamp  # Kafka leaves the deltas alone
    assert after.crc == compute_crc(data, 0) != before.crc
    _, records = decode_batch(data)
    assert {r.timestamp for r in records} == {1_800_000_000_123}
    theirs = DefaultRecordBatch(bytes(data))
    assert theirs.validate_crc()
    assert {r.timestamp for r in theirs} == {1_800_000_000_123}


def test_split_batches_lenient():
    one = encode_batch(sample_records(3))
    two = encode_batch(sample_records(2), base_offset=3)
    good = one + two
    assert split_batches_lenient(good) == (list(iter_batches(good)), len(good))
    for cut in range(len(two)):
        batches, valid = split_batches_lenient(good + two[:cut])
        assert valid == len(good) and len(batches) == 2
    corrupt = bytearray(good + two)
    corrupt[len(good) + 40] ^= 1
    assert split_batches_lenient(corrupt)[1] == len(good)
    assert split_batches_lenient(b"") == ([], 0)
    assert split_batches_lenient(b"\x00" * 100) == ([], 0)


def test_every_crc_covered_byte_is_protected():
    data = encode_batch(sample_records(3), compression=Compression.SNAPPY)
    for i in range(21, len(data)):
        for mask in (0x01, 0x80):
            buf = bytearray(data)
            buf[i] ^= mask
            with pytest.raises(ProtocolError):
                validate_batch(buf)
            with pytest.raises(ProtocolError):
                list(iter_batches(buf))
            with pytest.raises(ProtocolError):
                decode_batch(buf)


def test_header_fields_outside_crc():
    data = encode_batch(sample_records(2))
    for i in range(17, 21):  # the CRC itself
        buf = bytearray(data)
        buf[i] ^= 0x10
        with pytest.raises(ProtocolError, match="CRC"):
            validate_batch(buf)
    buf = bytearray(data)
    struct.pack_into(">i", buf, 8, 48)  # batch_length below a bare header
    with pytest.raises(ProtocolError, match="minimum"):
        validate_batch(buf)
    buf = bytearray(data)
    buf[16] = 3
    with pytest.raises(ProtocolError, match="magic 3"):
        validate_batch(buf)


def test_truncation_at_every_length():
    data = encode_batch(sample_records(3), compression=Compression.ZSTD)
    for n in range(len(data)):
        cut = data[:n]
        for fn in (validate_batch, decode_batch, lambda b: list(iter_batches(b)), decode_records):
            if n == 0 and fn is not validate_batch and fn is not decode_batch:
                assert not fn(cut)  # an empty buffer holds no batches
                continue
            with pytest.raises(ProtocolError):
                fn(cut)
    with pytest.raises(ProtocolError, match="truncated"):
        list(iter_batches(data + data[:30]))


@pytest.mark.parametrize("magic", [0, 1])
def test_legacy_message_sets_rejected(magic):
    builder = LegacyRecordBatchBuilder(magic=magic, compression_type=0, batch_size=1 << 16)
    builder.append(0, timestamp=1000, key=b"k", value=b"v")
    data = bytes(builder.build())
    assert len(data) < BATCH_HEADER_SIZE  # must say "legacy", not "truncated"
    for fn in (validate_batch, decode_batch, lambda b: list(iter_batches(b))):
        with pytest.raises(ProtocolError, match="legacy"):
            fn(data)
    with pytest.raises(ProtocolError, match="legacy"):
        list(iter_batches(encode_batch(sample_records(1)) + data))


def test_negative_counts_and_unknown_codec_rejected():
    good = encode_batch(sample_records(1))
    for offset, fmt, value, match in ((57, ">i", -1, "records_count"), (23, ">i", -1, "last_offset_delta"),
                                      (21, ">h", 5, "codec")):
        buf = bytearray(good)
        struct.pack_into(fmt, buf, offset, value)
        fix_crc(buf)
        with pytest.raises(ProtocolError, match=match):
            validate_batch(buf)


# ------------------------------------------------------------- record level


@pytest.mark.parametrize("codec", CODECS)
def test_kafka_python_batches_decode(codec):
    records = sample_records(6)
    data = kafka_python_batch(records, codec, producer=(9, 2, 100), transactional=True)
    header, decoded = decode_batch(data)
    assert header.compression is codec  # the builder really compressed
    assert header.is_transactional and not header.is_control
    assert header.producer_id == 9 and header.base_sequence == 100
    assert len(decoded) == len(records)
    for i, (rec, (key, value, headers, ts)) in enumerate(zip(decoded, records)):
        assert rec.offset == i
        assert rec.timestamp == ts
        assert rec.key == key and rec.value == value
        assert rec.headers == tuple(Header(k, v) for k, v in headers)
    assert decode_records(data + data) == [(header, decoded), (header, decoded)]


@pytest.mark.parametrize("codec", CODECS)
def test_our_batches_read_by_kafka_python(codec):
    records = sample_records(6)
    data = encode_batch(records, base_offset=500, compression=codec, producer_id=77, producer_epoch=4,
                        base_sequence=12, partition_leader_epoch=3)
    header = validate_batch(data)
    assert header.compression is codec and header.records_count == 6
    batches = list(MemoryRecords(data))
    assert len(batches) == 1
    batch = batches[0]
    assert batch.validate_crc()
    assert (batch.base_offset, batch.producer_id, batch.producer_epoch, batch.base_sequence) == (500, 77, 4, 12)
    assert batch.leader_epoch == 3 and batch.compression_type == int(codec)
    got = [(r.offset, r.timestamp, r.key, r.value, list(r.headers)) for r in batch]
    want = [(500 + i, ts, k, v, list(h)) for i, (k, v, h, ts) in enumerate(records)]
    assert got == want


def test_record_like_inputs_and_defaults():
    rec = Record(offset=99, timestamp=5, key=b"k", value="text", headers=(Header("h", b"1"),), attributes=0)
    data = encode_batch([rec, (b"a", None), ("s", b"v", [("x", None)])], timestamp_type=TimestampType.CREATE_TIME)
    header, decoded = decode_batch(data)
    assert header.base_timestamp == 5
    assert decoded[0] == Record(0, 5, b"k", b"text", (Header("h", b"1"),), 0)
    assert decoded[1].key == b"a" and decoded[1].value is None and decoded[1].offset == 1
    assert decoded[2].headers == (Header("x", None),)
    assert decoded[1].timestamp > 1_600_000_000_000  # defaulted to "now"
    with pytest.raises(ProtocolError):
        encode_batch([])
    with pytest.raises(ProtocolError):
        encode_batch([(1, 2)])
    with pytest.raises(ProtocolError):
        encode_batch([(b"k", b"v")], compression=9)
    with pytest.raises(ProtocolError):
        encode_batch([(b"k", b"v")], producer_epoch=1 << 20)


def test_log_append_time_encoding():
    data = encode_batch([(b"k", b"v", (), 10), (b"k", b"v", (), 30)], timestamp_type=TimestampType.LOG_APPEND_TIME)
    header, records = decode_batch(data)
    assert header.timestamp_type is TimestampType.LOG_APPEND_TIME
    assert [r.timestamp for r in records] == [30, 30]


@pytest.mark.parametrize("commit", [True, False])
def test_control_batch(commit):
    data = encode_control_batch(producer_id=1234, producer_epoch=5, commit=commit, coordinator_epoch=17,
                                base_offset=40, timestamp=1000, partition_leader_epoch=2)
    header, records = decode_batch(data)
    assert header.is_control and header.is_transactional
    assert (header.producer_id, header.producer_epoch, header.base_offset) == (1234, 5, 40)
    assert header.base_sequence == -1 and header.records_count == 1
    assert records[0].key == struct.pack(">hh", 0, int(commit))
    assert records[0].value == struct.pack(">hi", 0, 17)
    theirs = list(DefaultRecordBatch(data))
    assert theirs[0].commit is commit and theirs[0].abort is not commit


# ----------------------------------------------------- malformed record level


def _record(body: bytes) -> bytes:
    """Prefix a record body with its zigzag-varint length (bodies here are < 64 bytes)."""
    assert len(body) < 64
    return bytes([len(body) << 1]) + body


GOOD_BODY = b"\x00\x00\x00" + b"\x02k" + b"\x02v" + b"\x00"  # attrs, ts, offset, key, value, no headers


def test_raw_helper_builds_valid_batch():
    _, records = decode_batch(build_raw_batch(_record(GOOD_BODY), 1))
    assert records == [Record(0, 0, b"k", b"v")]


@pytest.mark.parametrize(
    "section,count,match",
    [
        (_record(GOOD_BODY), 2, "truncated varint"),  # fewer records than declared
        (_record(GOOD_BODY) * 2, 1, "remain"),  # more bytes than declared records
        (_record(b"\x00" + b"\xff" * 11 + b"\x00\x00\x00\x00"), 1, "longer than 10"),  # overlong varlong
        (_record(b"\x00\x00" + b"\xff" * 6 + b"\x00\x00\x00"), 1, "longer than 5"),  # overlong varint
        (_record(GOOD_BODY[:-1] + b"\x02\x04\xff\xfe\x01"), 1, "UTF-8"),  # invalid header key
        (_record(GOOD_BODY[:-1] + b"\x02\x01\x00"), 1, "null header key"),
        (_record(GOOD_BODY[:-1] + b"\x01"), 1, "negative header count"),
        (_record(GOOD_BODY + b"\x00"), 1, "early"),  # declared length longer than the fields
        (_record(b"\x00\x00\x00\x03"), 1, "negative key"),
        (_record(b"\x00\x00\x00\x40"), 1, "runs past"),
        (b"\x01", 1, "record length"),
        (b"\x00", 1, "no attributes"),
    ],
)
def test_malformed_records(section, count, match):
    data = build_raw_batch(section, count)
    with pytest.raises(ProtocolError, match=match) as info:
        decode_batch(data)
    assert "record 0 at byte 0" in str(info.value) or "remain" in str(info.value) or "record 1" in str(info.value)


def test_malformed_compressed_payload():
    for codec in (Compression.GZIP, Compression.SNAPPY, Compression.LZ4, Compression.ZSTD):
        data = build_raw_batch(b"definitely not compressed", 1, attributes=int(codec))
        with pytest.raises(ProtocolError, match="cannot decompress"):
            decode_batch(data)


def test_decompression_bound_applies():
    big = encode_batch([(None, b"\x00" * 200_000)], compression=Compression.GZIP)
    with pytest.raises(ProtocolError, match="max_size"):
        decode_batch(big, max_decompressed_size=100_000)
    assert decode_batch(big, max_decompressed_size=300_000)[1][0].value == b"\x00" * 200_000


# ------------------------------------------------------------------ property

_bytes_or_none = st.none() | st.binary(max_size=40)
_records = st.lists(
    st.tuples(
        _bytes_or_none,
        _bytes_or_none,
        st.lists(st.tuples(st.text(max_size=8), _bytes_or_none), max_size=3),
        st.integers(min_value=0, max_value=2**41),
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=60, deadline=None)
@given(records=_records, codec=st.sampled_from(CODECS), base_offset=st.integers(0, 2**62),
       txn=st.booleans(), seq=st.integers(-1, 2**31 - 1))
def test_round_trip(records, codec, base_offset, txn, seq):
    data = encode_batch(records, base_offset=base_offset, compression=codec, is_transactional=txn,
                        producer_id=5, producer_epoch=0, base_sequence=seq)
    header, decoded = decode_batch(data)
    assert header.compression is codec and header.is_transactional is txn
    assert header.total_size == len(data)
    assert header.max_timestamp == max(r[3] for r in records)
    assert [(r.offset, r.timestamp, r.key, r.value, list(r.headers)) for r in decoded] == [
        (base_offset + i, ts, k, v, [Header(hk, hv) for hk, hv in h]) for i, (k, v, h, ts) in enumerate(records)
    ]


def _only_protocol_errors(buf) -> None:
    for fn in (validate_batch, decode_batch, lambda b: list(iter_batches(b)), decode_records,
               split_batches_lenient, read_batch_header):
        try:
            fn(buf)
        except ProtocolError:
            pass


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_protocol_error(buf):
    _only_protocol_errors(buf)
    _only_protocol_errors(b"\x00" * 16 + b"\x02" + buf)


_VALID = {codec: encode_batch(sample_records(3), compression=codec) for codec in CODECS}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(codec=st.sampled_from(CODECS), data=st.data())
def test_mutated_batches_raise_only_protocol_error(codec, data):
    """Mutate a valid batch, then (usually) repair its CRC so the record decoder is exercised too."""
    buf = bytearray(_VALID[codec])
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "set", "cut", "insert"]))
        i = data.draw(st.integers(0, max(len(buf) - 1, 0)))
        if op == "flip" and buf:
            buf[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "set" and buf:
            buf[i] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del buf[i:i + data.draw(st.integers(1, 8))]
        else:
            buf[i:i] = data.draw(st.binary(min_size=1, max_size=8))
    if data.draw(st.booleans()) and len(buf) >= 21:
        if len(buf) >= 12:
            struct.pack_into(">i", buf, 8, len(buf) - 12)
        if len(buf) >= 17:
            buf[16] = 2
        fix_crc(buf)
    _only_protocol_errors(bytes(buf))
