"""KIP-848 consumer groups: heartbeats, epochs, reconciliation, assignors, persistence."""

from __future__ import annotations

import uuid

from protocol import ErrorCode as E

from kbroker.group import assignors as A
from kbroker.group import records as R
from kbroker.group.consumer import ConsumerGroup, ConsumerHeartbeatRequest, MemberState, StaticTopics
from kbroker.group.state import GroupConfig, GroupCoordinatorState

from .harness import Harness

T1 = uuid.UUID(int=1)
T2 = uuid.UUID(int=2)
TOPICS = StaticTopics({"t1": (T1, 4), "t2": (T2, 2)})


def hb(h: Harness, member_id, epoch, *, topics=("t1",), owned=None, group="cg", instance=None, assignor=None,
       view=TOPICS, regex=None, rebalance=30000, full=None):
    if full is None:
        full = epoch == 0
    req = ConsumerHeartbeatRequest(
        group_id=group, member_id=member_id, member_epoch=epoch, instance_id=instance,
        rebalance_timeout_ms=rebalance if full else -1,
        subscribed_topic_names=list(topics) if (full and topics is not None) else None,
        subscribed_topic_regex=regex, server_assignor=assignor,
        owned=owned if owned is not None else ([] if epoch == 0 else None), client_id="c", client_host="/h",
    )
    res = h.sm.consumer_heartbeat(req, h.now, view)
    h._take(res)
    return res.response


def owned_of(resp):
    return [(tp["topic_id"], tp["partitions"]) for tp in resp["assignment"]["topic_partitions"]]


def parts(resp):
    return {(tp["topic_id"], p) for tp in resp["assignment"]["topic_partitions"] for p in tp["partitions"]}


def test_assignors_balance_and_stick():
    subs = {"a": {T1}, "b": {T1}}
    first = A.uniform(subs, {T1: 4}, {})
    assert sorted(len(x[T1]) for x in first.values()) == [2, 2]
    # A third member takes partitions only from the overloaded ones; the rest stay put.
    second = A.uniform({**subs, "c": {T1}}, {T1: 4}, first)
    moved = sum(1 for m in ("a", "b") for p in first[m][T1] if p not in second[m].get(T1, set()))
    assert moved == 1 and sorted(len(x.get(T1, ())) for x in second.values()) == [1, 1, 2]
    r = A.range_({"a": {T1, T2}, "b": {T1, T2}}, {T1: 4, T2: 3}, {})
    assert r["a"] == {T1: {0, 1}, T2: {0, 1}} and r["b"] == {T1: {2, 3}, T2: {2}}
    # Heterogeneous subscriptions: only subscribers get a topic.
    u = A.uniform({"a": {T1}, "b": {T2}}, {T1: 4, T2: 2}, {})
    assert u == {"a": {T1: {0, 1, 2, 3}}, "b": {T2: {0, 1}}}


def test_single_member_joins_and_gets_everything():
    h = Harness()
    r = hb(h, "m1", 0, topics=("t1", "t2"))
    assert r["error_code"] == 0 and r["member_epoch"] == 1 and r["heartbeat_interval_ms"] == 5000
    assert parts(r) == {(T1, p) for p in range(4)} | {(T2, p) for p in range(2)}
    g = h.group("cg")
    assert isinstance(g, ConsumerGroup) and g.state.value == "Stable"
    # A plain heartbeat: nothing changed, no assignment sent.
    r = hb(h, "m1", 1)
    assert r["member_epoch"] == 1 and r["assignment"] is None


def test_second_member_revocation_then_assignment():
    h = Harness()
    r1 = hb(h, "m1", 0)
    assert r1["member_epoch"] == 1 and len(parts(r1)) == 4
    r2 = hb(h, "m2", 0)
    # m2 is at epoch 2 but its partitions are still owned by m1: it gets nothing yet.
    assert r2["member_epoch"] == 2 and parts(r2) == set()
    g = h.group("cg")
    assert g.members["m2"].state is MemberState.UNRELEASED_PARTITIONS
    # m1 must first revoke two partitions and stays at epoch 1.
    r1 = hb(h, "m1", 1)
    kept = parts(r1)
    assert r1["member_epoch"] == 1 and len(kept) == 2
    assert g.members["m1"].state is MemberState.UNREVOKED_PARTITIONS
    # m1 reports it now owns only the kept ones: it moves to epoch 2.
    r1 = hb(h, "m1", 1, owned=owned_of(r1))
    assert r1["member_epoch"] == 2 and r1["assignment"] is None  # unchanged: not repeated
    assert g.members["m1"].state is MemberState.STABLE
    # m2 now receives the released partitions.
    r2 = hb(h, "m2", 2)
    assert parts(r2) == {(T1, p) for p in range(4)} - kept
    assert g.state.value == "Stable"


def test_leave_bumps_epoch_and_others_take_over():
    h = Harness()
    hb(h, "m1", 0)
    hb(h, "m2", 0)
    r1 = hb(h, "m1", 1)
    hb(h, "m1", 1, owned=owned_of(r1))
    hb(h, "m2", 2)
    r = hb(h, "m2", -1)
    assert r["member_epoch"] == -1 and "m2" not in h.group("cg").members
    r1 = hb(h, "m1", 2)
    assert r1["member_epoch"] == 3 and len(parts(r1)) == 4
    tomb = [rec.key_name for rec in h.records if rec.is_tombstone]
    assert {"ConsumerGroupCurrentMemberAssignmentKey", "ConsumerGroupTargetAssignmentMemberKey",
            "ConsumerGroupMemberMetadataKey"} <= set(tomb)


def test_epoch_checks():
    h = Harness()
    hb(h, "m1", 0)
    assert hb(h, "m1", 5)["error_code"] == E.FENCED_MEMBER_EPOCH
    assert hb(h, "ghost", 1)["error_code"] == E.UNKNOWN_MEMBER_ID
    assert hb(h, "m1", 0, topics=None)["error_code"] == E.INVALID_REQUEST
    assert hb(h, "m1", 0, assignor="sticky")["error_code"] == E.UNSUPPORTED_ASSIGNOR
    assert hb(h, "", 1)["error_code"] == E.INVALID_REQUEST
    assert hb(h, "m9", 2, group="nope")["error_code"] == E.GROUP_ID_NOT_FOUND
    # A lost response: the previous epoch with a subset of the assignment is accepted.
    hb(h, "m2", 0)
    r1 = hb(h, "m1", 1)
    kept = owned_of(r1)
    r1 = hb(h, "m1", 1, owned=kept)
    assert r1["member_epoch"] == 2
    assert hb(h, "m1", 1, owned=kept)["error_code"] == 0
    assert hb(h, "m1", 0 + 1, owned=[(T1, [0, 1, 2, 3])])["error_code"] == E.FENCED_MEMBER_EPOCH


def test_session_timeout_fences_member():
    h = Harness(consumer_session_timeout_ms=45000)
    hb(h, "m1", 0)
    hb(h, "m2", 0)
    for _ in range(5):
        h.advance(10_000)
        m1 = h.group("cg").members["m1"]  # a well-behaved client: reports what it was left with
        hb(h, "m1", m1.member_epoch, owned=[(t, sorted(ps)) for t, ps in m1.assigned.items()])
    assert "m2" not in h.group("cg").members
    assert len(h.group("cg").members["m1"].assigned[T1]) == 4


def test_rebalance_timeout_fences_member_that_does_not_revoke():
    h = Harness()
    hb(h, "m1", 0, rebalance=5000)
    hb(h, "m2", 0, rebalance=5000)
    hb(h, "m1", 1)  # told to revoke, never confirms
    h.advance(4999)
    hb(h, "m2", 2)
    assert "m1" in h.group("cg").members
    h.advance(1)
    assert "m1" not in h.group("cg").members
    r2 = hb(h, "m2", 2)
    assert r2["member_epoch"] == 3 and len(parts(r2)) == 4


def test_static_member_temporary_leave_and_rejoin():
    h = Harness()
    r = hb(h, "a1", 0, instance="pod-a")
    assert len(parts(r)) == 4
    assert hb(h, "a1", -2, instance="pod-a")["member_epoch"] == -2
    # Someone else cannot take the instance id while it is held... unless it was released (it was).
    r = hb(h, "a2", 0, instance="pod-a")
    assert r["error_code"] == 0 and len(parts(r)) == 4
    assert "a1" not in h.group("cg").members
    assert hb(h, "a3", 0, instance="pod-a")["error_code"] == E.UNRELEASED_INSTANCE_ID


def test_new_partitions_trigger_rebalance():
    h = Harness()
    hb(h, "m1", 0)
    grown = StaticTopics({"t1": (T1, 6), "t2": (T2, 2)})
    r = hb(h, "m1", 1, view=grown)
    assert r["member_epoch"] == 2 and len(parts(r)) == 6


def test_regex_subscription():
    h = Harness()
    r = hb(h, "m1", 0, topics=None, regex="t.*")
    assert len(parts(r)) == 6


def test_offset_commit_and_fetch_check_member_epoch():
    h = Harness()
    hb(h, "m1", 0)
    assert h.commit("cg", {("t1", 0): 5}, generation=1, member_id="m1") == {"t1": {0: 0}}
    assert h.commit("cg", {("t1", 0): 5}, generation=0, member_id="m1") == {"t1": {0: E.STALE_MEMBER_EPOCH}}
    assert h.commit("cg", {("t1", 0): 5}, generation=0, member_id="m1", version=8) == {"t1": {0: E.UNSUPPORTED_VERSION}}
    assert h.commit("cg", {("t1", 0): 5}, generation=1, member_id="x") == {"t1": {0: E.UNKNOWN_MEMBER_ID}}
    assert h.commit("cg", {("t1", 0): 5}) == {"t1": {0: E.UNKNOWN_MEMBER_ID}}
    assert h.sm.fetch_offsets("cg", None, h.now, member_id="m1", member_epoch=0)[0] == E.STALE_MEMBER_EPOCH
    assert h.sm.fetch_offsets("cg", None, h.now, member_id="m1", member_epoch=1)[1] == [("t1", [(0, 5, -1, "", 0)])]
    assert h.sm.fetch_offsets("cg", None, h.now)[0] == 0  # admin
    lst = h.sm.list_groups()
    assert lst == [{"group_id": "cg", "protocol_type": "consumer", "group_state": "Stable", "group_type": "consumer"}]
    assert h.sm.list_groups(types=["classic"]) == []
    assert h.sm.delete_groups(["cg"], h.now).response == [("cg", E.NON_EMPTY_GROUP)]


def test_describe():
    h = Harness()
    hb(h, "m1", 0)
    d = h.sm.consumer_group_describe("cg", TOPICS)
    assert d["group_state"] == "Stable" and d["group_epoch"] == 1 and d["assignor_name"] == "uniform"
    m = d["members"][0]
    assert m["assignment"]["topic_partitions"][0]["topic_name"] == "t1"
    assert h.sm.consumer_group_describe("nope", TOPICS) is None


def test_consumer_group_replay():
    h = Harness()
    hb(h, "m1", 0)
    hb(h, "m2", 0)
    r1 = hb(h, "m1", 1)
    hb(h, "m1", 1, owned=owned_of(r1))
    hb(h, "m2", 2)
    h.commit("cg", {("t1", 0): 3}, generation=2, member_id="m2")
    fresh = GroupCoordinatorState(h.sm.config)
    for rec in h.records:
        k, v = R.encode(rec)
        fresh.replay(*R.decode(k, v))
    fresh.on_loaded(h.now)
    g, orig = fresh.groups["cg"], h.group("cg")
    assert (g.group_epoch, g.assignment_epoch) == (orig.group_epoch, orig.assignment_epoch) == (2, 2)
    assert {m: (x.member_epoch, x.state, x.assigned) for m, x in g.members.items()} == \
           {m: (x.member_epoch, x.state, x.assigned) for m, x in orig.members.items()}
    assert g.target == orig.target and fresh.offsets == h.sm.offsets
    # After a restart the members carry on at their epochs; no new rebalance.
    req = ConsumerHeartbeatRequest("cg", "m1", 2)
    assert fresh.consumer_heartbeat(req, h.now, TOPICS).response["member_epoch"] == 2
    assert fresh.groups["cg"].group_epoch == 2


def test_classic_join_to_empty_consumer_group_converts():
    h = Harness()
    hb(h, "m1", 0)
    hb(h, "m1", -1)
    w = h.join("cg")
    assert w.response["error_code"] == E.MEMBER_ID_REQUIRED
    assert not isinstance(h.group("cg"), ConsumerGroup)
    # And the other way: a consumer heartbeat to a non-empty classic group is refused.
    h.join("cg", w.response["member_id"])
    assert hb(h, "m5", 0)["error_code"] == E.GROUP_ID_NOT_FOUND


def test_regex_subscribed_topics_count_for_offsets():
    h = Harness()
    hb(h, "m1", 0, topics=None, regex="t1")
    assert h.group("cg").is_subscribed_to_topic("t1")
    assert not h.group("cg").is_subscribed_to_topic("t2")


def test_join_converting_empty_consumer_group_persists_the_new_group():
    h = Harness()
    hb(h, "m1", 0)
    hb(h, "m1", -1)
    n = len(h.records)
    h.join("cg")
    new = h.records[n:]
    assert [r.key_name for r in new][-1] == "GroupMetadataKey" and new[-1].value is not None
    assert any(r.key_name == "ConsumerGroupMetadataKey" and r.is_tombstone for r in new)
