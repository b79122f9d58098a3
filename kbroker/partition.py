"""A partition this broker hosts: its log, its leadership state, and who waits on it.

The log stores bytes; this adds what the broker needs around it: the leader
epoch stamped on appended batches, the high watermark (with one replica it is
the log end offset; replication will move it by the ISR's progress), the
produce-time validation of client batches, and the wake-up of long-polling
fetches when data arrives (an event per waiting fetch, never a sleep loop).

Theory of operation: what a produced batch may cost
---------------------------------------------------
A produced batch is judged by its 61-byte header and CRC alone (Kafka's
``LogValidator.validateBatch`` rules for client batches): exactly one batch
per partition, at least one record, ``records_count == last_offset_delta +
1`` (otherwise a 70-byte batch could move the log end by 2**31), no control
batches, a sequence number whenever there is a producer id, and no more
records than the batch's bytes can hold (7 bytes is the smallest record; a
compressed batch is held to what decompression may produce).  None of that
reads a record.

Two things need the records themselves: the key check of compacted topics
at produce time and a ListOffsets by timestamp that falls inside a batch.
Their cost is set by the client (a 6 KB zstd batch may declare millions of
records), so beyond a small size they run in a worker thread, a few at a
time (:mod:`kbroker.offload`).  The trio thread -- every other client --
only ever pays for headers.  The batch still decodes fully somewhere, which
is Kafka's own limit too.
"""

from __future__ import annotations

from typing import NamedTuple

import trio

from protocol import ErrorCode, ProtocolError
from protocol.compression import DEFAULT_MAX_DECOMPRESSED_SIZE
from protocol.records import BATCH_HEADER_SIZE, Compression, decode_batch, iter_batches

from . import offload
from .log.config import LogConfig
from .log.errors import InvalidProducerEpoch, LogError, OutOfOrderSequence
from .log.partition_log import TimestampDecode

# The smallest record: length, attributes, timestamp delta, offset delta, key
# length, value length and header count, one byte each.
MIN_RECORD_SIZE = 7
# Up to this many records a batch is decoded inline: cheaper than a thread hop.
INLINE_DECODE_RECORDS = 256


async def _run_bounded(fn, records_count: int, compressed: bool):
    """``fn()`` inline when the batch is small, else in a worker thread."""
    if records_count <= INLINE_DECODE_RECORDS and not compressed:
        return fn()
    return await offload.run(fn)


class AppendResult(NamedTuple):
    error: ErrorCode
    base_offset: int = -1
    log_append_time: int = -1
    log_start_offset: int = -1
    message: str | None = None


def _key_error(records, pos: int) -> AppendResult | None:
    """Compacted topics: every record needs a key (decodes the batch; any thread)."""
    try:
        _h, recs = decode_batch(records, pos)
    except ProtocolError as e:
        return AppendResult(ErrorCode.CORRUPT_MESSAGE, message=str(e))
    if any(r.key is None for r in recs):
        return AppendResult(ErrorCode.INVALID_RECORD, message="Compacted topic cannot accept message without key.")
    return None


class Partition:
    def __init__(self, topic: str, index: int, log, *, leader_epoch: int = 0):
        self.topic = topic
        self.index = index
        self.log = log
        self.leader_epoch = leader_epoch
        self._waiters: set[trio.Event] = set()

    @property
    def high_watermark(self) -> int:
        return self.log.log_end_offset

    @property
    def log_start_offset(self) -> int:
        return self.log.log_start_offset

    @property
    def log_end_offset(self) -> int:
        return self.log.log_end_offset

    @property
    def offline(self) -> bool:
        """The log's directory failed: every request answers KAFKA_STORAGE_ERROR."""
        return self.log.offline

    # -- waiting for data --------------------------------------------------------
    def add_waiter(self, event: trio.Event) -> None:
        self._waiters.add(event)

    def remove_waiter(self, event: trio.Event) -> None:
        self._waiters.discard(event)

    def _wake(self) -> None:
        for ev in self._waiters:
            ev.set()
        self._waiters.clear()

    # -- appending -----------------------------------------------------------------
    def _validate(self, records, config: LogConfig, now_ms: int):
        """Header-only checks of a Produce request's records; an AppendResult on failure,
        else the (position, header) of its one batch."""
        if records is None or len(records) == 0:
            return AppendResult(ErrorCode.INVALID_RECORD, message="empty record set")
        try:
            batches = list(iter_batches(records))
        except ProtocolError as e:
            return AppendResult(ErrorCode.CORRUPT_MESSAGE, message=str(e))
        if len(batches) != 1:
            return AppendResult(ErrorCode.INVALID_RECORD,
                                message="Compressed outer record has more than one batch")
        pos, h = batches[0]
        if h.total_size > config.max_message_bytes:
            return AppendResult(
                ErrorCode.MESSAGE_TOO_LARGE,
                message=f"The record batch size {h.total_size} exceeds max.message.bytes {config.max_message_bytes}",
            )
        if h.records_count <= 0:
            return AppendResult(ErrorCode.INVALID_RECORD,
                                message=f"Invalid reported count for record batch: {h.records_count}")
        if h.records_count != h.last_offset_delta + 1:
            return AppendResult(
                ErrorCode.INVALID_RECORD,
                message=f"Inconsistent batch offset range [0, {h.last_offset_delta}] "
                f"and count of records {h.records_count}",
            )
        room = (h.batch_length + 12 - BATCH_HEADER_SIZE) if h.compression is Compression.NONE \
            else DEFAULT_MAX_DECOMPRESSED_SIZE
        if h.records_count > room // MIN_RECORD_SIZE:
            return AppendResult(
                ErrorCode.INVALID_RECORD,
                message=f"Record batch declares {h.records_count} records, more than its "
                f"{'payload' if h.compression is Compression.NONE else 'decompressed size limit'} "
                f"of {room} bytes can hold",
            )
        if h.is_control:
            return AppendResult(ErrorCode.INVALID_RECORD, message="clients may not produce control batches")
        if h.producer_id >= 0 and h.base_sequence < 0:
            return AppendResult(
                ErrorCode.INVALID_RECORD,
                message=f"Invalid sequence number {h.base_sequence} in record batch with producerId {h.producer_id}",
            )
        if h.is_transactional:
            return AppendResult(
                ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
                message="transactions are not supported yet",
            )
        if not config.log_append_time and (
            h.max_timestamp - now_ms > config.message_timestamp_after_max_ms
            or now_ms - h.base_timestamp > config.message_timestamp_before_max_ms
        ):
            return AppendResult(
                ErrorCode.INVALID_TIMESTAMP,
                message=(
                    f"Timestamp {h.max_timestamp} of a batch is out of range: "
                    f"message.timestamp.after.max.ms={config.message_timestamp_after_max_ms}, "
                    f"message.timestamp.before.max.ms={config.message_timestamp_before_max_ms}"
                ),
            )
        return pos, h

    def append_records(self, records, config: LogConfig, now_ms: int) -> AppendResult:
        """Validate and append a Produce request's record batch (one partition), all inline.

        ``records`` is a writable view into the request frame; base offsets
        and leader epochs are patched in it before it is written as-is.  The
        broker uses :meth:`produce`, which decodes large batches elsewhere.
        """
        checked = self._validate(records, config, now_ms)
        if isinstance(checked, AppendResult):
            return checked
        if config.compact:
            err = _key_error(records, checked[0])
            if err is not None:
                return err
        return self._append(records, config, now_ms)

    async def produce(self, records, config: LogConfig, now_ms: int) -> AppendResult:
        """:meth:`append_records` for request handlers: a compacted topic's key
        check of a large or compressed batch runs in a worker thread."""
        checked = self._validate(records, config, now_ms)
        if isinstance(checked, AppendResult):
            return checked
        if config.compact:
            pos, h = checked
            compressed = h.compression is not Compression.NONE
            err = await _run_bounded(lambda: _key_error(records, pos), h.records_count, compressed)
            if err is not None:
                return err
        return self._append(records, config, now_ms)

    def _append(self, records, config: LogConfig, now_ms: int) -> AppendResult:
        log_append_time_ms = now_ms if config.log_append_time else None
        try:
            info = self.log.append(
                records, assign_offsets=True, log_append_time_ms=log_append_time_ms, leader_epoch=self.leader_epoch
            )
        except OutOfOrderSequence as e:
            return AppendResult(ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER, message=str(e))
        except InvalidProducerEpoch as e:
            return AppendResult(ErrorCode.INVALID_PRODUCER_EPOCH, message=str(e))
        except LogError as e:
            # KafkaStorageError above all: the log dir is offline now
            return AppendResult(ErrorCode(e.error_code), message=str(e))
        if not info.duplicate:
            self._wake()
        return AppendResult(ErrorCode.NONE, info.first_offset, info.log_append_time, info.log_start_offset)

    def append_internal(self, batch: bytearray) -> int:
        """Append a batch the broker built itself (coordinator records); returns its base offset.

        It skips Produce's client-facing checks, and wakes long-polling
        fetches like any other append.  Raises the log's errors
        (KafkaStorageError on an I/O failure).
        """
        info = self.log.append(batch, assign_offsets=True, leader_epoch=self.leader_epoch)
        self._wake()
        return info.first_offset

    # -- timestamps ------------------------------------------------------------------
    async def offset_for_timestamp(self, timestamp: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record at or after ``timestamp`` (ListOffsets).

        Answered from batch headers when they suffice; a batch that must be
        decoded is decoded in a worker thread when large.  The log may
        change while that runs, so the search resumes by offset, not by
        file position.  Raises the log's errors (KafkaStorageError).
        """
        step = self.log.timestamp_lookup(timestamp)
        while isinstance(step, TimestampDecode):
            compressed = bool(step.data[22] & 0x07)  # low byte of the attributes: the codec
            found = await _run_bounded(step.run, step.records_count, compressed)
            if found is not None:
                return found
            step = self.log.timestamp_lookup(timestamp, step.resume_offset)
        return step

    async def latest_timestamp(self) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record with the largest timestamp."""
        best = self.log.max_timestamp_target()
        if best < 0:
            return None
        return await self.offset_for_timestamp(best)
