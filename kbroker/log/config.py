"""Topic-level log configuration (Kafka's ``LogConfig``).

Three things live here:

* :data:`TOPIC_CONFIGS` -- a plain data table of every topic-level config name
  this broker knows: its Kafka type, its default, the broker-level synonyms (in
  the order DescribeConfigs reports them, most specific first) and the field of
  :class:`LogConfig` that holds it.  The table is what DescribeConfigs and
  CreateTopics/AlterConfigs validation are built on.
* :func:`validate_topic_config` -- parse and check one ``name=value`` pair,
  raising :class:`ValueError` with a readable message (the broker maps it to
  INVALID_CONFIG).
* :class:`LogConfig` -- the parsed values used by :mod:`kbroker.log`.

Defaults are the Kafka 4.x ones.  Note ``message.timestamp.after.max.ms``
defaults to one hour since Kafka 4.0 (it was unlimited before) and
``segment.bytes`` must be at least 1 MiB since 4.0; :class:`LogConfig` itself
does not enforce minimums so tests can build tiny segments directly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Mapping, NamedTuple

LONG_MAX = (1 << 63) - 1
LONG_MIN = -(1 << 63)
INT_MAX = (1 << 31) - 1
INT_MIN = -(1 << 31)

# DescribeConfigs (v3+) config_type codes.
CONFIG_TYPE_CODES = {
    "UNKNOWN": 0,
    "BOOLEAN": 1,
    "STRING": 2,
    "INT": 3,
    "SHORT": 4,
    "LONG": 5,
    "DOUBLE": 6,
    "LIST": 7,
    "CLASS": 8,
    "PASSWORD": 9,
}

COMPRESSION_TYPES = ("uncompressed", "zstd", "lz4", "snappy", "gzip", "producer")
TIMESTAMP_TYPES = ("CreateTime", "LogAppendTime")
CLEANUP_POLICIES = ("compact", "delete")


class Synonym(NamedTuple):
    """A broker-level config that supplies the default of a topic config.

    ``scale`` converts the broker value to the topic unit (e.g.
    ``log.retention.hours`` has scale 3600000: hours -> ms).
    """

    name: str
    scale: int = 1


class TopicConfigDef(NamedTuple):
    name: str
    type: str  # one of CONFIG_TYPE_CODES
    default: Any  # parsed default (int / float / bool / str / tuple[str, ...])
    synonyms: tuple[Synonym, ...]  # most specific first
    field: str | None  # LogConfig attribute; None = accepted, stored, unused
    validator: Callable[[Any], str | None] | None = None  # returns error text
    doc: str = ""


# ---------------------------------------------------------------- validators


def _at_least(lo: int | float) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        return None if v >= lo else f"must be at least {lo}"

    return check


def _between(lo: int | float, hi: int | float) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        return None if lo <= v <= hi else f"must be between {lo} and {hi}"

    return check


def _one_of(options: tuple[str, ...]) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        return None if v in options else f"must be one of {', '.join(options)}"

    return check


def _list_of(options: tuple[str, ...]) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        bad = [x for x in v if x not in options]
        if bad:
            return f"contains invalid value(s) {', '.join(bad)}; allowed: {', '.join(options)}"
        return None

    return check


def _gzip_level(v: int) -> str | None:
    return None if v == -1 or 1 <= v <= 9 else "must be -1 or between 1 and 9"


# ---------------------------------------------------------------- the table

_H = 3600 * 1000
_M = 60 * 1000

TOPIC_CONFIGS: tuple[TopicConfigDef, ...] = (
    TopicConfigDef("cleanup.policy", "LIST", ("delete",), (Synonym("log.cleanup.policy"),),
                   "cleanup_policy", _list_of(CLEANUP_POLICIES),
                   "delete, compact or both (comma separated)"),
    TopicConfigDef("compression.type", "STRING", "producer", (Synonym("compression.type"),),
                   "compression_type", _one_of(COMPRESSION_TYPES)),
    TopicConfigDef("compression.gzip.level", "INT", -1, (Synonym("compression.gzip.level"),),
                   "compression_gzip_level", _gzip_level),
    TopicConfigDef("compression.lz4.level", "INT", 9, (Synonym("compression.lz4.level"),),
                   "compression_lz4_level", _between(1, 17)),
    TopicConfigDef("compression.zstd.level", "INT", 3, (Synonym("compression.zstd.level"),),
                   "compression_zstd_level", _between(-131072, 22)),
    TopicConfigDef("delete.retention.ms", "LONG", 86400000,
                   (Synonym("log.cleaner.delete.retention.ms"),),
                   "delete_retention_ms", _at_least(0)),
    TopicConfigDef("file.delete.delay.ms", "LONG", 60000, (Synonym("log.segment.delete.delay.ms"),),
                   "file_delete_delay_ms", _at_least(0)),
    TopicConfigDef("flush.messages", "LONG", LONG_MAX, (Synonym("log.flush.interval.messages"),),
                   "flush_messages", _at_least(1)),
    TopicConfigDef("flush.ms", "LONG", LONG_MAX, (Synonym("log.flush.interval.ms"),),
                   "flush_ms", _at_least(0)),
    TopicConfigDef("index.interval.bytes", "INT", 4096, (Synonym("log.index.interval.bytes"),),
                   "index_interval_bytes", _at_least(0)),
    TopicConfigDef("max.compaction.lag.ms", "LONG", LONG_MAX,
                   (Synonym("log.cleaner.max.compaction.lag.ms"),),
                   "max_compaction_lag_ms", _at_least(1)),
    TopicConfigDef("max.message.bytes", "INT", 1048588, (Synonym("message.max.bytes"),),
                   "max_message_bytes", _at_least(0)),
    TopicConfigDef("message.timestamp.after.max.ms", "LONG", 3600000,
                   (Synonym("log.message.timestamp.after.max.ms"),),
                   "message_timestamp_after_max_ms", _at_least(0)),
    TopicConfigDef("message.timestamp.before.max.ms", "LONG", LONG_MAX,
                   (Synonym("log.message.timestamp.before.max.ms"),),
                   "message_timestamp_before_max_ms", _at_least(0)),
    TopicConfigDef("message.timestamp.type", "STRING", "CreateTime",
                   (Synonym("log.message.timestamp.type"),),
                   "message_timestamp_type", _one_of(TIMESTAMP_TYPES)),
    TopicConfigDef("min.cleanable.dirty.ratio", "DOUBLE", 0.5,
                   (Synonym("log.cleaner.min.cleanable.ratio"),),
                   "min_cleanable_dirty_ratio", _between(0.0, 1.0)),
    TopicConfigDef("min.compaction.lag.ms", "LONG", 0, (Synonym("log.cleaner.min.compaction.lag.ms"),),
                   "min_compaction_lag_ms", _at_least(0)),
    TopicConfigDef("min.insync.replicas", "INT", 1, (Synonym("min.insync.replicas"),),
                   "min_insync_replicas", _at_least(1)),
    TopicConfigDef("preallocate", "BOOLEAN", False, (Synonym("log.preallocate"),), "preallocate"),
    TopicConfigDef("retention.bytes", "LONG", -1, (Synonym("log.retention.bytes"),),
                   "retention_bytes"),
    TopicConfigDef("retention.ms", "LONG", 604800000,
                   (Synonym("log.retention.ms"), Synonym("log.retention.minutes", _M),
                    Synonym("log.retention.hours", _H)),
                   "retention_ms", _at_least(-1), "-1 means unlimited"),
    TopicConfigDef("segment.bytes", "INT", 1073741824, (Synonym("log.segment.bytes"),),
                   "segment_bytes", _at_least(1024 * 1024)),
    TopicConfigDef("segment.index.bytes", "INT", 10485760, (Synonym("log.index.size.max.bytes"),),
                   "segment_index_bytes", _at_least(4)),
    TopicConfigDef("segment.jitter.ms", "LONG", 0,
                   (Synonym("log.roll.jitter.ms"), Synonym("log.roll.jitter.hours", _H)),
                   "segment_jitter_ms", _at_least(0)),
    TopicConfigDef("segment.ms", "LONG", 604800000,
                   (Synonym("log.roll.ms"), Synonym("log.roll.hours", _H)),
                   "segment_ms", _at_least(1)),
    TopicConfigDef("unclean.leader.election.enable", "BOOLEAN", False,
                   (Synonym("unclean.leader.election.enable"),), "unclean_leader_election_enable"),
    # Replication throttles: accepted and reported; no throttling is done yet.
    TopicConfigDef("follower.replication.throttled.replicas", "LIST", (), (), None),
    TopicConfigDef("leader.replication.throttled.replicas", "LIST", (), (), None),
    # Tiered storage: accepted and reported, not implemented.
    TopicConfigDef("remote.storage.enable", "BOOLEAN", False, (), None),
    TopicConfigDef("local.retention.ms", "LONG", -2, (Synonym("log.local.retention.ms"),), None,
                   _at_least(-2)),
    TopicConfigDef("local.retention.bytes", "LONG", -2, (Synonym("log.local.retention.bytes"),), None,
                   _at_least(-2)),
)

TOPIC_CONFIGS_BY_NAME: dict[str, TopicConfigDef] = {d.name: d for d in TOPIC_CONFIGS}

# broker-level name -> (topic-level name, scale)
BROKER_SYNONYMS: dict[str, tuple[str, int]] = {
    s.name: (d.name, s.scale) for d in TOPIC_CONFIGS for s in d.synonyms
}


# ---------------------------------------------------------------- parsing


def _parse(defn: TopicConfigDef, raw: str) -> Any:
    t = defn.type
    text = raw.strip() if isinstance(raw, str) else raw
    if t == "BOOLEAN":
        if isinstance(text, bool):
            return text
        low = str(text).lower()
        if low == "true":
            return True
        if low == "false":
            return False
        raise ValueError(f"Invalid value {raw!r} for configuration {defn.name}: expected true or false")
    if t in ("INT", "LONG", "SHORT"):
        try:
            v = int(text)
        except (TypeError, ValueError):
            raise ValueError(
                f"Invalid value {raw!r} for configuration {defn.name}: not a number of type {t}"
            ) from None
        lo, hi = (INT_MIN, INT_MAX) if t == "INT" else (LONG_MIN, LONG_MAX)
        if t == "SHORT":
            lo, hi = -(1 << 15), (1 << 15) - 1
        if not lo <= v <= hi:
            raise ValueError(f"Invalid value {raw!r} for configuration {defn.name}: out of range for {t}")
        return v
    if t == "DOUBLE":
        try:
            v = float(text)
        except (TypeError, ValueError):
            raise ValueError(f"Invalid value {raw!r} for configuration {defn.name}: not a number") from None
        if v != v:
            raise ValueError(f"Invalid value {raw!r} for configuration {defn.name}: not a number")
        return v
    if t == "LIST":
        if isinstance(text, (list, tuple)):
            return tuple(str(x).strip() for x in text)
        return tuple(x.strip() for x in str(text).split(",") if x.strip())
    return str(text)


def validate_topic_config(name: str, value: str | None) -> Any:
    """Parse and validate one topic config; return the parsed value.

    Raises :class:`ValueError` (message suitable for an INVALID_CONFIG error
    response) for unknown names, a ``None`` value, unparsable or out-of-range
    values.
    """
    defn = TOPIC_CONFIGS_BY_NAME.get(name)
    if defn is None:
        raise ValueError(f"Unknown topic config name: {name}")
    if value is None:
        raise ValueError(f"Null value not supported for topic config {name}")
    parsed = _parse(defn, value)
    if defn.validator is not None:
        problem = defn.validator(parsed)
        if problem:
            raise ValueError(f"Invalid value {value} for configuration {name}: {problem}")
    return parsed


def format_config_value(name: str, value: Any) -> str:
    """Render a parsed value the way Kafka shows it in DescribeConfigs."""
    defn = TOPIC_CONFIGS_BY_NAME[name]
    if defn.type == "BOOLEAN":
        return "true" if value else "false"
    if defn.type == "LIST":
        return ",".join(value)
    if defn.type == "DOUBLE":
        return repr(float(value))
    return str(value)


# ---------------------------------------------------------------- LogConfig


@dataclass(frozen=True)
class LogConfig:
    """Parsed topic-level log settings (Kafka names in the field comments)."""

    segment_bytes: int = 1073741824  # segment.bytes
    segment_ms: int = 604800000  # segment.ms
    segment_jitter_ms: int = 0  # segment.jitter.ms
    segment_index_bytes: int = 10485760  # segment.index.bytes
    retention_ms: int = 604800000  # retention.ms (-1 = unlimited)
    retention_bytes: int = -1  # retention.bytes (-1 = unlimited)
    cleanup_policy: tuple[str, ...] = ("delete",)  # cleanup.policy
    delete_retention_ms: int = 86400000  # delete.retention.ms
    min_compaction_lag_ms: int = 0  # min.compaction.lag.ms
    max_compaction_lag_ms: int = LONG_MAX  # max.compaction.lag.ms
    min_cleanable_dirty_ratio: float = 0.5  # min.cleanable.dirty.ratio
    max_message_bytes: int = 1048588  # max.message.bytes
    message_timestamp_type: str = "CreateTime"  # message.timestamp.type
    message_timestamp_before_max_ms: int = LONG_MAX  # message.timestamp.before.max.ms
    message_timestamp_after_max_ms: int = 3600000  # message.timestamp.after.max.ms
    index_interval_bytes: int = 4096  # index.interval.bytes
    flush_messages: int = LONG_MAX  # flush.messages
    flush_ms: int = LONG_MAX  # flush.ms
    file_delete_delay_ms: int = 60000  # file.delete.delay.ms
    min_insync_replicas: int = 1  # min.insync.replicas
    unclean_leader_election_enable: bool = False  # unclean.leader.election.enable
    compression_type: str = "producer"  # compression.type
    compression_gzip_level: int = -1  # compression.gzip.level
    compression_lz4_level: int = 9  # compression.lz4.level
    compression_zstd_level: int = 3  # compression.zstd.level
    preallocate: bool = False  # preallocate
    # Topic-level overrides as given (name -> string), for DescribeConfigs.
    overrides: Mapping[str, str] = dataclasses.field(default_factory=dict, compare=False)

    # -- convenience -------------------------------------------------------
    @property
    def compact(self) -> bool:
        return "compact" in self.cleanup_policy

    @property
    def delete(self) -> bool:
        return "delete" in self.cleanup_policy

    @property
    def log_append_time(self) -> bool:
        return self.message_timestamp_type == "LogAppendTime"

    def replace(self, **changes: Any) -> "LogConfig":
        return dataclasses.replace(self, **changes)

    def value_of(self, name: str) -> Any:
        """Parsed value for a topic config name (table default if unused)."""
        defn = TOPIC_CONFIGS_BY_NAME[name]
        if defn.field is None:
            raw = self.overrides.get(name)
            return defn.default if raw is None else _parse(defn, raw)
        return getattr(self, defn.field)

    def to_topic_configs(self) -> dict[str, str]:
        """All topic config names -> Kafka-formatted string values."""
        return {d.name: format_config_value(d.name, self.value_of(d.name)) for d in TOPIC_CONFIGS}

    @classmethod
    def from_topic_configs(
        cls, configs: Mapping[str, str | None], defaults: "LogConfig | None" = None
    ) -> "LogConfig":
        """Apply topic-level overrides on top of ``defaults``.

        Every entry is validated; the first problem raises ValueError.
        """
        base = defaults if defaults is not None else cls()
        changes: dict[str, Any] = {}
        overrides = dict(base.overrides)
        for name, raw in configs.items():
            parsed = validate_topic_config(name, raw)
            defn = TOPIC_CONFIGS_BY_NAME[name]
            if defn.field is not None:
                changes[defn.field] = parsed
            overrides[name] = raw  # type: ignore[assignment]
        return dataclasses.replace(base, overrides=overrides, **changes)

    @classmethod
    def from_broker_properties(cls, props: Mapping[str, str]) -> "LogConfig":
        """Build the broker-wide default LogConfig from server.properties keys.

        Where several synonyms are set (``log.retention.ms`` / ``.minutes`` /
        ``.hours``) the most specific wins, as in Kafka.  Non-log keys are
        ignored.
        """
        changes: dict[str, Any] = {}
        for defn in TOPIC_CONFIGS:
            for syn in defn.synonyms:  # most specific first
                raw = props.get(syn.name)
                if raw is None:
                    continue
                try:
                    parsed = _parse(defn, raw)
                except ValueError as e:
                    raise ValueError(f"Invalid value {raw!r} for broker configuration {syn.name}") from e
                if syn.scale != 1:
                    parsed = parsed * syn.scale if parsed >= 0 else parsed
                if defn.validator is not None:
                    problem = defn.validator(parsed)
                    # segment.bytes minimum applies to topics; brokers in tests may go lower
                    if problem and defn.name != "segment.bytes":
                        raise ValueError(f"Invalid value {raw} for configuration {syn.name}: {problem}")
                if defn.field is not None:
                    changes[defn.field] = parsed
                break
        return cls(**changes)


def broker_synonym_values(props: Mapping[str, str], name: str) -> list[tuple[str, str]]:
    """The broker-level synonyms of topic config ``name`` set in ``props``.

    Returned as ``[(broker_name, raw_value), ...]`` in DescribeConfigs synonym
    order (most specific first); an empty list when none is set.
    """
    defn = TOPIC_CONFIGS_BY_NAME[name]
    return [(s.name, props[s.name]) for s in defn.synonyms if s.name in props]
