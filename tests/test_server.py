"""The broker over real sockets, in-process: pipeline order, bad input, long polls, restarts.

Each test starts a real broker (``kbroker.server.serve``) on an ephemeral
loopback port with its data in a temporary directory, and talks to it with
raw sockets and our own codec, so that it can send what no well-behaved
client would.
"""

from __future__ import annotations

import socket
import struct
import uuid

import pytest
import trio

from kbroker.config import Config
from kbroker.server import serve
from protocol import ApiKey, ErrorCode, FrameReader, decode_response, encode_request
from protocol.records import decode_records, encode_batch


def make_config(tmp_path, **overrides):
    ov = {"listeners": "PLAINTEXT://127.0.0.1:0", "log.dirs": str(tmp_path / "data"), **overrides}
    return Config.load(None, [f"{k}={v}" for k, v in ov.items()])


def free_ports(n: int) -> list[int]:
    """Ports free right now (for listeners whose advertised port must be known in advance)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Client:
    """A raw Kafka connection speaking our codec."""

    def __init__(self, stream):
        self.stream = stream
        self.frames = FrameReader(1 << 30)
        self.corr = 0

    @classmethod
    async def connect(cls, port):
        return cls(await trio.open_tcp_stream("127.0.0.1", port))

    async def send(self, api_key, version, body):
        self.corr += 1
        await self.stream.send_all(encode_request(api_key, version, body, correlation_id=self.corr))
        return self.corr

    async def receive_frame(self):
        while True:
            frame = self.frames.next_frame()
            if frame is not None:
                return frame
            data = await self.stream.receive_some(1 << 20)
            if not data:
                return None
            self.frames.feed(data)

    async def call(self, api_key, version, body):
        corr = await self.send(api_key, version, body)
        frame = await self.receive_frame()
        assert frame is not None, "connection closed"
        got, resp = decode_response(api_key, version, frame)
        assert got == corr
        return resp

    async def closed_by_peer(self, timeout=5.0) -> bool:
        with trio.move_on_after(timeout):
            try:
                while await self.stream.receive_some(65536):
                    pass
            except trio.BrokenResourceError:
                pass
            return True
        return False


@pytest.fixture
async def broker(tmp_path, nursery):
    return await start(nursery, make_config(tmp_path))


async def start(nursery, config):
    server = await nursery.start(serve, config)
    broker = server.broker
    broker.server = server
    broker.port = server.listening[0][1]
    return broker


async def create_topic(client, name, partitions=1, configs=()):
    resp = await client.call(
        ApiKey.CREATE_TOPICS,
        7,
        {
            "topics": [
                {
                    "name": name,
                    "num_partitions": partitions,
                    "replication_factor": 1,
                    "configs": [{"name": k, "value": v} for k, v in configs],
                }
            ],
            "timeout_ms": 1000,
        },
    )
    assert resp.topics[0].error_code == 0, resp
    return resp.topics[0].topic_id


def produce_body(topic, records, acks=1, partition=0):
    return {
        "acks": acks,
        "timeout_ms": 1000,
        "topic_data": [{"name": topic, "partition_data": [{"index": partition, "records": records}]}],
    }


async def test_metadata_advertises_the_port_actually_bound(broker):
    c = await Client.connect(broker.port)
    r = await c.call(ApiKey.METADATA, 12, {"topics": None})
    assert [(b.host, b.port) for b in r.brokers] == [("127.0.0.1", broker.port)]


async def test_drain_answers_what_was_read_then_closes(broker):
    c = await Client.connect(broker.port)
    await create_topic(c, "drain")
    fetch = {
        "max_wait_ms": 1000,
        "min_bytes": 1,
        "topics": [{"topic": "drain", "partitions": [{"partition": 0, "fetch_offset": 0, "partition_max_bytes": 1024}]}],
    }
    corr = await c.send(ApiKey.FETCH, 11, fetch)
    part = broker.partition("drain", 0)
    with trio.fail_after(10):
        while not part._waiters:  # the fetch is parked in its long poll
            await trio.sleep(0.01)
    with trio.fail_after(5):
        await broker.server.drain()
    got, resp = decode_response(ApiKey.FETCH, 11, await c.receive_frame())
    assert got == corr and resp.error_code == 0
    assert await c.closed_by_peer()
    with pytest.raises(OSError):
        await trio.open_tcp_stream("127.0.0.1", broker.port)


async def test_api_versions_lists_exactly_what_is_served(broker):
    c = await Client.connect(broker.port)
    resp = await c.call(ApiKey.API_VERSIONS, 3, {"client_software_name": "t", "client_software_version": "1"})
    keys = {k.api_key: (k.min_version, k.max_version) for k in resp.api_keys}
    assert resp.error_code == 0
    assert keys[ApiKey.PRODUCE] == (0, 13)  # advertised from 0 as Kafka 4.x does
    assert keys[ApiKey.API_VERSIONS] == (0, 4)
    assert 71 not in keys and 72 not in keys  # telemetry is not implemented


async def test_unknown_api_versions_version_gets_error_35_in_v0_layout(broker):
    s = await trio.open_tcp_stream("127.0.0.1", broker.port)
    client_id = b"raw"
    # ApiVersions v99: header v1 layout (api key, version, correlation id, client id).
    payload = struct.pack(">hhih", 18, 99, 42, len(client_id)) + client_id
    await s.send_all(struct.pack(">i", len(payload)) + payload)
    c = Client(s)
    frame = await c.receive_frame()
    corr, body = decode_response(18, 0, frame)
    assert corr == 42
    assert body.error_code == ErrorCode.UNSUPPORTED_VERSION
    assert [(k.api_key, k.min_version, k.max_version) for k in body.api_keys] == [(18, 0, 4)]


async def test_responses_come_back_in_request_order(broker):
    c = await Client.connect(broker.port)
    sent = []
    for i in range(40):
        if i % 2:
            sent.append((ApiKey.METADATA, 12, await c.send(ApiKey.METADATA, 12, {"topics": None})))
        else:
            sent.append((ApiKey.API_VERSIONS, 3, await c.send(ApiKey.API_VERSIONS, 3, {})))
    for key, version, corr in sent:
        got, _ = decode_response(key, version, await c.receive_frame())
        assert got == corr


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(struct.pack(">i", 0x7FFFFFF0) + b"\x00" * 10, id="2GB-length-prefix"),
        pytest.param(struct.pack(">i", -5), id="negative-length"),
        pytest.param(struct.pack(">i", 12) + struct.pack(">hhi", 999, 0, 1) + b"\x00\x00\x00\x00", id="unknown-api-key"),
        pytest.param(struct.pack(">i", 10) + struct.pack(">hhih", 3, 99, 1, 0), id="unsupported-metadata-version"),
        pytest.param(struct.pack(">i", 10) + struct.pack(">hhih", 0, 1, 1, 0), id="produce-v1-advertised-but-refused"),
        pytest.param(struct.pack(">i", 9) + b"\x00\x03\x00\x0c\x00\x00\x00\x01\xff", id="truncated-header"),
        pytest.param(struct.pack(">i", 16) + struct.pack(">hhih", 3, 12, 1, 0) + b"\xff" * 6, id="garbage-body"),
    ],
)
async def test_bad_frames_close_only_that_connection(broker, payload):
    bad = await trio.open_tcp_stream("127.0.0.1", broker.port)
    good = await Client.connect(broker.port)
    await bad.send_all(payload)
    assert await Client(bad).closed_by_peer()
    resp = await good.call(ApiKey.METADATA, 12, {"topics": None})
    assert resp.brokers[0].node_id == broker.node_id


async def test_truncated_frame_then_close_leaves_broker_serving(broker):
    s = await trio.open_tcp_stream("127.0.0.1", broker.port)
    await s.send_all(struct.pack(">i", 100) + b"\x00\x03\x00")
    await s.aclose()
    c = await Client.connect(broker.port)
    assert (await c.call(ApiKey.METADATA, 12, {"topics": None})).brokers


async def test_produce_fetch_round_trip_and_errors(broker):
    c = await Client.connect(broker.port)
    await create_topic(c, "t", 2)
    batch = encode_batch([(b"k", b"v1"), (b"k", b"v2")])
    r = await c.call(ApiKey.PRODUCE, 11, produce_body("t", batch))
    p = r.responses[0].partition_responses[0]
    assert (p.error_code, p.base_offset) == (0, 0)
    r = await c.call(ApiKey.PRODUCE, 11, produce_body("t", batch))
    assert r.responses[0].partition_responses[0].base_offset == 2

    corrupt = bytearray(batch)
    corrupt[-1] ^= 0xFF
    r = await c.call(ApiKey.PRODUCE, 11, produce_body("t", bytes(corrupt)))
    assert r.responses[0].partition_responses[0].error_code == ErrorCode.CORRUPT_MESSAGE
    r = await c.call(ApiKey.PRODUCE, 11, produce_body("nope", batch))
    assert r.responses[0].partition_responses[0].error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    r = await c.call(ApiKey.PRODUCE, 11, produce_body("t", batch, partition=7))
    assert r.responses[0].partition_responses[0].error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    future = encode_batch([(b"k", b"v", (), 10**13)])
    r = await c.call(ApiKey.PRODUCE, 11, produce_body("t", future))
    assert r.responses[0].partition_responses[0].error_code == ErrorCode.INVALID_TIMESTAMP
    big = encode_batch([(None, b"x" * 2_000_000)])
    r = await c.call(ApiKey.PRODUCE, 11, produce_body("t", big))
    assert r.responses[0].partition_responses[0].error_code == ErrorCode.MESSAGE_TOO_LARGE

    fetch = {
        "max_wait_ms": 0,
        "min_bytes": 1,
        "topics": [{"topic": "t", "partitions": [{"partition": 0, "fetch_offset": 0, "partition_max_bytes": 1 << 20}]}],
    }
    r = await c.call(ApiKey.FETCH, 11, fetch)
    part = r.responses[0].partitions[0]
    assert part.high_watermark == 4 and part.log_start_offset == 0
    offsets = [rec.offset for _h, recs in decode_records(part.records) for rec in recs]
    assert offsets == [0, 1, 2, 3]
    fetch["topics"][0]["partitions"][0]["fetch_offset"] = 99
    r = await c.call(ApiKey.FETCH, 11, fetch)
    assert r.responses[0].partitions[0].error_code == ErrorCode.OFFSET_OUT_OF_RANGE


async def test_compacted_topic_requires_keys(broker):
    c = await Client.connect(broker.port)
    await create_topic(c, "compacted", configs=[("cleanup.policy", "compact")])
    r = await c.call(ApiKey.PRODUCE, 11, produce_body("compacted", encode_batch([(None, b"v")])))
    assert r.responses[0].partition_responses[0].error_code == ErrorCode.INVALID_RECORD
    r = await c.call(ApiKey.PRODUCE, 11, produce_body("compacted", encode_batch([(b"k", b"v")])))
    assert r.responses[0].partition_responses[0].error_code == 0


async def test_acks_0_gets_no_answer_but_is_appended(broker):
    c = await Client.connect(broker.port)
    await create_topic(c, "quiet")
    await c.send(ApiKey.PRODUCE, 11, produce_body("quiet", encode_batch([(None, b"a")]), acks=0))
    resp = await c.call(ApiKey.LIST_OFFSETS, 7, {
        "replica_id": -1, "isolation_level": 0,
        "topics": [{"name": "quiet", "partitions": [{"partition_index": 0, "timestamp": -1}]}],
    })
    assert resp.topics[0].partitions[0].offset == 1


async def test_long_poll_fetch_is_woken_by_an_append(broker):
    c = await Client.connect(broker.port)
    await create_topic(c, "poll")
    fetch = {
        "max_wait_ms": 10_000,
        "min_bytes": 1,
        "topics": [{"topic": "poll", "partitions": [{"partition": 0, "fetch_offset": 0, "partition_max_bytes": 1 << 20}]}],
    }
    result = {}

    async def fetcher():
        f = await Client.connect(broker.port)
        start = trio.current_time()
        result["resp"] = await f.call(ApiKey.FETCH, 11, fetch)
        result["waited"] = trio.current_time() - start

    async with trio.open_nursery() as n:
        n.start_soon(fetcher)
        await trio.sleep(0.3)
        assert "resp" not in result  # still parked: nothing to read yet
        await c.call(ApiKey.PRODUCE, 11, produce_body("poll", encode_batch([(None, b"wake")])))
    assert result["waited"] < 5
    assert len(result["resp"].responses[0].partitions[0].records) > 0


async def test_idempotent_retry_gets_original_offset_and_gap_is_refused(broker):
    c = await Client.connect(broker.port)
    await create_topic(c, "idem")
    pid = (await c.call(ApiKey.INIT_PRODUCER_ID, 4, {"transactional_id": None, "transaction_timeout_ms": 1000})).producer_id
    assert pid >= 0

    def batch(seq):
        return encode_batch([(None, b"m%d" % seq)], producer_id=pid, producer_epoch=0, base_sequence=seq)

    offsets = []
    for seq in (0, 1, 1, 0):
        r = await c.call(ApiKey.PRODUCE, 11, produce_body("idem", batch(seq)))
        p = r.responses[0].partition_responses[0]
        assert p.error_code == 0
        offsets.append(p.base_offset)
    assert offsets == [0, 1, 1, 0]
    r = await c.call(ApiKey.PRODUCE, 11, produce_body("idem", batch(5)))
    assert r.responses[0].partition_responses[0].error_code == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    tx = await c.call(ApiKey.INIT_PRODUCER_ID, 4, {"transactional_id": "tx", "transaction_timeout_ms": 1000})
    assert tx.error_code != 0


async def test_topic_admin_errors(broker):
    c = await Client.connect(broker.port)
    await create_topic(c, "dup")
    body = {"topics": [], "timeout_ms": 1000}
    cases = {
        "dup": (1, 1, ErrorCode.TOPIC_ALREADY_EXISTS),
        "bad/name": (1, 1, ErrorCode.INVALID_TOPIC_EXCEPTION),
        "rf": (1, 3, ErrorCode.INVALID_REPLICATION_FACTOR),
        "zero": (0, 1, ErrorCode.INVALID_PARTITIONS),
    }
    body["topics"] = [{"name": n, "num_partitions": p, "replication_factor": rf} for n, (p, rf, _) in cases.items()]
    resp = await c.call(ApiKey.CREATE_TOPICS, 7, body)
    assert {t.name: t.error_code for t in resp.topics} == {n: e for n, (_, _, e) in cases.items()}
    resp = await c.call(ApiKey.CREATE_PARTITIONS, 3, {
        "topics": [{"name": "dup", "count": 1, "assignments": None}, {"name": "dup2", "count": 4, "assignments": None}],
        "timeout_ms": 1000, "validate_only": False})
    assert [r.error_code for r in resp.results] == [ErrorCode.INVALID_PARTITIONS, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION]


async def test_metadata_auto_creates_only_when_allowed(tmp_path, nursery):
    broker = await start(nursery, make_config(tmp_path, **{"auto.create.topics.enable": "false"}))
    c = await Client.connect(broker.port)
    r = await c.call(ApiKey.METADATA, 12, {"topics": [{"name": "auto"}], "allow_auto_topic_creation": True})
    assert r.topics[0].error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    r = await c.call(ApiKey.METADATA, 12, {"topics": [{"name": "in valid"}]})
    assert r.topics[0].error_code == ErrorCode.INVALID_TOPIC_EXCEPTION


async def test_metadata_auto_creation(broker):
    c = await Client.connect(broker.port)
    r = await c.call(ApiKey.METADATA, 12, {"topics": [{"name": "auto"}], "allow_auto_topic_creation": True})
    assert r.topics[0].error_code == 0 and len(r.topics[0].partitions) == 1
    r = await c.call(ApiKey.METADATA, 12, {"topics": [{"name": "noauto"}], "allow_auto_topic_creation": False})
    assert r.topics[0].error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


async def test_idle_connections_are_closed(tmp_path, nursery):
    broker = await start(nursery, make_config(tmp_path, **{"connections.max.idle.ms": "200"}))
    c = await Client.connect(broker.port)
    assert await c.closed_by_peer(timeout=3)


async def test_restart_keeps_topics_records_and_offsets(tmp_path):
    config = make_config(tmp_path)
    async with trio.open_nursery() as n:
        broker = await start(n, config)
        c = await Client.connect(broker.port)
        topic_id = await create_topic(c, "keep", 3)
        await c.call(ApiKey.PRODUCE, 11, produce_body("keep", encode_batch([(b"a", b"1"), (b"b", b"2")]), partition=1))
        await c.call(ApiKey.DELETE_TOPICS, 6, {"topics": [], "timeout_ms": 1000})
        n.cancel_scope.cancel()
    async with trio.open_nursery() as n:
        broker = await start(n, config)
        c = await Client.connect(broker.port)
        r = await c.call(ApiKey.METADATA, 12, {"topics": [{"name": "keep"}], "allow_auto_topic_creation": False})
        assert r.topics[0].topic_id == topic_id and len(r.topics[0].partitions) == 3
        r = await c.call(ApiKey.PRODUCE, 11, produce_body("keep", encode_batch([(b"c", b"3")]), partition=1))
        assert r.responses[0].partition_responses[0].base_offset == 2
        n.cancel_scope.cancel()


async def test_deleted_topic_stays_deleted_after_restart(tmp_path):
    config = make_config(tmp_path)
    async with trio.open_nursery() as n:
        broker = await start(n, config)
        c = await Client.connect(broker.port)
        await create_topic(c, "gone")
        r = await c.call(ApiKey.DELETE_TOPICS, 6, {"topics": [{"name": "gone", "topic_id": uuid.UUID(int=0)}], "timeout_ms": 1000})
        assert r.responses[0].error_code == 0
        r = await c.call(ApiKey.DELETE_TOPICS, 6, {"topics": [{"name": "gone", "topic_id": uuid.UUID(int=0)}], "timeout_ms": 1000})
        assert r.responses[0].error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        n.cancel_scope.cancel()
    async with trio.open_nursery() as n:
        broker = await start(n, config)
        assert "gone" not in broker.image.topics
        n.cancel_scope.cancel()


async def test_librdkafka_all_topics_metadata_with_trailing_bytes_is_answered(broker):
    # librdkafka 2.16's AdminClient.list_topics() sends Metadata v13 with three
    # bytes after the message; Kafka ignores them, and so must we.
    frame = bytes.fromhex("0003000d00000003000772646b61666b610000000000010000")
    s = await trio.open_tcp_stream("127.0.0.1", broker.port)
    await s.send_all(struct.pack(">i", len(frame)) + frame)
    corr, body = decode_response(ApiKey.METADATA, 13, await Client(s).receive_frame())
    assert corr == 3 and body.brokers[0].node_id == broker.node_id


async def test_transactional_ids_get_a_clear_non_retriable_error(broker):
    c = await Client.connect(broker.port)
    r = await c.call(ApiKey.FIND_COORDINATOR, 4, {"key_type": 1, "coordinator_keys": ["tx"]})
    entry = r.coordinators[0]
    assert entry.error_code == ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    assert not ErrorCode(entry.error_code).retriable
    assert "transactions" in entry.error_message


async def test_max_connections_refuses_the_extra_connection(tmp_path, nursery):
    broker = await start(nursery, make_config(tmp_path, **{"max.connections": "2"}))
    a = await Client.connect(broker.port)
    b = await Client.connect(broker.port)
    for c in (a, b):
        assert (await c.call(ApiKey.API_VERSIONS, 3, {})).error_code == 0
    extra = await Client.connect(broker.port)
    assert await extra.closed_by_peer(timeout=3)
    await a.stream.aclose()
    with trio.fail_after(3):
        while True:  # the freed slot is reusable once the broker has seen the close
            again = await Client.connect(broker.port)
            try:
                assert (await again.call(ApiKey.API_VERSIONS, 3, {})).error_code == 0
                break
            except (AssertionError, trio.BrokenResourceError):
                await trio.sleep(0.05)
