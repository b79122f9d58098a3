"""The trio shell: a real Broker, requests through the API dispatcher, restarts.

Checks what the pure tests cannot: records really land in ``__consumer_offsets``
(placed by Java's hashCode), parked JoinGroup requests are woken, the timer
task expires sessions, and a restarted broker rebuilds groups and offsets.
"""

from __future__ import annotations

import socket

import trio

from protocol import ApiKey, decode_request, encode_request
from protocol.records import decode_records

from kbroker.apis import dispatch
from kbroker.broker import Broker
from kbroker.config import Config
from kbroker.group.coordinator import OFFSETS_TOPIC
from kbroker.group.placement import partition_for

from .harness import subscription


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(tmp_path, **extra):
    overrides = [f"listeners=PLAINTEXT://127.0.0.1:{_free_port()}", f"log.dirs={tmp_path}",
                 "group.initial.rebalance.delay.ms=0", "offsets.topic.num.partitions=5",
                 "group.min.session.timeout.ms=100"]
    overrides += [f"{k}={v}" for k, v in extra.items()]
    return Config.load(None, overrides)


async def call(broker, api, version, body):
    header, decoded = decode_request(encode_request(int(api), version, body, correlation_id=1, client_id="t")[4:])
    return await dispatch(broker, header, decoded)


def _run(cfg, body_fn):
    """Run ``body_fn(broker)`` against a started broker (its coordinator is started with it)."""

    async def main():
        b = Broker(cfg)
        result = None
        try:
            async with trio.open_nursery() as nursery:
                await b.start(nursery)
                result = await body_fn(b)
                nursery.cancel_scope.cancel()
        finally:
            await b.close()
        return result

    return trio.run(main)


JOIN = dict(session_timeout_ms=300, rebalance_timeout_ms=1000, protocol_type="consumer",
            protocols=[{"name": "range", "metadata": subscription("t")}])


async def _join_and_sync(b, group="g"):
    r = await call(b, ApiKey.JOIN_GROUP, 9, {"group_id": group, "member_id": "", **JOIN})
    assert r["error_code"] == 79
    mid = r["member_id"]
    r = await call(b, ApiKey.JOIN_GROUP, 9, {"group_id": group, "member_id": mid, **JOIN})
    assert r["error_code"] == 0 and r["leader"] == mid and r["generation_id"] == 1
    s = await call(b, ApiKey.SYNC_GROUP, 5, {"group_id": group, "generation_id": 1, "member_id": mid,
                                             "assignments": [{"member_id": mid, "assignment": b"A"}]})
    assert s["error_code"] == 0 and s["assignment"] == b"A"
    return mid


def test_groups_and_offsets_survive_a_restart(tmp_path):
    cfg = _config(tmp_path)

    async def first(b):
        await b.create_topics([{"name": "t", "num_partitions": 2}])
        fc = await call(b, ApiKey.FIND_COORDINATOR, 4, {"key_type": 0, "coordinator_keys": ["g"]})
        assert fc["coordinators"][0]["error_code"] == 0 and fc["coordinators"][0]["node_id"] == b.node_id
        assert len(b.image.topics[OFFSETS_TOPIC].partitions) == 5
        mid = await _join_and_sync(b)
        r = await call(b, ApiKey.OFFSET_COMMIT, 8, {
            "group_id": "g", "generation_id_or_member_epoch": 1, "member_id": mid,
            "topics": [{"name": "t", "partitions": [{"partition_index": 1, "committed_offset": 42,
                                                     "committed_metadata": "m"}]}]})
        assert r["topics"][0]["partitions"][0]["error_code"] == 0
        # The records sit in the partition Kafka would pick for "g".
        part = b.partition(OFFSETS_TOPIC, partition_for("g", 5))
        data = part.log.read(part.log_start_offset, 1 << 20).records
        keys = [r.key for _, recs in decode_records(data) for r in recs]
        assert len(keys) >= 3
        return mid

    mid = _run(cfg, first)

    async def second(b):
        coord = b.groups
        g = coord.state.groups["g"]
        assert g.state.value == "Stable" and g.generation_id == 1 and list(g.members) == [mid]
        r = await call(b, ApiKey.OFFSET_FETCH, 8, {"groups": [{"group_id": "g", "topics": None}]})
        assert [(t["name"], [(p["partition_index"], p["committed_offset"], p["metadata"]) for p in t["partitions"]])
                for t in r["groups"][0]["topics"]] == [("t", [(1, 42, "m")])]
        # The member carries on in its generation.
        hb = await call(b, ApiKey.HEARTBEAT, 4, {"group_id": "g", "generation_id": 1, "member_id": mid})
        assert hb["error_code"] == 0
        # ...and its session still expires if it goes quiet, via the timer task.
        await trio.sleep(0.6)
        assert coord.state.groups["g"].state.value == "Empty"
        d = await call(b, ApiKey.DESCRIBE_GROUPS, 5, {"groups": ["g"], "include_authorized_operations": False})
        assert d["groups"][0]["group_state"] == "Empty"

    _run(cfg, second)


def test_parked_join_is_released_when_the_rebalance_completes(tmp_path):
    cfg = _config(tmp_path)

    async def body(b):
        await b.create_topics([{"name": "t", "num_partitions": 2}])
        await call(b, ApiKey.FIND_COORDINATOR, 3, {"key": "g", "key_type": 0})
        first = await _join_and_sync(b)
        results = {}

        async def second_member():
            r = await call(b, ApiKey.JOIN_GROUP, 3, {"group_id": "g", "member_id": "", **JOIN})
            results["second"] = r

        async with trio.open_nursery() as n:
            n.start_soon(second_member)
            await trio.sleep(0.05)
            assert "second" not in results  # parked until the first member rejoins
            hb = await call(b, ApiKey.HEARTBEAT, 4, {"group_id": "g", "generation_id": 1, "member_id": first})
            assert hb["error_code"] == 27  # REBALANCE_IN_PROGRESS
            r = await call(b, ApiKey.JOIN_GROUP, 9, {"group_id": "g", "member_id": first, **JOIN})
            assert r["generation_id"] == 2 and len(r["members"]) == 2
        assert results["second"]["generation_id"] == 2 and results["second"]["members"] == []

    _run(cfg, body)
