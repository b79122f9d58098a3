"""Compression codecs of Kafka record batches, in the framings real clients produce.

One batch's records section is compressed as a single unit.  What a codec
"means" on the wire is a matter of framing, and clients differ:

* gzip: one or more gzip members.
* snappy: the Java client and librdkafka write the xerial snappy-java stream
  (``\\x82SNAPPY\\x00`` header, then length-prefixed raw snappy blocks); a few
  clients send one raw snappy block.  Both are accepted; we write xerial,
  like the Java client.
* lz4: the standard LZ4 frame format (KIP-57).  librdkafka may link blocks
  and add checksums, which the decoder accepts; we write what the Java client
  writes -- independent 64 KiB blocks, no checksums -- because the Java
  reader cannot follow linked blocks.
* zstd: standard zstd frames, with or without the content size in the header
  (librdkafka's streaming frames omit it).

Decompression is bounded by ``max_size``: before handing a frame to the
codec, the frame structure (block headers, declared lengths) is walked to
compute an upper bound of the output, so a small "bomb" is refused before it
is expanded.  Every failure surfaces as :class:`ProtocolError`.
"""

from __future__ import annotations

import struct
import zlib

import cramjam

from .errors import ProtocolError
from .records import Compression

__all__ = ["DEFAULT_MAX_DECOMPRESSED_SIZE", "compress", "decompress"]

# Far above any sane batch (producers cap requests at ~1 MiB compressed by
# default; even highly compressible text rarely expands past 50x), yet small
# enough that a hostile batch cannot take the broker's memory.
DEFAULT_MAX_DECOMPRESSED_SIZE = 64 * 1024 * 1024

_U32LE = struct.Struct("<I")
_U64LE = struct.Struct("<Q")
_I32BE = struct.Struct(">i")

_GZIP_WBITS = 16 + zlib.MAX_WBITS  # gzip wrapper only, no raw/zlib guessing
_GZIP_MAGIC = b"\x1f\x8b"
_GZIP_LEVEL = 6  # Kafka's default (zlib's -1)

_XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER = _XERIAL_MAGIC + struct.pack(">ii", 1, 1)  # version 1, min compatible 1
_XERIAL_BLOCK = 32 * 1024  # snappy-java's default block size

_LZ4_MAGIC = 0x184D2204
_LZ4_BLOCK = 64 * 1024
_LZ4_BLOCK_MAX = {4: 64 * 1024, 5: 256 * 1024, 6: 1024 * 1024, 7: 4 * 1024 * 1024}
_LZ4_UNCOMPRESSED_BIT = 0x80000000

_ZSTD_MAGIC = 0xFD2FB528
_ZSTD_BLOCK_MAX = 128 * 1024
_ZSTD_LEVEL = 3  # Kafka's default

# Skippable frames (both lz4 and zstd) use magics 0x184D2A50..0x184D2A5F.
_SKIPPABLE_MASK = 0xFFFFFFF0
_SKIPPABLE_MAGIC = 0x184D2A50


def _xxh32_short(data: bytes, seed: int = 0) -> int:
    """XXH32 of fewer than 16 bytes: enough for an LZ4 frame-descriptor checksum."""
    assert len(data) < 16
    p1, p2, p3, p4, p5 = 2654435761, 2246822519, 3266489917, 668265263, 374761393
    m = 0xFFFFFFFF

    def rotl(x: int, r: int) -> int:
        return ((x << r) | (x >> (32 - r))) & m

    h = (seed + p5 + len(data)) & m
    i = 0
    while i + 4 <= len(data):
        h = (h + _U32LE.unpack_from(data, i)[0] * p3) & m
        h = (rotl(h, 17) * p4) & m
        i += 4
    for b in data[i:]:
        h = (h + b * p5) & m
        h = (rotl(h, 11) * p1) & m
    h ^= h >> 15
    h = (h * p2) & m
    h ^= h >> 13
    h = (h * p3) & m
    h ^= h >> 16
    return h


# FLG: version 01, independent blocks, no checksums, no content size.
# BD: 64 KiB maximum block size.  HC: second byte of XXH32(FLG, BD).
_LZ4_DESCRIPTOR = bytes((0x60, 0x40))
_LZ4_HEADER = (
    _U32LE.pack(_LZ4_MAGIC) + _LZ4_DESCRIPTOR + bytes(((_xxh32_short(_LZ4_DESCRIPTOR) >> 8) & 0xFF,))
)
_LZ4_END_MARK = b"\x00\x00\x00\x00"


class _Corrupt(Exception):
    """Internal: framing problem found while bounding; becomes ProtocolError."""


# ---------------------------------------------------------------- compress


def compress(codec: Compression | int, data, *, level: int | None = None) -> bytes:
    """Compress ``data`` as a record-batch payload in ``codec``'s Kafka framing."""
    codec = _codec(codec)
    if codec is Compression.NONE:
        return bytes(data)
    if codec is Compression.GZIP:
        c = zlib.compressobj(_GZIP_LEVEL if level is None else level, zlib.DEFLATED, _GZIP_WBITS)
        return c.compress(data) + c.flush()
    view = memoryview(data).cast("B") if not isinstance(data, bytes) else memoryview(data)
    if codec is Compression.SNAPPY:
        parts = [_XERIAL_HEADER]
        for start in range(0, len(view), _XERIAL_BLOCK):
            block = bytes(cramjam.snappy.compress_raw(view[start:start + _XERIAL_BLOCK]))
            parts.append(_I32BE.pack(len(block)))
            parts.append(block)
        return b"".join(parts)
    if codec is Compression.LZ4:
        parts = [_LZ4_HEADER]
        for start in range(0, len(view), _LZ4_BLOCK):
            chunk = view[start:start + _LZ4_BLOCK]
            kwargs = {} if level is None else {"compression": level, "mode": "high_compression"}
            block = bytes(cramjam.lz4.compress_block(chunk, store_size=False, **kwargs))
            if len(block) >= len(chunk):
                # Incompressible: the frame format lets us store it verbatim.
                parts.append(_U32LE.pack(len(chunk) | _LZ4_UNCOMPRESSED_BIT))
                parts.append(bytes(chunk))
            else:
                parts.append(_U32LE.pack(len(block)))
                parts.append(block)
        parts.append(_LZ4_END_MARK)
        return b"".join(parts)
    # ZSTD
    return bytes(cramjam.zstd.compress(view, level=_ZSTD_LEVEL if level is None else level))


# -------------------------------------------------------------- decompress


def decompress(codec: Compression | int, data, max_size: int = DEFAULT_MAX_DECOMPRESSED_SIZE) -> bytes:
    """Expand a record-batch payload; ProtocolError if corrupt or larger than ``max_size``."""
    codec = _codec(codec)
    name = codec.name.lower()
    try:
        view = memoryview(data).cast("B")
        if codec is Compression.NONE:
            out = bytes(view)
        elif codec is Compression.GZIP:
            out = _gunzip(view, max_size)
        elif codec is Compression.SNAPPY:
            out = _unsnappy(view, max_size)
        elif codec is Compression.LZ4:
            _check_bound(_lz4_bound(view), max_size)
            out = bytes(cramjam.lz4.decompress(view))
        else:
            _check_bound(_zstd_bound(view), max_size)
            out = bytes(cramjam.zstd.decompress(view))
    except _Corrupt as exc:
        raise ProtocolError(f"cannot decompress {name}: {exc}") from None
    except ProtocolError:
        raise
    except Exception as exc:  # codec libraries raise assorted types; MemoryError too
        raise ProtocolError(f"cannot decompress {name}: {exc}") from exc
    if len(out) > max_size:
        # Belt and braces: the bound should have caught this already.
        raise ProtocolError(f"cannot decompress {name}: output exceeds max_size {max_size}")
    return out


def _codec(codec: Compression | int) -> Compression:
    try:
        return Compression(codec)
    except ValueError:
        raise ProtocolError(f"unknown compression codec id {codec}") from None


def _check_bound(bound: int, max_size: int) -> None:
    if bound > max_size:
        raise _Corrupt(f"output may reach {bound} bytes, over max_size {max_size}")


def _gunzip(view: memoryview, max_size: int) -> bytes:
    out = bytearray()
    data: bytes | memoryview = view
    while True:
        d = zlib.decompressobj(_GZIP_WBITS)
        # Ask for one byte more than allowed, so hitting the limit is visible.
        out += d.decompress(data, max_size - len(out) + 1)
        if len(out) > max_size:
            raise _Corrupt(f"output exceeds max_size {max_size}")
        if not d.eof:
            raise _Corrupt("truncated gzip stream")
        data = d.unused_data
        # Like Java's GZIPInputStream, a further member is read only if the
        # trailing bytes start with a gzip header; other trailing bytes are ignored.
        if data[:2] != _GZIP_MAGIC:
            return bytes(out)


def _unsnappy(view: memoryview, max_size: int) -> bytes:
    if view[:8] != _XERIAL_MAGIC:
        _check_bound(cramjam.snappy.decompress_raw_len(view), max_size)
        return bytes(cramjam.snappy.decompress_raw(view))
    if len(view) < len(_XERIAL_HEADER):
        raise _Corrupt("truncated xerial header")
    pos = len(_XERIAL_HEADER)
    blocks = []
    total = 0
    while pos < len(view):
        if len(view) - pos < 4:
            raise _Corrupt(f"truncated xerial block length at byte {pos}")
        (n,) = _I32BE.unpack_from(view, pos)
        pos += 4
        if n < 0 or pos + n > len(view):
            raise _Corrupt(f"xerial block of {n} bytes at byte {pos - 4} overruns the input")
        block = view[pos:pos + n]
        total += cramjam.snappy.decompress_raw_len(block)
        _check_bound(total, max_size)
        blocks.append(bytes(cramjam.snappy.decompress_raw(block)))
        pos += n
    return b"".join(blocks)


def _need(view: memoryview, pos: int, n: int, what: str) -> None:
    if pos + n > len(view):
        raise _Corrupt(f"truncated {what} at byte {pos}")


def _skippable(view: memoryview, pos: int, magic: int) -> int | None:
    """Position after a skippable frame starting at ``pos``, or None if it is not one."""
    if magic & _SKIPPABLE_MASK != _SKIPPABLE_MAGIC:
        return None
    _need(view, pos, 8, "skippable frame header")
    (size,) = _U32LE.unpack_from(view, pos + 4)
    _need(view, pos + 8, size, "skippable frame")
    return pos + 8 + size


def _lz4_bound(view: memoryview) -> int:
    """Upper bound of the decompressed size of concatenated LZ4 frames."""
    pos = 0
    total = 0
    if not len(view):
        raise _Corrupt("empty input")
    while pos < len(view):
        _need(view, pos, 7, "frame header")
        (magic,) = _U32LE.unpack_from(view, pos)
        after = _skippable(view, pos, magic)
        if after is not None:
            pos = after
            continue
        if magic != _LZ4_MAGIC:
            raise _Corrupt(f"bad frame magic {magic:#010x} at byte {pos}")
        flg, bd = view[pos + 4], view[pos + 5]
        if flg >> 6 != 1:
            raise _Corrupt(f"unsupported frame version {flg >> 6}")
        block_max = _LZ4_BLOCK_MAX.get((bd >> 4) & 7)
        if block_max is None:
            raise _Corrupt(f"invalid block size id {(bd >> 4) & 7}")
        block_checksum = 4 if flg & 0x10 else 0
        pos += 6 + (8 if flg & 0x08 else 0) + (4 if flg & 0x01 else 0) + 1
        while True:
            _need(view, pos, 4, "block size")
            (word,) = _U32LE.unpack_from(view, pos)
            pos += 4
            if word == 0:
                break
            size = word & ~_LZ4_UNCOMPRESSED_BIT
            if size > block_max:
                raise _Corrupt(f"block of {size} bytes exceeds the frame's maximum {block_max}")
            total += size if word & _LZ4_UNCOMPRESSED_BIT else block_max
            _need(view, pos, size + block_checksum, "block")
            pos += size + block_checksum
        if flg & 0x04:
            _need(view, pos, 4, "content checksum")
            pos += 4
    return total


def _zstd_bound(view: memoryview) -> int:
    """Upper bound of the decompressed size of concatenated zstd frames.

    Raw and RLE blocks state their regenerated size; a compressed block
    regenerates at most min(window, 128 KiB).  A declared content size, when
    present, is used instead since the decoder enforces it.
    """
    pos = 0
    total = 0
    if not len(view):
        raise _Corrupt("empty input")
    while pos < len(view):
        _need(view, pos, 5, "frame header")
        (magic,) = _U32LE.unpack_from(view, pos)
        after = _skippable(view, pos, magic)
        if after is not None:
            pos = after
            continue
        if magic != _ZSTD_MAGIC:
            raise _Corrupt(f"bad frame magic {magic:#010x} at byte {pos}")
        fhd = view[pos + 4]
        pos += 5
        single_segment = fhd & 0x20
        if fhd & 0x08:
            raise _Corrupt("reserved frame header bit set")
        window = 0
        if not single_segment:
            _need(view, pos, 1, "window descriptor")
            wd = view[pos]
            base = 1 << (10 + (wd >> 3))
            window = base + (base >> 3) * (wd & 7)
            pos += 1
        pos += (0, 1, 2, 4)[fhd & 0x03]
        fcs_size = (1 if single_segment else 0, 2, 4, 8)[fhd >> 6]
        content_size = None
        if fcs_size:
            _need(view, pos, fcs_size, "frame content size")
            content_size = int.from_bytes(view[pos:pos + fcs_size], "little") + (256 if fcs_size == 2 else 0)
            pos += fcs_size
            if single_segment:
                window = content_size
        block_max = min(window, _ZSTD_BLOCK_MAX)
        frame_total = 0
        while True:
            _need(view, pos, 3, "block header")
            word = int.from_bytes(view[pos:pos + 3], "little")
            pos += 3
            block_type = (word >> 1) & 3
            size = word >> 3
            if block_type == 0:  # raw
                frame_total += size
                _need(view, pos, size, "raw block")
                pos += size
            elif block_type == 1:  # RLE: one byte repeated `size` times
                frame_total += size
                _need(view, pos, 1, "RLE block")
                pos += 1
            elif block_type == 2:
                frame_total += block_max
                _need(view, pos, size, "compressed block")
                pos += size
            else:
                raise _Corrupt(f"reserved block type at byte {pos - 3}")
            if word & 1:
                break
        if fhd & 0x04:
            _need(view, pos, 4, "content checksum")
            pos += 4
        total += frame_total if content_size is None else min(content_size, frame_total)
    return total
