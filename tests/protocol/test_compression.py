"""Compression codecs: round trips, the framings other clients produce, and bounds.

The python-snappy / lz4 / zstandard packages (test dependencies) produce the
"foreign" framings: linked LZ4 blocks with checksums, zstd frames without a
content size, raw and xerial snappy.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib

import lz4.frame
import pytest
import snappy
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka import codec as kafka_codec

from protocol.compression import DEFAULT_MAX_DECOMPRESSED_SIZE, compress, decompress
from protocol.errors import ProtocolError
from protocol.records import Compression

CODECS = list(Compression)
COMPRESSED = [c for c in Compression if c is not Compression.NONE]

PAYLOADS = {
    "empty": b"",
    "one": b"x",
    "text": b"the quick brown fox jumps over the lazy dog " * 5000,  # spans many blocks
    "random": os.urandom(150_000),  # incompressible: lz4 stores blocks verbatim
    "mixed": (os.urandom(300) + b"\x00" * 3000) * 60,
}


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("name", PAYLOADS)
def test_round_trip(codec, name):
    data = PAYLOADS[name]
    packed = compress(codec, data)
    assert decompress(codec, packed) == data
    assert decompress(int(codec), bytearray(packed)) == data
    assert decompress(codec, memoryview(packed)) == data


@pytest.mark.parametrize("name", PAYLOADS)
def test_output_readable_by_reference_libraries(name):
    data = PAYLOADS[name]
    assert gzip.decompress(compress(Compression.GZIP, data)) == data
    if data:  # kafka-python cannot read a header-only xerial stream; real batches are never empty
        assert kafka_codec.snappy_decode(compress(Compression.SNAPPY, data)) == data
    assert lz4.frame.decompress(compress(Compression.LZ4, data)) == data
    assert zstandard.ZstdDecompressor().decompressobj().decompress(compress(Compression.ZSTD, data)) == data


def test_lz4_frame_matches_java_client_layout():
    # Magic, FLG=0x60 (v1, independent blocks, no checksums), BD=0x40 (64 KiB), header checksum.
    packed = compress(Compression.LZ4, b"abc")
    assert packed[:7] == bytes.fromhex("04224d18604082")
    assert packed.endswith(b"\x00\x00\x00\x00")


def test_snappy_output_is_xerial():
    packed = compress(Compression.SNAPPY, b"hello" * 100)
    assert packed[:16] == b"\x82SNAPPY\x00" + struct.pack(">ii", 1, 1)


def test_levels():
    data = PAYLOADS["text"]
    for codec in COMPRESSED:
        assert decompress(codec, compress(codec, data, level=1)) == data


# ------------------------------------------------------- foreign framings


def test_snappy_raw_and_xerial_from_other_clients():
    data = PAYLOADS["mixed"]
    assert decompress(Compression.SNAPPY, snappy.compress(data)) == data  # raw block
    assert decompress(Compression.SNAPPY, kafka_codec.snappy_encode(data, xerial_compatible=True)) == data
    assert decompress(Compression.SNAPPY, kafka_codec.snappy_encode(data, xerial_compatible=False)) == data
    small_blocks = kafka_codec.snappy_encode(data, xerial_compatible=True, xerial_blocksize=1000)
    assert decompress(Compression.SNAPPY, small_blocks) == data
    assert decompress(Compression.SNAPPY, b"\x82SNAPPY\x00" + struct.pack(">ii", 1, 1)) == b""


@pytest.mark.parametrize("linked", [True, False])
@pytest.mark.parametrize("checksums", [True, False])
@pytest.mark.parametrize("block_size", [lz4.frame.BLOCKSIZE_MAX64KB, lz4.frame.BLOCKSIZE_MAX4MB])
def test_lz4_frames_as_librdkafka_may_write_them(linked, checksums, block_size):
    data = PAYLOADS["text"] + PAYLOADS["mixed"]
    packed = lz4.frame.compress(data, block_linked=linked, block_checksum=checksums,
                                content_checksum=checksums, store_size=checksums, block_size=block_size)
    assert decompress(Compression.LZ4, packed) == data


def test_lz4_concatenated_and_skippable_frames():
    a, b = b"first " * 1000, b"second " * 1000
    skippable = struct.pack("<II", 0x184D2A5A, 3) + b"xyz"
    packed = lz4.frame.compress(a) + skippable + lz4.frame.compress(b)
    assert decompress(Compression.LZ4, packed) == a + b


def test_zstd_frames_without_content_size():
    data = PAYLOADS["text"] + PAYLOADS["random"]
    streaming = zstandard.ZstdCompressor(write_content_size=False, write_checksum=True).compressobj()
    packed = streaming.compress(data) + streaming.flush()
    assert decompress(Compression.ZSTD, packed) == data
    with_size = zstandard.ZstdCompressor(level=19).compress(data)
    assert decompress(Compression.ZSTD, with_size) == data
    assert decompress(Compression.ZSTD, packed + with_size) == data + data


def test_gzip_multiple_members_and_trailing_bytes():
    a, b = b"member one " * 300, b"member two " * 300
    assert decompress(Compression.GZIP, gzip.compress(a) + gzip.compress(b)) == a + b
    # Like Java's GZIPInputStream, bytes that are not another gzip header end the stream.
    assert decompress(Compression.GZIP, gzip.compress(a) + b"\x00\x00\x00") == a


# ----------------------------------------------------------------- bounds

BOMB = b"\x00" * (8 * 1024 * 1024)


@pytest.mark.parametrize("codec", COMPRESSED)
def test_bomb_over_max_size_is_refused(codec):
    packed = compress(codec, BOMB)
    assert len(packed) < len(BOMB) // 15
    with pytest.raises(ProtocolError, match="max_size"):
        decompress(codec, packed, max_size=1024 * 1024)
    assert decompress(codec, packed, max_size=len(BOMB)) == BOMB


def test_bombs_in_foreign_framings():
    limit = 1024 * 1024
    streaming = zstandard.ZstdCompressor(write_content_size=False).compressobj()
    packed = {
        Compression.GZIP: gzip.compress(BOMB, compresslevel=9),
        Compression.ZSTD: streaming.compress(BOMB) + streaming.flush(),
        Compression.LZ4: lz4.frame.compress(BOMB, block_size=lz4.frame.BLOCKSIZE_MAX4MB, block_linked=True),
        Compression.SNAPPY: snappy.compress(BOMB),
    }
    for codec, data in packed.items():
        with pytest.raises(ProtocolError, match="max_size"):
            decompress(codec, data, max_size=limit)


def test_default_limit_is_sane():
    assert 16 * 1024 * 1024 <= DEFAULT_MAX_DECOMPRESSED_SIZE <= 256 * 1024 * 1024


def test_gzip_bomb_over_default_limit():
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = b"\x00" * (1 << 20)
    parts = [c.compress(chunk) for _ in range(DEFAULT_MAX_DECOMPRESSED_SIZE // len(chunk) + 1)]
    bomb = b"".join(parts) + c.flush()
    assert len(bomb) < 200_000
    with pytest.raises(ProtocolError, match="cannot decompress gzip"):
        decompress(Compression.GZIP, bomb)


# --------------------------------------------------------------- garbage


@pytest.mark.parametrize("codec", COMPRESSED)
def test_garbage(codec):
    junks = [b"", b"garbage!" * 10, os.urandom(1000), b"\x82SNAPPY\x00\x00\x00", b"\x82SNAPPY\x00" + bytes(8) + b"\x00"]
    if codec is not Compression.SNAPPY:
        junks.append(b"\x00")  # for raw snappy this is a valid empty stream
    for junk in junks:
        with pytest.raises(ProtocolError, match=f"cannot decompress {codec.name.lower()}"):
            decompress(codec, junk)


@pytest.mark.parametrize("codec", COMPRESSED)
def test_every_truncation_is_an_error(codec):
    data = PAYLOADS["mixed"][:50_000] + PAYLOADS["text"][:50_000]
    packed = compress(codec, data)
    for n in range(0, len(packed), max(1, len(packed) // 300)):
        if codec is Compression.SNAPPY:
            # xerial has no end marker: a cut at a block boundary is a valid, shorter
            # stream.  Anything else must fail.
            try:
                out = decompress(codec, packed[:n])
            except ProtocolError:
                continue
            assert data.startswith(out) and len(out) % (32 * 1024) == 0
            continue
        with pytest.raises(ProtocolError):
            decompress(codec, packed[:n])


def test_unknown_codec():
    with pytest.raises(ProtocolError, match="codec"):
        decompress(7, b"")
    with pytest.raises(ProtocolError, match="codec"):
        compress(5, b"")


@settings(max_examples=150, deadline=None)
@given(codec=st.sampled_from(COMPRESSED), data=st.binary(max_size=300))
def test_random_input_raises_only_protocol_error(codec, data):
    try:
        decompress(codec, data, max_size=1 << 20)
    except ProtocolError:
        pass


@settings(max_examples=150, deadline=None)
@given(codec=st.sampled_from(COMPRESSED), data=st.data())
def test_mutated_input_raises_only_protocol_error(codec, data):
    packed = bytearray(compress(codec, b"some compressible text " * 50))
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(packed) - 1))
        packed[i] = data.draw(st.integers(0, 255))
    try:
        out = decompress(codec, bytes(packed), max_size=1 << 20)
    except ProtocolError:
        return
    assert len(out) <= 1 << 20


@settings(max_examples=80, deadline=None)
@given(codec=st.sampled_from(CODECS), data=st.binary(max_size=5000))
def test_round_trip_property(codec, data):
    assert decompress(codec, compress(codec, data)) == data
