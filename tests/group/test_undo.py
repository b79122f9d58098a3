"""The pure side of write-then-apply: deferred offset effects, group checkpoints, timer snapshots.

The shell tests show the behaviour through requests; these pin down the
mechanisms: nothing an effect does happens before ``Result.apply``, and
``restore`` puts a group, its offsets and its timers back exactly --
including the very waiter objects of requests parked before the step.
"""

from __future__ import annotations

from protocol import ErrorCode

from kbroker.group.state import CommitPartition, CommitRequest, JoinRequest
from kbroker.group.timers import Timers

from .harness import Harness, Waiter, subscription

E = ErrorCode


def test_timers_restore_puts_back_only_the_snapshotted_groups():
    t = Timers()
    t.schedule(("heartbeat", "g1", "a"), 100, lambda: "a")
    t.schedule(("join", "g1"), 200, lambda: "join")
    t.schedule(("heartbeat", "g2", "b"), 150, lambda: "b")
    t.schedule(("expire-offsets",), 50, lambda: "x")
    snap = t.snapshot(["g1"])
    before = {k: t.deadline(k) for k in [("heartbeat", "g1", "a"), ("join", "g1")]}

    t.cancel(("join", "g1"))
    t.schedule(("heartbeat", "g1", "a"), 999, lambda: "later")
    t.schedule(("sync", "g1"), 500, lambda: "new")
    t.schedule(("heartbeat", "g2", "b"), 120, lambda: "b2")  # not in the snapshot: kept
    assert t.pop_due(60)[0] == ("expire-offsets",)
    t.restore(snap)

    assert {k: t.deadline(k) for k in before} == before
    assert not t.is_scheduled(("sync", "g1"))
    assert t.deadline(("heartbeat", "g2", "b")) == 120
    fired = []
    while (due := t.pop_due(10_000)) is not None:
        fired.append((due[0], due[1]()))
    assert fired == [(("heartbeat", "g1", "a"), "a"), (("heartbeat", "g2", "b"), "b2"), (("join", "g1"), "join")]
    assert len(t) == 0


def test_commit_changes_nothing_until_applied():
    h = Harness()
    req = CommitRequest("simple", {"t": [CommitPartition(0, 42)]})
    res = h.sm.commit_offsets(req, h.now)
    assert res.response == {"t": {0: E.NONE}} and len(res.records) == 1
    assert "simple" not in h.sm.groups and "simple" not in h.sm.offsets
    res.apply()
    assert h.sm.fetch_offsets("simple", [("t", [0])], h.now)[1] == [("t", [(0, 42, -1, "", E.NONE)])]
    assert "simple" in h.sm.groups


def test_offset_expiry_changes_nothing_until_applied():
    h = Harness(offsets_retention_ms=1_000, offsets_retention_check_interval_ms=500)
    h.commit("simple", {("t", 0): 1})
    h.now += 2_000
    step = h.sm.run_timer(h.now)
    assert step is not None
    assert {r.key_name for r in step.records} == {"OffsetCommitKey", "GroupMetadataKey"}
    assert "simple" in h.sm.groups and h.sm.offsets["simple"]["t"][0].offset == 1
    step.apply()
    assert "simple" not in h.sm.groups and "simple" not in h.sm.offsets


def test_restore_undoes_a_completed_rebalance_and_keeps_parked_waiters():
    h = Harness()
    first = h.join_new("g")
    h.advance(0)  # the initial rebalance (delay 0) completes with the first member
    a = first.response["member_id"]
    assert first.response["generation_id"] == 1
    h.sync("g", 1, a, {a: b"A"})
    h.commit("g", {("t", 0): 7}, generation=1, member_id=a)
    # A second member parks the group in PreparingRebalance until the first rejoins.
    second = h.join_new("g")
    assert second.response is None
    group = h.group("g")
    assert group.state.value == "PreparingRebalance"
    parked = [m.join_waiter for m in group.members.values() if m.join_waiter is not None]
    assert parked == [second]

    cp = h.sm.checkpoint(["g"])
    rejoin = Waiter("rejoin")
    res = h.sm.join(_join_req("g", a), h.now, rejoin)
    # The step finished the join phase: both parked joins are answered, the generation moved on.
    assert {w for w, _ in res.completions} == {second, rejoin}
    assert h.group("g").state.value == "CompletingRebalance" and h.group("g").generation_id == 2
    h.sm.restore(cp)

    group = h.group("g")
    assert group.state.value == "PreparingRebalance" and group.generation_id == 1
    waiters = [m.join_waiter for m in group.members.values() if m.join_waiter is not None]
    assert len(waiters) == 1 and waiters[0] is second  # the same object, not a copy
    assert h.sm.offsets["g"]["t"][0].offset == 7
    # The restored group carries on: the rejoin completes the rebalance for real.
    w = h.join("g", a)
    assert w.response["generation_id"] == 2 and second.response["generation_id"] == 2


def _join_req(group_id, member_id):
    return JoinRequest(group_id=group_id, member_id=member_id, protocols=[("range", subscription("t"))],
                       session_timeout_ms=10_000, rebalance_timeout_ms=30_000, client_id="client",
                       client_host="/127.0.0.1", version=9)


def test_restore_removes_a_group_the_step_created():
    h = Harness()
    cp = h.sm.checkpoint(["new"])
    res = h.sm.join(_join_req("new", ""), h.now, Waiter())
    assert "new" in h.sm.groups and res.records
    h.sm.restore(cp)
    assert "new" not in h.sm.groups
    assert not any(Timers.group_of(k) == "new" for k in h.sm.timers._live)

