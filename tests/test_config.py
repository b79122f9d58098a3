"""kbroker.config: the table, types, precedence, properties parsing."""

import pytest

from kbroker.config import (
    BROKER_CONFIGS,
    DEFAULT_CONFIG,
    DYNAMIC_BROKER_CONFIG,
    STATIC_BROKER_CONFIG,
    Config,
    ConfigError,
    Listener,
    parse_properties,
)


def load(*overrides, path=None):
    return Config.load(path, list(overrides))


# -- defaults ---------------------------------------------------------------


@pytest.mark.parametrize(
    "name, value",
    [
        ("node.id", 1),
        ("broker.id", 1),
        ("process.roles", ["broker", "controller"]),
        ("listeners", "PLAINTEXT://localhost:9092"),
        ("log.dirs", ["./kbroker-data"]),
        ("num.partitions", 1),
        ("default.replication.factor", 1),
        ("min.insync.replicas", 1),
        ("auto.create.topics.enable", True),
        ("delete.topic.enable", True),
        ("log.retention.hours", 168),
        ("log.retention.ms", 168 * 3600 * 1000),
        ("log.retention.bytes", -1),
        ("log.retention.check.interval.ms", 300000),
        ("log.segment.bytes", 1073741824),
        ("log.roll.ms", 168 * 3600 * 1000),
        ("log.cleanup.policy", ["delete"]),
        ("log.cleaner.enable", True),
        ("log.cleaner.delete.retention.ms", 86400000),
        ("log.cleaner.min.compaction.lag.ms", 0),
        ("log.index.interval.bytes", 4096),
        ("log.flush.interval.messages", 2**63 - 1),
        ("log.message.timestamp.type", "CreateTime"),
        ("message.max.bytes", 1048588),
        ("replica.fetch.max.bytes", 1048576),
        ("socket.request.max.bytes", 104857600),
        ("max.connections", 2**31 - 1),
        ("connections.max.idle.ms", 600000),
        ("offsets.topic.num.partitions", 50),
        ("offsets.topic.replication.factor", 1),
        ("offsets.retention.minutes", 10080),
        ("offsets.retention.check.interval.ms", 600000),
        ("group.initial.rebalance.delay.ms", 3000),
        ("group.min.session.timeout.ms", 6000),
        ("group.max.session.timeout.ms", 1800000),
        ("group.consumer.heartbeat.interval.ms", 5000),
        ("group.consumer.session.timeout.ms", 45000),
        ("group.coordinator.rebalance.protocols", ["classic", "consumer"]),
        ("transaction.state.log.num.partitions", 50),
        ("transactional.id.expiration.ms", 604800000),
        ("producer.id.expiration.ms", 86400000),
        ("compression.type", "producer"),
        ("unclean.leader.election.enable", False),
        ("fetch.max.bytes", 57671680),
        ("cluster.id", None),
        ("controller.quorum.voters", []),
        ("controller.quorum.bootstrap.servers", []),
        ("controller.quorum.election.timeout.ms", 1000),
        ("controller.quorum.fetch.timeout.ms", 2000),
        ("controller.quorum.election.backoff.max.ms", 1000),
        ("controller.quorum.request.timeout.ms", 2000),
        ("controller.quorum.retry.backoff.ms", 20),
        ("controller.quorum.append.linger.ms", 25),
        ("broker.session.timeout.ms", 9000),
        ("broker.heartbeat.interval.ms", 2000),
        ("initial.broker.registration.timeout.ms", 60000),
        ("metadata.log.max.record.bytes.between.snapshots", 20971520),
        ("metadata.log.max.snapshot.interval.ms", 3600000),
        ("metadata.max.idle.interval.ms", 500),
        ("metadata.max.retention.bytes", 104857600),
        ("metadata.max.retention.ms", 604800000),
        ("metadata.log.dir", None),
        ("broker.rack", None),
    ],
)
def test_defaults(name, value):
    c = load()
    assert c[name] == value
    assert c.source(name) == DEFAULT_CONFIG


def test_every_def_is_consistent():
    for name, d in BROKER_CONFIGS.items():
        assert d.name == name
        assert d.type in ("int", "long", "short", "bool", "string", "list", "password", "double", "class")
        assert d.update_mode in ("read-only", "per-broker", "cluster-wide")
        if d.default is None:
            assert d.nullable, name
        else:
            d.parse(d.default)  # the default passes its own validation


def test_update_modes_follow_kafka():
    assert BROKER_CONFIGS["log.retention.ms"].update_mode == "cluster-wide"
    assert BROKER_CONFIGS["log.retention.hours"].update_mode == "read-only"
    assert BROKER_CONFIGS["listeners"].update_mode == "per-broker"
    assert BROKER_CONFIGS["num.partitions"].update_mode == "read-only"
    assert BROKER_CONFIGS["message.max.bytes"].update_mode == "cluster-wide"


# -- precedence and aliases ------------------------------------------------------


def test_retention_precedence_ms_minutes_hours():
    assert load("log.retention.hours=1")["log.retention.ms"] == 3_600_000
    assert load("log.retention.hours=1", "log.retention.minutes=2")["log.retention.ms"] == 120_000
    c = load("log.retention.hours=1", "log.retention.minutes=2", "log.retention.ms=777")
    assert c["log.retention.ms"] == 777
    assert c.source("log.retention.ms") == STATIC_BROKER_CONFIG
    assert load("log.retention.ms=-1")["log.retention.ms"] == -1
    assert load("log.retention.hours=-1")["log.retention.ms"] == -1


def test_roll_precedence():
    assert load("log.roll.hours=2")["log.roll.ms"] == 7_200_000
    assert load("log.roll.hours=2", "log.roll.ms=5")["log.roll.ms"] == 5


def test_node_id_and_broker_id_alias():
    assert load("broker.id=7")["node.id"] == 7
    assert load("node.id=7")["broker.id"] == 7
    assert load("node.id=3", "broker.id=3")["node.id"] == 3
    with pytest.raises(ConfigError, match="broker.id"):
        load("node.id=3", "broker.id=4")


def test_log_dirs_over_log_dir():
    assert load("log.dir=/a")["log.dirs"] == ["/a"]
    assert load("log.dir=/a", "log.dirs=/b, /c")["log.dirs"] == ["/b", "/c"]
    assert load("log.dir=/a")["log.dir"] == "/a"


def test_overrides_win_over_file(tmp_path):
    p = tmp_path / "server.properties"
    p.write_text("num.partitions=3\nlog.retention.hours=5\n")
    c = Config.load(str(p), ["num.partitions=4"])
    assert c["num.partitions"] == 4
    assert c["log.retention.ms"] == 5 * 3_600_000
    assert c.source("num.partitions") == STATIC_BROKER_CONFIG


# -- types and validation --------------------------------------------------------


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("bogus.key=1", "unknown config 'bogus.key'"),
        ("num.partitions=0", "num.partitions"),
        ("num.partitions=abc", "expected int"),
        ("num.partitions=1_000", "expected int"),
        ("num.partitions=99999999999", "does not fit"),
        ("log.retention.ms=-2", "log.retention.ms"),
        ("auto.create.topics.enable=yes", "true or false"),
        ("log.cleanup.policy=delete,shred", "shred"),
        ("log.message.timestamp.type=Now", "CreateTime"),
        ("compression.type=brotli", "compression.type"),
        ("log.cleaner.min.cleanable.ratio=1.5", "between"),
        ("listeners=nonsense", "listeners"),
        ("listeners=PLAINTEXT://localhost:99999", "port"),
        ("listeners=SSL://localhost:9093", "PLAINTEXT"),
        ("listeners=FOO://localhost:9093", "FOO"),
        ("listeners=PLAINTEXT://a:1,PLAINTEXT://b:2", "more than once"),
        ("zookeeper.connect=localhost:2181", "ZooKeeper"),
        ("retention.ms=1", "topic-level"),
        ("process.roles=broker", "controller.quorum.voters"),
        ("process.roles=broker,broker", "duplicate"),
        ("process.roles=", "must not be empty"),
        ("controller.quorum.voters=1@localhost:9093,1@otherhost:9093", "appears more than once"),
        ("controller.quorum.voters=one@localhost:9093", "not an integer"),
        ("controller.quorum.voters=1@localhost:99999", "out of range"),
        ("controller.quorum.voters=localhost:9093", "id@host:port"),
        ("controller.quorum.bootstrap.servers=localhost", "host:port"),
        ("controller.quorum.election.timeout.ms=-1", "at least 0"),
        ("metadata.log.max.record.bytes.between.snapshots=0", "at least 1"),
        ("metadata.max.idle.interval.ms=-1", "at least 0"),
        ("broker.session.timeout.ms=soon", "expected int"),
        ("cluster.id=my-cluster", "not a Kafka cluster id"),
        ("process.roles=broker,admin", "admin"),
        ("controller.quorum.voters=1@localhost", "id@host:port"),
        ("log.segment.bytes=100", "at least"),
        ("group.coordinator.rebalance.protocols=consumer", "classic"),
        ("create.topic.policy.class.name=com.example.Policy", "Java classes"),
        ("num.partitions", "key=value"),
        ("=3", "key=value"),
    ],
)
def test_invalid(override, fragment):
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.").replace("(", r"\(")):
        load(override)


def test_unknown_key_suggests_close_name():
    with pytest.raises(ConfigError, match="did you mean 'num.partitions'"):
        load("num.partitons=3")


def test_types():
    c = load("log.cleaner.min.cleanable.ratio=0.25", "log.cleanup.policy= compact , delete ",
             "delete.topic.enable=FALSE", "log.retention.bytes=10000000000", "offsets.topic.replication.factor=1")
    assert c["log.cleaner.min.cleanable.ratio"] == 0.25
    assert c["log.cleanup.policy"] == ["compact", "delete"]
    assert c["delete.topic.enable"] is False
    assert c["log.retention.bytes"] == 10_000_000_000
    with pytest.raises(ConfigError, match="short"):
        load("offsets.topic.replication.factor=40000")


def test_accepted_without_effect_logs(caplog):
    caplog.set_level("INFO", logger="kbroker.config")
    c = load("num.network.threads=5", "num.io.threads=16", "socket.send.buffer.bytes=1",
             "num.recovery.threads.per.data.dir=4", "transaction.state.log.min.isr=1")
    assert c["num.io.threads"] == 16
    assert "num.io.threads=16" in caplog.text and "no effect" in caplog.text


# -- listeners -----------------------------------------------------------------------


def test_listeners_and_advertised():
    c = load("listeners=PLAINTEXT://127.0.0.1:9192,CONTROLLER://127.0.0.1:9193")
    assert c.listeners == [Listener("PLAINTEXT", "127.0.0.1", 9192), Listener("CONTROLLER", "127.0.0.1", 9193)]
    assert c.advertised_listeners == [Listener("PLAINTEXT", "127.0.0.1", 9192)]
    c = load("listeners=PLAINTEXT://0.0.0.0:9092", "advertised.listeners=PLAINTEXT://broker.example:9092")
    assert c.advertised_listeners == [Listener("PLAINTEXT", "broker.example", 9092)]
    c = load("listeners=PLAINTEXT://[::1]:9092")
    assert c.listeners == [Listener("PLAINTEXT", "::1", 9092)]
    assert str(c.listeners[0]) == "PLAINTEXT://[::1]:9092"


def test_custom_listener_names():
    c = load("listeners=INTERNAL://:9092,EXTERNAL://:9094",
             "listener.security.protocol.map=INTERNAL:PLAINTEXT,EXTERNAL:PLAINTEXT",
             "inter.broker.listener.name=INTERNAL")
    assert [l.name for l in c.listeners] == ["INTERNAL", "EXTERNAL"]
    assert c.inter_broker_listener_name == "INTERNAL"
    with pytest.raises(ConfigError, match="inter.broker.listener.name"):
        load("inter.broker.listener.name=NOPE")


def test_advertised_listeners_checks():
    with pytest.raises(ConfigError, match="wildcard"):
        load("listeners=PLAINTEXT://:9092", "advertised.listeners=PLAINTEXT://0.0.0.0:9092")
    with pytest.raises(ConfigError, match="not a listener"):
        load("advertised.listeners=OTHER://h:1", "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,OTHER:PLAINTEXT")


# -- DescribeConfigs view and dynamic updates ------------------------------------------


def test_items_for_describe_configs():
    c = load("log.retention.hours=24", "ssl.keystore.password=secret")
    rows = {r.name: r for r in c.items()}
    r = rows["log.retention.ms"]
    assert r.value == str(24 * 3_600_000) and r.source == STATIC_BROKER_CONFIG and not r.read_only
    assert ("log.retention.hours", "24", STATIC_BROKER_CONFIG) in r.synonyms
    assert ("log.retention.hours", "168", DEFAULT_CONFIG) in r.synonyms
    pw = rows["ssl.keystore.password"]
    assert pw.sensitive and pw.value is None
    assert rows["num.partitions"].read_only and rows["num.partitions"].value == "1"
    assert rows["auto.create.topics.enable"].value == "true"
    assert rows["process.roles"].value == "broker,controller"
    assert "secret" not in repr(c)


def test_dynamic_updates():
    c = load("message.max.bytes=2000")
    c2 = c.updated({"message.max.bytes": "3000"})
    assert c["message.max.bytes"] == 2000 and c2["message.max.bytes"] == 3000
    assert c2.source("message.max.bytes") == DYNAMIC_BROKER_CONFIG
    c3 = c2.updated({"message.max.bytes": None})
    assert c3["message.max.bytes"] == 2000
    with pytest.raises(ConfigError, match="read-only"):
        c.updated({"num.partitions": "3"})
    with pytest.raises(ConfigError, match="per broker"):
        c.updated({"listeners": "PLAINTEXT://:1"}, per_broker=False)
    with pytest.raises(ConfigError, match="at least"):
        c.updated({"min.insync.replicas": "0"})


def test_topic_level_names_are_refused_as_broker_settings_with_a_hint():
    with pytest.raises(ConfigError, match="topic-level config.*log.retention.ms"):
        load("retention.ms=1000")


# -- .properties parsing ----------------------------------------------------------------


def test_properties_syntax():
    text = r"""
# comment
! another comment
   # indented comment
a=1
b = 2
c:3
d 4
e\=x=5
f=multi \
    line \
    value
g=tab\there
h=\u0041\u00e9
i=
j
k=ends with backslash \\
l=x=y:z
    m = indented
"""
    props = parse_properties(text)
    assert props == {
        "a": "1", "b": "2", "c": "3", "d": "4", "e=x": "5",
        "f": "multi line value", "g": "tab\there", "h": "Aé", "i": "", "j": "",
        "k": "ends with backslash \\", "l": "x=y:z", "m": "indented",
    }


def test_properties_later_key_wins_and_crlf():
    assert parse_properties("a=1\r\na=2\r\n") == {"a": "2"}


def test_load_file(tmp_path):
    p = tmp_path / "server.properties"
    p.write_text(
        "# Kafka-style file\n"
        "process.roles=broker,controller\n"
        "node.id=1\n"
        "controller.quorum.voters=1@localhost:9093\n"
        "listeners=PLAINTEXT://:9092,CONTROLLER://:9093\n"
        "advertised.listeners=PLAINTEXT://localhost:9092\n"
        "controller.listener.names=CONTROLLER\n"
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT\n"
        "log.dirs=/tmp/kraft-combined-logs\n"
        "num.partitions=1\n"
        "offsets.topic.replication.factor=1\n"
        "transaction.state.log.replication.factor=1\n"
        "transaction.state.log.min.isr=1\n"
        "log.retention.hours=168\n"
        "log.segment.bytes=1073741824\n"
        "log.retention.check.interval.ms=300000\n"
        "num.network.threads=3\n"
        "num.io.threads=8\n"
        "socket.send.buffer.bytes=102400\n"
        "socket.receive.buffer.bytes=102400\n"
        "socket.request.max.bytes=104857600\n"
        "num.recovery.threads.per.data.dir=1\n"
    )
    c = Config.load(str(p), [])
    assert c["log.dirs"] == ["/tmp/kraft-combined-logs"]
    assert [l.port for l in c.listeners] == [9092, 9093]
    assert c.advertised_listeners == [Listener("PLAINTEXT", "localhost", 9092)]


def test_missing_file():
    with pytest.raises(ConfigError, match="cannot read config file"):
        Config.load("/nonexistent/server.properties", [])


def test_config_is_immutable_mapping():
    c = load()
    with pytest.raises(TypeError):
        c["num.partitions"] = 3  # type: ignore[index]
    assert "num.partitions" in c and "bogus" not in c
    dirs = c["log.dirs"]
    dirs.append("x")
    assert c["log.dirs"] == ["./kbroker-data"]


# -- node roles and the controller quorum (Kafka's KRaft cross-checks) -------------

CLUSTER_ID = "MkU3OEVBNTcwNTJENDM2Qg"


def test_the_default_is_the_embedded_single_node():
    c = load()
    assert c.embedded_quorum
    assert c.unsupported_cluster() is None
    assert c.quorum_voters == {} and c.quorum_bootstrap_servers == []
    assert c.controller_listeners == []  # the in-process quorum needs no socket


def test_types_of_the_quorum_settings():
    for name, type_ in [("controller.quorum.election.timeout.ms", "int"), ("controller.quorum.fetch.timeout.ms", "int"),
                        ("controller.quorum.election.backoff.max.ms", "int"),
                        ("controller.quorum.request.timeout.ms", "int"), ("controller.quorum.retry.backoff.ms", "int"),
                        ("broker.session.timeout.ms", "int"), ("broker.heartbeat.interval.ms", "int"),
                        ("initial.broker.registration.timeout.ms", "int"),
                        ("metadata.log.max.record.bytes.between.snapshots", "long"),
                        ("metadata.max.idle.interval.ms", "int"), ("controller.quorum.voters", "list"),
                        ("controller.quorum.bootstrap.servers", "list"), ("metadata.log.dir", "string"),
                        ("broker.rack", "string"), ("process.roles", "list")]:
        assert BROKER_CONFIGS[name].type == type_, name
        assert BROKER_CONFIGS[name].read_only, name


def test_quorum_settings_take_effect_now_that_clusters_run(caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="kbroker.config"):
        c = load("controller.quorum.election.timeout.ms=1500", "broker.rack=r1", "broker.session.timeout.ms=4000")
    assert c["controller.quorum.election.timeout.ms"] == 1500
    assert c["broker.rack"] == "r1"
    assert c["broker.session.timeout.ms"] == 4000
    assert "accepted for compatibility" not in caplog.text


def test_voters_parsed():
    c = load("controller.quorum.voters=1@localhost:9093,2@[::1]:9094,3@host-3.example:9095",
             "listeners=PLAINTEXT://:9092,CONTROLLER://:9093")
    assert c.quorum_voters == {1: ("localhost", 9093), 2: ("::1", 9094), 3: ("host-3.example", 9095)}
    assert [l.name for l in c.controller_listeners] == ["CONTROLLER"]
    assert not c.embedded_quorum


def test_bootstrap_servers_parsed():
    c = load("controller.quorum.bootstrap.servers=localhost:9093,[::1]:9094",
             "listeners=PLAINTEXT://:9092,CONTROLLER://:9093")
    assert c.quorum_bootstrap_servers == [("localhost", 9093), ("::1", 9094)]


COMBINED = ("listeners=PLAINTEXT://:9092,CONTROLLER://:9093",)
BROKER_ONLY = ("process.roles=broker", "node.id=4", "listeners=PLAINTEXT://:9092")
CONTROLLER_ONLY = ("process.roles=controller", "listeners=CONTROLLER://:9093")


@pytest.mark.parametrize("overrides, fragment", [
    # any node that names a quorum must name it fully, as Kafka requires
    (("process.roles=broker",), "controller.quorum.voters"),
    (("process.roles=controller", "listeners=CONTROLLER://:9093"), "controller.quorum.bootstrap.servers"),
    # a combined node: this node among the voters, and a controller listener
    (("controller.quorum.voters=2@h:9093", *COMBINED), "node.id 1 is not one of the voters {2}"),
    (("controller.quorum.voters=1@localhost:9093",), "no listener named in controller.listener.names"),
    (("controller.quorum.bootstrap.servers=localhost:9093",), "no listener named in controller.listener.names"),
    (("controller.quorum.voters=1@localhost:9093", "controller.listener.names=CONTROLLER,OTHER",
      "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,OTHER:PLAINTEXT", *COMBINED),
     "OTHER is not a listener"),
    # a broker-only node: not a voter, no controller listener of its own
    ((*BROKER_ONLY, "controller.quorum.voters=4@h:9093"), "must not be a voter"),
    ((*BROKER_ONLY[:2], "controller.quorum.voters=1@h:9093", "listeners=PLAINTEXT://:9092,CONTROLLER://:9093"),
     "CONTROLLER is a controller listener"),
    ((*BROKER_ONLY, "controller.quorum.voters=1@h:9093", "controller.listener.names="),
     "controller.listener.names: must name at least one"),
    ((*BROKER_ONLY, "controller.quorum.voters=1@h:9093", "listener.security.protocol.map=PLAINTEXT:PLAINTEXT"),
     "controller listener CONTROLLER"),
    # a controller-only node: only controller listeners, and a voter
    ((*CONTROLLER_ONLY, "controller.quorum.voters=2@h:9093"), "node.id 1 is not one of the voters"),
    (("process.roles=controller", "controller.quorum.voters=1@h:9093", "listeners=CONTROLLER://:9093,PLAINTEXT://:9092"),
     "PLAINTEXT is not a controller listener"),
    (("process.roles=controller", "controller.quorum.voters=1@h:9093", "listeners=PLAINTEXT://:9092"),
     "no listener named in controller.listener.names"),
])
def test_role_cross_checks(overrides, fragment):
    with pytest.raises(ConfigError) as e:
        load(*overrides)
    assert fragment in str(e.value)


@pytest.mark.parametrize("overrides", [
    # Kafka's own single-node files: static voters, or KIP-853's bootstrap servers naming itself
    ("controller.quorum.voters=1@localhost:9093", *COMBINED),
    ("controller.quorum.bootstrap.servers=localhost:9093", *COMBINED,
     "advertised.listeners=PLAINTEXT://localhost:9092,CONTROLLER://localhost:9093"),
    ("controller.quorum.bootstrap.servers=127.0.0.1:9093", "listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"),
    ("node.id=3", "controller.quorum.voters=3@localhost:9093", *COMBINED),
    # a combined node of a cluster with static voters
    ("controller.quorum.voters=1@localhost:9093,2@h2:9093,3@h3:9093", *COMBINED),
])
def test_single_combined_node_and_combined_cluster_nodes_are_supported(overrides):
    c = load(*overrides)
    assert not c.embedded_quorum
    assert c.unsupported_cluster() is None


@pytest.mark.parametrize("overrides", [
    ("process.roles=broker", "node.id=4", "controller.quorum.voters=1@h:9093"),
    (*CONTROLLER_ONLY, "controller.quorum.voters=1@h:9093"),
    (*CONTROLLER_ONLY, "controller.quorum.voters=1@h:9093,2@h:9094,3@h:9095"),
])
def test_broker_and_controller_nodes_of_a_static_quorum_are_supported(overrides):
    c = load(*overrides)
    assert c.unsupported_cluster() is None
    assert c.clustered


def test_only_the_single_combined_node_is_not_clustered():
    assert not load().clustered
    assert not load("node.id=3", "controller.quorum.voters=3@localhost:9093", *COMBINED).clustered
    assert load("controller.quorum.voters=1@localhost:9093,2@h2:9093", *COMBINED).clustered


@pytest.mark.parametrize("overrides, fragment", [
    (("process.roles=broker", "node.id=4", "controller.quorum.bootstrap.servers=h:9093"),
     "process.roles=broker with controller.quorum.bootstrap.servers:"),
    ((*CONTROLLER_ONLY, "controller.quorum.bootstrap.servers=h:9093"),
     "process.roles=controller with controller.quorum.bootstrap.servers:"),
    (("controller.quorum.bootstrap.servers=localhost:9093,h2:9093", *COMBINED),
     "controller.quorum.bootstrap.servers=h2:9093 is not this node:"),
    (("controller.quorum.bootstrap.servers=localhost:9094", *COMBINED),
     "controller.quorum.bootstrap.servers=localhost:9094 is not this node:"),
])
def test_every_other_shape_is_valid_but_not_supported_yet(overrides, fragment):
    c = load(*overrides)  # a valid Kafka node: no ConfigError
    problem = c.unsupported_cluster()
    assert problem.startswith(fragment), problem
    assert problem.endswith("not supported yet (issue 8 in progress; a static quorum, controller.quorum.voters, is)")


def test_cluster_id_setting():
    assert load(f"cluster.id={CLUSTER_ID}")["cluster.id"] == CLUSTER_ID
    for bad in ("MkU3OEVBNTcwNTJENDM2Q", "MkU3OEVBNTcwNTJENDM2Qg==", "MkU3OEVBNTcwNTJENDM2Q!"):
        with pytest.raises(ConfigError, match="not a Kafka cluster id"):
            load(f"cluster.id={bad}")


def test_three_kafka_node_files_load(tmp_path):
    """A 3-node cluster from Kafka-style files that differ only in ids, paths and ports."""
    voters = "1@localhost:19093,2@localhost:29093,3@localhost:39093"
    for n in (1, 2, 3):
        p = tmp_path / f"server-{n}.properties"
        p.write_text(
            "process.roles=broker,controller\n"
            f"node.id={n}\n"
            f"controller.quorum.voters={voters}\n"
            f"listeners=PLAINTEXT://:{n}9092,CONTROLLER://:{n}9093\n"
            f"advertised.listeners=PLAINTEXT://localhost:{n}9092,CONTROLLER://localhost:{n}9093\n"
            "inter.broker.listener.name=PLAINTEXT\n"
            "controller.listener.names=CONTROLLER\n"
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT\n"
            f"log.dirs={tmp_path}/data-{n}\n"
            "broker.rack=rack-" + str(n) + "\n"
        )
        c = Config.load(str(p), [])
        assert c.node_id == n and len(c.quorum_voters) == 3
        assert c.controller_listeners == [Listener("CONTROLLER", "", n * 10000 + 9093)]
        assert c.unsupported_cluster() is None


_STOCK_COMMON = (
    "num.network.threads=3\nnum.io.threads=8\nsocket.send.buffer.bytes=102400\n"
    "socket.receive.buffer.bytes=102400\nsocket.request.max.bytes=104857600\nnum.partitions=1\n"
    "num.recovery.threads.per.data.dir=1\noffsets.topic.replication.factor=1\n"
    "transaction.state.log.replication.factor=1\ntransaction.state.log.min.isr=1\n"
    "share.coordinator.state.topic.replication.factor=1\nshare.coordinator.state.topic.min.isr=1\n"
    "log.retention.hours=168\nlog.segment.bytes=1073741824\nlog.retention.check.interval.ms=300000\n"
)


@pytest.mark.parametrize("text, runs", [
    # Kafka 4's config/server.properties (combined, KIP-853 bootstrap server = itself)
    ("process.roles=broker,controller\nnode.id=1\ncontroller.quorum.bootstrap.servers=localhost:9093\n"
     "listeners=PLAINTEXT://:9092,CONTROLLER://:9093\ninter.broker.listener.name=PLAINTEXT\n"
     "advertised.listeners=PLAINTEXT://localhost:9092,CONTROLLER://localhost:9093\n"
     "controller.listener.names=CONTROLLER\nlistener.security.protocol.map=CONTROLLER:PLAINTEXT,"
     "PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL\n"
     "log.dirs=/tmp/kraft-combined-logs\n", True),
    # its broker.properties and controller.properties
    ("process.roles=broker\nnode.id=2\ncontroller.quorum.bootstrap.servers=localhost:9093\n"
     "listeners=PLAINTEXT://localhost:9092\ninter.broker.listener.name=PLAINTEXT\n"
     "advertised.listeners=PLAINTEXT://localhost:9092\ncontroller.listener.names=CONTROLLER\n"
     "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SSL:SSL,"
     "SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL\nlog.dirs=/tmp/kraft-broker-logs\n", False),
    ("process.roles=controller\nnode.id=1\ncontroller.quorum.bootstrap.servers=localhost:9093\n"
     "listeners=CONTROLLER://:9093\nadvertised.listeners=CONTROLLER://localhost:9093\n"
     "controller.listener.names=CONTROLLER\nlog.dirs=/tmp/kraft-controller-logs\n", False),
])
def test_kafkas_stock_kraft_files_load(tmp_path, text, runs):
    p = tmp_path / "server.properties"
    p.write_text(text + _STOCK_COMMON)
    c = Config.load(str(p), [])
    assert (c.unsupported_cluster() is None) == runs
