import pytest

from kbroker.log.config import (
    BROKER_SYNONYMS,
    CONFIG_TYPE_CODES,
    LONG_MAX,
    TOPIC_CONFIGS,
    TOPIC_CONFIGS_BY_NAME,
    LogConfig,
    broker_synonym_values,
    validate_topic_config,
)


def test_defaults_match_kafka():
    c = LogConfig()
    assert c.segment_bytes == 1073741824
    assert c.segment_ms == 604800000
    assert c.retention_ms == 604800000
    assert c.retention_bytes == -1
    assert c.cleanup_policy == ("delete",)
    assert c.delete_retention_ms == 86400000
    assert c.max_message_bytes == 1048588
    assert c.index_interval_bytes == 4096
    assert c.segment_index_bytes == 10485760
    assert c.flush_messages == LONG_MAX and c.flush_ms == LONG_MAX
    assert c.file_delete_delay_ms == 60000
    assert c.min_cleanable_dirty_ratio == 0.5
    assert c.message_timestamp_after_max_ms == 3600000
    assert c.message_timestamp_before_max_ms == LONG_MAX
    assert c.compression_type == "producer"
    assert not c.unclean_leader_election_enable
    assert c.delete and not c.compact


def test_table_defaults_equal_dataclass_defaults():
    c = LogConfig()
    for d in TOPIC_CONFIGS:
        assert d.type in CONFIG_TYPE_CODES
        if d.field is not None:
            assert getattr(c, d.field) == d.default, d.name


def test_from_topic_configs_overrides_and_keeps_defaults():
    defaults = LogConfig(retention_ms=1000)
    c = LogConfig.from_topic_configs(
        {"cleanup.policy": "compact,delete", "segment.bytes": "2097152", "min.cleanable.dirty.ratio": "0.2",
         "unclean.leader.election.enable": "TRUE"},
        defaults,
    )
    assert c.compact and c.delete
    assert c.segment_bytes == 2097152
    assert c.min_cleanable_dirty_ratio == 0.2
    assert c.unclean_leader_election_enable is True
    assert c.retention_ms == 1000
    assert c.overrides["segment.bytes"] == "2097152"
    assert c.to_topic_configs()["cleanup.policy"] == "compact,delete"
    assert c.to_topic_configs()["min.cleanable.dirty.ratio"] == "0.2"


@pytest.mark.parametrize(
    "name,value",
    [
        ("no.such.config", "1"),
        ("retention.ms", "abc"),
        ("retention.ms", "-2"),
        ("segment.bytes", "100"),  # Kafka 4: at least 1 MiB
        ("segment.bytes", str(1 << 40)),  # not an INT
        ("cleanup.policy", "compact,bogus"),
        ("compression.type", "brotli"),
        ("message.timestamp.type", "Whenever"),
        ("min.cleanable.dirty.ratio", "1.5"),
        ("unclean.leader.election.enable", "yes"),
        ("min.insync.replicas", "0"),
        ("retention.ms", None),
    ],
)
def test_invalid_values_raise_value_error(name, value):
    with pytest.raises(ValueError) as ei:
        validate_topic_config(name, value)
    assert name in str(ei.value)


def test_validate_returns_parsed():
    assert validate_topic_config("retention.ms", "-1") == -1
    assert validate_topic_config("cleanup.policy", " compact , delete ") == ("compact", "delete")
    assert validate_topic_config("preallocate", "false") is False


def test_synonyms_table():
    assert BROKER_SYNONYMS["log.retention.hours"] == ("retention.ms", 3600000)
    assert BROKER_SYNONYMS["log.segment.bytes"] == ("segment.bytes", 1)
    assert BROKER_SYNONYMS["message.max.bytes"] == ("max.message.bytes", 1)
    assert BROKER_SYNONYMS["log.roll.ms"] == ("segment.ms", 1)
    assert BROKER_SYNONYMS["log.cleanup.policy"] == ("cleanup.policy", 1)
    names = [s.name for s in TOPIC_CONFIGS_BY_NAME["retention.ms"].synonyms]
    assert names == ["log.retention.ms", "log.retention.minutes", "log.retention.hours"]
    props = {"log.retention.hours": "168", "log.retention.minutes": "5"}
    assert broker_synonym_values(props, "retention.ms") == [
        ("log.retention.minutes", "5"), ("log.retention.hours", "168")]


def test_from_broker_properties_precedence():
    c = LogConfig.from_broker_properties({"log.retention.hours": "1"})
    assert c.retention_ms == 3600000
    c = LogConfig.from_broker_properties({"log.retention.hours": "1", "log.retention.minutes": "2"})
    assert c.retention_ms == 120000
    c = LogConfig.from_broker_properties(
        {"log.retention.hours": "1", "log.retention.minutes": "2", "log.retention.ms": "7"})
    assert c.retention_ms == 7
    c = LogConfig.from_broker_properties({"log.retention.hours": "-1", "message.max.bytes": "100",
                                          "log.cleanup.policy": "compact", "unrelated": "x"})
    assert c.retention_ms == -1 and c.max_message_bytes == 100 and c.compact
    with pytest.raises(ValueError):
        LogConfig.from_broker_properties({"log.segment.bytes": "lots"})
