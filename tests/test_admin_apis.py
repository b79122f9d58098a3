"""Admin APIs against a real kbroker process, with real clients.

DescribeConfigs / AlterConfigs / IncrementalAlterConfigs, DescribeCluster,
DeleteRecords, DescribeLogDirs, OffsetForLeaderEpoch and
DescribeTopicPartitions, through confluent-kafka's and kafka-python's admin
clients, plus raw requests (encoded with this project's ``protocol``
package) where no client exposes an API or a field.  One broker serves the
whole module; it is started with a small retention check interval so a
retention change can be watched taking effect.

The epoch-history rules of OffsetForLeaderEpoch are also checked in process
on a real PartitionLog, since one broker never changes leader epochs.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from protocol import ApiKey, ErrorCode, decode_response, encode_request

REPO = Path(__file__).resolve().parent.parent
STATIC_RETENTION_MS = 259200000  # set with --override: reported as STATIC_BROKER_CONFIG

confluent_kafka = pytest.importorskip("confluent_kafka")
from confluent_kafka import KafkaError, KafkaException, TopicPartition  # noqa: E402
from confluent_kafka.admin import (  # noqa: E402
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    OffsetSpec,
    ResourceType,
)


# ---------------------------------------------------------------------------
# The broker.
# ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Kb:
    def __init__(self, workdir: Path):
        self.port = _free_port()
        self.data = workdir / "data"
        self.log_path = workdir / "kbroker.log"
        self.bootstrap = f"127.0.0.1:{self.port}"
        overrides = {
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "log.dirs": str(self.data),
            "log.retention.ms": str(STATIC_RETENTION_MS),
            "log.retention.check.interval.ms": "500",
            "log.segment.bytes": "1048576",
            "group.initial.rebalance.delay.ms": "0",
        }
        cmd = [sys.executable, "-m", "kbroker"]
        for k, v in overrides.items():
            cmd += ["--override", f"{k}={v}"]
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("kbroker exited:\n" + self.log_path.read_text())
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            self.stop()
            raise RuntimeError("kbroker did not listen:\n" + self.log_path.read_text())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


@pytest.fixture(scope="module")
def kb(tmp_path_factory):
    b = Kb(tmp_path_factory.mktemp("admin-apis"))
    yield b
    b.stop()


@pytest.fixture(scope="module")
def admin(kb):
    return AdminClient({"bootstrap.servers": kb.bootstrap})


@pytest.fixture
def make_topic(kb, admin):
    def make(partitions: int = 1, config: dict | None = None) -> str:
        name = f"adm-{uuid.uuid4().hex[:10]}"
        fut = admin.create_topics([NewTopic(name, partitions, 1, config=config or {})])[name]
        fut.result(15)
        return name

    return make


def produce(kb, topic: str, n: int, *, partition: int = 0, size: int = 10) -> None:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": kb.bootstrap, "linger.ms": 5, "batch.size": 65536})
    for i in range(n):
        p.produce(topic, value=b"x" * size, key=str(i).encode(), partition=partition)
        if i % 1000 == 999:
            p.poll(0)
    assert p.flush(20) == 0


def kafka_error(exc_info) -> KafkaError:
    err = exc_info.value.args[0]
    assert isinstance(err, KafkaError), err
    return err


def source(entry) -> int:
    return getattr(entry.source, "value", entry.source)


# -- raw requests -----------------------------------------------------------------


def raw(kb, api_key: ApiKey, version: int, body: dict):
    with socket.create_connection(("127.0.0.1", kb.port), timeout=10) as s:
        s.sendall(encode_request(int(api_key), version, body, correlation_id=7, client_id="admin-test"))
        size = int.from_bytes(_recv(s, 4), "big")
        corr, resp = decode_response(int(api_key), version, _recv(s, size))
    assert corr == 7
    return resp


def _recv(s, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        assert chunk, "connection closed"
        buf += chunk
    return bytes(buf)


# ---------------------------------------------------------------------------
# DescribeConfigs.
# ---------------------------------------------------------------------------


def test_describe_topic_configs(admin, make_topic):
    from kbroker.log.config import TOPIC_CONFIGS

    name = make_topic(1, {"cleanup.policy": "compact", "max.message.bytes": "200000"})
    r = ConfigResource(ResourceType.TOPIC, name)
    got = admin.describe_configs([r])[r].result(10)
    assert set(got) == {d.name for d in TOPIC_CONFIGS}

    cp = got["cleanup.policy"]
    assert (cp.value, source(cp), cp.is_read_only) == ("compact", 1, False)
    assert list(cp.synonyms) == ["cleanup.policy", "log.cleanup.policy"]
    # No override: the broker's static setting, then its default spelled log.retention.hours.
    rm = got["retention.ms"]
    assert (rm.value, source(rm)) == (str(STATIC_RETENTION_MS), 4)
    assert list(rm.synonyms) == ["log.retention.ms", "log.retention.hours"]
    assert got["retention.ms"].synonyms["log.retention.hours"].value == "168"
    sb = got["segment.bytes"]
    assert (sb.value, source(sb)) == ("1048576", 4)
    assert (got["min.insync.replicas"].value, source(got["min.insync.replicas"])) == ("1", 5)
    assert (got["remote.storage.enable"].value, source(got["remote.storage.enable"])) == ("false", 5)


def test_describe_configs_raw_filter_and_types(kb, make_topic):
    name = make_topic(1, {"retention.ms": "12345"})
    resp = raw(kb, ApiKey.DESCRIBE_CONFIGS, 4, {
        "resources": [
            {"resource_type": 2, "resource_name": name, "configuration_keys": ["retention.ms", "no.such.key"]},
            {"resource_type": 2, "resource_name": "adm-missing-topic", "configuration_keys": None},
            {"resource_type": 2, "resource_name": "bad/name", "configuration_keys": None},
            {"resource_type": 4, "resource_name": "1", "configuration_keys": ["node.id", "log.retention.ms"]},
            {"resource_type": 4, "resource_name": "7", "configuration_keys": None},
            {"resource_type": 8, "resource_name": "1", "configuration_keys": ["root"]},
            {"resource_type": 16, "resource_name": "x", "configuration_keys": None},
        ],
        "include_synonyms": True,
        "include_documentation": True,
    })
    topic, missing, bad, brk, other_broker, logger, metrics = resp.results
    assert topic.error_code == 0 and [c.name for c in topic.configs] == ["retention.ms"]
    c = topic.configs[0]
    assert (c.value, c.config_source, c.config_type, c.read_only) == ("12345", 1, 5, False)  # LONG
    assert [(s.name, s.value, s.source) for s in c.synonyms][:2] == [
        ("retention.ms", "12345", 1), ("log.retention.ms", str(STATIC_RETENTION_MS), 4)]
    assert missing.error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION and missing.configs == []
    assert bad.error_code == ErrorCode.INVALID_TOPIC_EXCEPTION
    by_name = {c.name: c for c in brk.configs}
    assert set(by_name) == {"node.id", "log.retention.ms"}
    assert by_name["node.id"].read_only and by_name["node.id"].config_type == 3  # INT
    assert not by_name["log.retention.ms"].read_only and by_name["log.retention.ms"].config_source == 4
    assert other_broker.error_code == ErrorCode.INVALID_REQUEST
    assert logger.error_code == 0 and [c.name for c in logger.configs] == ["root"]
    assert logger.configs[0].config_source == 6 and logger.configs[0].value in ("INFO", "WARN", "DEBUG", "ERROR")
    assert metrics.error_code == ErrorCode.INVALID_REQUEST


def test_describe_configs_errors_confluent(admin):
    r = ConfigResource(ResourceType.TOPIC, "adm-does-not-exist")
    with pytest.raises(KafkaException) as e:
        admin.describe_configs([r])[r].result(10)
    assert kafka_error(e).code() == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_describe_broker_configs(admin):
    r = ConfigResource(ResourceType.BROKER, "1")
    got = admin.describe_configs([r])[r].result(10)
    assert got["node.id"].is_read_only and got["node.id"].value == "1"
    assert (got["log.retention.ms"].value, source(got["log.retention.ms"])) == (str(STATIC_RETENTION_MS), 4)
    assert source(got["num.partitions"]) == 5
    assert not got["log.retention.ms"].is_read_only


def test_kafka_python_describe_configs(kb, make_topic):
    from kafka.admin import ConfigResource as KConfigResource, ConfigResourceType, KafkaAdminClient

    name = make_topic(1, {"retention.ms": "3600000"})
    a = KafkaAdminClient(bootstrap_servers=kb.bootstrap)
    try:
        got = a.describe_configs([KConfigResource(ConfigResourceType.TOPIC, name)])
        modified = got["topic"][name]
        assert set(modified) == {"retention.ms"}  # 'modified' filter: only the override
        assert modified["retention.ms"]["value"] == "3600000"
        assert modified["retention.ms"]["config_source"] == "DYNAMIC_TOPIC_CONFIG"
        got = a.describe_configs([KConfigResource(ConfigResourceType.BROKER, "1")], include_synonyms=True,
                                 config_filter="all")
        assert got["broker"]["1"]["log.dirs"]["value"] == str(kb.data)
    finally:
        a.close()


# ---------------------------------------------------------------------------
# Altering topic configs.
# ---------------------------------------------------------------------------


def _topic_configs(admin, name):
    r = ConfigResource(ResourceType.TOPIC, name)
    return admin.describe_configs([r])[r].result(10)


def test_incremental_alter_topic(admin, make_topic):
    name = make_topic(2)

    def alter(*entries, validate_only=False):
        r = ConfigResource(ResourceType.TOPIC, name, incremental_configs=list(entries))
        return admin.incremental_alter_configs([r], validate_only=validate_only)[r].result(10)

    S, D, A, X = AlterConfigOpType.SET, AlterConfigOpType.DELETE, AlterConfigOpType.APPEND, AlterConfigOpType.SUBTRACT
    alter(ConfigEntry("retention.ms", "7200000", incremental_operation=S),
          ConfigEntry("cleanup.policy", "compact", incremental_operation=A))
    got = _topic_configs(admin, name)
    assert (got["retention.ms"].value, source(got["retention.ms"])) == ("7200000", 1)
    assert got["cleanup.policy"].value == "delete,compact"  # appended to the default

    alter(ConfigEntry("cleanup.policy", "delete", incremental_operation=X),
          ConfigEntry("retention.ms", None, incremental_operation=D))
    got = _topic_configs(admin, name)
    assert got["cleanup.policy"].value == "compact"
    assert (got["retention.ms"].value, source(got["retention.ms"])) == (str(STATIC_RETENTION_MS), 4)

    alter(ConfigEntry("max.message.bytes", "5000", incremental_operation=S), validate_only=True)
    assert source(_topic_configs(admin, name)["max.message.bytes"]) == 5

    with pytest.raises(KafkaException) as e:
        alter(ConfigEntry("retention.ms", "soon", incremental_operation=S))
    assert kafka_error(e).code() == KafkaError.INVALID_CONFIG
    with pytest.raises(KafkaException) as e:
        alter(ConfigEntry("segment.bytes", "1000", incremental_operation=S))  # below the 1 MiB minimum
    assert kafka_error(e).code() == KafkaError.INVALID_CONFIG
    with pytest.raises(KafkaException) as e:
        alter(ConfigEntry("no.such.config", "1", incremental_operation=S))
    assert kafka_error(e).code() == KafkaError.INVALID_CONFIG
    with pytest.raises(KafkaException) as e:
        alter(ConfigEntry("retention.ms", "1", incremental_operation=A))  # not a list
    assert kafka_error(e).code() == KafkaError.INVALID_CONFIG
    assert _topic_configs(admin, name)["cleanup.policy"].value == "compact"  # nothing changed

    r = ConfigResource(ResourceType.TOPIC, "adm-nope", incremental_configs=[
        ConfigEntry("retention.ms", "1", incremental_operation=S)])
    with pytest.raises(KafkaException) as e:
        admin.incremental_alter_configs([r])[r].result(10)
    assert kafka_error(e).code() == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_legacy_alter_replaces_all_overrides(admin, make_topic):
    name = make_topic(1, {"retention.ms": "1000000", "cleanup.policy": "compact"})
    r = ConfigResource(ResourceType.TOPIC, name, set_config={"max.message.bytes": "300000"})
    admin.alter_configs([r])[r].result(10)
    got = _topic_configs(admin, name)
    assert (got["max.message.bytes"].value, source(got["max.message.bytes"])) == ("300000", 1)
    assert source(got["retention.ms"]) == 4 and source(got["cleanup.policy"]) == 5

    r = ConfigResource(ResourceType.TOPIC, name, set_config={"min.cleanable.dirty.ratio": "7"})
    with pytest.raises(KafkaException) as e:
        admin.alter_configs([r])[r].result(10)
    assert kafka_error(e).code() == KafkaError.INVALID_CONFIG
    assert _topic_configs(admin, name)["max.message.bytes"].value == "300000"


def test_kafka_python_alter_configs(kb, make_topic):
    from kafka.admin import ConfigResource as KConfigResource, ConfigResourceType, KafkaAdminClient

    name = make_topic(1)
    a = KafkaAdminClient(bootstrap_servers=kb.bootstrap)
    try:
        res = a.alter_configs([KConfigResource(ConfigResourceType.TOPIC, name, configs={"retention.ms": "5000"})])
        assert res["topic"][name] == "OK"
        res = a.alter_configs([KConfigResource(ConfigResourceType.TOPIC, name, configs={"retention.ms": "never"})])
        assert "InvalidConfigurationError" in str(res["topic"][name]) or "40" in str(res["topic"][name])
        res = a.alter_configs([KConfigResource(ConfigResourceType.TOPIC, name, configs={"flush.ms": "9000"})],
                              incremental=False)
        assert res["topic"][name] == "OK"
        got = a.describe_configs([KConfigResource(ConfigResourceType.TOPIC, name)])["topic"][name]
        assert {k: v["value"] for k, v in got.items()} == {"retention.ms": "5000", "flush.ms": "9000"}
    finally:
        a.close()


def test_retention_change_deletes_old_segments(kb, admin, make_topic):
    """retention.ms set through IncrementalAlterConfigs reaches the partition log."""
    name = make_topic(1, {"segment.bytes": "1048576"})
    produce(kb, name, 3000, size=1000)  # ~3 MB: several 1 MiB segments
    part_dir = kb.data / f"{name}-0"
    segments = sorted(part_dir.glob("*.log"))
    assert len(segments) >= 3
    tp = TopicPartition(name, 0)
    assert admin.list_offsets({tp: OffsetSpec.earliest()})[tp].result(10).offset == 0
    time.sleep(1.2)  # every record is now older than one second
    r = ConfigResource(ResourceType.TOPIC, name, incremental_configs=[
        ConfigEntry("retention.ms", "1000", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([r])[r].result(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        earliest = admin.list_offsets({tp: OffsetSpec.earliest()})[tp].result(10).offset
        if earliest > 0 and len(list(part_dir.glob("*.log"))) < len(segments):
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"retention did not delete segments: {sorted(p.name for p in part_dir.iterdir())}")
    latest = admin.list_offsets({tp: OffsetSpec.latest()})[tp].result(10).offset
    assert latest == 3000 and 0 < earliest <= latest
    assert not any(p.name == segments[0].name for p in part_dir.glob("*.log"))


# ---------------------------------------------------------------------------
# Broker configs.
# ---------------------------------------------------------------------------


def _cluster_default(kb, *configs, describe=False):
    """IncrementalAlterConfigs on the cluster-wide default broker resource ("").

    confluent-kafka refuses an empty broker name, so this goes raw.
    """
    resp = raw(kb, ApiKey.INCREMENTAL_ALTER_CONFIGS, 1, {"resources": [
        {"resource_type": 4, "resource_name": "",
         "configs": [{"name": n, "config_operation": op, "value": v} for n, op, v in configs]}],
        "validate_only": False})
    return resp.responses[0]


def test_alter_broker_configs(kb, admin, make_topic):
    name = make_topic(1)
    S, D = AlterConfigOpType.SET, AlterConfigOpType.DELETE

    def ialter(*entries):
        r = ConfigResource(ResourceType.BROKER, "1", incremental_configs=list(entries))
        return admin.incremental_alter_configs([r])[r].result(10)

    # Cluster-wide default of a log setting: topics without an override follow it.
    assert _cluster_default(kb, ("log.retention.ms", 0, "123456789")).error_code == 0
    try:
        rm = _topic_configs(admin, name)["retention.ms"]
        assert (rm.value, source(rm)) == ("123456789", 3)
        resp = raw(kb, ApiKey.DESCRIBE_CONFIGS, 4, {"resources": [
            {"resource_type": 2, "resource_name": name, "configuration_keys": ["retention.ms"]}],
            "include_synonyms": True, "include_documentation": False})
        assert [(s.name, s.value, s.source) for s in resp.results[0].configs[0].synonyms] == [
            ("log.retention.ms", "123456789", 3),
            ("log.retention.ms", str(STATIC_RETENTION_MS), 4),
            ("log.retention.hours", "168", 5),
        ]
        resp = raw(kb, ApiKey.DESCRIBE_CONFIGS, 4, {"resources": [
            {"resource_type": 4, "resource_name": "", "configuration_keys": None}],
            "include_synonyms": True, "include_documentation": False})
        assert [(c.name, c.value, c.config_source, [s.source for s in c.synonyms])
                for c in resp.results[0].configs] == [("log.retention.ms", "123456789", 3, [3])]
        # Per broker beats the cluster default.
        ialter(ConfigEntry("log.retention.ms", "23456789", incremental_operation=S))
        r = ConfigResource(ResourceType.BROKER, "1")
        b = admin.describe_configs([r])[r].result(10)["log.retention.ms"]
        assert (b.value, source(b)) == ("23456789", 2)
        assert _topic_configs(admin, name)["retention.ms"].value == "23456789"
        ialter(ConfigEntry("log.retention.ms", None, incremental_operation=D))
        assert _topic_configs(admin, name)["retention.ms"].value == "123456789"
    finally:
        assert _cluster_default(kb, ("log.retention.ms", 1, None)).error_code == 0
    rm = _topic_configs(admin, name)["retention.ms"]
    assert (rm.value, source(rm)) == (str(STATIC_RETENTION_MS), 4)

    with pytest.raises(KafkaException) as e:
        ialter(ConfigEntry("log.dirs", "/elsewhere", incremental_operation=S))
    err = kafka_error(e)
    assert err.code() == KafkaError.INVALID_REQUEST and "Cannot update these configs dynamically" in err.str()
    res = _cluster_default(kb, ("listeners", 0, "PLAINTEXT://127.0.0.1:1"))  # per-broker only
    assert res.error_code == ErrorCode.INVALID_REQUEST and "broker id must be specified" in res.error_message
    with pytest.raises(KafkaException) as e:
        ialter(ConfigEntry("log.cleaner.min.cleanable.ratio", "3", incremental_operation=S))
    assert kafka_error(e).code() == KafkaError.INVALID_REQUEST  # Kafka answers bad broker values so
    r = ConfigResource(ResourceType.BROKER, "1", set_config={"node.id": "5"})
    with pytest.raises(KafkaException) as e:
        admin.alter_configs([r])[r].result(10)
    assert kafka_error(e).code() == KafkaError.INVALID_REQUEST


def test_broker_logger(kb):
    def alter(name, op, value, resource="1"):
        resp = raw(kb, ApiKey.INCREMENTAL_ALTER_CONFIGS, 1, {"resources": [
            {"resource_type": 8, "resource_name": resource,
             "configs": [{"name": name, "config_operation": op, "value": value}]}], "validate_only": False})
        return resp.responses[0].error_code

    assert alter("kbroker.apis.configs", 0, "DEBUG") == 0
    assert alter("kbroker", 0, "LOUD") == ErrorCode.INVALID_CONFIG
    assert alter("no.such.logger", 0, "INFO") == ErrorCode.INVALID_CONFIG
    assert alter("root", 1, None) == ErrorCode.INVALID_REQUEST
    assert alter("kbroker", 2, "INFO") == ErrorCode.INVALID_REQUEST
    assert alter("kbroker", 0, "INFO", resource="") == ErrorCode.INVALID_REQUEST
    resp = raw(kb, ApiKey.DESCRIBE_CONFIGS, 4, {"resources": [
        {"resource_type": 8, "resource_name": "1", "configuration_keys": ["kbroker.apis.configs"]}],
        "include_synonyms": False, "include_documentation": False})
    assert [(c.name, c.value) for c in resp.results[0].configs] == [("kbroker.apis.configs", "DEBUG")]
    raw(kb, ApiKey.INCREMENTAL_ALTER_CONFIGS, 1, {"resources": [
        {"resource_type": 8, "resource_name": "1",
         "configs": [{"name": "kbroker.apis.configs", "config_operation": 1, "value": None}]}],
        "validate_only": False})


# ---------------------------------------------------------------------------
# DescribeCluster, DescribeTopicPartitions.
# ---------------------------------------------------------------------------


def test_describe_cluster(kb, admin):
    from kafka.admin import KafkaAdminClient

    d = admin.describe_cluster(include_authorized_operations=True).result(10)
    assert d.controller.id == 1
    assert [(n.id, n.host, n.port) for n in d.nodes] == [(1, "127.0.0.1", kb.port)]
    assert d.cluster_id and len(d.cluster_id) == 22

    a = KafkaAdminClient(bootstrap_servers=kb.bootstrap)
    try:
        k = a.describe_cluster()
    finally:
        a.close()
    assert k["cluster_id"] == d.cluster_id and k["controller_id"] == 1
    # No authorizer: every operation Kafka supports on the cluster resource.
    assert set(k["authorized_operations"]) == {"CREATE", "ALTER", "DESCRIBE", "CLUSTER_ACTION", "DESCRIBE_CONFIGS",
                                               "ALTER_CONFIGS", "IDEMPOTENT_WRITE"}
    assert [(b["broker_id"], b["port"], b["is_fenced"]) for b in k["brokers"]] == [(1, kb.port, False)]

    resp = raw(kb, ApiKey.DESCRIBE_CLUSTER, 1, {"include_cluster_authorized_operations": False, "endpoint_type": 2})
    assert resp.error_code == ErrorCode.MISMATCHED_ENDPOINT_TYPE
    resp = raw(kb, ApiKey.DESCRIBE_CLUSTER, 1, {"include_cluster_authorized_operations": False, "endpoint_type": 9})
    assert resp.error_code == ErrorCode.UNSUPPORTED_ENDPOINT_TYPE


def test_describe_topics_confluent(admin, make_topic):
    from confluent_kafka import TopicCollection

    name = make_topic(3)
    desc = admin.describe_topics(TopicCollection([name]))[name].result(10)
    assert [p.id for p in desc.partitions] == [0, 1, 2]
    assert all(p.leader.id == 1 and [r.id for r in p.replicas] == [1] for p in desc.partitions)


def test_describe_topic_partitions_pagination(kb, make_topic):
    counts = {make_topic(5): 5, make_topic(2): 2}
    a, b = sorted(counts)

    def ask(topics, limit, cursor=None):
        return raw(kb, ApiKey.DESCRIBE_TOPIC_PARTITIONS, 0, {
            "topics": [{"name": t} for t in topics], "response_partition_limit": limit, "cursor": cursor})

    seen = []
    cursor = None
    pages = 0
    while True:
        resp = ask([b, a, "adm-unknown-zz"], 3, cursor)
        pages += 1
        for t in resp.topics:
            if t.error_code == 0:
                assert t.topic_id.int != 0 and t.is_internal is False
                assert t.topic_authorized_operations > 0
                for p in t.partitions:
                    assert (p.leader_id, list(p.replica_nodes), list(p.isr_nodes)) == (1, [1], [1])
                    assert p.eligible_leader_replicas == [] and p.leader_epoch == 0
                    seen.append((t.name, p.partition_index))
            else:
                assert (t.name, t.error_code) == ("adm-unknown-zz", ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
        if resp.next_cursor is None:
            break
        cursor = {"topic_name": resp.next_cursor.topic_name, "partition_index": resp.next_cursor.partition_index}
        assert pages < 10
    assert seen == [(t, i) for t in (a, b) for i in range(counts[t])]
    assert pages == 3  # 3 + 3 + 1 partitions

    resp = ask([a], 10, {"topic_name": b, "partition_index": 0})
    assert [t.error_code for t in resp.topics] == [ErrorCode.INVALID_REQUEST]
    resp = ask([], 2000)
    assert {a, b} <= {t.name for t in resp.topics}


# ---------------------------------------------------------------------------
# DeleteRecords.
# ---------------------------------------------------------------------------


def test_delete_records_confluent(kb, admin, make_topic):
    from confluent_kafka import Consumer

    name = make_topic(2)
    produce(kb, name, 100)
    tp = TopicPartition(name, 0, 40)
    res = admin.delete_records([tp])
    assert res[tp].result(10).low_watermark == 40
    key = TopicPartition(name, 0)
    assert admin.list_offsets({key: OffsetSpec.earliest()})[key].result(10).offset == 40
    assert admin.list_offsets({key: OffsetSpec.latest()})[key].result(10).offset == 100

    # Deleting below the log start changes nothing; offsets are never reused.
    tp = TopicPartition(name, 0, 10)
    assert admin.delete_records([tp])[tp].result(10).low_watermark == 40
    produce(kb, name, 5)
    assert admin.list_offsets({key: OffsetSpec.latest()})[key].result(10).offset == 105

    c = Consumer({"bootstrap.servers": kb.bootstrap, "group.id": f"g-{uuid.uuid4().hex[:6]}",
                  "enable.auto.commit": False})
    try:
        c.assign([TopicPartition(name, 0, confluent_kafka.OFFSET_BEGINNING)])
        first = None
        deadline = time.monotonic() + 10
        while first is None and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and not m.error():
                first = m.offset()
        assert first == 40
    finally:
        c.close()

    tp = TopicPartition(name, 0, 1000)
    with pytest.raises(KafkaException) as e:
        admin.delete_records([tp])[tp].result(10)
    assert kafka_error(e).code() == KafkaError.OFFSET_OUT_OF_RANGE

    tp = TopicPartition(name, 0, confluent_kafka.OFFSET_END)  # -1: up to the high watermark
    assert admin.delete_records([tp])[tp].result(10).low_watermark == 105
    assert admin.list_offsets({key: OffsetSpec.earliest()})[key].result(10).offset == 105
    produce(kb, name, 1)
    assert admin.list_offsets({key: OffsetSpec.latest()})[key].result(10).offset == 106


def test_delete_records_kafka_python_and_raw(kb, make_topic):
    from kafka import TopicPartition as KTP
    from kafka.admin import KafkaAdminClient
    from kafka.errors import OffsetOutOfRangeError

    name = make_topic(1)
    compacted = make_topic(1, {"cleanup.policy": "compact"})
    produce(kb, name, 20)
    a = KafkaAdminClient(bootstrap_servers=kb.bootstrap)
    try:
        res = a.delete_records({KTP(name, 0): 7})
        assert res[KTP(name, 0)]["low_watermark"] == 7
        with pytest.raises(OffsetOutOfRangeError):
            a.delete_records({KTP(name, 0): 21})
    finally:
        a.close()
    resp = raw(kb, ApiKey.DELETE_RECORDS, 2, {"topics": [
        {"name": name, "partitions": [{"partition_index": 0, "offset": 20}, {"partition_index": 3, "offset": 0}]},
        {"name": compacted, "partitions": [{"partition_index": 0, "offset": 0}]},
        {"name": "adm-missing", "partitions": [{"partition_index": 0, "offset": 0}]},
    ], "timeout_ms": 1000})
    got = [(t.name, p.partition_index, p.error_code, p.low_watermark) for t in resp.topics for p in t.partitions]
    assert got == [
        (name, 0, 0, 20),
        (name, 3, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, -1),
        (compacted, 0, ErrorCode.POLICY_VIOLATION, -1),
        ("adm-missing", 0, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, -1),
    ]


# ---------------------------------------------------------------------------
# DescribeLogDirs.
# ---------------------------------------------------------------------------


def test_describe_log_dirs(kb, make_topic):
    from kafka.admin import KafkaAdminClient

    name = make_topic(2)
    produce(kb, name, 50, partition=1)
    a = KafkaAdminClient(bootstrap_servers=kb.bootstrap)
    try:
        got = a.describe_log_dirs()
        only = a.describe_log_dirs(topic_partitions={name: [1]})
    finally:
        a.close()
    [broker] = got
    [d] = broker["log_dirs"]
    assert d["error_code"] == 0 and d["log_dir"] == str(kb.data)
    topics = {t["name"]: t for t in d["topics"]}
    assert "__cluster_metadata" not in topics
    sizes = {p["partition_index"]: p["partition_size"] for p in topics[name]["partitions"]}
    assert sizes[0] == 0 and sizes[1] > 50 * 10
    assert all(not p["is_future_key"] and p["offset_lag"] == 0 for p in topics[name]["partitions"])
    [od] = only[0]["log_dirs"]
    assert [(t["name"], [p["partition_index"] for p in t["partitions"]]) for t in od["topics"]] == [(name, [1])]

    resp = raw(kb, ApiKey.DESCRIBE_LOG_DIRS, 4, {"topics": [{"topic": name, "partitions": [0]}]})
    [r] = resp.results
    st = os.statvfs(kb.data)
    assert r.total_bytes == st.f_blocks * st.f_frsize and 0 <= r.usable_bytes <= r.total_bytes
    assert [(t.name, [p.partition_index for p in t.partitions]) for t in r.topics] == [(name, [0])]


# ---------------------------------------------------------------------------
# OffsetForLeaderEpoch.
# ---------------------------------------------------------------------------


def test_offset_for_leader_epoch_raw(kb, make_topic):
    name = make_topic(2)
    produce(kb, name, 30)

    def ask(partitions, version=4):
        resp = raw(kb, ApiKey.OFFSET_FOR_LEADER_EPOCH, version, {
            "replica_id": -1, "topics": [{"topic": name, "partitions": partitions}]})
        return [(p.partition, p.error_code, p.leader_epoch, p.end_offset) for p in resp.topics[0].partitions]

    assert ask([
        {"partition": 0, "current_leader_epoch": 0, "leader_epoch": 0},
        {"partition": 1, "current_leader_epoch": -1, "leader_epoch": 0},  # empty: the current epoch ends at 0
        {"partition": 0, "current_leader_epoch": -1, "leader_epoch": 4},  # beyond the latest epoch
        {"partition": 0, "current_leader_epoch": 2, "leader_epoch": 0},
        {"partition": 9, "current_leader_epoch": -1, "leader_epoch": 0},
    ]) == [
        (0, 0, 0, 30),
        (1, 0, 0, 0),
        (0, 0, -1, -1),
        (0, ErrorCode.UNKNOWN_LEADER_EPOCH, -1, -1),
        (9, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, -1, -1),
    ]
    resp = raw(kb, ApiKey.OFFSET_FOR_LEADER_EPOCH, 2, {
        "topics": [{"topic": name, "partitions": [{"partition": 0, "current_leader_epoch": -1, "leader_epoch": 0}]}]})
    assert [(p.error_code, p.leader_epoch, p.end_offset) for p in resp.topics[0].partitions] == [(0, 0, 30)]


def test_librdkafka_validates_position_with_leader_epoch(kb, make_topic):
    """A position assigned with a leader epoch is validated (OffsetForLeaderEpoch) before fetching."""
    from confluent_kafka import Consumer

    name = make_topic(1)
    produce(kb, name, 20)
    validated = []
    c = Consumer({"bootstrap.servers": kb.bootstrap, "group.id": f"g-{uuid.uuid4().hex[:6]}",
                  "enable.auto.commit": False, "debug": "fetch",
                  "logger": _CaptureLog(validated)})
    try:
        c.assign([TopicPartition(name, 0, 10, leader_epoch=0)])
        got = []
        deadline = time.monotonic() + 10
        while len(got) < 10 and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and not m.error():
                got.append(m.offset())
    finally:
        c.close()
    assert got == list(range(10, 20))
    assert any("validation succeeded" in line and "end offset 20" in line for line in validated), validated[-5:]


class _CaptureLog:
    """A logging.Logger stand-in for librdkafka's ``logger`` setting."""

    def __init__(self, lines):
        self.lines = lines

    def log(self, level, fmt, *args):
        self.lines.append(fmt % args if args else fmt)


def test_epoch_history_on_a_real_log(tmp_path):
    """Epochs stamped in batches -> end offsets, as Kafka's leader epoch cache answers."""
    from protocol.records import encode_batch

    from kbroker.apis.leader_epoch import epoch_cache, end_offset_for
    from kbroker.log.config import LogConfig
    from kbroker.log.partition_log import PartitionLog

    log = PartitionLog.open(str(tmp_path / "t-0"), LogConfig(segment_bytes=1 << 20, retention_ms=-1))

    def append(n, epoch):
        log.append(bytearray(encode_batch([(b"k", b"v" * 10)] * n)), leader_epoch=epoch)

    append(5, 0)       # epoch 0: offsets 0..4
    append(5, 0)       #          5..9
    append(3, 2)       # epoch 2: 10..12
    cache = epoch_cache(log)
    assert (cache.epochs, cache.starts) == ([0, 2], [0, 10])
    append(4, 5)       # epoch 5: 13..16 (picked up incrementally)
    log.roll()
    append(2, 5)
    cache = epoch_cache(log)
    assert (cache.epochs, cache.starts, cache.scanned_to) == ([0, 2, 5], [0, 10, 13], 19)

    leo = log.log_end_offset
    epochs, starts = cache.entries(log.log_start_offset, 5, leo)
    assert end_offset_for(epochs, starts, 0, leo) == (0, 10)
    assert end_offset_for(epochs, starts, 1, leo) == (0, 10)   # no epoch 1: the largest below, ends at 2's start
    assert end_offset_for(epochs, starts, 2, leo) == (2, 13)
    assert end_offset_for(epochs, starts, 4, leo) == (2, 13)
    assert end_offset_for(epochs, starts, 5, leo) == (5, 19)   # current epoch: the log end
    assert end_offset_for(epochs, starts, 6, leo) == (-1, -1)
    assert end_offset_for(epochs, starts, -1, leo) == (-1, -1)

    # A newer leader epoch with nothing written yet starts at the log end.
    epochs, starts = cache.entries(log.log_start_offset, 7, leo)
    assert (epochs[-1], starts[-1]) == (7, 19)
    assert end_offset_for(epochs, starts, 5, leo) == (5, 19)

    # DeleteRecords past epoch 0 and into epoch 2: epoch 2 now starts at the log start.
    log.delete_records_before(11)
    epochs, starts = cache.entries(log.log_start_offset, 5, leo)
    assert (epochs, starts) == ([2, 5], [11, 13])
    assert end_offset_for(epochs, starts, 0, leo) == (0, 11)  # older than anything kept

    # Truncation (here to the end of epoch 2) starts the history over.
    gen = log.generation
    log.truncate_to(13)
    assert log.generation != gen
    cache = epoch_cache(log)
    assert (cache.epochs, cache.starts, cache.scanned_to) == ([0, 2], [0, 10], 13)
    log.close()


def test_dynamic_broker_config_reaches_logs_and_survives_restart(tmp_path):
    """In process: a cluster-wide log.retention.ms becomes the LogConfig of every
    partition without an override, a topic override still wins, and both come
    back from the metadata log after a restart."""
    import trio

    from protocol import decode_request

    from kbroker.apis import dispatch
    from kbroker.broker import Broker
    from kbroker.config import Config

    def request(api_key, version, body):
        header, decoded = decode_request(encode_request(int(api_key), version, body, correlation_id=1)[4:])
        return header, decoded

    cfg = Config.load(None, [f"listeners=PLAINTEXT://127.0.0.1:{_free_port()}", f"log.dirs={tmp_path}"])

    async def run(body_fn):
        b = Broker(cfg)
        async with trio.open_nursery() as nursery:
            await b.start(nursery)
            try:
                await body_fn(b)
            finally:
                nursery.cancel_scope.cancel()
        await b.close()

    async def first(b):
        await b.create_topics([{"name": "plain", "num_partitions": 2}, {"name": "own", "num_partitions": 1}])
        resp = await dispatch(b, *request(ApiKey.INCREMENTAL_ALTER_CONFIGS, 1, {"resources": [
            {"resource_type": 4, "resource_name": "", "configs": [
                {"name": "log.retention.ms", "config_operation": 0, "value": "1000"}]},
            {"resource_type": 2, "resource_name": "own", "configs": [
                {"name": "retention.ms", "config_operation": 0, "value": "5000"}]},
        ], "validate_only": False}))
        assert [r["error_code"] for r in resp["responses"]] == [0, 0]
        check(b)

    def check(b):
        assert b.config["log.retention.ms"] == 1000
        assert [b.partition("plain", i).log.config.retention_ms for i in (0, 1)] == [1000, 1000]
        assert b.partition("own", 0).log.config.retention_ms == 5000

    async def second(b):
        check(b)

    trio.run(run, first)
    trio.run(run, second)
