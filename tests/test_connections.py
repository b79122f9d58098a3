"""Connections as fault boundaries, and what one connection may cost.

An in-process broker over real loopback sockets.  Every test here ends by
checking that a *fresh* connection is still answered: the original defect was
a reset peer whose exception group escaped the connection's nursery and
stopped the accept loop, so the next client was refused.
"""

from __future__ import annotations

import socket
import struct

import pytest
import trio

from protocol import ApiKey, ErrorCode, encode_request
from protocol.records import encode_batch

from test_server import free_ports, Client, create_topic, make_config, produce_body, start


@pytest.fixture
async def broker(tmp_path, nursery):
    return await start(nursery, make_config(tmp_path))


async def raw_socket(port: int, *, rcvbuf: int | None = None):
    """A trio socket (the broker runs in this thread: a blocking call here would freeze it)."""
    s = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    await s.connect(("127.0.0.1", port))
    return s


async def send_all(s, data) -> None:
    view = memoryview(data)
    while view:
        view = view[await s.send(view):]


def reset(s) -> None:
    """Close with an RST instead of a FIN (SO_LINGER 0), as a crashed client does."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


async def assert_serving(broker) -> None:
    """A new connection gets an answer: the broker survived."""
    with trio.fail_after(10):
        c = await Client.connect(broker.port)
        assert (await c.call(ApiKey.API_VERSIONS, 3, {})).error_code == 0
        await c.stream.aclose()


async def wait_until(predicate, timeout=10.0, what="condition"):
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)


def fetch_body(topic, offset=0, *, max_bytes=1 << 30, partition_max=1 << 30, wait_ms=0, partitions=(0,)):
    return {
        "max_wait_ms": wait_ms,
        "min_bytes": 1,
        "max_bytes": max_bytes,
        "topics": [
            {
                "topic": topic,
                "partitions": [
                    {"partition": p, "fetch_offset": offset, "partition_max_bytes": partition_max} for p in partitions
                ],
            }
        ],
    }


async def test_reset_before_reading_the_answer_leaves_the_broker_serving(broker):
    # The three-line reproduction of the original defect, twenty times over.
    for _ in range(20):
        s = await raw_socket(broker.port)
        await send_all(s, encode_request(ApiKey.API_VERSIONS, 0, {}, correlation_id=1))
        reset(s)
    await wait_until(lambda: not broker.server._connections)
    await assert_serving(broker)


@pytest.mark.parametrize("cut", [2, 6, "all"])
async def test_reset_or_half_close_mid_request(broker, cut):
    frame = encode_request(ApiKey.METADATA, 12, {"topics": None}, correlation_id=7)
    part = frame if cut == "all" else frame[:cut]
    for close in (reset, lambda s: s.shutdown(socket.SHUT_WR)):
        s = await raw_socket(broker.port)
        await send_all(s, part)
        close(s)
        await assert_serving(broker)
        s.close()


async def test_peer_gone_mid_response_epipe(broker):
    c = await Client.connect(broker.port)
    await create_topic(c, "big", configs=[("max.message.bytes", str(8 << 20))])
    r = await c.call(ApiKey.PRODUCE, 11, produce_body("big", encode_batch([(None, b"x" * (4 << 20))])))
    assert r.responses[0].partition_responses[0].error_code == 0
    for _ in range(5):
        s = await raw_socket(broker.port, rcvbuf=4096)
        await send_all(s, encode_request(ApiKey.FETCH, 11, fetch_body("big"), correlation_id=1))
        assert await s.recv(100)  # the answer has started; the rest cannot fit in the buffers
        reset(s)  # the broker's next send fails with EPIPE / ECONNRESET
    await wait_until(lambda: len(broker.server._connections) == 1)
    await assert_serving(broker)


async def test_peer_gone_during_a_long_poll(broker):
    c = await Client.connect(broker.port)
    await create_topic(c, "poll")
    part = broker.partition("poll", 0)
    s = await raw_socket(broker.port)
    await send_all(s, encode_request(ApiKey.FETCH, 11, fetch_body("poll", wait_ms=30000), correlation_id=1))
    await wait_until(lambda: part._waiters, what="the fetch to park")
    reset(s)
    # The poll ends when data arrives; the answer then goes to a dead socket.
    r = await c.call(ApiKey.PRODUCE, 11, produce_body("poll", encode_batch([(None, b"v")])))
    assert r.responses[0].partition_responses[0].error_code == 0
    await wait_until(lambda: len(broker.server._connections) == 1)
    await assert_serving(broker)


async def test_a_handler_bug_closes_only_its_connection(broker, monkeypatch):
    from kbroker import apis

    real = apis.HANDLERS[ApiKey.DESCRIBE_CLUSTER]

    async def broken(broker, header, body):
        async with trio.open_nursery() as n:  # the failure arrives as an exception group
            n.start_soon(trio.sleep, 1)
            raise RuntimeError("boom")

    monkeypatch.setitem(apis.HANDLERS, ApiKey.DESCRIBE_CLUSTER, real._replace(func=broken))
    c = await Client.connect(broker.port)
    await c.send(ApiKey.DESCRIBE_CLUSTER, 0, {})
    assert await c.closed_by_peer()
    await assert_serving(broker)


async def test_one_request_in_flight_per_connection(broker, monkeypatch):
    """A client that pipelines and never reads costs one request and one answer.

    200 Fetches of a 1 MB record are pipelined and no answer is read.  The
    broker may handle only as many as fit in the socket buffers (a few MB
    on loopback); reading ahead, it would have decoded and answered them all
    into memory.
    """
    from kbroker import apis

    c = await Client.connect(broker.port)
    await create_topic(c, "pipe", configs=[("max.message.bytes", str(2 << 20))])
    await c.call(ApiKey.PRODUCE, 11, produce_body("pipe", encode_batch([(None, b"y" * (1 << 20))])))
    real = apis.HANDLERS[ApiKey.FETCH]
    handled = []

    async def counting(broker, header, body):
        handled.append(header.correlation_id)
        return await real.func(broker, header, body)

    monkeypatch.setitem(apis.HANDLERS, ApiKey.FETCH, real._replace(func=counting))
    s = await raw_socket(broker.port, rcvbuf=4096)
    frame = encode_request(ApiKey.FETCH, 11, fetch_body("pipe"), correlation_id=1)
    await send_all(s, frame * 200)
    await wait_until(lambda: handled)
    # Wait until the broker is stuck on its full send buffer (the count stops
    # moving).  However slow the machine, the count can only be smaller.
    stable, last = 0, None
    with trio.fail_after(30):
        while stable < 50:
            await trio.sleep(0.01)
            stable, last = (stable + 1, last) if len(handled) == last else (0, len(handled))
    assert len(handled) < 20, f"{len(handled)} pipelined requests handled without their answers being read"
    s.close()
    await assert_serving(broker)


async def test_a_client_that_reads_no_answers_is_closed_when_idle(tmp_path, nursery):
    broker = await start(nursery, make_config(tmp_path, **{"connections.max.idle.ms": "500"}))
    c = await Client.connect(broker.port)
    await create_topic(c, "stuck", configs=[("max.message.bytes", str(8 << 20))])
    await c.call(ApiKey.PRODUCE, 11, produce_body("stuck", encode_batch([(None, b"z" * (4 << 20))])))
    s = await raw_socket(broker.port, rcvbuf=4096)
    await send_all(s, encode_request(ApiKey.FETCH, 11, fetch_body("stuck"), correlation_id=1))
    # The writer is stuck on a full send buffer; idleness still ends the connection.
    await wait_until(lambda: len(broker.server._connections) <= 1, timeout=15)
    s.close()
    await assert_serving(broker)


async def test_fetch_is_capped_by_fetch_max_bytes_and_repeats_are_answered_once(tmp_path, nursery):
    broker = await start(nursery, make_config(tmp_path, **{"fetch.max.bytes": "1048576"}))
    c = await Client.connect(broker.port)
    await create_topic(c, "cap", partitions=3)
    for p in range(3):
        for _ in range(4):
            r = await c.call(
                ApiKey.PRODUCE, 11, produce_body("cap", encode_batch([(None, b"w" * 300_000)]), partition=p)
            )
            assert r.responses[0].partition_responses[0].error_code == 0
    body = fetch_body("cap", partitions=(0, 1, 2, 0, 0, 1))
    r = await c.call(ApiKey.FETCH, 11, body)
    parts = r.responses[0].partitions
    assert [p.partition_index for p in parts] == [0, 1, 2]
    total = sum(len(p.records) for p in parts)
    # KIP-74: whole batches up to the cap (the first batch may exceed it, these do not).
    assert 0 < total <= 1048576


async def test_a_request_over_the_element_budget_is_refused_without_stalling(broker):
    from kbroker import server as srv

    names = [{"name": ""} for _ in range(srv.MAX_REQUEST_ELEMENTS + 1)]
    c = await Client.connect(broker.port)
    await c.send(ApiKey.METADATA, 9, {"topics": names})
    assert await c.closed_by_peer()
    await assert_serving(broker)


async def test_a_request_with_many_elements_is_decoded_and_answered_in_a_worker(broker, monkeypatch):
    from kbroker import offload
    from kbroker import server as srv

    ran = []
    real = offload.run

    async def counting(fn):
        ran.append(fn)
        return await real(fn)

    monkeypatch.setattr(offload, "run", counting)
    n = srv.INLINE_ELEMENTS * 3
    c = await Client.connect(broker.port)
    r = await c.call(
        ApiKey.METADATA, 12, {"topics": [{"name": f"absent-{i}"} for i in range(n)], "allow_auto_topic_creation": False}
    )
    assert [t.name for t in r.topics] == [f"absent-{i}" for i in range(n)]
    assert {t.error_code for t in r.topics} == {ErrorCode.UNKNOWN_TOPIC_OR_PARTITION}
    assert len(ran) == 2  # the decode and the encode
    # A small request stays on the trio thread.
    assert (await c.call(ApiKey.METADATA, 12, {"topics": [{"name": "absent-0"}]})).topics[0].name == "absent-0"
    assert len(ran) == 2


async def test_max_connections_per_ip_and_overrides(tmp_path, nursery):
    broker = await start(nursery, make_config(tmp_path, **{"max.connections.per.ip": "3"}))
    clients = [await Client.connect(broker.port) for _ in range(3)]
    for c in clients:
        assert (await c.call(ApiKey.API_VERSIONS, 3, {})).error_code == 0
    extra = await Client.connect(broker.port)
    assert await extra.closed_by_peer()
    await clients[0].stream.aclose()
    await wait_until(lambda: len(broker.server._connections) == 2)
    again = await Client.connect(broker.port)
    assert (await again.call(ApiKey.API_VERSIONS, 3, {})).error_code == 0

    # A dynamic per-host override (Kafka's "host:count" list) raises the limit at once.
    r = await again.call(
        ApiKey.INCREMENTAL_ALTER_CONFIGS,
        1,
        {
            "resources": [
                {
                    "resource_type": 4,
                    "resource_name": "",
                    "configs": [
                        {"name": "max.connections.per.ip.overrides", "config_operation": 0, "value": "127.0.0.1:5"}
                    ],
                }
            ],
            "validate_only": False,
        },
    )
    assert r.responses[0].error_code == 0, r
    more = [await Client.connect(broker.port) for _ in range(2)]
    for c in more:
        assert (await c.call(ApiKey.API_VERSIONS, 3, {})).error_code == 0


async def test_dynamic_max_connections_is_enforced(broker):
    c = await Client.connect(broker.port)
    r = await c.call(
        ApiKey.INCREMENTAL_ALTER_CONFIGS,
        1,
        {
            "resources": [
                {
                    "resource_type": 4,
                    "resource_name": "",
                    "configs": [{"name": "max.connections", "config_operation": 0, "value": "2"}],
                }
            ],
            "validate_only": False,
        },
    )
    assert r.responses[0].error_code == 0, r
    second = await Client.connect(broker.port)
    assert (await second.call(ApiKey.API_VERSIONS, 3, {})).error_code == 0
    third = await Client.connect(broker.port)
    assert await third.closed_by_peer()


async def test_metadata_answers_with_the_endpoints_of_the_requests_listener(tmp_path, nursery):
    a, b = free_ports(2)
    config = make_config(
        tmp_path,
        **{
            "listeners": f"PLAINTEXT://127.0.0.1:{a},EXTERNAL://127.0.0.1:{b}",
            "advertised.listeners": f"PLAINTEXT://internal.example:{a},EXTERNAL://localhost:{b}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,EXTERNAL:PLAINTEXT",
        },
    )
    await start(nursery, config)
    for port, want in ((a, ("internal.example", a)), (b, ("localhost", b))):
        c = await Client.connect(port)
        r = await c.call(ApiKey.METADATA, 12, {"topics": None})
        assert [(x.host, x.port) for x in r.brokers] == [want]
        r = await c.call(ApiKey.DESCRIBE_CLUSTER, 0, {})
        assert [(x.host, x.port) for x in r.brokers] == [want]
        r = await c.call(ApiKey.FIND_COORDINATOR, 4, {"key_type": 0, "coordinator_keys": ["g"]})
        assert (r.coordinators[0].host, r.coordinators[0].port) == want
