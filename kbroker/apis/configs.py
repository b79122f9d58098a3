"""DescribeConfigs, AlterConfigs and IncrementalAlterConfigs.

Three kinds of resource are served:

* TOPIC (2): every setting of :data:`kbroker.log.config.TOPIC_CONFIGS`.  A
  value comes from the topic's override (DYNAMIC_TOPIC_CONFIG), else from the
  broker setting it is a synonym of (dynamic, static, or the broker default),
  else from the table.  Overrides are ConfigRecords in the metadata log;
  once applied, ``Broker._sync_partitions`` hands the new LogConfig to the
  partition logs, so a new ``retention.ms`` is what the next retention pass
  uses.
* BROKER (4): resource name ``"<node.id>"`` is this broker (every setting of
  :data:`kbroker.config.BROKER_CONFIGS`, with the source of its value) and
  ``""`` is the cluster-wide default (only the settings set dynamically
  there).  Settings Kafka can change at run time (``per-broker`` /
  ``cluster-wide`` in the table) are stored as ConfigRecords and layered over
  the static configuration by the broker; read-only ones are refused with
  INVALID_REQUEST, as Kafka does.
* BROKER_LOGGER (8): the Python loggers of this process, with log4j level
  names; IncrementalAlterConfigs changes levels for the life of the process
  (Kafka does not persist them either).

Alterations are computed as "the new full set of overrides of one resource",
validated as a whole, and turned into one ConfigRecord per changed key
(a ``None`` value deletes a key).  Legacy AlterConfigs replaces the whole set;
IncrementalAlterConfigs applies SET / DELETE / APPEND / SUBTRACT to the
current set.
"""

from __future__ import annotations

import logging
from collections import Counter

from protocol import ApiKey, ErrorCode

from ..config import BROKER_CONFIGS, PER_BROKER, ConfigError
from ..controller.controller import MAX_RECORDS_PER_USER_OP, TOO_MANY_RECORDS, topic_name_error
from ..log.config import (
    CONFIG_TYPE_CODES,
    TOPIC_CONFIGS,
    TOPIC_CONFIGS_BY_NAME,
    format_config_value,
    validate_topic_config,
)
from ..metadata.errors import MetadataWriteFailed
from ..metadata.image import BROKER_RESOURCE, TOPIC_RESOURCE
from . import handles

log = logging.getLogger("kbroker.apis.configs")

BROKER_LOGGER_RESOURCE = 8

# IncrementalAlterConfigs operations.
OP_SET, OP_DELETE, OP_APPEND, OP_SUBTRACT = 0, 1, 2, 3
_OP_NAMES = {OP_SET: "SET", OP_DELETE: "DELETE", OP_APPEND: "APPEND", OP_SUBTRACT: "SUBTRACT"}

# DescribeConfigs config_source codes.
SOURCE_CODES = {
    "UNKNOWN": 0,
    "DYNAMIC_TOPIC_CONFIG": 1,
    "DYNAMIC_BROKER_CONFIG": 2,
    "DYNAMIC_DEFAULT_BROKER_CONFIG": 3,
    "STATIC_BROKER_CONFIG": 4,
    "DEFAULT_CONFIG": 5,
    "DYNAMIC_BROKER_LOGGER_CONFIG": 6,
}

# kbroker.config types -> DescribeConfigs config_type names.
_BROKER_TYPES = {
    "bool": "BOOLEAN",
    "string": "STRING",
    "int": "INT",
    "short": "SHORT",
    "long": "LONG",
    "double": "DOUBLE",
    "list": "LIST",
    "class": "CLASS",
    "password": "PASSWORD",
}

_RESOURCE_NAMES = {0: "UNKNOWN", 2: "TOPIC", 4: "BROKER", 8: "BROKER_LOGGER", 16: "CLIENT_METRICS", 32: "GROUP"}


class ResourceError(Exception):
    """One resource of a request fails with ``code`` (the others go on)."""

    def __init__(self, code: ErrorCode, message: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message


def _resource_type_name(rtype: int) -> str:
    return _RESOURCE_NAMES.get(rtype, str(rtype))


def _scala_set(names) -> str:
    return "Set(" + ", ".join(sorted(names)) + ")"


# ---------------------------------------------------------------------------
# Shared checks.
# ---------------------------------------------------------------------------


def _check_topic(broker, name: str, *, altering: bool) -> None:
    if altering and not name:
        raise ResourceError(ErrorCode.INVALID_REQUEST, "Default topic resources are not allowed.")
    err = topic_name_error(name or "")
    if err:
        raise ResourceError(ErrorCode.INVALID_TOPIC_EXCEPTION, err)
    if name not in broker.image.topics:
        if altering:
            raise ResourceError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"The topic '{name}' does not exist.")
        raise ResourceError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, None)


def _broker_scope(broker, name: str | None, *, logger: bool = False) -> str:
    """The resource name a BROKER (or BROKER_LOGGER) resource stands for: "" or "<node.id>"."""
    if not name:
        if logger:
            raise ResourceError(ErrorCode.INVALID_REQUEST, "Broker id must not be empty")
        return ""
    try:
        node = int(name)
    except ValueError:
        raise ResourceError(ErrorCode.INVALID_REQUEST, f"Broker id must be an integer, but it is: {name}") from None
    if node != broker.node_id:
        expected = f"{broker.node_id}" if logger else f"{broker.node_id} or empty string"
        raise ResourceError(
            ErrorCode.INVALID_REQUEST, f"Unexpected broker id, expected {expected}, but received {name}"
        )
    return str(node)


def _wanted(keys):
    """A filter for ``configuration_keys`` (null or empty: every key)."""
    if not keys:
        return lambda _name: True
    wanted = set(keys)
    return lambda name: name in wanted


# ---------------------------------------------------------------------------
# DescribeConfigs.
# ---------------------------------------------------------------------------


def _entry(name, value, source, *, read_only=False, sensitive=False, synonyms=(), config_type="UNKNOWN", doc=None):
    return {
        "name": name,
        "value": None if sensitive else value,
        "read_only": read_only,
        "config_source": SOURCE_CODES[source],
        "is_sensitive": sensitive,
        "synonyms": [
            {"name": s[0], "value": None if sensitive else s[1], "source": SOURCE_CODES[s[2]]} for s in synonyms
        ],
        "config_type": CONFIG_TYPE_CODES.get(config_type, 0),
        "documentation": doc,
    }


def _broker_rows(broker) -> dict:
    return {row.name: row for row in broker.config.items()}


def _topic_synonyms(defn, rows) -> list[tuple[str, str | None, str]]:
    """Broker settings behind a topic setting's default, highest precedence first.

    Kafka's order: this broker's dynamic value, the cluster-wide dynamic
    default, the static setting, then the built-in default -- for each source
    every spelling (``log.retention.ms`` / ``.minutes`` / ``.hours``).
    """
    if not defn.synonyms:
        return []
    primary = defn.synonyms[0].name
    row = rows.get(primary)
    if row is None:  # a broker setting kbroker does not have (tiered storage)
        return [(primary, format_config_value(defn.name, defn.default), "DEFAULT_CONFIG")]
    return [(s.name, s.value, s.source) for s in row.synonyms]


def describe_topic(broker, name: str, keys, include_synonyms: bool, include_docs: bool) -> list[dict]:
    _check_topic(broker, name, altering=False)
    overrides = broker.image.topic_configs(name)
    cfg = broker.log_config_for(name)
    rows = _broker_rows(broker)
    wanted = _wanted(keys)
    out = []
    for defn in sorted(TOPIC_CONFIGS, key=lambda d: d.name):
        if not wanted(defn.name):
            continue
        value = format_config_value(defn.name, cfg.value_of(defn.name))
        synonyms = _topic_synonyms(defn, rows)
        if defn.name in overrides:
            synonyms.insert(0, (defn.name, value, "DYNAMIC_TOPIC_CONFIG"))
        source = synonyms[0][2] if synonyms else "DEFAULT_CONFIG"
        out.append(
            _entry(
                defn.name, value, source,
                synonyms=synonyms if include_synonyms else (),
                config_type=defn.type,
                doc=(defn.doc or None) if include_docs else None,
            )
        )
    return out


def describe_broker(broker, name: str, keys, include_synonyms: bool, include_docs: bool) -> list[dict]:
    scope = _broker_scope(broker, name)
    wanted = _wanted(keys)
    out = []
    if scope == "":
        # The cluster-wide default resource: only what is set there.
        for key, value in sorted(broker.image.broker_configs("").items()):
            if not wanted(key):
                continue
            d = BROKER_CONFIGS.get(key)
            syn = [(key, value, "DYNAMIC_DEFAULT_BROKER_CONFIG")]
            out.append(
                _entry(
                    key, value, "DYNAMIC_DEFAULT_BROKER_CONFIG",
                    read_only=d.read_only if d else True,
                    sensitive=d.sensitive if d else False,
                    synonyms=syn if include_synonyms else (),
                    config_type=_BROKER_TYPES.get(d.type, "UNKNOWN") if d else "UNKNOWN",
                    doc=(d.note or None) if (include_docs and d) else None,
                )
            )
        return out
    for row in broker.config.items():
        if not wanted(row.name):
            continue
        d = BROKER_CONFIGS[row.name]
        out.append(
            _entry(
                row.name, row.value, row.source,
                read_only=row.read_only,
                sensitive=row.sensitive,
                synonyms=[(s.name, s.value, s.source) for s in row.synonyms] if include_synonyms else (),
                config_type=_BROKER_TYPES.get(d.type, "UNKNOWN"),
                doc=(d.note or None) if include_docs else None,
            )
        )
    return out


# -- broker loggers (Python logging, log4j level names) -----------------------

ROOT_LOGGER = "root"
TRACE = 5
_LEVELS = {"TRACE": TRACE, "DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARN": logging.WARNING,
           "ERROR": logging.ERROR, "FATAL": logging.CRITICAL, "OFF": logging.CRITICAL + 50}


def _level_name(level: int) -> str:
    for name in ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"):
        if level <= _LEVELS[name]:
            return name
    return "OFF"


def _logger(name: str) -> logging.Logger:
    return logging.getLogger() if name == ROOT_LOGGER else logging.getLogger(name)


def _logger_exists(name: str) -> bool:
    return name == ROOT_LOGGER or name in logging.Logger.manager.loggerDict


def current_loggers() -> dict[str, str]:
    names = [n for n, lg in logging.Logger.manager.loggerDict.items() if isinstance(lg, logging.Logger)]
    out = {ROOT_LOGGER: _level_name(logging.getLogger().getEffectiveLevel())}
    for n in sorted(names):
        out[n] = _level_name(logging.getLogger(n).getEffectiveLevel())
    return out


def describe_logger(broker, name: str, keys) -> list[dict]:
    _broker_scope(broker, name, logger=True)
    wanted = _wanted(keys)
    return [
        _entry(n, level, "DYNAMIC_BROKER_LOGGER_CONFIG", config_type="UNKNOWN")
        for n, level in current_loggers().items()
        if wanted(n)
    ]


@handles(ApiKey.DESCRIBE_CONFIGS)
async def describe_configs(broker, header, body):
    results = []
    include_synonyms = bool(body.include_synonyms)
    include_docs = bool(getattr(body, "include_documentation", False))
    for res in body.resources:
        entry = {"error_code": ErrorCode.NONE, "error_message": None, "resource_type": res.resource_type,
                 "resource_name": res.resource_name, "configs": []}
        try:
            if res.resource_type == TOPIC_RESOURCE:
                entry["configs"] = describe_topic(broker, res.resource_name, res.configuration_keys,
                                                  include_synonyms, include_docs)
            elif res.resource_type == BROKER_RESOURCE:
                entry["configs"] = describe_broker(broker, res.resource_name, res.configuration_keys,
                                                   include_synonyms, include_docs)
            elif res.resource_type == BROKER_LOGGER_RESOURCE:
                entry["configs"] = describe_logger(broker, res.resource_name, res.configuration_keys)
            else:
                raise ResourceError(ErrorCode.INVALID_REQUEST,
                                    f"Unsupported resource type: {_resource_type_name(res.resource_type)}")
        except ResourceError as e:
            entry.update(error_code=e.code, error_message=e.message, configs=[])
        results.append(entry)
    return {"throttle_time_ms": 0, "results": results}


# ---------------------------------------------------------------------------
# AlterConfigs / IncrementalAlterConfigs.
# ---------------------------------------------------------------------------


def _list_op(current: str | None, op: int, value: str) -> str:
    # Sets for membership: a value may list tens of thousands of items, and a
    # list scan per item would be quadratic on the trio thread.
    items = [x.strip() for x in (current or "").split(",") if x.strip()]
    given = [v for v in (x.strip() for x in value.split(",")) if v]
    if op == OP_APPEND:
        present = set(items)
        for v in given:
            if v not in present:
                items.append(v)
                present.add(v)
    elif op == OP_SUBTRACT:
        drop = set(given)
        items = [x for x in items if x not in drop]
    return ",".join(items)


def _apply_ops(current: dict[str, str], ops, *, is_list, default_of, list_error) -> dict[str, str]:
    """The new full set of overrides after IncrementalAlterConfigs ``ops``."""
    new = dict(current)
    for c in ops:
        op, key, value = c.config_operation, c.name, c.value
        if op == OP_SET:
            new[key] = value
        elif op == OP_DELETE:
            new.pop(key, None)
        elif op in (OP_APPEND, OP_SUBTRACT):
            if not is_list(key):
                raise ResourceError(ErrorCode.INVALID_CONFIG, list_error(op, key))
            base = new[key] if key in new else default_of(key)
            new[key] = _list_op(base, op, value or "")
        else:
            raise ResourceError(ErrorCode.INVALID_REQUEST, f"Unknown operation type {op} for config {key}")
    return new


def _check_request_configs(configs, *, incremental: bool) -> None:
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        raise ResourceError(ErrorCode.INVALID_REQUEST, "Error due to duplicate config keys")
    if incremental:
        nulls = [c.name for c in configs if c.value is None and c.config_operation != OP_DELETE]
        if nulls:
            raise ResourceError(ErrorCode.INVALID_REQUEST, f"Null value not supported for : {','.join(nulls)}")


def _diff_records(broker, rtype: int, rname: str, current: dict, new: dict) -> list:
    changes = {k: v for k, v in new.items() if current.get(k) != v}
    changes.update({k: None for k in current if k not in new})
    return broker.controller.config_records(rtype, rname, changes) if changes else []


def _topic_default(broker, key: str) -> str | None:
    if key not in TOPIC_CONFIGS_BY_NAME:
        return None
    return format_config_value(key, broker.default_log_config.value_of(key))


def plan_topic(broker, name: str, configs, *, incremental: bool) -> list:
    """ConfigRecords for altering topic ``name``; ResourceError if refused."""
    _check_topic(broker, name, altering=True)
    _check_request_configs(configs, incremental=incremental)
    current = dict(broker.image.topic_configs(name))
    if incremental:
        new = _apply_ops(
            current, configs,
            is_list=lambda k: k in TOPIC_CONFIGS_BY_NAME and TOPIC_CONFIGS_BY_NAME[k].type == "LIST",
            default_of=lambda k: _topic_default(broker, k),
            list_error=lambda op, k: f"Can't {_OP_NAMES[op]} to key {k} because its type is not LIST.",
        )
    else:
        new = {c.name: c.value for c in configs}
    nulls = sorted(k for k, v in new.items() if v is None)
    if nulls:
        raise ResourceError(ErrorCode.INVALID_CONFIG, f"Null value not supported for topic configs: {','.join(nulls)}")
    _validate_topic_overrides(broker, new)
    return _diff_records(broker, TOPIC_RESOURCE, name, current, new)


def _validate_topic_overrides(broker, new: dict[str, str]) -> None:
    parsed = {}
    for key, value in new.items():
        try:
            parsed[key] = validate_topic_config(key, value)
        except ValueError as e:
            raise ResourceError(ErrorCode.INVALID_CONFIG, str(e)) from None

    def effective(key):
        return parsed[key] if key in parsed else broker.default_log_config.value_of(key)

    if effective("min.compaction.lag.ms") > effective("max.compaction.lag.ms"):
        raise ResourceError(
            ErrorCode.INVALID_CONFIG,
            f"conflict topic config setting min.compaction.lag.ms ({effective('min.compaction.lag.ms')}) > "
            f"max.compaction.lag.ms ({effective('max.compaction.lag.ms')})",
        )
    if parsed.get("remote.storage.enable"):
        raise ResourceError(
            ErrorCode.INVALID_CONFIG,
            "Tiered Storage functionality is disabled in the broker. "
            "Topic cannot be configured with remote log storage.",
        )


def plan_broker(broker, name: str, configs, *, incremental: bool) -> list:
    """ConfigRecords for altering this broker's (or the cluster default) dynamic configs."""
    scope = _broker_scope(broker, name)
    per_broker = scope != ""
    _check_request_configs(configs, incremental=incremental)
    current = dict(broker.image.broker_configs(scope))

    rows = None

    def default_of(key):
        nonlocal rows
        if key not in BROKER_CONFIGS:
            return None
        if rows is None:  # built once: a request may APPEND to many keys
            rows = _broker_rows(broker)
        row = rows.get(key)
        return row.value if row else None

    if incremental:
        new = _apply_ops(
            current, configs,
            is_list=lambda k: k in BROKER_CONFIGS and BROKER_CONFIGS[k].type == "list",
            default_of=default_of,
            list_error=lambda op, k: f"Config value {_OP_NAMES[op].lower()} is not allowed for config key: {k}",
        )
    else:
        new = {c.name: c.value for c in configs if c.value is not None}
    changed = {k for k, v in new.items() if current.get(k) != v}
    # Unknown names are refused below, by the trial configuration (with a "did you mean").
    read_only = {k for k in changed if k in BROKER_CONFIGS and BROKER_CONFIGS[k].read_only}
    if read_only:
        raise ResourceError(ErrorCode.INVALID_REQUEST,
                            f"Cannot update these configs dynamically: {_scala_set(read_only)}")
    if not per_broker:
        only_per_broker = {k for k in changed if k in BROKER_CONFIGS and BROKER_CONFIGS[k].update_mode == PER_BROKER}
        if only_per_broker:
            raise ResourceError(
                ErrorCode.INVALID_REQUEST,
                "Cannot update these configs at default cluster level, broker id must be specified: "
                + _scala_set(only_per_broker),
            )
    # Check the values by building the configuration they would give.
    layer_changes = {k: new.get(k) for k in set(current) | set(new)}
    static = getattr(broker, "static_config", broker.config)
    try:
        if per_broker:
            static.updated(broker.image.broker_configs(""), per_broker=False).updated(layer_changes, per_broker=True)
        else:
            static.updated(layer_changes, per_broker=False).updated(
                broker.image.broker_configs(str(broker.node_id)), per_broker=True
            )
    except ConfigError as e:
        raise ResourceError(ErrorCode.INVALID_REQUEST, str(e)) from None
    return _diff_records(broker, BROKER_RESOURCE, scope, current, new)


def plan_logger(broker, name: str, configs) -> list[tuple[str, int | None]]:
    """(logger, new level or None to reset) changes; ResourceError if refused."""
    _broker_scope(broker, name, logger=True)
    _check_request_configs(configs, incremental=True)
    changes = []
    for c in configs:
        op, logger, value = c.config_operation, c.name, c.value
        if op in (OP_APPEND, OP_SUBTRACT):
            raise ResourceError(ErrorCode.INVALID_REQUEST,
                                f"{_OP_NAMES[op]} operation is not allowed for the BROKER_LOGGER resource")
        if op not in (OP_SET, OP_DELETE):
            raise ResourceError(ErrorCode.INVALID_REQUEST, f"Unknown operation type {op} for logger {logger}")
        if not _logger_exists(logger):
            raise ResourceError(ErrorCode.INVALID_CONFIG, f"Logger {logger} does not exist!")
        if op == OP_DELETE:
            if logger == ROOT_LOGGER:
                raise ResourceError(ErrorCode.INVALID_REQUEST,
                                    f"Removing the log level of the {ROOT_LOGGER} logger is not allowed")
            changes.append((logger, None))
            continue
        level = (value or "").strip().upper()
        if level not in _LEVELS:
            raise ResourceError(
                ErrorCode.INVALID_CONFIG,
                f"Cannot set the log level of {logger} to {value} as it is not a supported log level. "
                f"Valid log levels are {', '.join(_LEVELS)}",
            )
        changes.append((logger, _LEVELS[level]))
    return changes


def _apply_logger_changes(changes) -> None:
    if any(level == TRACE for _n, level in changes) and logging.getLevelName(TRACE) != "TRACE":
        logging.addLevelName(TRACE, "TRACE")
    for logger, level in changes:
        if level is None:
            _logger(logger).setLevel(logging.NOTSET)  # inherit again (the root's level, in the end)
        else:
            _logger(logger).setLevel(level)
        log.info("log level of %s set to %s", logger, "(inherited)" if level is None else _level_name(level))


def _plan(broker, body, incremental: bool):
    """(responses, records, logger changes, too many records) for an (Incremental)AlterConfigs request."""
    responses = []
    records = []
    logger_changes = []
    keys = Counter((r.resource_type, r.resource_name) for r in body.resources)
    dupes = {k for k, n in keys.items() if n > 1}
    too_many = False
    for res in body.resources:
        if too_many:
            break
        entry = {"error_code": ErrorCode.NONE, "error_message": None,
                 "resource_type": res.resource_type, "resource_name": res.resource_name}
        try:
            if (res.resource_type, res.resource_name) in dupes:
                raise ResourceError(ErrorCode.INVALID_REQUEST, "Each resource must appear at most once in a request.")
            if res.resource_type == TOPIC_RESOURCE:
                records += plan_topic(broker, res.resource_name, res.configs, incremental=incremental)
            elif res.resource_type == BROKER_RESOURCE:
                records += plan_broker(broker, res.resource_name, res.configs, incremental=incremental)
            elif res.resource_type == BROKER_LOGGER_RESOURCE:
                if not incremental:
                    raise ResourceError(ErrorCode.INVALID_REQUEST,
                                        "AlterConfigs does not support the resource type BROKER_LOGGER; "
                                        "use IncrementalAlterConfigs")
                logger_changes += plan_logger(broker, res.resource_name, res.configs)
            else:
                raise ResourceError(ErrorCode.INVALID_REQUEST,
                                    f"Unsupported resource type: {_resource_type_name(res.resource_type)}")
        except ResourceError as e:
            entry.update(error_code=e.code, error_message=e.message)
        responses.append(entry)
        # Kafka's bounded record list: the operation fails as a whole once it
        # would write more than MAX_RECORDS_PER_USER_OP records.
        too_many = len(records) > MAX_RECORDS_PER_USER_OP
    return responses, records, logger_changes, too_many


async def _alter(broker, body, *, incremental: bool):
    # Planned under the metadata lock (submit calls decide): a change computed
    # from the current configs (APPEND, SUBTRACT) must not race another.
    planned = []

    def decide():
        planned[:] = [_plan(broker, body, incremental)]
        _responses, records, _loggers, too_many = planned[0]
        return [] if too_many or body.validate_only else records

    if body.validate_only:
        decide()
    else:
        try:
            await broker.submit(decide)
        except MetadataWriteFailed as e:
            for entry in planned[0][0]:
                if entry["error_code"] == ErrorCode.NONE and entry["resource_type"] != BROKER_LOGGER_RESOURCE:
                    entry.update(error_code=ErrorCode.KAFKA_STORAGE_ERROR, error_message=str(e))
    responses, _records, logger_changes, too_many = planned[0]
    if too_many:
        return {"throttle_time_ms": 0, "responses": [
            {"error_code": ErrorCode.POLICY_VIOLATION, "error_message": TOO_MANY_RECORDS,
             "resource_type": r.resource_type, "resource_name": r.resource_name}
            for r in body.resources
        ]}
    if not body.validate_only:
        _apply_logger_changes(logger_changes)
    return {"throttle_time_ms": 0, "responses": responses}


@handles(ApiKey.ALTER_CONFIGS)
async def alter_configs(broker, header, body):
    return await _alter(broker, body, incremental=False)


@handles(ApiKey.INCREMENTAL_ALTER_CONFIGS)
async def incremental_alter_configs(broker, header, body):
    return await _alter(broker, body, incremental=True)
