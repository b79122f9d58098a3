"""A partition this broker hosts: its log, its leadership state, and who waits on it.

The log stores bytes; this adds what the broker needs around it: the leader
epoch stamped on appended batches, the high watermark (with one replica it is
the log end offset; replication will move it by the ISR's progress), the
idempotent-producer checks, and the wake-up of long-polling fetches when data
arrives (an event per waiting fetch, never a sleep loop).
"""

from __future__ import annotations

from typing import NamedTuple

import trio

from protocol import ErrorCode, ProtocolError
from protocol.records import decode_batch, iter_batches

from .log.config import LogConfig

from .log.errors import InvalidProducerEpoch, OutOfOrderSequence


class AppendResult(NamedTuple):
    error: ErrorCode
    base_offset: int = -1
    log_append_time: int = -1
    log_start_offset: int = -1
    message: str | None = None


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
    def append_records(self, records, config: LogConfig, now_ms: int) -> AppendResult:
        """Validate and append a Produce request's record batches (one partition).

        ``records`` is a writable view into the request frame; base offsets
        and leader epochs are patched in it before it is written as-is.
        Everything is judged from batch headers, except on compacted topics,
        where every record must have a key and so the records are read.
        """
        if records is None or len(records) == 0:
            return AppendResult(ErrorCode.INVALID_RECORD, message="empty record set")
        try:
            batches = list(iter_batches(records))
        except ProtocolError as e:
            return AppendResult(ErrorCode.CORRUPT_MESSAGE, message=str(e))
        create_time = not config.log_append_time
        for pos, h in batches:
            if h.total_size > config.max_message_bytes:
                return AppendResult(
                    ErrorCode.MESSAGE_TOO_LARGE,
                    message=f"The record batch size {h.total_size} exceeds max.message.bytes {config.max_message_bytes}",
                )
            if h.is_control:
                return AppendResult(ErrorCode.INVALID_RECORD, message="clients may not produce control batches")
            if h.is_transactional:
                return AppendResult(
                    ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
                    message="transactions are not supported yet",
                )
            if create_time and (
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
            if config.compact:
                try:
                    _h, recs = decode_batch(records, pos)
                except ProtocolError as e:
                    return AppendResult(ErrorCode.CORRUPT_MESSAGE, message=str(e))
                if any(r.key is None for r in recs):
                    return AppendResult(
                        ErrorCode.INVALID_RECORD, message="Compacted topic cannot accept message without key."
                    )
        log_append_time_ms = now_ms if config.log_append_time else None
        try:
            info = self.log.append(
                records, assign_offsets=True, log_append_time_ms=log_append_time_ms, leader_epoch=self.leader_epoch
            )
        except OutOfOrderSequence as e:
            return AppendResult(ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER, message=str(e))
        except InvalidProducerEpoch as e:
            return AppendResult(ErrorCode.INVALID_PRODUCER_EPOCH, message=str(e))
        if not info.duplicate:
            self._wake()
        return AppendResult(ErrorCode.NONE, info.first_offset, info.log_append_time, info.log_start_offset)

    def append_internal(self, batch: bytearray) -> int:
        """Append a batch the broker built itself (coordinator records); returns its base offset.

        It skips Produce's client-facing checks, and wakes long-polling
        fetches like any other append.
        """
        info = self.log.append(batch, assign_offsets=True, leader_epoch=self.leader_epoch)
        self._wake()
        return info.first_offset
