"""Metadata answers come from encoded bytes cached per image version; they must never be stale.

Every test warms the cache first (asks the same question once), then changes
the image in one way -- through a client where a client can (CreateTopics,
DeleteTopics, CreatePartitions), otherwise by submitting the KRaft records a
controller would (leader and ISR changes, broker registration, endpoints,
fencing) -- and checks the very next answer shows the change, in the layout
librdkafka asks for (v12) and kafka-python's (v1).  The per-request parts
(correlation id, requested subset and order, unknown names, auto-creation,
listener, authorized-operations flags) are checked against a warm cache too,
and the spliced answer is compared byte for byte with one encoded from plain
entries in every version.
"""

from __future__ import annotations

import uuid

import pytest
import trio

from kbroker.apis import metadata as md
from kbroker.metadata.image import MetadataImage
from protocol import ApiKey, ErrorCode, RequestHeader, encode_response
from test_server import free_ports, Client, create_topic, make_config, start

VERSIONS = (12, 1)


def all_topics(version: int) -> dict:
    return {"topics": None, "allow_auto_topic_creation": False} if version >= 4 else {"topics": None}


@pytest.fixture
async def broker(tmp_path, nursery):
    return await start(nursery, make_config(tmp_path))


@pytest.fixture
async def client(broker):
    return await Client.connect(broker.port)


async def topics(client, version=12) -> dict:
    r = await client.call(ApiKey.METADATA, version, all_topics(version))
    return {t.name: t for t in r.topics if not t.name.startswith("__")}


async def brokers(client, version=12) -> list:
    r = await client.call(ApiKey.METADATA, version, all_topics(version))
    return [(b.node_id, b.host, b.port, b.rack) for b in r.brokers]


def topic_id(broker, name) -> uuid.UUID:
    return broker.image.topics[name].topic_id


async def warm(client):
    for v in VERSIONS:
        await topics(client, v)
        await topics(client, v)


def test_every_apply_bumps_the_image_version():
    image = MetadataImage()
    seen = [image.version]

    class R:
        pass

    r = R()
    r.name, r.topic_id = "t", uuid.uuid4()
    image.apply("TopicRecord", r)
    seen.append(image.version)
    image.apply("SomeRecordThisImageIgnores", r)  # conservative: any record counts
    seen.append(image.version)
    assert seen == sorted(set(seen))


async def test_create_delete_and_new_partitions_show_at_once(broker, client):
    await warm(client)
    await create_topic(client, "a", partitions=2)
    for v in VERSIONS:
        assert len((await topics(client, v))["a"].partitions) == 2
    r = await client.call(ApiKey.CREATE_PARTITIONS, 3,
                          {"topics": [{"name": "a", "count": 5, "assignments": None}], "timeout_ms": 1000,
                           "validate_only": False})
    assert r.results[0].error_code == 0
    for v in VERSIONS:
        assert [p.partition_index for p in (await topics(client, v))["a"].partitions] == [0, 1, 2, 3, 4]
    r = await client.call(ApiKey.DELETE_TOPICS, 6, {"topics": [{"name": "a"}], "timeout_ms": 1000})
    assert r.responses[0].error_code == 0
    for v in VERSIONS:
        assert "a" not in await topics(client, v)
    # Same name again: a new topic id, and the old entry is not served.
    await create_topic(client, "a", partitions=1)
    got = await topics(client, 12)
    assert got["a"].topic_id == topic_id(broker, "a") and len(got["a"].partitions) == 1


async def test_leader_epoch_and_isr_changes_show_at_once(broker, client):
    await create_topic(client, "t", partitions=2)
    await warm(client)
    tid = topic_id(broker, "t")
    before = (await topics(client))["t"].partitions[1]
    await broker.submit([("PartitionChangeRecord", {"partition_id": 1, "topic_id": tid, "leader": -1})])
    for v in VERSIONS:
        p = (await topics(client, v))["t"].partitions[1]
        assert p.leader_id == -1 and p.error_code == ErrorCode.LEADER_NOT_AVAILABLE
    p = (await topics(client))["t"].partitions[1]
    assert p.leader_epoch == before.leader_epoch + 1
    await broker.submit([("PartitionChangeRecord", {"partition_id": 1, "topic_id": tid, "leader": broker.node_id,
                                                    "isr": [broker.node_id, 7], "replicas": [broker.node_id, 7]})])
    for v in VERSIONS:
        p = (await topics(client, v))["t"].partitions[1]
        assert p.leader_id == broker.node_id and p.error_code == 0
        assert p.isr_nodes == [broker.node_id, 7] and p.replica_nodes == [broker.node_id, 7]
    assert (await topics(client))["t"].partitions[1].leader_epoch == before.leader_epoch + 2
    # The other partition is untouched.
    assert (await topics(client))["t"].partitions[0].leader_id == broker.node_id


def _register(broker_id, port, *, rack=None, epoch=0, listener="PLAINTEXT"):
    return ("RegisterBrokerRecord", {
        "broker_id": broker_id, "incarnation_id": uuid.uuid4(), "broker_epoch": epoch,
        "end_points": [{"name": listener, "host": "10.0.0.2", "port": port, "security_protocol": 0}],
        "rack": rack, "fenced": False})


async def test_broker_registration_endpoints_and_fencing_show_at_once(broker, client):
    me = broker.node_id
    await warm(client)
    own = await brokers(client)
    assert [b[0] for b in own] == [me]
    await broker.submit([_register(me + 1, 19092, rack="r1")])
    for v in VERSIONS:
        got = await brokers(client, v)
        assert got[1] == (me + 1, "10.0.0.2", 19092, "r1" if v >= 1 else None)
    await broker.submit([_register(me + 1, 29092, rack="r2", epoch=1)])  # new endpoint and rack
    assert (await brokers(client))[1] == (me + 1, "10.0.0.2", 29092, "r2")
    await broker.submit([("FenceBrokerRecord", {"id": me + 1, "epoch": 1})])
    for v in VERSIONS:
        assert await brokers(client, v) == own
    await broker.submit([("UnfenceBrokerRecord", {"id": me + 1, "epoch": 1})])
    assert [b[0] for b in await brokers(client)] == [me, me + 1]
    # A broker without this listener is left out, as Kafka does.
    await broker.submit([_register(me + 2, 39092, listener="OTHER")])
    assert [b[0] for b in await brokers(client)] == [me, me + 1]
    await broker.submit([("UnregisterBrokerRecord", {"broker_id": me + 1, "broker_epoch": 1})])
    assert await brokers(client) == own


async def test_each_listener_gets_its_own_endpoints_from_a_warm_cache(tmp_path, nursery):
    a, b = free_ports(2)
    await start(nursery, make_config(tmp_path, **{
        "listeners": f"PLAINTEXT://127.0.0.1:{a},EXTERNAL://127.0.0.1:{b}",
        "advertised.listeners": f"PLAINTEXT://internal.example:{a},EXTERNAL://localhost:{b}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,EXTERNAL:PLAINTEXT"}))
    ca, cb = await Client.connect(a), await Client.connect(b)
    for _ in range(3):
        for c, want in ((ca, ("internal.example", a)), (cb, ("localhost", b))):
            for v in VERSIONS:
                r = await c.call(ApiKey.METADATA, v, all_topics(v))
                assert [(x.host, x.port) for x in r.brokers] == [want]


async def test_requested_subset_keeps_order_errors_and_ids(broker, client):
    for name in ("x", "y"):
        await create_topic(client, name)
    await warm(client)
    body = {"topics": [{"name": "y"}, {"name": "nope"}, {"name": "bad name!"}, {"name": "x"}, {"name": "y"}],
            "allow_auto_topic_creation": False}
    for _ in range(2):
        r = await client.call(ApiKey.METADATA, 12, body)
        assert [(t.name, t.error_code) for t in r.topics] == [
            ("y", 0), ("nope", ErrorCode.UNKNOWN_TOPIC_OR_PARTITION), ("bad name!", ErrorCode.INVALID_TOPIC_EXCEPTION),
            ("x", 0), ("y", 0)]
    r = await client.call(ApiKey.METADATA, 12, {"topics": [{"name": None, "topic_id": topic_id(broker, "x")},
                                                           {"name": None, "topic_id": uuid.UUID(int=5)}]})
    assert [(t.name, t.error_code) for t in r.topics] == [("x", 0), (None, ErrorCode.UNKNOWN_TOPIC_ID)]
    assert r.topics[1].topic_id == uuid.UUID(int=5)
    # v1 always allows auto-creation; an invalid name is still an error.
    r = await client.call(ApiKey.METADATA, 1, {"topics": [{"name": "x"}, {"name": "bad name!"}]})
    assert [(t.name, t.error_code) for t in r.topics] == [("x", 0), ("bad name!", ErrorCode.INVALID_TOPIC_EXCEPTION)]


async def test_auto_creation_through_a_warm_cache(broker, client):
    await warm(client)
    for v in (12, 1):
        name = f"auto-{v}"
        r = await client.call(ApiKey.METADATA, v, {"topics": [{"name": name}, {"name": "__internal"}]})
        assert [t.name for t in r.topics] == [name, "__internal"]
        assert r.topics[0].error_code == 0 and len(r.topics[0].partitions) == 1
        assert r.topics[1].error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        assert name in await topics(client, v)


async def test_correlation_ids_of_pipelined_requests(broker, client):
    await warm(client)
    ids = [await client.send(ApiKey.METADATA, v, all_topics(v)) for v in (12, 1, 9, 12, 1)]
    got = []
    for _ in ids:
        frame = await client.receive_frame()
        got.append(int.from_bytes(bytes(frame[:4]), "big"))
    assert got == ids


async def test_authorized_operations_flags(broker, client):
    await create_topic(client, "t")
    for _ in range(2):
        r = await client.call(ApiKey.METADATA, 8, {"topics": None, "include_topic_authorized_operations": True,
                                                   "include_cluster_authorized_operations": True})
        assert all(t.topic_authorized_operations == md.TOPIC_OPERATIONS_BITS for t in r.topics)
        assert r.cluster_authorized_operations == md.CLUSTER_OPERATIONS_BITS
        r = await client.call(ApiKey.METADATA, 8, {"topics": None})
        assert all(t.topic_authorized_operations == md.UNKNOWN_OPERATIONS for t in r.topics)
        assert r.cluster_authorized_operations == md.UNKNOWN_OPERATIONS
        r = await client.call(ApiKey.METADATA, 12, {"topics": [{"name": "t"}, {"name": "nope"}],
                                                    "include_topic_authorized_operations": True})
        assert [t.topic_authorized_operations for t in r.topics] == [md.TOPIC_OPERATIONS_BITS] * 2


@pytest.mark.parametrize("version", range(0, 14))
async def test_spliced_answer_is_byte_identical_to_plain_entries(broker, client, version):
    for name, n in (("p", 3), ("q", 1)):
        await create_topic(client, name, partitions=n)
    await broker.submit([_register(broker.node_id + 1, 19092, rack="r")])

    class Body(dict):
        __getattr__ = dict.get

    header = RequestHeader(int(ApiKey.METADATA), version, 42)
    for _ in range(2):  # cold, then warm
        got = await md.handle(broker, header, Body(topics=None))
        plain = dict(got, topics=[md.topic_entry(t) for t in broker.image.topics.values()],
                     brokers=md.broker_list(broker.image))
        assert encode_response(header, got) == encode_response(header, plain)


async def test_a_replaced_image_is_not_answered_from_the_old_ones_cache(broker, client):
    await create_topic(client, "old")
    await warm(client)
    fresh = MetadataImage()
    for name, b in broker.image.brokers.items():
        fresh.brokers[name] = b
    assert fresh.version == 0
    saved, broker.image = broker.image, fresh
    try:
        assert "old" not in await topics(client)
    finally:
        broker.image = saved
    assert "old" in await topics(client)


async def test_concurrent_clients_while_topics_change(broker, nursery):
    """Many readers while a writer creates topics: every answer is a consistent prefix."""
    writer = await Client.connect(broker.port)
    done = trio.Event()
    seen_max = []

    async def reader():
        c = await Client.connect(broker.port)
        last = 0
        while not done.is_set():
            names = [n for n in await topics(c) if n.startswith("c-")]
            assert names == [f"c-{i}" for i in range(len(names))]
            assert len(names) >= last
            last = len(names)
        seen_max.append(last)

    async with trio.open_nursery() as n:
        for _ in range(3):
            n.start_soon(reader)
        for i in range(15):
            await create_topic(writer, f"c-{i}")
        await trio.sleep(0.05)
        done.set()
    assert seen_max and max(seen_max) == 15


async def test_a_change_re_encodes_only_the_topic_it_touches(broker, client):
    """White box: entries of untouched topics survive other topics' changes (a storm stays cheap)."""
    for name in ("a", "b"):
        await create_topic(client, name, partitions=2)
    await warm(client)
    layout = (12, md.UNKNOWN_OPERATIONS)

    def entry(name):
        return md.encoded(broker.image).entries[layout][topic_id(broker, name)][2]

    a, b = entry("a"), entry("b")
    await create_topic(client, "c")
    await topics(client)
    assert entry("a") is a and entry("b") is b
    await broker.submit([("PartitionChangeRecord", {"partition_id": 0, "topic_id": topic_id(broker, "a"),
                                                    "leader": -1})])
    got = await topics(client)
    assert got["a"].partitions[0].leader_id == -1 and got["b"].partitions[0].leader_id == broker.node_id
    assert entry("a") is not a and entry("b") is b
    r = await client.call(ApiKey.DELETE_TOPICS, 6, {"topics": [{"name": "b"}], "timeout_ms": 1000})
    assert r.responses[0].error_code == 0
    assert "b" not in await topics(client)
    assert set(md.encoded(broker.image).entries[layout]) == set(broker.image.topics_by_id)


async def test_a_huge_request_answers_misses_plainly_and_hits_from_the_cache(broker, client):
    """Over FILL_LIMIT names, uncached entries are not encoded on the event loop (white box)."""
    for name in ("k1", "k2"):
        await create_topic(client, name, partitions=2)
    await client.call(ApiKey.METADATA, 12, {"topics": [{"name": "k1"}], "allow_auto_topic_creation": False})
    layout = (12, md.UNKNOWN_OPERATIONS)
    names = ["k1", "k2"] + [f"unknown-{i}" for i in range(md.FILL_LIMIT)]
    r = await client.call(ApiKey.METADATA, 12, {"topics": [{"name": n} for n in names],
                                                "allow_auto_topic_creation": False})
    assert [t.name for t in r.topics] == names
    assert [len(t.partitions) for t in r.topics[:2]] == [2, 2]
    assert {t.error_code for t in r.topics[2:]} == {ErrorCode.UNKNOWN_TOPIC_OR_PARTITION}
    cached = md.encoded(broker.image).entries[layout]
    assert topic_id(broker, "k1") in cached and topic_id(broker, "k2") not in cached
