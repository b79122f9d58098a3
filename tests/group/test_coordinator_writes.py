"""The coordinator answers "ok" only about what is in ``__consumer_offsets``.

A write to ``__consumer_offsets`` that fails (a full disk, an I/O error)
must leave no trace: the client gets the coordinator error Kafka maps that
failure to, OffsetFetch and the groups stay as they were, and a restart --
which rebuilds everything from the log -- agrees with what was answered.
Also here: ``group.max.size``/``group.consumer.max.size`` through the real
request path, and the timer task as a fault boundary.
"""

from __future__ import annotations

import errno
import uuid

import pytest
import trio

from protocol import ApiKey, ErrorCode

from kbroker.group import coordinator as coordinator_module
from kbroker.group.coordinator import OFFSETS_TOPIC
from kbroker.group.placement import partition_for
from kbroker.log.errors import KafkaStorageError

from .test_coordinator_shell import JOIN, _config, _join_and_sync, _run, call

E = ErrorCode


class DiskFull:
    """Makes the log under one ``__consumer_offsets`` partition fail its appends while on."""

    def __init__(self, broker, group_id: str, exc: BaseException):
        index = partition_for(group_id, len(broker.image.topics[OFFSETS_TOPIC].partitions))
        self.log = broker.partition(OFFSETS_TOPIC, index).log
        self.exc = exc
        self.on = False
        self.refused = 0
        real = self.log.append

        def append(*args, **kw):
            if self.on:
                self.refused += 1
                raise self.exc
            return real(*args, **kw)

        # An instance attribute shadows the method for this one log only.
        self.log.append = append


async def wait_until(predicate, timeout=5.0, what="condition"):
    """Poll a cheap in-memory predicate until it holds; fail after ``timeout`` seconds."""
    with trio.move_on_after(timeout):
        while not predicate():
            await trio.sleep(0.01)
        return
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def with_coordinator(b, group="g"):
    """A topic to commit offsets for, and the coordinator (and __consumer_offsets) in place."""
    await b.create_topics([{"name": "t", "num_partitions": 1}])
    await call(b, ApiKey.FIND_COORDINATOR, 3, {"key": group, "key_type": 0})


async def commit(b, group, offset, *, topic="t", partition=0, generation=-1, member=""):
    r = await call(b, ApiKey.OFFSET_COMMIT, 8, {
        "group_id": group, "generation_id_or_member_epoch": generation, "member_id": member,
        "topics": [{"name": topic, "partitions": [{"partition_index": partition, "committed_offset": offset,
                                                   "committed_metadata": ""}]}]})
    return r["topics"][0]["partitions"][0]["error_code"]


async def fetched(b, group, topic="t", partition=0):
    r = await call(b, ApiKey.OFFSET_FETCH, 8, {"groups": [{"group_id": group, "topics": [
        {"name": topic, "partition_indexes": [partition]}]}]})
    g = r["groups"][0]
    assert g["error_code"] == 0
    return g["topics"][0]["partitions"][0]["committed_offset"]


STORAGE_FAILURES = [
    pytest.param(OSError(errno.ENOSPC, "No space left on device"), id="ENOSPC"),
    pytest.param(KafkaStorageError("append failed: [Errno 28] No space left on device"), id="KafkaStorageError"),
]


@pytest.mark.parametrize("failure", STORAGE_FAILURES)
def test_offset_commits_that_cannot_be_written_are_refused_and_never_seen(tmp_path, failure):
    cfg = _config(tmp_path)

    async def first(b):
        await with_coordinator(b)
        assert await commit(b, "g", 5) == E.NONE
        disk = DiskFull(b, "g", failure)
        disk.on = True
        codes = {await commit(b, "g", 6 + i) for i in range(100)}
        # Kafka maps a storage error on the coordinator's partition to NOT_COORDINATOR.
        assert codes == {E.NOT_COORDINATOR}
        assert disk.refused == 100
        assert await fetched(b, "g") == 5
        # A first commit of a new simple group (one whose records land on the same partition)
        # creates no group either.
        n = len(b.image.topics[OFFSETS_TOPIC].partitions)
        other = next(f"s{i}" for i in range(1000) if partition_for(f"s{i}", n) == partition_for("g", n))
        assert await commit(b, other, 1) == E.NOT_COORDINATOR
        assert other not in b.groups.state.groups
        disk.on = False
        assert await commit(b, "g", 7) == E.NONE
        assert await fetched(b, "g") == 7
        disk.on = True
        assert await commit(b, "g", 8) == E.NOT_COORDINATOR

    _run(cfg, first)

    async def after_restart(b):
        # Replaying the log gives back exactly the last acknowledged commit.
        assert await fetched(b, "g") == 7

    _run(cfg, after_restart)


def test_a_partition_that_is_not_hosted_answers_coordinator_not_available(tmp_path):
    cfg = _config(tmp_path)

    async def body(b):
        await with_coordinator(b)
        real = b.partition
        b.partition = lambda topic, index: None if topic == OFFSETS_TOPIC else real(topic, index)
        try:
            assert await commit(b, "g", 1) == E.COORDINATOR_NOT_AVAILABLE
        finally:
            b.partition = real
        assert await fetched(b, "g") == -1

    _run(cfg, body)


def test_join_and_sync_change_nothing_when_the_group_record_cannot_be_written(tmp_path):
    cfg = _config(tmp_path)

    async def body(b):
        await with_coordinator(b)
        coord = b.groups
        disk = DiskFull(b, "g", OSError(errno.ENOSPC, "No space left on device"))

        # A new group is persisted by its first JoinGroup: no write, no group.
        disk.on = True
        r = await call(b, ApiKey.JOIN_GROUP, 9, {"group_id": "g", "member_id": "", **JOIN})
        assert r["error_code"] == E.NOT_COORDINATOR
        assert "g" not in coord.state.groups
        disk.on = False

        r = await call(b, ApiKey.JOIN_GROUP, 9, {"group_id": "g", "member_id": "", **JOIN})
        mid = r["member_id"]
        r = await call(b, ApiKey.JOIN_GROUP, 9, {"group_id": "g", "member_id": mid, **JOIN})
        assert r["error_code"] == 0 and r["generation_id"] == 1
        group = coord.state.groups["g"]
        assert group.state.value == "CompletingRebalance"

        # The leader's SyncGroup stores the assignment; when that fails the group stays where it was.
        disk.on = True
        sync = {"group_id": "g", "generation_id": 1, "member_id": mid,
                "assignments": [{"member_id": mid, "assignment": b"A"}]}
        s = await call(b, ApiKey.SYNC_GROUP, 5, sync)
        assert s["error_code"] == E.NOT_COORDINATOR and s["assignment"] == b""
        group = coord.state.groups["g"]
        assert group.state.value == "CompletingRebalance" and group.members[mid].assignment == b""
        # LeaveGroup writes the emptied group: refused, the member stays.
        lv = await call(b, ApiKey.LEAVE_GROUP, 4, {"group_id": "g", "members": [{"member_id": mid}]})
        assert lv["error_code"] == E.NOT_COORDINATOR
        assert mid in coord.state.groups["g"].members
        disk.on = False

        s = await call(b, ApiKey.SYNC_GROUP, 5, sync)
        assert s["error_code"] == 0 and s["assignment"] == b"A"
        assert coord.state.groups["g"].state.value == "Stable"

        # DeleteGroups of an emptied group: refused while the disk is full, done after.
        lv = await call(b, ApiKey.LEAVE_GROUP, 4, {"group_id": "g", "members": [{"member_id": mid}]})
        assert lv["error_code"] == 0
        assert await commit(b, "g", 3) == E.NONE
        disk.on = True
        d = await call(b, ApiKey.DELETE_GROUPS, 2, {"groups_names": ["g"]})
        assert d["results"][0]["error_code"] == E.NOT_COORDINATOR
        assert "g" in coord.state.groups and await fetched(b, "g") == 3
        od = await call(b, ApiKey.OFFSET_DELETE, 0, {"group_id": "g", "topics": [
            {"name": "t", "partitions": [{"partition_index": 0}]}]})
        assert od["error_code"] == E.NOT_COORDINATOR and await fetched(b, "g") == 3
        disk.on = False
        d = await call(b, ApiKey.DELETE_GROUPS, 2, {"groups_names": ["g"]})
        assert d["results"][0]["error_code"] == 0
        assert "g" not in coord.state.groups and await fetched(b, "g") == -1

    _run(cfg, body)


def test_consumer_group_heartbeat_changes_nothing_when_its_records_cannot_be_written(tmp_path):
    cfg = _config(tmp_path)

    async def body(b):
        await b.create_topics([{"name": "t", "num_partitions": 2}])
        await call(b, ApiKey.FIND_COORDINATOR, 4, {"key_type": 0, "coordinator_keys": ["cg"]})
        disk = DiskFull(b, "cg", OSError(errno.EIO, "Input/output error"))
        hb = {"group_id": "cg", "member_id": str(uuid.uuid4()), "member_epoch": 0, "instance_id": None,
              "rack_id": None, "rebalance_timeout_ms": 1000, "subscribed_topic_names": ["t"],
              "subscribed_topic_regex": None, "server_assignor": None, "topic_partitions": []}
        disk.on = True
        r = await call(b, ApiKey.CONSUMER_GROUP_HEARTBEAT, 1, hb)
        assert r["error_code"] == E.NOT_COORDINATOR
        assert "cg" not in b.groups.state.groups
        disk.on = False
        r = await call(b, ApiKey.CONSUMER_GROUP_HEARTBEAT, 1, hb)
        assert r["error_code"] == 0 and r["member_epoch"] == 1

    _run(cfg, body)


def test_session_expiry_that_cannot_be_written_is_undone_and_retried(tmp_path, monkeypatch):
    monkeypatch.setattr(coordinator_module, "TIMER_RETRY_MS", 100)
    cfg = _config(tmp_path)

    async def body(b):
        await with_coordinator(b)
        coord = b.groups
        disk = DiskFull(b, "g", OSError(errno.ENOSPC, "No space left on device"))
        mid = await _join_and_sync(b)
        disk.on = True
        # The member goes quiet; its expiry wants to write the emptied group and cannot.
        await wait_until(lambda: disk.refused >= 2, what="the expiry to be tried twice")
        group = coord.state.groups["g"]
        assert group.state.value == "Stable" and mid in group.members
        # Another client is still served meanwhile.
        assert await fetched(b, "other") == -1
        disk.on = False
        await wait_until(lambda: coord.state.groups["g"].state.value == "Empty", what="the retried expiry")
        assert not coord.state.groups["g"].members

    _run(cfg, body)


def test_a_timer_that_raises_is_logged_and_the_broker_keeps_serving(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(coordinator_module, "TIMER_RETRY_MS", 100)
    cfg = _config(tmp_path)

    async def body(b):
        await with_coordinator(b)
        coord = b.groups
        state = coord.state
        calls = []
        real = state._expire_heartbeat

        def broken(group_id, member_id):
            calls.append(member_id)
            if len(calls) <= 2:
                raise RuntimeError("boom in a session timer")
            return real(group_id, member_id)

        state._expire_heartbeat = broken
        await _join_and_sync(b)
        await wait_until(lambda: coord.state.groups["g"].state.value == "Empty", what="the expiry after two failures")
        assert len(calls) >= 3
        assert await commit(b, "g", 4) == E.NONE and await fetched(b, "g") == 4
        return calls

    _run(cfg, body)
    failures = [r for r in caplog.records if "boom in a session timer" in (r.exc_text or "")]
    assert len(failures) == 2 and all(r.exc_info for r in failures)


def test_group_max_size_refuses_the_extra_classic_member(tmp_path):
    cfg = _config(tmp_path, **{"group.max.size": 1})

    async def body(b):
        await with_coordinator(b)
        await _join_and_sync(b)
        # A full Stable group refuses a newcomer at once, before handing out a member id.
        r = await call(b, ApiKey.JOIN_GROUP, 9, {"group_id": "g", "member_id": "", **JOIN})
        assert r["error_code"] == E.GROUP_MAX_SIZE_REACHED and r["member_id"] == ""
        # Old clients (no KIP-394 round trip) are refused the same way.
        r = await call(b, ApiKey.JOIN_GROUP, 3, {"group_id": "g", "member_id": "", **JOIN})
        assert r["error_code"] == E.GROUP_MAX_SIZE_REACHED
        assert len(b.groups.state.groups["g"].members) == 1

    _run(cfg, body)


def test_group_consumer_max_size_refuses_the_extra_consumer_member(tmp_path):
    cfg = _config(tmp_path, **{"group.consumer.max.size": 1})

    async def body(b):
        await b.create_topics([{"name": "t", "num_partitions": 2}])
        await call(b, ApiKey.FIND_COORDINATOR, 4, {"key_type": 0, "coordinator_keys": ["cg"]})

        def hb(member):
            return {"group_id": "cg", "member_id": member, "member_epoch": 0, "instance_id": None,
                    "rack_id": None, "rebalance_timeout_ms": 1000, "subscribed_topic_names": ["t"],
                    "subscribed_topic_regex": None, "server_assignor": None, "topic_partitions": []}

        r = await call(b, ApiKey.CONSUMER_GROUP_HEARTBEAT, 1, hb(str(uuid.uuid4())))
        assert r["error_code"] == 0
        r = await call(b, ApiKey.CONSUMER_GROUP_HEARTBEAT, 1, hb(str(uuid.uuid4())))
        assert r["error_code"] == E.GROUP_MAX_SIZE_REACHED
        assert len(b.groups.state.groups["cg"].members) == 1

    _run(cfg, body)


def test_a_partition_that_cannot_be_loaded_refuses_its_groups_and_the_rest_is_served(tmp_path, monkeypatch):
    cfg = _config(tmp_path)
    n = cfg["offsets.topic.num.partitions"]
    bad = partition_for("g", n)
    good = next(f"h{i}" for i in range(1000) if partition_for(f"h{i}", n) != bad)

    async def first(b):
        await with_coordinator(b)
        assert await commit(b, "g", 1) == E.NONE
        assert await commit(b, good, 2) == E.NONE

    _run(cfg, first)
    real = coordinator_module.GroupCoordinator._replay_partition

    def replay(self, part):
        if part.index == bad:
            raise KafkaStorageError("read failed: [Errno 5] Input/output error")
        return real(self, part)

    monkeypatch.setattr(coordinator_module.GroupCoordinator, "_replay_partition", replay)

    async def second(b):
        assert b.groups.unloaded == {bad}
        assert await fetched(b, good) == 2
        r = await call(b, ApiKey.OFFSET_FETCH, 8, {"groups": [{"group_id": "g", "topics": None}]})
        assert r["groups"][0]["error_code"] == E.COORDINATOR_NOT_AVAILABLE
        assert await commit(b, "g", 3) == E.COORDINATOR_NOT_AVAILABLE
        r = await call(b, ApiKey.JOIN_GROUP, 9, {"group_id": "g", "member_id": "", **JOIN})
        assert r["error_code"] == E.COORDINATOR_NOT_AVAILABLE

    _run(cfg, second)
