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
from typing import Iterator, NamedTuple

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
        raise ProtocolError(f"record batch at byte {pos}: batch_length {length} is below the minimum {_MIN_BATCH_LENGTH}")
    end = pos + LOG_OVERHEAD + length
    if end > len(buf):
        raise ProtocolError(
            f"record batch at byte {pos}: truncated (batch_length {length} needs {LOG_OVERHEAD + length} bytes, "
            f"{available} available)"
        )
    view = buf if isinstance(buf, memoryview) else memoryview(buf)
    actual = crc32c(view[pos + _ATTRIBUTES_OFFSET:end])
    if actual != header.crc:
        raise ProtocolError(f"record batch at byte {pos}: CRC mismatch (stored {header.crc:#010x}, computed {actual:#010x})")
    if header.records_count < 0:
        raise ProtocolError(f"record batch at byte {pos}: negative records_count {header.records_count}")
    if header.last_offset_delta < 0:
        raise ProtocolError(f"record batch at byte {pos}: negative last_offset_delta {header.last_offset_delta}")
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
