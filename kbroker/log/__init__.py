"""The broker's on-disk partition logs (Kafka's log layer).

Modules: :mod:`.config` (topic-level LogConfig and its config table),
:mod:`.segment`, :mod:`.partition_log`, :mod:`.cleaner` (compaction),
:mod:`.producer_state` (idempotent producers), :mod:`.manager` (all logs of a
broker plus the retention / cleaner / flush background tasks).
"""

from .config import TOPIC_CONFIGS, LogConfig, validate_topic_config
from .errors import (
    CorruptRecord,
    InvalidOffset,
    InvalidProducerEpoch,
    KafkaStorageError,
    LogError,
    OffsetOutOfRange,
    OutOfOrderSequence,
)
from .partition_log import AppendInfo, CompactionStats, PartitionLog, ReadResult, parse_log_dir_name

__all__ = [
    "TOPIC_CONFIGS",
    "LogConfig",
    "validate_topic_config",
    "LogError",
    "OffsetOutOfRange",
    "CorruptRecord",
    "OutOfOrderSequence",
    "InvalidProducerEpoch",
    "InvalidOffset",
    "KafkaStorageError",
    "PartitionLog",
    "AppendInfo",
    "ReadResult",
    "CompactionStats",
    "parse_log_dir_name",
]
