"""The classic group state machine, driven step by step with a fake clock."""

from __future__ import annotations

from protocol import ErrorCode as E

from kbroker.group.classic import COMPLETING_REBALANCE, EMPTY, PREPARING_REBALANCE, STABLE
from kbroker.group.state import LeaveMember

from .harness import Harness, subscription


def stable_group(h: Harness, n: int, group="g", **kw):
    """n dynamic members through join and sync; returns their member ids (leader first)."""
    waiters = []
    for i in range(n):
        waiters.append(h.join_new(group, client=f"c{i}", **kw))
        if i == 0:
            h.advance(0)  # the initial rebalance (delay 0) completes with the first member
            assert waiters[0].response["error_code"] == 0
            gen = waiters[0].response["generation_id"]
            h.sync(group, gen, waiters[0].response["member_id"])
        else:
            # Everyone else must rejoin for the new member to get in.
            for w in waiters[:-1]:
                mid = w.response["member_id"]
                assert h.heartbeat(group, h.group(group).generation_id, mid) == E.REBALANCE_IN_PROGRESS
                h.join(group, mid, client="x", **kw)
    g = h.group(group)
    assert g.state is COMPLETING_REBALANCE or g.state is STABLE
    ids = [w.response["member_id"] for w in waiters]
    leader = g.leader_id
    if g.state is COMPLETING_REBALANCE:
        for mid in ids:
            if mid != leader:
                h.sync(group, g.generation_id, mid)
        h.sync(group, g.generation_id, leader, {mid: mid.encode() for mid in ids})
    assert g.state is STABLE
    return [leader] + [m for m in ids if m != leader]


def test_member_id_required_then_join_and_sync():
    h = Harness()
    first = h.join("g", client="app")
    assert first.response["error_code"] == E.MEMBER_ID_REQUIRED
    mid = first.response["member_id"]
    assert mid == "app-uuid1"
    g = h.group()
    assert g.state is EMPTY and mid in g.pending_members
    # The new group is persisted at once, as an empty group.
    assert h.records[-1].key_name == "GroupMetadataKey" and h.records[-1].value["members"] == []

    w = h.join("g", mid, client="app")
    assert w.response is None and g.state is PREPARING_REBALANCE
    h.advance(0)  # initial delay 0: completes on the next timer pass
    r = w.response
    assert r["error_code"] == 0 and r["generation_id"] == 1 and r["leader"] == mid
    assert r["protocol_type"] == "consumer" and r["protocol_name"] == "range"
    assert [m["member_id"] for m in r["members"]] == [mid]
    assert g.state is COMPLETING_REBALANCE

    s = h.sync("g", 1, mid, {mid: b"assignment"})
    assert s.response == {"error_code": 0, "protocol_type": "consumer", "protocol_name": "range",
                          "assignment": b"assignment"}
    assert g.state is STABLE
    rec = h.records[-1]
    assert rec.key_name == "GroupMetadataKey" and rec.value["generation"] == 1
    assert rec.value["members"][0]["assignment"] == b"assignment"
    assert h.heartbeat("g", 1, mid) == E.NONE


def test_old_join_versions_do_not_require_member_id():
    h = Harness()
    w = h.join("g", version=3, client="old")
    assert w.response is None
    h.advance(0)
    assert w.response["error_code"] == 0 and w.response["member_id"] == "old-uuid1"


def test_join_unknown_group_with_member_id():
    h = Harness()
    w = h.join("nope", "someone")
    assert w.response["error_code"] == E.UNKNOWN_MEMBER_ID


def test_invalid_group_id_and_session_timeout():
    h = Harness(min_session_timeout_ms=6000, max_session_timeout_ms=300000)
    assert h.join("", session=10000).response["error_code"] == E.INVALID_GROUP_ID
    assert h.join("g", session=5999).response["error_code"] == E.INVALID_SESSION_TIMEOUT
    assert h.join("g", session=300001).response["error_code"] == E.INVALID_SESSION_TIMEOUT
    assert h.join("g", session=6000).response["error_code"] == E.MEMBER_ID_REQUIRED


def test_inconsistent_group_protocol():
    h = Harness()
    assert h.join("g", protocol_type="").response["error_code"] == E.INCONSISTENT_GROUP_PROTOCOL
    assert h.join("g2", protocols=[]).response["error_code"] == E.INCONSISTENT_GROUP_PROTOCOL
    stable_group(h, 1, "g3")
    # Another protocol type, or no protocol in common with the members.
    assert h.join("g3", protocol_type="connect").response["error_code"] == E.INCONSISTENT_GROUP_PROTOCOL
    w = h.join("g3", protocols=[("roundrobin", b"")])
    assert w.response["error_code"] == E.INCONSISTENT_GROUP_PROTOCOL


def test_protocol_selection_by_vote():
    h = Harness(initial_rebalance_delay_ms=100)
    a = h.join("g", version=3, client="a", protocols=[("range", b"a"), ("roundrobin", b"a")])
    b = h.join("g", version=3, client="b", protocols=[("roundrobin", b"b"), ("range", b"b")])
    c = h.join("g", version=3, client="c", protocols=[("roundrobin", b"c"), ("sticky", b"c"), ("range", b"c")])
    h.advance(10_000)
    assert a.response["protocol_name"] == "roundrobin"
    leader = a.response["leader"]
    assert leader == a.response["member_id"]
    metas = {m["member_id"]: m["metadata"] for m in a.response["members"]}
    assert metas == {a.response["member_id"]: b"a", b.response["member_id"]: b"b", c.response["member_id"]: b"c"}
    assert b.response["members"] == [] and c.response["members"] == []


def test_initial_rebalance_delay_extends_for_new_members():
    h = Harness(initial_rebalance_delay_ms=3000)
    w1 = h.join("g", version=3, client="a", rebalance=10_000)
    h.advance(1000)
    w2 = h.join("g", version=3, client="b", rebalance=10_000)
    h.advance(1999)
    assert w1.response is None  # t=2999
    h.advance(1)  # t=3000: a member joined during the delay, so it is extended
    assert w1.response is None
    h.advance(2999)  # t=5999
    assert w1.response is None
    h.advance(1)  # t=6000: nobody new, done
    assert w1.response["generation_id"] == 1 and w2.response["generation_id"] == 1
    assert len(w1.response["members"]) == 2


def test_initial_rebalance_delay_is_bounded_by_rebalance_timeout():
    h = Harness(initial_rebalance_delay_ms=3000)
    w = h.join("g", version=3, client="a", rebalance=4000)
    for _ in range(10):
        h.advance(500)
        h.join("g", version=3, client="more", rebalance=4000)
        if w.response is not None:
            break
    # Delay 3000, then at most the 1000 ms left of the rebalance timeout.
    assert w.response is not None and w.response["error_code"] == 0
    assert h.now <= 1_000_000 + 4500


def test_new_member_triggers_rebalance_and_completes_when_all_rejoined():
    h = Harness()
    leader, = stable_group(h, 1)
    g = h.group()
    w2 = h.join_new("g", client="second")
    assert g.state is PREPARING_REBALANCE and w2.response is None
    assert h.heartbeat("g", 1, leader) == E.REBALANCE_IN_PROGRESS
    w1 = h.join("g", leader)
    # Not the initial rebalance: completes as soon as every member rejoined, no timer needed.
    assert w1.response["generation_id"] == 2 and w2.response["generation_id"] == 2
    assert w1.response["leader"] == leader and len(w1.response["members"]) == 2
    assert w2.response["members"] == []


def test_rebalance_timeout_removes_members_that_do_not_rejoin():
    h = Harness()
    ids = stable_group(h, 2, rebalance=5000)
    leader, slow = ids
    w3 = h.join_new("g", client="third", rebalance=5000)
    w1 = h.join("g", leader, rebalance=5000)
    h.advance(4999)
    assert w1.response is None and h.group().has_member(slow)
    h.advance(1)
    assert w1.response["error_code"] == 0 and w1.response["generation_id"] == 3
    assert {m["member_id"] for m in w1.response["members"]} == {leader, w3.response["member_id"]}
    assert not h.group().has_member(slow)
    assert h.heartbeat("g", 3, slow) == E.UNKNOWN_MEMBER_ID


def test_leader_that_does_not_rejoin_is_replaced():
    h = Harness()
    leader, follower = stable_group(h, 2, rebalance=5000)
    w = h.join("g", follower, client="c1", protocols=[("range", subscription("t", "u"))], rebalance=5000)
    h.advance(5000)
    assert w.response["leader"] == follower and len(w.response["members"]) == 1


def test_session_timeout_removes_member_and_rebalances():
    h = Harness()
    a, b = stable_group(h, 2, session=6000)
    h.advance(3000)
    assert h.heartbeat("g", 2, a) == E.NONE
    h.advance(2999)
    assert h.heartbeat("g", 2, a) == E.NONE and h.group().has_member(b)
    h.advance(1)
    # b has been silent for its whole 6 s session: gone, and a is told to rejoin.
    assert not h.group().has_member(b)
    assert h.group().state is PREPARING_REBALANCE
    assert h.heartbeat("g", 2, a) == E.REBALANCE_IN_PROGRESS
    w = h.join("g", a, session=6000)
    assert w.response["generation_id"] == 3 and [m["member_id"] for m in w.response["members"]] == [a]


def test_pending_member_expires_after_session_timeout():
    h = Harness()
    first = h.join("g", session=5000)
    mid = first.response["member_id"]
    h.advance(5000)
    assert mid not in h.group().pending_members
    assert h.join("g", mid, session=5000).response["error_code"] == E.UNKNOWN_MEMBER_ID


def test_pending_sync_expiry_removes_members_that_never_sync():
    h = Harness()
    leader, follower = stable_group(h, 2, rebalance=4000)
    w2 = h.join("g", follower, rebalance=4000, protocols=[("range", subscription("x"))])
    w1 = h.join("g", leader, rebalance=4000)
    assert w1.response["generation_id"] == 3
    h.sync("g", 3, leader, {leader: b"L", follower: b"F"})
    assert h.group().state is STABLE
    h.advance(4000)  # the follower never sent SyncGroup
    assert not h.group().has_member(follower)
    assert h.group().state is PREPARING_REBALANCE


def test_follower_sync_waits_for_leader():
    h = Harness()
    leader, = stable_group(h, 1)
    w2 = h.join_new("g", client="f")
    w1 = h.join("g", leader)
    follower = w2.response["member_id"]
    s2 = h.sync("g", 2, follower)
    assert s2.response is None
    s1 = h.sync("g", 2, leader, {leader: b"one", follower: b"two"})
    assert s1.response["assignment"] == b"one" and s2.response["assignment"] == b"two"
    # In Stable a repeated sync gets the stored assignment right away.
    assert h.sync("g", 2, follower).response["assignment"] == b"two"


def test_rebalance_during_completing_fails_parked_syncs():
    h = Harness()
    leader, = stable_group(h, 1)
    w2 = h.join_new("g", client="f")
    h.join("g", leader)
    follower = w2.response["member_id"]
    s2 = h.sync("g", 2, follower)
    h.join_new("g", client="third")  # a third member arrives before the leader syncs
    assert s2.response["error_code"] == E.REBALANCE_IN_PROGRESS


def test_generation_and_member_checks():
    h = Harness()
    leader, = stable_group(h, 1)
    assert h.heartbeat("g", 0, leader) == E.ILLEGAL_GENERATION
    assert h.heartbeat("g", 1, "ghost") == E.UNKNOWN_MEMBER_ID
    assert h.heartbeat("nogroup", 1, leader) == E.UNKNOWN_MEMBER_ID
    assert h.sync("g", 5, leader).response["error_code"] == E.ILLEGAL_GENERATION
    assert h.sync("g", 1, "ghost").response["error_code"] == E.UNKNOWN_MEMBER_ID
    s = h.sync("g", 1, leader, protocol_type="consumer", protocol_name="roundrobin")
    assert s.response["error_code"] == E.INCONSISTENT_GROUP_PROTOCOL


def test_stable_follower_rejoin_with_same_metadata_gets_current_generation():
    h = Harness()
    leader, follower = stable_group(h, 2)
    w = h.join("g", follower, client="c1")
    assert w.response["error_code"] == 0 and w.response["generation_id"] == 2
    assert h.group().state is STABLE
    # The leader rejoining forces a rebalance.
    w = h.join("g", leader)
    assert w.response is None and h.group().state is PREPARING_REBALANCE


def test_leave_group_batch_and_empty_group():
    h = Harness()
    a, b = stable_group(h, 2)
    resp = h.leave("g", LeaveMember(a), LeaveMember("ghost"), LeaveMember(b))
    assert resp["error_code"] == 0
    assert [(m["member_id"], m["error_code"]) for m in resp["members"]] == [(a, 0), ("ghost", E.UNKNOWN_MEMBER_ID), (b, 0)]
    g = h.group()
    assert g.state is EMPTY and g.generation_id == 3 and g.protocol_name is None
    rec = h.records[-1]
    assert rec.key_name == "GroupMetadataKey" and rec.value["members"] == [] and rec.value["generation"] == 3
    assert h.leave("unknown", LeaveMember(a))["error_code"] == E.UNKNOWN_MEMBER_ID


def test_leave_completes_rebalance_when_remaining_members_joined():
    h = Harness()
    a, b = stable_group(h, 2)
    w = h.join("g", a, protocols=[("range", subscription("t", "more"))])
    assert w.response is None
    h.leave("g", b)
    assert w.response["generation_id"] == 3 and len(w.response["members"]) == 1


def test_static_member_restart_keeps_assignment_without_rebalance():
    h = Harness()
    w = h.join("g", instance="pod-1", client="c")
    assert w.response is None  # static members never get MEMBER_ID_REQUIRED
    h.advance(0)
    old = w.response["member_id"]
    assert old == "pod-1-uuid1"
    h.sync("g", 1, old, {old: b"mine"}, instance="pod-1")
    # The process restarts and joins again without its member id.
    w2 = h.join("g", instance="pod-1", client="c")
    new = w2.response["member_id"]
    assert w2.response["error_code"] == 0 and new != old
    assert w2.response["generation_id"] == 1 and h.group().state is STABLE
    # KIP-814: the static leader rejoining is told not to reassign.
    assert w2.response["skip_assignment"] is True and len(w2.response["members"]) == 1
    assert h.sync("g", 1, new, instance="pod-1").response["assignment"] == b"mine"
    assert h.heartbeat("g", 1, old, "pod-1") == E.FENCED_INSTANCE_ID
    assert h.heartbeat("g", 1, new, "pod-1") == E.NONE
    assert h.records[-1].value["members"][0]["member_id"] == new


def test_static_member_rejoin_fences_parked_old_join():
    h = Harness()
    leader, = stable_group(h, 1)
    wa = h.join("g", instance="pod-a", client="a")
    assert wa.response is None
    h.join("g", leader)  # completes generation 2 with both
    a_old = wa.response["member_id"]
    sa = h.sync("g", 2, a_old, instance="pod-a")
    assert sa.response is None
    # pod-a restarts while the group is still completing: old sync fenced, new rebalance.
    wb = h.join("g", instance="pod-a", client="a")
    assert sa.response["error_code"] == E.FENCED_INSTANCE_ID
    assert h.group().state is PREPARING_REBALANCE and wb.response is None


def test_static_member_is_kept_through_rebalance_timeout_but_session_expires():
    h = Harness()
    leader, = stable_group(h, 1, rebalance=3000, session=20_000)
    ws = h.join("g", instance="pod-s", client="s", rebalance=3000, session=20_000)
    h.join("g", leader, rebalance=3000, session=20_000)
    static = ws.response["member_id"]
    h.sync("g", 2, static, instance="pod-s")
    h.sync("g", 2, leader, {})
    # A new member: the static one does not rejoin within the rebalance timeout...
    w3 = h.join_new("g", client="n", rebalance=3000, session=20_000)
    h.join("g", leader, rebalance=3000, session=20_000)
    h.advance(3000)
    assert w3.response["generation_id"] == 3
    assert h.group().has_member(static)  # ...but static members are not dropped for that
    h.advance(20_000)  # the session timeout finally removes it
    assert not h.group().has_member(static)


def test_fenced_instance_on_join_with_stale_member_id():
    h = Harness()
    w = h.join("g", instance="pod-1")
    h.advance(0)
    mid = w.response["member_id"]
    assert h.join("g", "pod-1-stale", instance="pod-1").response["error_code"] == E.FENCED_INSTANCE_ID
    assert h.join("g", mid, instance="pod-2").response["error_code"] == E.UNKNOWN_MEMBER_ID


def test_group_max_size():
    h = Harness(max_size=1)
    stable_group(h, 1)
    assert h.join("g", client="extra").response["error_code"] == E.GROUP_MAX_SIZE_REACHED
    # An empty group accepts anyone; the limit applies from the next join on.
    h2 = Harness(max_size=1)
    first = h2.join("g", client="a")
    second = h2.join("g", client="b")
    assert first.response["error_code"] == second.response["error_code"] == E.MEMBER_ID_REQUIRED
    assert h2.join("g", first.response["member_id"]).response is None  # parked: 1 awaiting join
    assert h2.join("g", second.response["member_id"]).response["error_code"] == E.GROUP_MAX_SIZE_REACHED


def test_leave_static_member_by_instance_id():
    h = Harness()
    w = h.join("g", instance="pod-1")
    h.advance(0)
    resp = h.leave("g", LeaveMember("", "pod-1"), LeaveMember("", "pod-9"))
    assert [m["error_code"] for m in resp["members"]] == [0, E.UNKNOWN_MEMBER_ID]
    assert not h.group().members


def test_a_second_parked_request_of_a_member_releases_the_first():
    h = Harness()
    a, b = stable_group(h, 2)
    first = h.join("g", a)
    assert first.response is None
    second = h.join("g", a)
    assert first.response["error_code"] == E.REBALANCE_IN_PROGRESS and second.response is None
    h.join("g", b, client="c1")
    assert second.response["generation_id"] == 3
    follower = b if second.response["leader"] == a else a
    s1 = h.sync("g", 3, follower)
    s2 = h.sync("g", 3, follower)
    assert s1.response["error_code"] == E.REBALANCE_IN_PROGRESS and s2.response is None
