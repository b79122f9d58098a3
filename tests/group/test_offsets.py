"""Offsets: commit validation, fetch, delete, expiry, and rebuilding state from the records."""

from __future__ import annotations

from protocol import ErrorCode as E

from kbroker.group import records as R
from kbroker.group.classic import COMPLETING_REBALANCE, EMPTY, STABLE
from kbroker.group.placement import java_string_hashcode, kafka_abs, partition_for
from kbroker.group.state import GroupCoordinatorState

from .harness import Harness, subscription
from .test_classic import stable_group


def errors(resp):
    return {(t, p): e for t, parts in resp.items() for p, e in parts.items()}


def test_java_string_hashcode_matches_java():
    assert java_string_hashcode("") == 0
    assert java_string_hashcode("hello") == 99162322
    assert java_string_hashcode("Hello World") == -862545276
    assert java_string_hashcode("Aa") == java_string_hashcode("BB") == 2112
    assert java_string_hashcode("polygenelubricants") == -(1 << 31)
    # UTF-16 code units, a surrogate pair counting as two.
    assert java_string_hashcode("é") == 0xE9
    assert java_string_hashcode("\U0001F600") == 0xD83D * 31 + 0xDE00


def test_partition_placement_uses_kafka_abs():
    assert kafka_abs(-(1 << 31)) == 0
    assert kafka_abs(-5) == 5
    assert partition_for("polygenelubricants", 50) == 0
    assert partition_for("hello", 50) == 99162322 % 50
    assert partition_for("Hello World", 50) == 862545276 % 50


def test_simple_commit_creates_group_and_fetch_reads_back():
    h = Harness()
    resp = h.commit("simple", {("t", 0): 10, ("t", 1): (20, "meta")})
    assert errors(resp) == {("t", 0): 0, ("t", 1): 0}
    g = h.group("simple")
    assert g.state is EMPTY and g.is_simple
    err, topics = h.sm.fetch_offsets("simple", [("t", [0, 1, 2]), ("u", [0])], h.now)
    assert err == 0
    assert topics == [("t", [(0, 10, -1, "", 0), (1, 20, -1, "meta", 0), (2, -1, -1, "", 0)]),
                      ("u", [(0, -1, -1, "", 0)])]
    err, all_topics = h.sm.fetch_offsets("simple", None, h.now)
    assert all_topics == [("t", [(0, 10, -1, "", 0), (1, 20, -1, "meta", 0)])]
    assert h.sm.fetch_offsets("unknown", None, h.now) == (0, [])
    assert [r.key_name for r in h.records] == ["OffsetCommitKey", "OffsetCommitKey"]


def test_commit_validation_for_a_managed_group():
    h = Harness()
    a, b = stable_group(h, 2)
    gen = h.group().generation_id
    ok = {("t", 0): 0}
    assert errors(h.commit("g", {("t", 0): 5}, generation=gen, member_id=a)) == ok
    # No member id and no generation: only for groups without members.
    assert errors(h.commit("g", {("t", 0): 5})) == {("t", 0): E.UNKNOWN_MEMBER_ID}
    assert errors(h.commit("g", {("t", 0): 5}, generation=gen, member_id="ghost")) == {("t", 0): E.UNKNOWN_MEMBER_ID}
    assert errors(h.commit("g", {("t", 0): 5}, generation=gen - 1, member_id=a)) == {("t", 0): E.ILLEGAL_GENERATION}
    # A member that joined the generation but the group has not finished syncing.
    w = h.join_new("g", client="third")
    h.join("g", a)
    h.join("g", b)
    assert h.group().state is COMPLETING_REBALANCE
    new_gen = h.group().generation_id
    assert errors(h.commit("g", {("t", 0): 5}, generation=new_gen, member_id=a)) == {("t", 0): E.REBALANCE_IN_PROGRESS}


def test_commit_to_unknown_group_with_generation():
    h = Harness()
    assert errors(h.commit("x", {("t", 0): 1}, generation=3, member_id="m", version=8)) == {("t", 0): E.ILLEGAL_GENERATION}
    assert errors(h.commit("x", {("t", 0): 1}, generation=3, member_id="m", version=9)) == {("t", 0): E.GROUP_ID_NOT_FOUND}
    assert errors(h.commit("", {("t", 0): 1})) == {("t", 0): E.INVALID_GROUP_ID}


def test_commit_metadata_too_large():
    h = Harness(offset_metadata_max_bytes=10)
    resp = h.commit("s", {("t", 0): (1, "x" * 11), ("t", 1): (1, "x" * 10)})
    assert errors(resp) == {("t", 0): E.OFFSET_METADATA_TOO_LARGE, ("t", 1): 0}


def test_commit_keeps_member_session_alive():
    h = Harness()
    a, = stable_group(h, 1, session=6000)
    for _ in range(4):
        h.advance(4000)
        assert errors(h.commit("g", {("t", 0): 1}, generation=1, member_id=a)) == {("t", 0): 0}
    assert h.group().has_member(a)


def test_offset_delete():
    h = Harness()
    meta = subscription("subscribed")
    leader, = stable_group(h, 1, protocols=[("range", meta)])
    h.commit("g", {("subscribed", 0): 1, ("other", 0): 2}, generation=1, member_id=leader)
    res = h.sm.delete_offsets("g", [("subscribed", [0]), ("other", [0, 1])], h.now)
    h._take(res)
    err, answer = res.response
    assert err == 0
    assert answer == {"subscribed": {0: E.GROUP_SUBSCRIBED_TO_TOPIC}, "other": {0: 0, 1: 0}}
    assert [r.is_tombstone for r in res.records] == [True]
    assert h.sm.fetch_offsets("g", [("other", [0])], h.now)[1] == [("other", [(0, -1, -1, "", 0)])]
    assert h.sm.delete_offsets("nope", [("x", [0])], h.now).response[0] == E.GROUP_ID_NOT_FOUND


def test_offset_delete_refused_for_non_consumer_groups_with_members():
    h = Harness()
    stable_group(h, 1, protocol_type="connect", protocols=[("default", b"")])
    assert h.sm.delete_offsets("g", [("t", [0])], h.now).response[0] == E.NON_EMPTY_GROUP


def test_delete_groups():
    h = Harness()
    stable_group(h, 1)
    h.commit("simple", {("t", 0): 1, ("t", 1): 2})
    res = h.sm.delete_groups(["g", "simple", "missing"], h.now)
    assert res.response == [("g", E.NON_EMPTY_GROUP), ("simple", 0), ("missing", E.GROUP_ID_NOT_FOUND)]
    assert [(r.key_name, r.is_tombstone) for r in res.records] == [
        ("OffsetCommitKey", True), ("OffsetCommitKey", True), ("GroupMetadataKey", True)]
    assert "simple" not in h.sm.groups and "simple" not in h.sm.offsets


def test_offsets_of_empty_groups_expire_and_group_is_deleted():
    h = Harness(offsets_retention_ms=60_000, offsets_retention_check_interval_ms=10_000)
    h.commit("simple", {("t", 0): 1})
    a, = stable_group(h, 1)
    h.commit("g", {("t", 0): 7}, generation=1, member_id=a)
    for _ in range(14):
        h.advance(5000)
        assert h.heartbeat("g", 1, a) == 0
    # The simple group's offset is past retention; the consumer group subscribed to t keeps its offset.
    assert "simple" not in h.sm.groups
    assert h.sm.fetch_offsets("g", [("t", [0])], h.now)[1] == [("t", [(0, 7, -1, "", 0)])]
    tomb = [(r.key_name, r.key) for r in h.records if r.is_tombstone]
    assert ("OffsetCommitKey", {"group": "simple", "topic": "t", "partition": 0}) in tomb
    assert ("GroupMetadataKey", {"group": "simple"}) in tomb
    # Once the group is empty, retention counts from when it became empty.
    h.leave("g", a)
    h.advance(50_000)
    assert "g" in h.sm.groups
    h.advance(20_000)
    assert "g" not in h.sm.groups and "g" not in h.sm.offsets


def test_explicit_retention_time_expires_offset():
    h = Harness(offsets_retention_ms=10**9, offsets_retention_check_interval_ms=1000)
    h.commit("s", {("t", 0): 1}, retention=5000)
    h.commit("s", {("t", 1): 1})
    assert h.records[0].value_version == 1 and h.records[0].value["expire_timestamp"] == h.now + 5000
    assert h.records[1].value_version == 3
    h.advance(5000)
    assert h.sm.fetch_offsets("s", None, h.now)[1] == [("t", [(1, 1, -1, "", 0)])]


def _replayed(h: Harness) -> GroupCoordinatorState:
    fresh = GroupCoordinatorState(h.sm.config)
    for rec in h.records:
        key, value = R.encode(rec)
        name, key_body, value_body = R.decode(key, value)
        fresh.replay(name, key_body, value_body)
    fresh.on_loaded(h.now)
    return fresh


def test_replay_rebuilds_groups_and_offsets():
    h = Harness()
    a, b = stable_group(h, 2)
    h.commit("g", {("t", 0): 11, ("t", 1): (12, "m")}, generation=2, member_id=a)
    h.commit("simple", {("u", 3): 99})
    h.commit("gone", {("u", 0): 1})
    h._take(h.sm.delete_groups(["gone"], h.now))
    fresh = _replayed(h)
    assert set(fresh.groups) == {"g", "simple"}
    g, orig = fresh.groups["g"], h.group()
    assert g.state is STABLE and g.generation_id == orig.generation_id == 2
    assert g.leader_id == orig.leader_id and g.protocol_name == "range" and g.protocol_type == "consumer"
    assert list(g.members) == list(orig.members)
    assert {m: x.assignment for m, x in g.members.items()} == {m: x.assignment for m, x in orig.members.items()}
    assert g.subscribed_topics == {"t"}
    assert fresh.offsets == h.sm.offsets
    # The loaded members heartbeat on; silence still removes them.
    now = h.now
    assert fresh.heartbeat(__import__("kbroker.group.state", fromlist=["x"]).HeartbeatRequest("g", 2, a), now).response == {"error_code": 0}


def test_replay_of_an_emptied_group():
    h = Harness()
    a, = stable_group(h, 1)
    h.leave("g", a)
    fresh = _replayed(h)
    g = fresh.groups["g"]
    assert g.state is EMPTY and g.generation_id == 2 and not g.members


def test_subscription_parsing():
    assert R.subscription_topics(subscription("a", "b", version=3)) == {"a", "b"}
    assert R.subscription_topics(b"\x00") is None
    assert R.subscription_topics(b"\x00\x00\xff\xff\xff\xff") is None
