"""Kafka record batches, magic 2 (the v2 ``RecordBatch`` format).

Layout of one batch (all integers big-endian)::

    offset  size  field
         0     8  base_offset
         8     4  batch_length          bytes after this field
        12     4  partition_leader_epoch
        16     1  magic                 (2)
        17     4  crc                   CRC-32C of bytes [21, 12 + batch_length)
        21     2  attributes
        23     4  last_offset_delta
        27     8  base_timestamp
        35     8  max_timestamp
        43     8  producer_id
        51     2  producer_epoch
        53     4  base_sequence
        57     4  records_count
        61     …  records (possibly compressed as one block)

The broker's hot path treats a batch as opaque bytes: it checks the 61-byte
header and the CRC (one C call over a memoryview, no copy) and never looks at
the records.  The three fields a broker rewrites -- base offset, partition
leader epoch and, for log-append-time topics, the timestamp -- are patched in
place; the first two sit before the CRC-covered region so patching them does
not invalidate the checksum.

Decoding and encoding individual records (``decode_batch``/``encode_batch``)
is for tests, tools, coordinators and control markers, not for the data path.
"""

from __future__ import annotations

import enum
import struct
import time
from typing import Any, Iterator, NamedTuple, Sequence

from crc32c import crc32c

from .errors import ProtocolError

__all__ = [
    "BATCH_HEADER_SIZE",
    "LOG_OVERHEAD",
    "MAGIC",
    "Compression",
    "TimestampType",
    "BatchHeader",
    "read_batch_header",
    "validate_batch",
    "iter_batches",
    "split_batches_lenient",
    "set_base_offset",
    "set_partition_leader_epoch",
    "set_log_append_time",
    "compute_crc",
    "Header",
    "Record",
    "decode_batch",
    "decode_records",
    "encode_batch",
    "encode_control_batch",
]

BATCH_HEADER_SIZE = 61
LOG_OVERHEAD = 12  # base offset (8) + batch length (4): what precedes batch_length's span
MAGIC = 2

# batch_length counts everything after itself, so the smallest legal value is
# the header without base offset and length: a batch with no records.
_MIN_BATCH_LENGTH = BATCH_HEADER_SIZE - LOG_OVERHEAD  # 49

# Field offsets inside a batch.
_PARTITION_LEADER_EPOCH_OFFSET = 12
_MAGIC_OFFSET = 16
_CRC_OFFSET = 17
_ATTRIBUTES_OFFSET = 21  # the CRC covers from here to the end of the batch
_MAX_TIMESTAMP_OFFSET = 35

_HEADER = struct.Struct(">qiibIhiqqqhii")
assert _HEADER.size == BATCH_HEADER_SIZE
_LENGTH = struct.Struct(">i")
_INT64 = struct.Struct(">q")
_INT32 = struct.Struct(">i")
_UINT32 = struct.Struct(">I")
_INT16 = struct.Struct(">h")

# Attribute bits.
_COMPRESSION_MASK = 0x07
_TIMESTAMP_TYPE_BIT = 0x08
_TRANSACTIONAL_BIT = 0x10
_CONTROL_BIT = 0x20
_DELETE_HORIZON_BIT = 0x40

_SEQUENCE_WRAP = 1 << 31  # Kafka sequences are non-negative int32 that wrap to 0


class Compression(enum.IntEnum):
    """Codec ids stored in the low three attribute bits."""

    NONE = 0
    GZIP = 1
    SNAPPY = 2
    LZ4 = 3
    ZSTD = 4


class TimestampType(enum.IntEnum):
    """Attribute bit 3: who assigned the record timestamps."""

    CREATE_TIME = 0
    LOG_APPEND_TIME = 1


class BatchHeader(NamedTuple):
    """The fixed 61-byte prefix of a v2 batch, as parsed integers."""

    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    records_count: int

    @property
    def compression(self) -> Compression:
        """Codec of the records section; ProtocolError for ids Kafka does not define."""
        codec = self.attributes & _COMPRESSION_MASK
        try:
            return Compression(codec)
        except ValueError:
            raise ProtocolError(f"record batch: unknown compression codec id {codec}") from None

    @property
    def timestamp_type(self) -> TimestampType:
        return TimestampType.LOG_APPEND_TIME if self.attributes & _TIMESTAMP_TYPE_BIT else TimestampType.CREATE_TIME

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & _TRANSACTIONAL_BIT)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & _CONTROL_BIT)

    @property
    def has_delete_horizon(self) -> bool:
        """Bit 6: base_timestamp holds the compaction delete horizon (KIP-534)."""
        return bool(self.attributes & _DELETE_HORIZON_BIT)

    @property
    def total_size(self) -> int:
        """Bytes the whole batch occupies, base offset included."""
        return self.batch_length + LOG_OVERHEAD

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1

    @property
    def last_sequence(self) -> int:
        """Sequence number of the last record; -1 when the batch carries no sequence.

        Sequences wrap from 2**31-1 to 0, as the idempotent producer does, so
        the addition is taken modulo 2**31 rather than overflowing.
        """
        if self.base_sequence == -1:
            return -1
        return (self.base_sequence + self.last_offset_delta) % _SEQUENCE_WRAP


def _available(buf, pos: int) -> int:
    if pos < 0:
        raise ProtocolError(f"record batch: negative position {pos}")
    return len(buf) - pos


def read_batch_header(buf, pos: int = 0) -> BatchHeader:
    """Parse the 61-byte header at ``pos`` without any validation beyond its length."""
    if _available(buf, pos) < BATCH_HEADER_SIZE:
        raise ProtocolError(
            f"record batch at byte {pos}: truncated header "
            f"({max(len(buf) - pos, 0)} of {BATCH_HEADER_SIZE} bytes)"
        )
    return BatchHeader._make(_HEADER.unpack_from(buf, pos))


def _check_magic(buf, pos: int, available: int) -> None:
    # The magic byte sits at offset 16 in every message format (legacy
    # message sets included), so it can be checked before knowing the layout;
    # that yields a useful error for old clients instead of "truncated" or
    # "bad CRC".
    if available <= _MAGIC_OFFSET:
        raise ProtocolError(
            f"record batch at byte {pos}: truncated ({available} bytes, header needs {BATCH_HEADER_SIZE})"
        )
    magic = buf[pos + _MAGIC_OFFSET]
    if magic != MAGIC:
        if magic in (0, 1):
            raise ProtocolError(
                f"record batch at byte {pos}: magic {magic}: magic 0/1 legacy message sets are not supported"
            )
        raise ProtocolError(f"record batch at byte {pos}: unsupported magic {magic}")


def validate_batch(buf, pos: int = 0) -> BatchHeader:
    """Check that a complete, uncorrupted v2 batch starts at ``pos`` and return its header.

    Checks magic, that ``batch_length`` is at least a bare header and fits in
    ``buf``, the CRC-32C, and that the counts are not negative.  Costs one
    CRC pass over the batch, without copying it.
    """
    available = _available(buf, pos)
    _check_magic(buf, pos, available)
    header = read_batch_header(buf, pos)
    length = header.batch_length
    if length < _MIN_BATCH_LENGTH:
        raise ProtocolError(
            f"record batch at byte {pos}: batch_length {length} is below the minimum {_MIN_BATCH_LENGTH}"
        )
    end = pos + LOG_OVERHEAD + length
    if end > len(buf):
        raise ProtocolError(
            f"record batch at byte {pos}: truncated (batch_length {length} needs {LOG_OVERHEAD + length} bytes, "
            f"{available} available)"
        )
    view = buf if isinstance(buf, memoryview) else memoryview(buf)
    actual = crc32c(view[pos + _ATTRIBUTES_OFFSET:end])
    if actual != header.crc:
        raise ProtocolError(
            f"record batch at byte {pos}: CRC mismatch (stored {header.crc:#010x}, computed {actual:#010x})"
        )
    if header.records_count < 0:
        raise ProtocolError(f"record batch at byte {pos}: negative records_count {header.records_count}")
    if header.last_offset_delta < 0:
        raise ProtocolError(f"record batch at byte {pos}: negative last_offset_delta {header.last_offset_delta}")
    codec = header.attributes & _COMPRESSION_MASK
    if codec > Compression.ZSTD:
        raise ProtocolError(f"record batch at byte {pos}: unknown compression codec id {codec}")
    return header


def iter_batches(buf) -> Iterator[tuple[int, BatchHeader]]:
    """Yield ``(position, header)`` for every batch of a concatenation, validating each.

    Raises ProtocolError at the first bad or truncated batch; use this for
    input that must be wholly valid (a produce request).  Records are not
    looked at.
    """
    view = buf if isinstance(buf, memoryview) else memoryview(buf)
    pos = 0
    size = len(view)
    while pos < size:
        header = validate_batch(view, pos)
        yield pos, header
        pos += header.batch_length + LOG_OVERHEAD


def split_batches_lenient(buf) -> tuple[list[tuple[int, BatchHeader]], int]:
    """Validated batches from the start of ``buf`` up to the first bad one.

    For log recovery: a segment cut short by a crash ends in a partial or
    garbage batch, and everything before it is still good.  Returns the good
    batches and the number of bytes they cover (where to truncate).
    """
    view = buf if isinstance(buf, memoryview) else memoryview(buf)
    batches: list[tuple[int, BatchHeader]] = []
    pos = 0
    size = len(view)
    while pos < size:
        try:
            header = validate_batch(view, pos)
        except ProtocolError:
            break
        batches.append((pos, header))
        pos += header.batch_length + LOG_OVERHEAD
    return batches, pos


def set_base_offset(buf, pos: int, base_offset: int) -> None:
    """Overwrite the base offset in place (outside the CRC, so the CRC stays valid)."""
    _INT64.pack_into(buf, pos, base_offset)


def set_partition_leader_epoch(buf, pos: int, epoch: int) -> None:
    """Overwrite the partition leader epoch in place (outside the CRC)."""
    _INT32.pack_into(buf, pos + _PARTITION_LEADER_EPOCH_OFFSET, epoch)


def compute_crc(buf, pos: int = 0) -> int:
    """CRC-32C of the CRC-covered span of the batch at ``pos`` (attributes to end)."""
    if _available(buf, pos) < BATCH_HEADER_SIZE:
        raise ProtocolError(f"record batch at byte {pos}: truncated header")
    (length,) = _LENGTH.unpack_from(buf, pos + 8)
    end = pos + LOG_OVERHEAD + length
    if length < _MIN_BATCH_LENGTH or end > len(buf):
        raise ProtocolError(f"record batch at byte {pos}: batch_length {length} does not fit the buffer")
    view = buf if isinstance(buf, memoryview) else memoryview(buf)
    return crc32c(view[pos + _ATTRIBUTES_OFFSET:end])


def set_log_append_time(buf, pos: int, timestamp_ms: int) -> None:
    """Mark the batch as LOG_APPEND_TIME with ``timestamp_ms`` and refresh its CRC.

    Like Kafka, only the timestamp-type attribute bit and ``max_timestamp``
    change; readers of a log-append-time batch report ``max_timestamp`` as
    every record's timestamp, so the per-record deltas and base timestamp are
    left alone and no record is rewritten.
    """
    (attributes,) = _INT16.unpack_from(buf, pos + _ATTRIBUTES_OFFSET)
    _INT16.pack_into(buf, pos + _ATTRIBUTES_OFFSET, attributes | _TIMESTAMP_TYPE_BIT)
    _INT64.pack_into(buf, pos + _MAX_TIMESTAMP_OFFSET, timestamp_ms)
    _UINT32.pack_into(buf, pos + _CRC_OFFSET, compute_crc(buf, pos))


# ------------------------------------------------------------------ records
#
# Inside the (decompressed) records section each record is:
#   length varint | attributes int8 | timestamp_delta varlong | offset_delta varint
#   | key_length varint | key | value_length varint | value
#   | header_count varint | (key_length varint | key | value_length varint | value)*
# All varints are zigzag-encoded; a length of -1 means null.


class Header(NamedTuple):
    """A record header: UTF-8 string key, nullable bytes value."""

    key: str
    value: bytes | None


class Record(NamedTuple):
    """A decoded record with absolute offset and timestamp."""

    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...] = ()
    attributes: int = 0


_CONTROL_KEY = struct.Struct(">hh")  # version, type (0 abort, 1 commit)
_CONTROL_VALUE = struct.Struct(">hi")  # version, coordinator epoch

_INT32_MIN, _INT32_MAX = -(1 << 31), (1 << 31) - 1
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


def _read_varint(data, pos: int, end: int, max_bytes: int, bits: int) -> tuple[int, int]:
    """Zigzag varint at ``pos`` (not past ``end``) -> (value, next position).

    Like Kafka, at most 5 bytes for a varint / 10 for a varlong are read and
    bits above 32 / 64 are dropped.
    """
    raw = 0
    shift = 0
    start = pos
    for _ in range(max_bytes):
        if pos >= end:
            raise ProtocolError(f"truncated varint at byte {start}")
        b = data[pos]
        pos += 1
        raw |= (b & 0x7F) << shift
        if not b & 0x80:
            raw &= (1 << bits) - 1
            return (raw >> 1) ^ -(raw & 1), pos
        shift += 7
    raise ProtocolError(f"varint at byte {start} is longer than {max_bytes} bytes")


def _write_varint(out: bytearray, value: int, bits: int = 32) -> None:
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if not lo <= value <= hi:
        raise ProtocolError(f"value {value} does not fit a {bits}-bit varint")
    z = ((value << 1) ^ (value >> (bits - 1))) & ((1 << bits) - 1)
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)


def _read_bytes(data, pos: int, end: int, what: str) -> tuple[bytes | None, int]:
    n, pos = _read_varint(data, pos, end, 5, 32)
    if n == -1:
        return None, pos
    if n < 0:
        raise ProtocolError(f"negative {what} length {n} at byte {pos}")
    if pos + n > end:
        raise ProtocolError(f"{what} of {n} bytes at byte {pos} runs past the record")
    return bytes(data[pos:pos + n]), pos + n


def _decode_record_section(data, header: BatchHeader) -> list[Record]:
    """Decode exactly ``header.records_count`` records filling all of ``data``."""
    end = len(data)
    pos = 0
    base_offset = header.base_offset
    base_ts = header.base_timestamp
    append_time = header.max_timestamp if header.attributes & _TIMESTAMP_TYPE_BIT else None
    records: list[Record] = []
    for index in range(header.records_count):
        start = pos
        try:
            length, pos = _read_varint(data, pos, end, 5, 32)
            rec_end = pos + length
            if length < 0 or rec_end > end:
                raise ProtocolError(f"record length {length} does not fit the {end - pos} remaining bytes")
            if pos >= rec_end:
                raise ProtocolError("record has no attributes byte")
            attributes = data[pos]
            pos += 1
            ts_delta, pos = _read_varint(data, pos, rec_end, 10, 64)
            offset_delta, pos = _read_varint(data, pos, rec_end, 5, 32)
            key, pos = _read_bytes(data, pos, rec_end, "key")
            value, pos = _read_bytes(data, pos, rec_end, "value")
            count, pos = _read_varint(data, pos, rec_end, 5, 32)
            if count < 0:
                raise ProtocolError(f"negative header count {count}")
            headers = []
            for _ in range(count):
                hkey, pos = _read_bytes(data, pos, rec_end, "header key")
                if hkey is None:
                    raise ProtocolError("null header key")
                hvalue, pos = _read_bytes(data, pos, rec_end, "header value")
                headers.append(Header(hkey.decode("utf-8"), hvalue))
            if pos != rec_end:
                raise ProtocolError(f"record declares {length} bytes but its fields end {rec_end - pos} bytes early")
        except UnicodeDecodeError as exc:
            raise ProtocolError(
                f"record batch at offset {base_offset}: record {index} at byte {start} of the records section: "
                f"header key is not UTF-8 ({exc.reason})"
            ) from None
        except ProtocolError as exc:
            raise ProtocolError(
                f"record batch at offset {base_offset}: record {index} at byte {start} of the records section: {exc}"
            ) from None
        timestamp = append_time if append_time is not None else base_ts + ts_delta
        records.append(Record(base_offset + offset_delta, timestamp, key, value, tuple(headers), attributes))
    if pos != end:
        raise ProtocolError(
            f"record batch at offset {base_offset}: records_count {header.records_count} "
            f"but {end - pos} bytes remain after the last record"
        )
    return records


def _decode_at(view: memoryview, pos: int, header: BatchHeader, max_decompressed_size: int | None) -> list[Record]:
    section = view[pos + BATCH_HEADER_SIZE:pos + LOG_OVERHEAD + header.batch_length]
    codec = header.compression
    if codec is not Compression.NONE:
        from .compression import DEFAULT_MAX_DECOMPRESSED_SIZE, decompress  # compression imports us

        limit = DEFAULT_MAX_DECOMPRESSED_SIZE if max_decompressed_size is None else max_decompressed_size
        section = decompress(codec, section, limit)
    try:
        return _decode_record_section(section, header)
    except ProtocolError:
        raise
    except (IndexError, ValueError, TypeError, MemoryError, OverflowError) as exc:  # defensive: never leak these
        raise ProtocolError(f"record batch at byte {pos}: cannot decode records: {exc!r}") from None


def decode_batch(buf, pos: int = 0, *, max_decompressed_size: int | None = None) -> tuple[BatchHeader, list[Record]]:
    """Validate the batch at ``pos``, decompress it and decode every record.

    Offsets and timestamps in the result are absolute; for LOG_APPEND_TIME
    batches every record gets ``max_timestamp``, as Kafka's readers do.
    """
    view = buf if isinstance(buf, memoryview) else memoryview(buf)
    header = validate_batch(view, pos)
    return header, _decode_at(view, pos, header, max_decompressed_size)


def decode_records(buf, *, max_decompressed_size: int | None = None) -> list[tuple[BatchHeader, list[Record]]]:
    """Decode every batch of a concatenation (see :func:`decode_batch`)."""
    view = buf if isinstance(buf, memoryview) else memoryview(buf)
    return [(header, _decode_at(view, pos, header, max_decompressed_size)) for pos, header in iter_batches(view)]


def _as_bytes(value: Any, what: str) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode("utf-8")
    try:
        return bytes(memoryview(value))
    except TypeError:
        raise ProtocolError(f"{what} must be bytes-like, str or None, not {type(value).__name__}") from None


def _unpack_record(item: Any) -> tuple[Any, Any, Any, Any, int]:
    """(key, value, headers, timestamp, attributes) from a Record-like object or a plain tuple."""
    if hasattr(item, "key") and hasattr(item, "value"):
        return (item.key, item.value, getattr(item, "headers", ()) or (), getattr(item, "timestamp", None),
                getattr(item, "attributes", 0) or 0)
    try:
        fields = tuple(item)
    except TypeError:
        raise ProtocolError(f"record must be Record-like or a tuple, not {type(item).__name__}") from None
    if not 2 <= len(fields) <= 4:
        raise ProtocolError(f"record tuple must be (key, value[, headers[, timestamp]]), got {len(fields)} items")
    key, value, headers, timestamp = fields + (None,) * (4 - len(fields))
    return key, value, headers or (), timestamp, 0


def encode_batch(
    records: Sequence[Any],
    *,
    base_offset: int = 0,
    compression: Compression | int = Compression.NONE,
    timestamp_type: TimestampType | int = TimestampType.CREATE_TIME,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    is_transactional: bool = False,
    is_control: bool = False,
    partition_leader_epoch: int = -1,
    base_timestamp: int | None = None,
) -> bytes:
    """Build one v2 batch with a correct CRC.

    Each item is a Record-like object (attributes ``key``, ``value`` and
    optionally ``headers``, ``timestamp``, ``attributes``) or a tuple
    ``(key, value[, headers[, timestamp]])``.  Headers are ``(str, bytes|None)``
    pairs.  A missing timestamp means now.  Offset deltas are the item
    indexes; ``base_timestamp`` defaults to the first record's timestamp, as
    Kafka's producer does.
    """
    if not records:
        raise ProtocolError("a record batch needs at least one record")
    try:
        codec = Compression(compression)
        log_append_time = TimestampType(timestamp_type) is TimestampType.LOG_APPEND_TIME
    except ValueError as exc:
        raise ProtocolError(f"record batch: {exc}") from None
    now = int(time.time() * 1000)
    unpacked = [_unpack_record(r) for r in records]
    timestamps = [now if ts is None else int(ts) for (_, _, _, ts, _) in unpacked]
    base_ts = timestamps[0] if base_timestamp is None else base_timestamp
    section = bytearray()
    body = bytearray()
    for index, ((key, value, headers, _, attributes), ts) in enumerate(zip(unpacked, timestamps)):
        body.clear()
        body.append(attributes & 0xFF)
        _write_varint(body, ts - base_ts, 64)
        _write_varint(body, index)
        for field, what in ((key, "key"), (value, "value")):
            data = _as_bytes(field, what)
            if data is None:
                _write_varint(body, -1)
            else:
                _write_varint(body, len(data))
                body += data
        headers = list(headers)
        _write_varint(body, len(headers))
        for hkey, hvalue in headers:
            kdata = _as_bytes(hkey, "header key")
            if kdata is None:
                raise ProtocolError("header key must not be None")
            _write_varint(body, len(kdata))
            body += kdata
            vdata = _as_bytes(hvalue, "header value")
            if vdata is None:
                _write_varint(body, -1)
            else:
                _write_varint(body, len(vdata))
                body += vdata
        _write_varint(section, len(body))
        section += body
    if codec is not Compression.NONE:
        from .compression import compress  # compression imports us

        payload = compress(codec, section)
    else:
        payload = bytes(section)
    attributes = int(codec)
    if log_append_time:
        attributes |= _TIMESTAMP_TYPE_BIT
    if is_transactional:
        attributes |= _TRANSACTIONAL_BIT
    if is_control:
        attributes |= _CONTROL_BIT
    out = bytearray(BATCH_HEADER_SIZE + len(payload))
    try:
        _HEADER.pack_into(
            out, 0, base_offset, _MIN_BATCH_LENGTH + len(payload), partition_leader_epoch, MAGIC, 0, attributes,
            len(records) - 1, base_ts, max(timestamps), producer_id, producer_epoch, base_sequence, len(records),
        )
    except struct.error as exc:
        raise ProtocolError(f"record batch field out of range: {exc}") from None
    out[BATCH_HEADER_SIZE:] = payload
    _UINT32.pack_into(out, _CRC_OFFSET, crc32c(memoryview(out)[_ATTRIBUTES_OFFSET:]))
    return bytes(out)


def encode_control_batch(
    *,
    producer_id: int,
    producer_epoch: int,
    commit: bool,
    coordinator_epoch: int,
    base_offset: int = 0,
    timestamp: int | None = None,
    partition_leader_epoch: int = -1,
) -> bytes:
    """A transaction marker: a transactional control batch holding one record.

    Key: version 0 (int16) and type (int16, 0 abort / 1 commit).
    Value: version 0 (int16) and the coordinator epoch (int32).
    """
    key = _CONTROL_KEY.pack(0, 1 if commit else 0)
    value = _CONTROL_VALUE.pack(0, coordinator_epoch)
    return encode_batch(
        [(key, value, (), timestamp)],
        base_offset=base_offset,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        is_transactional=True,
        is_control=True,
        partition_leader_epoch=partition_leader_epoch,
    )
