"""Broker configuration: one table of Kafka config names, and the loaded values.

Theory of operation
-------------------
:data:`BROKER_CONFIGS` maps every broker setting kbroker knows to a
:class:`ConfigDef`: its Kafka type, its default, a validator, and how Kafka
lets it change at run time (``read-only``, ``per-broker``, ``cluster-wide``).
Names, types, defaults and meanings are Kafka's (4.2); where kbroker picks a
different default because it is an embedded single node, the entry carries
``kafka_default`` (what Kafka would use) next to ``default`` (what we use).

:meth:`Config.load` reads a Java ``.properties`` file and ``key=value``
overrides, rejects unknown keys and invalid values with :class:`ConfigError`,
and returns an immutable :class:`Config`.  Values are kept in layers, highest
precedence first::

    DYNAMIC_BROKER_CONFIG           AlterConfigs for this node      (updated())
    DYNAMIC_DEFAULT_BROKER_CONFIG   AlterConfigs, cluster default   (updated())
    STATIC_BROKER_CONFIG            properties file and --override  (load())
    DEFAULT_CONFIG                  the table

Some settings are spelled several ways (``log.retention.ms`` /
``log.retention.minutes`` / ``log.retention.hours``; ``node.id`` /
``broker.id``; ``log.dirs`` / ``log.dir``).  ``config[name]`` resolves them
the way Kafka does, so ``config["log.retention.ms"]`` is always the effective
retention in milliseconds.

Node shapes follow KRaft: ``process.roles`` (broker, controller or both),
the quorum named by ``controller.quorum.voters`` or (KIP-853)
``controller.quorum.bootstrap.servers``, and Kafka's per-role cross-checks
(:meth:`Config._check_roles`).  kbroker's zero-setup default, a combined
node that names no quorum, is the one shape exempt from them: its controller
is an in-process quorum of one (:attr:`Config.embedded_quorum`).  Whether
the server can *run* a valid shape is a separate question,
:meth:`Config.unsupported_cluster`, so that ``kbroker format`` and
``--print-config`` work for every node of a cluster.

Topic-level settings (``retention.ms``, ``segment.bytes``...) have their own
table, beside the log that obeys them: :mod:`kbroker.log.config`.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import logging
import re
import socket
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, NamedTuple, Optional

from .log.config import TOPIC_CONFIGS_BY_NAME

__all__ = [
    "BROKER_CONFIGS",
    "Config",
    "ConfigDef",
    "ConfigError",
    "Listener",
    "Synonym",
    "parse_listeners",
    "parse_properties",
]

log = logging.getLogger("kbroker.config")

INT_MAX = 2**31 - 1
INT_MIN = -(2**31)
LONG_MAX = 2**63 - 1
LONG_MIN = -(2**63)
SHORT_MAX = 2**15 - 1
SHORT_MIN = -(2**15)

# Sources, spelled as DescribeConfigs reports them.
DEFAULT_CONFIG = "DEFAULT_CONFIG"
STATIC_BROKER_CONFIG = "STATIC_BROKER_CONFIG"
DYNAMIC_DEFAULT_BROKER_CONFIG = "DYNAMIC_DEFAULT_BROKER_CONFIG"
DYNAMIC_BROKER_CONFIG = "DYNAMIC_BROKER_CONFIG"
DYNAMIC_TOPIC_CONFIG = "DYNAMIC_TOPIC_CONFIG"

# Update modes, spelled as Kafka's documentation spells them.
READ_ONLY = "read-only"
PER_BROKER = "per-broker"
CLUSTER_WIDE = "cluster-wide"

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SUPPORTED_SECURITY_PROTOCOLS = ("PLAINTEXT",)


class ConfigError(Exception):
    """A setting that is unknown or whose value is not acceptable.

    The message always names the key and says what is wrong with it.
    """


# ---------------------------------------------------------------------------
# Types: parse a string (or an already-typed value) into the Python value.
# ---------------------------------------------------------------------------

_INT_RE = re.compile(r"[+-]?[0-9]+\Z")
_DOUBLE_RE = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\Z")


def _parse_integer(name: str, raw: Any, lo: int, hi: int, kind: str) -> int:
    if isinstance(raw, bool):
        raise ConfigError(f"{name}: expected {kind}, got boolean {raw!r}")
    if isinstance(raw, int):
        value = raw
    else:
        text = str(raw).strip()
        if not _INT_RE.match(text):
            raise ConfigError(f"{name}: expected {kind}, got {str(raw)!r}")
        value = int(text)
    if not lo <= value <= hi:
        raise ConfigError(f"{name}: {value} does not fit in a {kind} ({lo}..{hi})")
    return value


def _parse_bool(name: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text == "true":
        return True
    if text == "false":
        return False
    raise ConfigError(f"{name}: expected true or false, got {str(raw)!r}")


def _parse_double(name: str, raw: Any) -> float:
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        return float(raw)
    text = str(raw).strip()
    if not _DOUBLE_RE.match(text):
        raise ConfigError(f"{name}: expected a number, got {str(raw)!r}")
    return float(text)


def _parse_list(name: str, raw: Any) -> list[str]:
    if isinstance(raw, (list, tuple)):
        items = [str(x).strip() for x in raw]
    else:
        text = str(raw).strip()
        if not text:
            return []
        items = [x.strip() for x in text.split(",")]
    if any(not x for x in items):
        raise ConfigError(f"{name}: empty element in list {str(raw)!r}")
    return items


def parse_typed(name: str, type_: str, raw: Any) -> Any:
    """Turn ``raw`` (normally a string from a file) into a value of ``type_``.

    ``None`` stays ``None`` (a setting with no value).
    """
    if raw is None:
        return None
    if type_ == "int":
        return _parse_integer(name, raw, INT_MIN, INT_MAX, "int")
    if type_ == "long":
        return _parse_integer(name, raw, LONG_MIN, LONG_MAX, "long")
    if type_ == "short":
        return _parse_integer(name, raw, SHORT_MIN, SHORT_MAX, "short")
    if type_ == "bool":
        return _parse_bool(name, raw)
    if type_ == "double":
        return _parse_double(name, raw)
    if type_ == "list":
        return _parse_list(name, raw)
    if type_ in ("string", "password", "class"):
        return str(raw).strip()
    raise AssertionError(f"unknown config type {type_!r}")


def format_value(type_: str, value: Any) -> Optional[str]:
    """The string form a Kafka broker would report for ``value``."""
    if value is None:
        return None
    if type_ == "bool":
        return "true" if value else "false"
    if type_ == "list":
        return ",".join(value)
    if type_ == "double":
        return repr(float(value))
    return str(value)


# ---------------------------------------------------------------------------
# Validators: callables (name, typed value) -> None, raising ConfigError.
# ``None`` values are checked by ConfigDef itself (nullable or not).
# ---------------------------------------------------------------------------

Validator = Callable[[str, Any], None]


def at_least(lo: float) -> Validator:
    def check(name: str, value: Any) -> None:
        if value < lo:
            raise ConfigError(f"{name}: must be at least {lo}, got {value}")

    return check


def between(lo: float, hi: float) -> Validator:
    def check(name: str, value: Any) -> None:
        if not lo <= value <= hi:
            raise ConfigError(f"{name}: must be between {lo} and {hi}, got {value}")

    return check


def one_of(*choices: str, case_insensitive: bool = False) -> Validator:
    def check(name: str, value: Any) -> None:
        ok = (value.lower() in [c.lower() for c in choices]) if case_insensitive else value in choices
        if not ok:
            raise ConfigError(f"{name}: must be one of {', '.join(choices)}; got {value!r}")

    return check


def each_of(*choices: str, allow_empty: bool = True) -> Validator:
    def check(name: str, value: list[str]) -> None:
        if not value and not allow_empty:
            raise ConfigError(f"{name}: must not be empty")
        for item in value:
            if item not in choices:
                raise ConfigError(f"{name}: {item!r} is not one of {', '.join(choices)}")
        if len(set(value)) != len(value):
            raise ConfigError(f"{name}: duplicate entries in {','.join(value)}")

    return check


def _no_java_classes(name: str, value: Any) -> None:
    if value:
        raise ConfigError(f"{name}: kbroker cannot load Java classes; leave it unset (got {value!r})")


def _process_roles(name: str, value: list[str]) -> None:
    # Kafka 4 accepts "broker", "controller" or both, each at most once.  That
    # kbroker can only *run* the combined single node is a start-up decision
    # (Config.unsupported_cluster), not a config error: `kbroker format` and
    # --print-config must accept every valid Kafka node description.
    each_of("broker", "controller", allow_empty=False)(name, value)


_HOST = r"(\[[0-9a-fA-F:.%]+\]|[^:@\s\[\]]+)"
_VOTER_RE = re.compile(r"([^@]*)@" + _HOST + r":([0-9]+)\Z")
_HOSTPORT_RE = re.compile(_HOST + r":([0-9]+)\Z")


def parse_voters(name: str, value: list[str]) -> dict[int, tuple[str, int]]:
    """``id@host:port`` entries -> {id: (host, port)}; brackets kept off IPv6 hosts."""
    voters: dict[int, tuple[str, int]] = {}
    for voter in value:
        m = _VOTER_RE.match(voter)
        if not m:
            raise ConfigError(f"{name}: expected id@host:port entries, got {voter!r}")
        if not _INT_RE.match(m.group(1).strip()):
            raise ConfigError(f"{name}: voter id {m.group(1)!r} in {voter!r} is not an integer")
        vid, host, port = int(m.group(1)), m.group(2).strip("[]"), int(m.group(3))
        if not 0 <= vid <= INT_MAX:
            raise ConfigError(f"{name}: voter id {vid} in {voter!r} is not a valid node id")
        if port > 65535:
            raise ConfigError(f"{name}: port {port} out of range in {voter!r}")
        # Kafka keeps the last of two entries with one id; a typo that silently
        # drops a voter changes the majority, so it is refused here.
        if vid in voters:
            raise ConfigError(f"{name}: voter id {vid} appears more than once")
        voters[vid] = (host, port)
    return voters


def _quorum_voters(name: str, value: list[str]) -> None:
    parse_voters(name, value)


def parse_host_ports(name: str, value: list[str]) -> list[tuple[str, int]]:
    result = []
    for entry in value:
        m = _HOSTPORT_RE.match(entry)
        if not m or int(m.group(2)) > 65535:
            raise ConfigError(f"{name}: expected host:port entries, got {entry!r}")
        result.append((m.group(1).strip("[]"), int(m.group(2))))
    return result


def _host_ports(name: str, value: list[str]) -> None:
    parse_host_ports(name, value)


def is_kafka_uuid(text: str) -> bool:
    """Kafka's Uuid string form: url-safe base64 of 16 bytes, no padding (22 chars)."""
    if len(text) != 22 or not re.fullmatch(r"[A-Za-z0-9_-]+", text):
        return False
    try:
        return len(base64.urlsafe_b64decode(text + "==")) == 16
    except (ValueError, binascii.Error):
        return False


def _cluster_id(name: str, value: str) -> None:
    # A KRaft cluster id is a Kafka Uuid (what `kbroker random-uuid` and
    # `kafka-storage.sh random-uuid` print); checking it here means a typo is
    # caught at start, not when meta.properties disagrees with it.
    if not is_kafka_uuid(value):
        raise ConfigError(f"{name}: {value!r} is not a Kafka cluster id (22 characters of url-safe base64, "
                          f"as printed by `kbroker random-uuid`)")


def _protocol_map(name: str, value: str) -> None:
    _parse_protocol_map(name, value)


def _rebalance_protocols(name: str, value: list[str]) -> None:
    each_of("classic", "consumer", "share", "streams", allow_empty=False)(name, value)
    if "classic" not in value:
        raise ConfigError(f"{name}: must include 'classic'; got {','.join(value)!r}")


def _compression_level(lo: int, hi: int, extra: tuple[int, ...] = ()) -> Validator:
    def check(name: str, value: int) -> None:
        if value not in extra and not lo <= value <= hi:
            allowed = f"{lo}..{hi}" + "".join(f" or {e}" for e in extra)
            raise ConfigError(f"{name}: must be {allowed}, got {value}")

    return check


# ---------------------------------------------------------------------------
# The tables.
# ---------------------------------------------------------------------------

_UNSET = object()


@dataclass(frozen=True)
class ConfigDef:
    """One setting: Kafka's name, type and default, and how it is checked.

    ``update_mode`` is Kafka's: ``read-only`` (only at start-up),
    ``per-broker`` or ``cluster-wide`` (AlterConfigs may change it).
    ``effective`` is False for settings kbroker accepts for compatibility
    but does not act on; setting one logs a line at start-up.
    """

    name: str
    type: str
    default: Any = None
    validator: Optional[Validator] = None
    update_mode: str = READ_ONLY
    nullable: bool = False
    effective: bool = True
    kafka_default: Any = _UNSET
    note: str = ""

    @property
    def sensitive(self) -> bool:
        return self.type == "password"

    @property
    def read_only(self) -> bool:
        return self.update_mode == READ_ONLY

    def parse(self, raw: Any) -> Any:
        """Parse and validate one value given for this setting."""
        value = parse_typed(self.name, self.type, raw)
        if value is None:
            if not self.nullable:
                raise ConfigError(f"{self.name}: a value is required")
            return None
        if self.validator is not None:
            self.validator(self.name, value)
        return value


def _defs(*defs: ConfigDef) -> dict[str, ConfigDef]:
    table: dict[str, ConfigDef] = {}
    for d in defs:
        assert d.name not in table, d.name
        table[d.name] = d
    return table


def C(name: str, type_: str, default: Any = None, validator: Optional[Validator] = None,
      mode: str = READ_ONLY, **kw: Any) -> ConfigDef:
    """Shorthand for one table row; string defaults are parsed like file values."""
    nullable = kw.pop("nullable", default is None)
    if isinstance(default, str):
        default = parse_typed(name, type_, default)
    return ConfigDef(name, type_, default, validator, mode, nullable, **kw)


_ms = at_least(0)
_pos = at_least(1)

BROKER_CONFIGS: dict[str, ConfigDef] = _defs(
    # --- identity and roles (KRaft) ---
    C("node.id", "int", 1, at_least(0), kafka_default=-1,
      note="kbroker is a single embedded node, so it has an id out of the box"),
    C("broker.id", "int", None, at_least(0), nullable=True, kafka_default=-1,
      note="older spelling of node.id; both must agree if both are set"),
    C("process.roles", "list", "broker,controller", _process_roles, kafka_default="",
      note="every Kafka value is valid; kbroker runs broker,controller nodes (alone or as a cluster) so far"),
    C("cluster.id", "string", None, _cluster_id, nullable=True,
      note="not a Kafka setting; if given, must match meta.properties (kbroker generates one)"),
    C("broker.rack", "string", None, nullable=True,
      note="registered with the broker in a cluster; placement takes racks in turn"),
    C("initial.broker.registration.timeout.ms", "int", 60000, effective=False,
      note="a single node registers in-process"),
    C("broker.heartbeat.interval.ms", "int", 2000, _pos,
      note="cluster nodes only; a single node registers in-process"),
    C("broker.session.timeout.ms", "int", 9000, _pos,
      note="cluster nodes only; a single node registers in-process"),
    # --- listeners ---
    C("listeners", "string", "PLAINTEXT://localhost:9092", mode=PER_BROKER,
      kafka_default="PLAINTEXT://:9092"),
    C("advertised.listeners", "string", None, mode=PER_BROKER, nullable=True,
      note="defaults to the broker (non-controller) listeners"),
    C("listener.security.protocol.map", "string",
      "PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL",
      _protocol_map, mode=PER_BROKER),
    C("controller.listener.names", "list", "CONTROLLER", kafka_default=None,
      note="the in-process controller needs no socket; a listener with this name is optional "
           "unless a quorum is configured"),
    C("controller.quorum.voters", "list", "", _quorum_voters,
      note="static quorum: id@host:port,...; ids unique"),
    C("controller.quorum.bootstrap.servers", "list", "", _host_ports,
      note="KIP-853 dynamic quorum: host:port,..."),
    # The Raft timings (KIP-595): used by cluster nodes; a quorum of one has
    # no elections and no fetches.  Kafka 4.1 (KAFKA-18837) requires them to
    # be at least 0.
    C("controller.quorum.election.timeout.ms", "int", 1000, _ms),
    C("controller.quorum.fetch.timeout.ms", "int", 2000, _ms),
    C("controller.quorum.election.backoff.max.ms", "int", 1000, _ms),
    C("controller.quorum.request.timeout.ms", "int", 2000, _ms),
    C("controller.quorum.retry.backoff.ms", "int", 20, _ms),
    C("controller.quorum.append.linger.ms", "int", 25, _ms, effective=False),
    C("controller.quorum.auto.join.enable", "bool", False, effective=False),
    C("inter.broker.listener.name", "string", None, nullable=True),
    C("security.inter.broker.protocol", "string", "PLAINTEXT", one_of(*SECURITY_PROTOCOLS)),
    C("socket.request.max.bytes", "int", 104857600, _pos),
    C("socket.send.buffer.bytes", "int", 102400, effective=False),
    C("socket.receive.buffer.bytes", "int", 102400, effective=False),
    C("socket.listen.backlog.size", "int", 50, _pos),
    C("max.connections", "int", INT_MAX, at_least(0), CLUSTER_WIDE),
    C("max.connections.per.ip", "int", INT_MAX, at_least(0), CLUSTER_WIDE),
    C("max.connections.per.ip.overrides", "string", "", mode=CLUSTER_WIDE, note='"host:count,..."'),
    C("connections.max.idle.ms", "long", 600000),
    C("num.network.threads", "int", 3, _pos, CLUSTER_WIDE, effective=False,
      note="kbroker is one trio process"),
    C("num.io.threads", "int", 8, _pos, CLUSTER_WIDE, effective=False,
      note="kbroker is one trio process"),
    C("num.replica.fetchers", "int", 1, mode=CLUSTER_WIDE, effective=False),
    C("num.recovery.threads.per.data.dir", "int", 2, _pos, CLUSTER_WIDE, effective=False),
    C("background.threads", "int", 10, _pos, CLUSTER_WIDE, effective=False),
    C("queued.max.requests", "int", 500, _pos, effective=False),
    C("request.timeout.ms", "int", 30000, at_least(0), effective=False),
    # --- storage ---
    C("log.dir", "string", "./kbroker-data", kafka_default="/tmp/kafka-logs"),
    C("log.dirs", "list", None, nullable=True,
      note="takes precedence over log.dir; config['log.dirs'] always gives the effective list"),
    C("metadata.log.dir", "string", None, nullable=True,
      note="a cluster node keeps __cluster_metadata there; the single node keeps it in the first "
           "log.dirs entry"),
    # The metadata log and its snapshots (KRaftConfigs).  A cluster node
    # snapshots its image every ...between.snapshots bytes of records; the
    # single node's log is not trimmed or snapshotted.
    C("metadata.log.max.record.bytes.between.snapshots", "long", 20971520, _pos),
    C("metadata.log.max.snapshot.interval.ms", "long", 3600000, _ms, effective=False),
    C("metadata.max.retention.bytes", "long", 104857600, effective=False),
    C("metadata.max.retention.ms", "long", 604800000, effective=False),
    C("metadata.max.idle.interval.ms", "int", 500, _ms, effective=False),
    C("num.partitions", "int", 1, _pos),
    C("default.replication.factor", "int", 1, _pos),
    C("min.insync.replicas", "int", 1, _pos, CLUSTER_WIDE),
    C("auto.create.topics.enable", "bool", True),
    C("delete.topic.enable", "bool", True),
    C("unclean.leader.election.enable", "bool", False, mode=CLUSTER_WIDE),
    C("auto.leader.rebalance.enable", "bool", True, effective=False),
    C("log.retention.hours", "int", 168),
    C("log.retention.minutes", "int", None, nullable=True),
    C("log.retention.ms", "long", None, at_least(-1), CLUSTER_WIDE, nullable=True,
      note="-1: no time limit; precedence ms > minutes > hours"),
    C("log.retention.bytes", "long", -1, mode=CLUSTER_WIDE),
    C("log.retention.check.interval.ms", "long", 300000, _pos),
    C("log.segment.bytes", "int", 1073741824, at_least(1048576), CLUSTER_WIDE),
    C("log.segment.delete.delay.ms", "long", 60000, _ms, CLUSTER_WIDE),
    C("log.roll.hours", "int", 168, _pos),
    C("log.roll.ms", "long", None, _pos, CLUSTER_WIDE, nullable=True),
    C("log.roll.jitter.hours", "int", 0, _ms),
    C("log.roll.jitter.ms", "long", None, _ms, CLUSTER_WIDE, nullable=True),
    C("log.index.interval.bytes", "int", 4096, _ms, CLUSTER_WIDE),
    C("log.index.size.max.bytes", "int", 10485760, at_least(4), CLUSTER_WIDE),
    C("log.preallocate", "bool", False, mode=CLUSTER_WIDE),
    C("log.flush.interval.messages", "long", LONG_MAX, _pos, CLUSTER_WIDE),
    C("log.flush.interval.ms", "long", None, _ms, CLUSTER_WIDE, nullable=True),
    C("log.flush.scheduler.interval.ms", "long", LONG_MAX),
    C("log.cleanup.policy", "list", "delete", each_of("compact", "delete"), CLUSTER_WIDE),
    C("log.cleaner.enable", "bool", True),
    C("log.cleaner.threads", "int", 1, _ms, CLUSTER_WIDE),
    C("log.cleaner.backoff.ms", "long", 15000, _ms, CLUSTER_WIDE),
    C("log.cleaner.dedupe.buffer.size", "long", 134217728, mode=CLUSTER_WIDE),
    C("log.cleaner.delete.retention.ms", "long", 86400000, _ms, CLUSTER_WIDE),
    C("log.cleaner.min.compaction.lag.ms", "long", 0, _ms, CLUSTER_WIDE),
    C("log.cleaner.max.compaction.lag.ms", "long", LONG_MAX, _pos, CLUSTER_WIDE),
    C("log.cleaner.min.cleanable.ratio", "double", 0.5, between(0, 1), CLUSTER_WIDE),
    C("log.message.timestamp.type", "string", "CreateTime",
      one_of("CreateTime", "LogAppendTime"), CLUSTER_WIDE),
    C("log.message.timestamp.before.max.ms", "long", LONG_MAX, _ms, CLUSTER_WIDE),
    C("log.message.timestamp.after.max.ms", "long", 3600000, _ms, CLUSTER_WIDE),
    C("message.max.bytes", "int", 1048588, _ms, CLUSTER_WIDE),
    C("compression.type", "string", "producer",
      one_of("uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"), CLUSTER_WIDE),
    C("compression.gzip.level", "int", -1, _compression_level(1, 9, (-1,)), CLUSTER_WIDE),
    C("compression.lz4.level", "int", 9, _compression_level(1, 17), CLUSTER_WIDE),
    C("compression.zstd.level", "int", 3, _compression_level(-131072, 22), CLUSTER_WIDE),
    # --- replication / fetch (one node: accepted for compatibility) ---
    C("replica.fetch.max.bytes", "int", 1048576, _ms),
    C("replica.lag.time.max.ms", "long", 30000, effective=False),
    C("fetch.max.bytes", "int", 57671680, at_least(1024)),
    C("max.incremental.fetch.session.cache.slots", "int", 1000, _ms),
    # --- group coordinator ---
    C("offsets.topic.num.partitions", "int", 50, _pos),
    C("offsets.topic.replication.factor", "short", 1, _pos, kafka_default=3,
      note="one node cannot hold 3 replicas"),
    C("offsets.topic.segment.bytes", "int", 104857600, _pos),
    C("offsets.retention.minutes", "int", 10080, _pos),
    C("offsets.retention.check.interval.ms", "long", 600000, _pos),
    C("offsets.commit.timeout.ms", "int", 5000, _pos),
    C("group.initial.rebalance.delay.ms", "int", 3000, _ms),
    C("group.min.session.timeout.ms", "int", 6000),
    C("group.max.session.timeout.ms", "int", 1800000),
    C("group.max.size", "int", INT_MAX, _pos),
    C("group.coordinator.rebalance.protocols", "list", "classic,consumer", _rebalance_protocols),
    C("group.coordinator.threads", "int", 4, _pos, effective=False),
    C("group.consumer.heartbeat.interval.ms", "int", 5000, _pos),
    C("group.consumer.min.heartbeat.interval.ms", "int", 5000, _pos),
    C("group.consumer.max.heartbeat.interval.ms", "int", 15000, _pos),
    C("group.consumer.session.timeout.ms", "int", 45000, _pos),
    C("group.consumer.min.session.timeout.ms", "int", 45000, _pos),
    C("group.consumer.max.session.timeout.ms", "int", 60000, _pos),
    C("group.consumer.max.size", "int", INT_MAX, _pos),
    C("group.consumer.assignors", "list", "uniform,range", each_of("uniform", "range", allow_empty=False)),
    C("group.consumer.migration.policy", "string", "bidirectional",
      one_of("disabled", "downgrade", "upgrade", "bidirectional", case_insensitive=True)),
    # --- transactions and producer ids ---
    C("transaction.state.log.num.partitions", "int", 50, _pos),
    C("transaction.state.log.replication.factor", "short", 1, _pos, kafka_default=3,
      note="one node cannot hold 3 replicas"),
    C("transaction.state.log.min.isr", "int", 1, _pos, kafka_default=2, effective=False),
    C("transaction.state.log.segment.bytes", "int", 104857600, _pos),
    C("transaction.max.timeout.ms", "int", 900000, _pos),
    C("transactional.id.expiration.ms", "int", 604800000, _pos, CLUSTER_WIDE),
    C("producer.id.expiration.ms", "int", 86400000, _pos, CLUSTER_WIDE),
    C("transaction.abort.timed.out.transaction.cleanup.interval.ms", "int", 10000, _pos),
    C("transaction.remove.expired.transaction.cleanup.interval.ms", "int", 3600000, _pos),
    # --- share groups (KIP-932): named in Kafka 4's stock server.properties ---
    C("share.coordinator.state.topic.replication.factor", "short", 3, _pos, effective=False,
      note="share groups are not supported"),
    C("share.coordinator.state.topic.min.isr", "short", 2, _pos, effective=False,
      note="share groups are not supported"),
    # --- security / plug-ins: accepted only when unset or harmless ---
    C("ssl.keystore.password", "password", None, mode=PER_BROKER, effective=False,
      note="TLS is not supported yet"),
    C("ssl.key.password", "password", None, mode=PER_BROKER, effective=False,
      note="TLS is not supported yet"),
    C("authorizer.class.name", "string", "", _no_java_classes),
    C("create.topic.policy.class.name", "class", None, _no_java_classes),
    C("alter.config.policy.class.name", "class", None, _no_java_classes),
)

# Settings that mean "the same thing" in several spellings: the effective key
# (what code asks for) -> the keys that supply it, highest precedence first,
# each with the factor that turns its value into the effective unit.
_RESOLUTION: dict[str, tuple[tuple[str, int], ...]] = {
    "log.retention.ms": (("log.retention.ms", 1), ("log.retention.minutes", 60_000),
                         ("log.retention.hours", 3_600_000)),
    "log.roll.ms": (("log.roll.ms", 1), ("log.roll.hours", 3_600_000)),
    "log.roll.jitter.ms": (("log.roll.jitter.ms", 1), ("log.roll.jitter.hours", 3_600_000)),
    "log.flush.interval.ms": (("log.flush.interval.ms", 1), ("log.flush.scheduler.interval.ms", 1)),
}
_ALIASES: dict[str, str] = {
    "log.retention.minutes": "log.retention.ms",
    "log.retention.hours": "log.retention.ms",
    "log.roll.hours": "log.roll.ms",
    "log.roll.jitter.hours": "log.roll.jitter.ms",
}

# ---------------------------------------------------------------------------
# Listeners.
# ---------------------------------------------------------------------------


class Listener(NamedTuple):
    """One ``NAME://host:port`` entry.  ``host`` is '' for all interfaces."""

    name: str
    host: str
    port: int
    security_protocol: str = "PLAINTEXT"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.name}://{host}:{self.port}"


_LISTENER_RE = re.compile(r"([A-Za-z0-9_.-]+)://(\[[0-9a-fA-F:.%]*\]|[^\[\]:/\s]*):([0-9]+)\Z")


def parse_listeners(name: str, text: str, protocol_map: Mapping[str, str],
                    controller_names: Iterable[str] = ()) -> list[Listener]:
    """Parse a comma-separated listener list, checking names and protocols."""
    controller_names = set(controller_names)
    result: list[Listener] = []
    for entry in _parse_list(name, text):
        m = _LISTENER_RE.match(entry)
        if not m:
            raise ConfigError(f"{name}: expected NAME://host:port entries, got {entry!r}")
        lname, host, port = m.group(1).upper(), m.group(2), int(m.group(3))
        if host.startswith("["):
            host = host[1:-1]
        if port > 65535:
            raise ConfigError(f"{name}: port {port} out of range in {entry!r}")
        if lname in protocol_map:
            proto = protocol_map[lname]
        elif lname in controller_names:
            proto = "PLAINTEXT"
        else:
            raise ConfigError(
                f"{name}: listener name {lname!r} in {entry!r} has no security protocol in "
                f"listener.security.protocol.map"
            )
        if proto not in SUPPORTED_SECURITY_PROTOCOLS:
            raise ConfigError(f"{name}: {entry!r} uses {proto}, which kbroker does not support (only PLAINTEXT)")
        if any(l.name == lname for l in result):
            raise ConfigError(f"{name}: listener name {lname!r} appears more than once")
        result.append(Listener(lname, host, port, proto))
    return result


def _parse_protocol_map(name: str, text: str) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for entry in _parse_list(name, text):
        lname, sep, proto = entry.partition(":")
        lname, proto = lname.strip().upper(), proto.strip().upper()
        if not sep or not lname or proto not in SECURITY_PROTOCOLS:
            raise ConfigError(
                f"{name}: expected NAME:PROTOCOL entries with PROTOCOL one of "
                f"{', '.join(SECURITY_PROTOCOLS)}; got {entry!r}"
            )
        if lname in mapping:
            raise ConfigError(f"{name}: listener name {lname!r} mapped more than once")
        mapping[lname] = proto
    return mapping


# ---------------------------------------------------------------------------
# Java .properties files.
# ---------------------------------------------------------------------------

_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


def _logical_lines(text: str) -> Iterator[str]:
    """Join continuation lines (an odd number of trailing backslashes)."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].lstrip(" \t\f")
        i += 1
        if not line or line[0] in "#!":
            continue
        while True:
            trailing = len(line) - len(line.rstrip("\\"))
            if trailing % 2 == 1 and i <= len(lines):
                line = line[:-1]
                if i < len(lines):
                    line += lines[i].lstrip(" \t\f")
                    i += 1
                    continue
            break
        yield line


def _unescape(s: str, where: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(s):
        c = s[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        i += 1
        if i >= len(s):
            break
        c = s[i]
        if c == "u":
            hexdigits = s[i + 1:i + 5]
            if len(hexdigits) != 4 or not all(h in "0123456789abcdefABCDEF" for h in hexdigits):
                raise ConfigError(f"{where}: malformed \\uXXXX escape")
            out.append(chr(int(hexdigits, 16)))
            i += 5
        else:
            out.append(_ESCAPES.get(c, c))
            i += 1
    return "".join(out)


def parse_properties(text: str, where: str = "<properties>") -> dict[str, str]:
    """Parse Java ``.properties`` text into an ordered dict (later keys win).

    Comments start with ``#`` or ``!``; a key ends at the first unescaped
    ``=``, ``:`` or whitespace; a line ending in an odd number of
    backslashes continues on the next line; ``\\t \\n \\r \\f \\uXXXX``
    and ``\\<any>`` escapes are decoded in keys and values.
    """
    result: dict[str, str] = {}
    for line in _logical_lines(text):
        i, n = 0, len(line)
        while i < n:
            c = line[i]
            if c == "\\":
                i += 2
                continue
            if c in "=: \t\f":
                break
            i += 1
        key = line[:min(i, n)]
        j = i
        while j < n and line[j] in " \t\f":
            j += 1
        if j < n and line[j] in "=:":
            j += 1
            while j < n and line[j] in " \t\f":
                j += 1
        result[_unescape(key, where)] = _unescape(line[j:], where)
    return result


def _read_properties_file(path: str) -> dict[str, str]:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")  # what Java's Properties.load(InputStream) assumes
    return parse_properties(text, path)


# ---------------------------------------------------------------------------
# Key checks.
# ---------------------------------------------------------------------------


def _suggest(name: str, table: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(table), n=1, cutoff=0.8)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_key(name: str) -> ConfigDef:
    d = BROKER_CONFIGS.get(name)
    if d is not None:
        return d
    if name.startswith("zookeeper.") or name == "zookeeper":
        raise ConfigError(f"{name}: ZooKeeper is gone in Kafka 4.x and kbroker never had it; remove this setting")
    topic = TOPIC_CONFIGS_BY_NAME.get(name)
    if topic is not None:
        hint = f"; the broker-wide default is {topic.synonyms[0].name!r}" if topic.synonyms else ""
        raise ConfigError(f"{name}: this is a topic-level config, not a broker config{hint}")
    raise ConfigError(f"unknown config {name!r}" + _suggest(name, BROKER_CONFIGS))


class Synonym(NamedTuple):
    name: str
    value: Optional[str]
    source: str


class ConfigItem(NamedTuple):
    """One row of a broker's DescribeConfigs answer."""

    name: str
    value: Optional[str]
    source: str
    read_only: bool
    sensitive: bool
    synonyms: list[Synonym]


# ---------------------------------------------------------------------------
# The loaded configuration.
# ---------------------------------------------------------------------------

_LAYERS = (DYNAMIC_BROKER_CONFIG, DYNAMIC_DEFAULT_BROKER_CONFIG, STATIC_BROKER_CONFIG)


class Config(Mapping[str, Any]):
    """An immutable, validated broker configuration.

    ``config[name]`` is the effective typed value (aliases and precedence
    resolved); iteration yields every known name.
    """

    def __init__(self, static: Optional[Mapping[str, Any]] = None, *,
                 dynamic_default: Optional[Mapping[str, Any]] = None,
                 dynamic_broker: Optional[Mapping[str, Any]] = None) -> None:
        layers: dict[str, dict[str, Any]] = {}
        for source, raw in ((STATIC_BROKER_CONFIG, static), (DYNAMIC_DEFAULT_BROKER_CONFIG, dynamic_default),
                            (DYNAMIC_BROKER_CONFIG, dynamic_broker)):
            parsed: dict[str, Any] = {}
            for key, value in (raw or {}).items():
                parsed[key] = _check_key(key).parse(value)
            layers[source] = parsed
        self._layers = layers
        self._cache: dict[str, Any] = {}
        self._check_relations()

    # -- construction ------------------------------------------------------

    @classmethod
    def load(cls, properties_path: Optional[str] = None, overrides: Iterable[str] = ()) -> "Config":
        """Read a properties file (optional) and ``key=value`` overrides."""
        raw: dict[str, str] = {}
        if properties_path:
            raw.update(_read_properties_file(properties_path))
        for item in overrides:
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep or not key:
                raise ConfigError(f"override {item!r}: expected key=value")
            raw[key] = value
        config = cls(raw)
        for key in raw:
            d = BROKER_CONFIGS[key]
            if not d.effective:
                log.info("config %s=%s is accepted for compatibility and has no effect in kbroker",
                         key, "[hidden]" if d.sensitive else raw[key].strip())
        return config

    def updated(self, changes: Mapping[str, Optional[str]], *, per_broker: bool = True) -> "Config":
        """A new Config with dynamic changes (AlterConfigs on a broker).

        ``per_broker`` selects the layer: this node's own settings, or the
        cluster-wide defaults.  A value of ``None`` removes the key from that
        layer.  Read-only settings, and per-broker-only settings sent as
        cluster defaults, raise ConfigError.
        """
        layer = DYNAMIC_BROKER_CONFIG if per_broker else DYNAMIC_DEFAULT_BROKER_CONFIG
        for key in changes:
            d = _check_key(key)
            if d.read_only:
                raise ConfigError(f"{key}: cannot be updated dynamically (read-only)")
            if not per_broker and d.update_mode == PER_BROKER:
                raise ConfigError(f"{key}: can only be updated per broker, not as a cluster-wide default")
        new_layer = dict(self._layers[layer])
        for key, value in changes.items():
            if value is None:
                new_layer.pop(key, None)
            else:
                new_layer[key] = value
        kw = {
            "static": self._layers[STATIC_BROKER_CONFIG],
            "dynamic_default": self._layers[DYNAMIC_DEFAULT_BROKER_CONFIG],
            "dynamic_broker": self._layers[DYNAMIC_BROKER_CONFIG],
        }
        kw["dynamic_broker" if per_broker else "dynamic_default"] = new_layer
        return Config(**kw)

    def dynamic_values(self, per_broker: bool = True) -> dict[str, Optional[str]]:
        """The dynamic layer as strings (to persist it in the metadata log)."""
        layer = self._layers[DYNAMIC_BROKER_CONFIG if per_broker else DYNAMIC_DEFAULT_BROKER_CONFIG]
        return {k: format_value(BROKER_CONFIGS[k].type, v) for k, v in layer.items()}

    # -- raw lookups ---------------------------------------------------------

    def _raw(self, key: str) -> tuple[Any, str]:
        """(value, source) of one spelling, without alias resolution."""
        for source in _LAYERS:
            layer = self._layers[source]
            if key in layer:
                return layer[key], source
        return BROKER_CONFIGS[key].default, DEFAULT_CONFIG

    def is_set(self, key: str) -> bool:
        return any(key in self._layers[s] for s in _LAYERS)

    def _resolve(self, name: str) -> tuple[Any, str, str]:
        """(effective value, source, key that supplied it)."""
        if name in _RESOLUTION:
            chain = _RESOLUTION[name]
            # The highest layer that sets any spelling wins; within one layer
            # the most specific spelling wins (ms > minutes > hours).
            for source in _LAYERS:
                for key, factor in chain:
                    if key in self._layers[source] and self._layers[source][key] is not None:
                        value = self._layers[source][key]
                        if factor != 1 and value >= 0:
                            value *= factor
                        elif factor != 1 and value < 0:
                            value = -1
                        return value, source, key
            for key, factor in chain:
                default = BROKER_CONFIGS[key].default
                if default is not None:
                    return default * factor, DEFAULT_CONFIG, key
            return None, DEFAULT_CONFIG, name
        if name in ("node.id", "broker.id"):
            for key in ("node.id", "broker.id"):
                if self.is_set(key):
                    value, source = self._raw(key)
                    return value, source, key
            return BROKER_CONFIGS["node.id"].default, DEFAULT_CONFIG, "node.id"
        if name == "log.dirs":
            if self.is_set("log.dirs") and self._raw("log.dirs")[0]:
                value, source = self._raw("log.dirs")
                return list(value), source, "log.dirs"
            value, source = self._raw("log.dir")
            return [value], source, "log.dir"
        if name == "advertised.listeners":
            if self.is_set("advertised.listeners"):
                value, source = self._raw(name)
                return value, source, name
            return ",".join(str(l) for l in self._broker_listeners()), DEFAULT_CONFIG, name
        if name not in BROKER_CONFIGS:
            raise KeyError(name)
        value, source = self._raw(name)
        return value, source, name

    # -- Mapping -------------------------------------------------------------

    def __getitem__(self, name: str) -> Any:
        if name not in self._cache:
            if name not in BROKER_CONFIGS:
                raise KeyError(name)
            value = self._resolve(name)[0]
            self._cache[name] = value
        value = self._cache[name]
        return list(value) if isinstance(value, list) else value

    def __iter__(self) -> Iterator[str]:
        return iter(BROKER_CONFIGS)

    def __len__(self) -> int:
        return len(BROKER_CONFIGS)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Config) and self._layers == other._layers

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        set_keys = {k: self[k] for s in _LAYERS for k in self._layers[s] if not BROKER_CONFIGS[k].sensitive}
        return f"Config({set_keys!r})"

    def source(self, name: str) -> str:
        """Where the effective value of ``name`` comes from (DescribeConfigs spelling)."""
        if name not in BROKER_CONFIGS:
            raise KeyError(name)
        return self._resolve(name)[1]

    # -- derived views ---------------------------------------------------------

    @property
    def node_id(self) -> int:
        return self["node.id"]

    @property
    def log_dirs(self) -> list[str]:
        return self["log.dirs"]

    @property
    def security_protocol_map(self) -> dict[str, str]:
        return _parse_protocol_map("listener.security.protocol.map", self["listener.security.protocol.map"])

    @property
    def listeners(self) -> list[Listener]:
        """Every listener to bind, controller listeners included."""
        return parse_listeners("listeners", self["listeners"], self.security_protocol_map,
                               self["controller.listener.names"])

    def _broker_listeners(self) -> list[Listener]:
        controller = set(self["controller.listener.names"])
        return [l for l in self.listeners if l.name not in controller]

    @property
    def broker_listeners(self) -> list[Listener]:
        """The listeners clients talk to (controller listeners left out)."""
        return self._broker_listeners()

    @property
    def advertised_listeners(self) -> list[Listener]:
        """What Metadata answers carry, one per broker listener.

        An empty host is replaced by this machine's name, as Kafka does.
        """
        text = self["advertised.listeners"]
        controller = set(self["controller.listener.names"])
        listeners = parse_listeners("advertised.listeners", text, self.security_protocol_map, controller)
        result = []
        for l in listeners:
            if l.name in controller:
                continue
            if not l.host:
                l = l._replace(host=socket.getfqdn() or "localhost")
            result.append(l)
        return result

    @property
    def inter_broker_listener_name(self) -> str:
        name = self["inter.broker.listener.name"]
        if name:
            return name.upper()
        return self["security.inter.broker.protocol"]

    # -- DescribeConfigs ---------------------------------------------------------

    def _synonyms(self, name: str) -> list[Synonym]:
        name_eff = _ALIASES.get(name, name)
        if name_eff in _RESOLUTION:
            keys = [k for k, _ in _RESOLUTION[name_eff]]
            keys = keys[keys.index(name):]  # a coarser spelling has only coarser synonyms
        elif name in ("node.id", "broker.id"):
            keys = ["node.id", "broker.id"]
        elif name in ("log.dirs", "log.dir"):
            keys = ["log.dirs", "log.dir"]
        else:
            keys = [name]
        out: list[Synonym] = []
        for source in _LAYERS:
            for key in keys:
                if key in self._layers[source]:
                    d = BROKER_CONFIGS[key]
                    value = None if d.sensitive else format_value(d.type, self._layers[source][key])
                    out.append(Synonym(key, value, source))
        for key in keys:
            d = BROKER_CONFIGS[key]
            if d.default is not None:
                out.append(Synonym(key, format_value(d.type, d.default), DEFAULT_CONFIG))
        return out

    def items(self) -> list[ConfigItem]:  # type: ignore[override]
        """Rows for a broker's DescribeConfigs answer, sorted by name.

        Each row: (name, value string or None, source, read_only, sensitive,
        synonyms); sensitive values are reported as None.
        """
        rows = []
        for name in sorted(BROKER_CONFIGS):
            d = BROKER_CONFIGS[name]
            value, source, key = self._resolve(name)
            text = None if d.sensitive else format_value(d.type, value)
            rows.append(ConfigItem(name, text, source, d.read_only, d.sensitive, self._synonyms(name)))
        return rows

    def describe(self) -> list[tuple[str, Optional[str], str]]:
        """(name, value, source) for every setting: for --print-config and logs."""
        return [(r.name, r.value, r.source) for r in self.items()]

    # -- cross-setting checks ------------------------------------------------------

    def _check_relations(self) -> None:
        if self.is_set("node.id") and self.is_set("broker.id") and self._raw("node.id")[0] != self._raw("broker.id")[0]:
            raise ConfigError(
                f"broker.id ({self._raw('broker.id')[0]}) and node.id ({self._raw('node.id')[0]}) "
                f"disagree; set only node.id"
            )
        pmap = self.security_protocol_map
        listeners = self.listeners
        if "broker" in self["process.roles"] and not self._broker_listeners():
            raise ConfigError("listeners: no broker listener (every listener is a controller listener)")
        ports: dict[tuple[str, int], str] = {}
        for l in listeners:
            if l.port != 0 and (l.host, l.port) in ports:
                raise ConfigError(f"listeners: {ports[(l.host, l.port)]} and {l.name} use the same port {l.port}")
            ports[(l.host, l.port)] = l.name
        if self.is_set("advertised.listeners"):
            adv = parse_listeners("advertised.listeners", self["advertised.listeners"], pmap,
                                  self["controller.listener.names"])
            names = {l.name for l in listeners}
            for l in adv:
                if l.name not in names:
                    raise ConfigError(f"advertised.listeners: {l.name} is not a listener in listeners")
                if l.host == "0.0.0.0" or l.host == "::":
                    raise ConfigError(f"advertised.listeners: {l} uses a wildcard address; "
                                      f"advertise a host name clients can reach")
                if l.port == 0:
                    raise ConfigError(f"advertised.listeners: {l} has port 0")
        ibl = self["inter.broker.listener.name"]
        if ibl and ibl.upper() not in {l.name for l in listeners}:
            raise ConfigError(f"inter.broker.listener.name: {ibl!r} is not a listener in listeners")
        if self["group.min.session.timeout.ms"] > self["group.max.session.timeout.ms"]:
            raise ConfigError("group.min.session.timeout.ms: must not exceed group.max.session.timeout.ms")
        if self["group.consumer.min.session.timeout.ms"] > self["group.consumer.max.session.timeout.ms"]:
            raise ConfigError("group.consumer.min.session.timeout.ms: must not exceed "
                              "group.consumer.max.session.timeout.ms")
        if self["group.consumer.min.heartbeat.interval.ms"] > self["group.consumer.max.heartbeat.interval.ms"]:
            raise ConfigError("group.consumer.min.heartbeat.interval.ms: must not exceed "
                              "group.consumer.max.heartbeat.interval.ms")
        self._check_roles()

    @property
    def embedded_quorum(self) -> bool:
        """True for kbroker's zero-setup shape: a combined node that names no
        quorum at all, so its controller is an in-process quorum of one.

        Kafka has no such shape (it requires voters or bootstrap servers), so
        Kafka's quorum and controller-listener checks apply to every other
        configuration, and only this one is exempt from them.
        """
        return (set(self["process.roles"]) == {"broker", "controller"}
                and not self["controller.quorum.voters"]
                and not self["controller.quorum.bootstrap.servers"])

    @property
    def quorum_voters(self) -> dict[int, tuple[str, int]]:
        """controller.quorum.voters as {node id: (host, port)}."""
        return parse_voters("controller.quorum.voters", self["controller.quorum.voters"])

    @property
    def quorum_bootstrap_servers(self) -> list[tuple[str, int]]:
        return parse_host_ports("controller.quorum.bootstrap.servers",
                                self["controller.quorum.bootstrap.servers"])

    @property
    def controller_listeners(self) -> list[Listener]:
        """The listeners named in controller.listener.names, in that order."""
        by_name = {l.name: l for l in self.listeners}
        return [by_name[n.upper()] for n in self["controller.listener.names"] if n.upper() in by_name]

    def _check_roles(self) -> None:
        """KafkaConfig's KRaft cross-checks, per role (Kafka 4.2's rules)."""
        if self.embedded_quorum:
            return
        roles = set(self["process.roles"])
        node_id = self["node.id"]
        voter_ids = set(self.quorum_voters)
        controller_names = [n.upper() for n in self["controller.listener.names"]]
        listener_names = [l.name for l in self.listeners]
        in_listeners = [n for n in controller_names if n in listener_names]
        roles_text = ",".join(self["process.roles"])
        voters_text = "{" + ", ".join(str(i) for i in sorted(voter_ids)) + "}"
        if not voter_ids and not self["controller.quorum.bootstrap.servers"]:
            raise ConfigError(
                f"process.roles={roles_text}: set controller.quorum.voters (id@host:port,...) or "
                f"controller.quorum.bootstrap.servers (host:port,...) to name the controller quorum"
            )
        if roles == {"broker"}:
            if node_id in voter_ids:
                raise ConfigError(
                    f"controller.quorum.voters: node.id {node_id} is a voter {voters_text}, but "
                    f"process.roles=broker; a broker-only node must not be a voter"
                )
            if not controller_names:
                raise ConfigError("controller.listener.names: must name at least one listener when "
                                  "process.roles=broker (the listener used to reach the controllers)")
            if in_listeners:
                raise ConfigError(
                    f"listeners: {in_listeners[0]} is a controller listener (controller.listener.names), "
                    f"which a broker-only node must not have"
                )
            if self.is_set("listener.security.protocol.map"):
                for n in controller_names:
                    if n not in self.security_protocol_map:
                        raise ConfigError(
                            f"listener.security.protocol.map: controller listener {n} (controller.listener.names) "
                            f"has no security protocol"
                        )
            return
        # The controller role, alone or combined with the broker role.
        if voter_ids and node_id not in voter_ids:
            raise ConfigError(
                f"controller.quorum.voters: node.id {node_id} is not one of the voters {voters_text}, "
                f"but this node is a controller (process.roles={roles_text})"
            )
        if not in_listeners:
            raise ConfigError(
                f"listeners: no listener named in controller.listener.names "
                f"({','.join(controller_names) or 'empty'}); process.roles={roles_text} needs one"
            )
        missing = [n for n in controller_names if n not in listener_names]
        if missing:
            raise ConfigError(
                f"controller.listener.names: {missing[0]} is not a listener in listeners "
                f"(required when process.roles includes controller)"
            )
        if roles == {"controller"}:
            others = [n for n in listener_names if n not in controller_names]
            if others:
                raise ConfigError(
                    f"listeners: {others[0]} is not a controller listener; with process.roles=controller "
                    f"every listener must be named in controller.listener.names"
                )

    def unsupported_cluster(self) -> Optional[str]:
        """Why this node cannot run yet, or None.

        Served today: the single combined node, and cluster nodes of every
        role (broker, controller, or both) named by a static
        ``controller.quorum.voters``.  The dynamic quorum of
        ``controller.quorum.bootstrap.servers`` (KIP-853) is accepted by
        ``kbroker format`` but not run yet, except for the single combined
        node that names itself.  A start refused here has opened nothing.
        """
        tail = ("not supported yet (issue 8 in progress; a static quorum, controller.quorum.voters, is)")
        if self.quorum_voters:
            return None
        roles = self["process.roles"]
        if set(roles) != {"broker", "controller"}:
            return f"process.roles={','.join(roles)} with controller.quorum.bootstrap.servers: {tail}"
        for host, port in self.quorum_bootstrap_servers:
            if not self._is_own_controller_address(host, port):
                return f"controller.quorum.bootstrap.servers={host}:{port} is not this node: {tail}"
        return None

    @property
    def clustered(self) -> bool:
        """True for a node of a cluster: its metadata log is replicated by Raft.

        False for the single combined node, whether it names no quorum at all
        or only itself as the one voter (Kafka's single-node quick start).
        """
        if self.embedded_quorum:
            return False
        return set(self["process.roles"]) != {"broker", "controller"} or set(self.quorum_voters) != {self["node.id"]}

    def _is_own_controller_address(self, host: str, port: int) -> bool:
        # Kafka's single-node quick start names its own CONTROLLER listener as
        # the bootstrap server; that is still one node.  Anything else may be
        # another node, and guessing wrong would split the cluster.
        local = {"localhost", "127.0.0.1", "::1", socket.gethostname(), socket.getfqdn()}
        for l in self.controller_listeners:
            if l.port == port and (host == l.host or (host in local and l.host in local | {"", "0.0.0.0", "::"})):
                return True
        return False
