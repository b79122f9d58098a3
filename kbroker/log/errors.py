"""Exceptions raised by :mod:`kbroker.log`.

Each carries the Kafka error code the broker should answer with
(``exc.error_code``), so request handlers need one ``except LogError``.
"""

from __future__ import annotations


class LogError(Exception):
    """Base class; ``error_code`` is the Kafka protocol error code."""

    error_code: int = -1  # UNKNOWN_SERVER_ERROR


class OffsetOutOfRange(LogError):
    """Fetch/read offset below log start or above log end (OFFSET_OUT_OF_RANGE)."""

    error_code = 1

    def __init__(self, offset: int, log_start_offset: int, log_end_offset: int) -> None:
        super().__init__(
            f"offset {offset} is out of range [{log_start_offset}, {log_end_offset}]"
        )
        self.offset = offset
        self.log_start_offset = log_start_offset
        self.log_end_offset = log_end_offset


class CorruptRecord(LogError):
    """Bytes handed to the log are not well-formed record batches (CORRUPT_MESSAGE)."""

    error_code = 2


class OutOfOrderSequence(LogError):
    """Idempotent producer sent a sequence number gap (OUT_OF_ORDER_SEQUENCE_NUMBER)."""

    error_code = 45


class InvalidProducerEpoch(LogError):
    """Producer epoch older than the one the partition knows (INVALID_PRODUCER_EPOCH)."""

    error_code = 47


class InvalidOffset(LogError):
    """Follower append with offsets that do not continue the log (UNKNOWN_SERVER_ERROR in Kafka)."""

    error_code = -1


class KafkaStorageError(LogError):
    """An I/O error on the log directory (KAFKA_STORAGE_ERROR)."""

    error_code = 56


class LogClosed(LogError):
    """The log was closed or deleted (its partition is no longer hosted here): NOT_LEADER_OR_FOLLOWER.

    Not a storage failure: a request that awaited something while its
    topic was deleted must not take the log dir offline.
    """

    error_code = 6


class PolicyViolation(LogError):
    """Operation not allowed by the log's configuration (POLICY_VIOLATION)."""

    error_code = 44
