"""Single-step tests of the Raft state machine: the rules the simulation relies on, one at a time."""

from __future__ import annotations

import json
import random

import pytest

from kbroker.raft import (
    LEADER_CHANGE,
    BeginQuorumEpochRequest,
    ElectionState,
    Entry,
    EpochEndOffset,
    FetchRequest,
    FetchResponse,
    FetchSnapshotRequest,
    FetchSnapshotResponse,
    FileQuorumStateStore,
    HighWatermarkChanged,
    LeaderIdAndEpoch,
    MemoryQuorumStateStore,
    MemoryRaftLog,
    NotLeaderError,
    RaftConfig,
    RaftNode,
    Snapshot,
    SnapshotId,
    VoteRequest,
    VoteResponse,
)


def node(node_id=1, voters=(1, 2, 3), log=None, store=None, now=0, seed=0):
    return RaftNode(
        node_id, voters, log or MemoryRaftLog(), store or MemoryQuorumStateStore(), rng=random.Random(seed), now_ms=now
    )


def log_of(*epochs: int) -> MemoryRaftLog:
    log = MemoryRaftLog()
    log.append(Entry(i, e, f"e{i}") for i, e in enumerate(epochs))
    return log


def answer(n: RaftNode, request, granted=True, leader=-1):
    """Answer n's outstanding VoteRequest as voter ``request.voter_id`` would."""
    return VoteResponse(request.correlation_id, 0, leader, n.epoch, granted)


def elect(n: RaftNode, now=10_000) -> None:
    """Drive n from Unattached through pre-vote and vote to Leader with everyone agreeing."""
    n.tick(n.next_deadline())
    for _ in range(2):  # pre-vote round, then the real vote
        for dest, msg in n.take_messages():
            assert isinstance(msg, VoteRequest)
            n.handle(answer(n, msg), now)
    assert n.role == "leader"
    n.take_messages()


# ---------------------------------------------------------------- the log
def test_end_offset_for_epoch_is_the_leader_epoch_cache():
    log = log_of(1, 1, 3, 3, 3, 5)
    assert log.end_offset_for_epoch(1) == (1, 2)
    assert log.end_offset_for_epoch(2) == (1, 2)  # no epoch 2: the largest below it, and where it ends
    assert log.end_offset_for_epoch(3) == (3, 5)
    assert log.end_offset_for_epoch(9) == (5, 6)
    assert log.end_offset_for_epoch(0) == (-1, 0)
    log.truncate_to(3)
    assert log.end_offset_for_epoch(5) == (3, 3) and log.last_epoch == 3


def test_snapshot_drops_the_prefix_and_keeps_its_epoch_answerable():
    log = log_of(1, 1, 2, 2, 3)
    log.take_snapshot(Snapshot(SnapshotId(3, 2), b"s"))
    assert (log.start_offset, log.end_offset) == (3, 5)
    assert log.end_offset_for_epoch(2) == (2, 4)
    assert log.end_offset_for_epoch(1) is None  # before the snapshot: only the snapshot can answer
    log.truncate_to(3)
    assert log.last_epoch == 2 and log.end_offset_for_epoch(2) == (2, 3)
    with pytest.raises(ValueError):
        log.truncate_to(2)


def test_install_snapshot_keeps_a_consistent_suffix_and_replaces_a_diverging_log():
    log = log_of(1, 1, 2, 2)
    log.install_snapshot(Snapshot(SnapshotId(2, 1), b"s"))
    assert (log.start_offset, log.end_offset) == (2, 4)
    other = log_of(1, 1, 1, 1)
    other.install_snapshot(Snapshot(SnapshotId(3, 2), b"s"))
    assert (other.start_offset, other.end_offset, other.last_epoch) == (3, 3, 2)


def test_file_store_writes_kafkas_quorum_state_json(tmp_path):
    store = FileQuorumStateStore(tmp_path / "quorum-state")
    assert store.read() is None
    store.write(ElectionState(epoch=7, voted_id=2, leader_id=None))
    data = json.loads((tmp_path / "quorum-state").read_text())
    assert data["leaderEpoch"] == 7 and data["votedId"] == 2 and data["leaderId"] == -1
    assert store.read() == ElectionState(7, 2, None)


# ---------------------------------------------------------------- elections
def test_a_single_voter_elects_itself_and_commits_its_proposals():
    n = node(voters=(1,))
    n.tick(n.next_deadline())
    assert n.role == "leader" and n.epoch == 1
    assert n.log.entries(0, 10) == [Entry(0, 1, LEADER_CHANGE)]
    assert n.propose(["a", "b"]) == 2
    assert n.high_watermark == 3
    assert HighWatermarkChanged(3) in n.take_events()


def test_pre_vote_does_not_bump_the_epoch_and_a_majority_of_pre_votes_makes_a_candidate():
    n = node()
    n.tick(n.next_deadline())
    assert n.role == "prospective" and n.epoch == 0
    requests = [m for _, m in n.take_messages()]
    assert all(r.pre_vote and r.replica_epoch == 0 for r in requests)
    n.handle(answer(n, requests[0]), 1)
    assert n.role == "candidate" and n.epoch == 1 and n.state.voted_id == 1
    assert n.quorum.store.read() == ElectionState(1, 1, None)


def test_a_vote_is_persisted_before_it_is_answered_and_only_once_per_epoch():
    store = MemoryQuorumStateStore()
    n = node(node_id=2, store=store)
    n.handle(VoteRequest(1, None, 2, 4, 1, 0, 0, False), 5)
    (dest, resp), = n.take_messages()
    assert dest == 1 and resp.vote_granted and store.read() == ElectionState(4, 1, None)
    n.handle(VoteRequest(2, None, 2, 4, 3, 0, 0, False), 6)  # another candidate, same epoch
    assert not n.take_messages()[0][1].vote_granted
    # A restart remembers the vote.
    again = node(node_id=2, store=store, log=n.log)
    again.handle(VoteRequest(3, None, 2, 4, 3, 0, 0, False), 7)
    assert not again.take_messages()[0][1].vote_granted


def test_a_vote_needs_a_log_at_least_as_up_to_date():
    n = node(node_id=2, log=log_of(1, 2))
    n.handle(VoteRequest(1, None, 2, 3, 1, 1, 5, False), 0)  # longer log, older last epoch
    assert not n.take_messages()[0][1].vote_granted
    n.handle(VoteRequest(2, None, 2, 3, 3, 2, 2, False), 0)
    assert n.take_messages()[0][1].vote_granted


def test_a_follower_that_hears_from_its_leader_refuses_pre_votes():
    n = node(node_id=2)
    n.handle(BeginQuorumEpochRequest(1, None, 2, 1, 3), 0)
    assert n.role == "follower" and n.leader_id == 1
    fetch = [m for _, m in n.take_messages() if isinstance(m, FetchRequest)][0]
    n.handle(FetchResponse(fetch.correlation_id, 0, 0, 0, LeaderIdAndEpoch(1, 3)), 1)
    n.take_messages()
    n.handle(VoteRequest(9, None, 2, 3, 3, 9, 99, True), 2)
    resp = [m for _, m in n.take_messages() if isinstance(m, VoteResponse)][0]
    assert not resp.vote_granted and resp.leader_id == 1 and n.epoch == 3


def test_two_prospective_voters_with_equal_logs_do_not_both_pass_the_pre_vote():
    """The survivors of a dead leader time out together; only the lower id may go on, so the vote is not split."""
    low, high = node(node_id=1, log=log_of(1, 1)), node(node_id=2, log=log_of(1, 1))
    for n in (low, high):
        n.tick(n.next_deadline())
        assert n.role == "prospective"
        n.take_messages()
    ask = lambda n, frm: n.handle(VoteRequest(77, None, n.node_id, 1, frm, 1, 2, True), 5)  # noqa: E731
    ask(low, 2)
    (answer_low,) = [m for _, m in low.take_messages() if isinstance(m, VoteResponse)]
    ask(high, 1)
    (answer_high,) = [m for _, m in high.take_messages() if isinstance(m, VoteResponse)]
    assert (answer_low.vote_granted, answer_high.vote_granted) == (False, True)
    # a longer log still wins the pre-vote whatever its id
    longer = node(node_id=1, log=log_of(1, 1))
    longer.tick(longer.next_deadline())
    longer.take_messages()
    longer.handle(VoteRequest(78, None, 1, 1, 2, 1, 3, True), 5)  # node 2, one entry more
    (answer,) = [m for _, m in longer.take_messages() if isinstance(m, VoteResponse)]
    assert answer.vote_granted


def test_only_a_voter_can_be_followed_as_leader():
    n = node(node_id=2)
    n.handle(BeginQuorumEpochRequest(1, None, 2, 1024, 9), 0)  # leader 1024 is no voter
    (resp,) = [m for _, m in n.take_messages()]
    assert resp.error_code == 94 and n.role != "follower" and n.epoch == 0  # INCONSISTENT_VOTER_SET
    # a fetch answer naming a non-voter at a later epoch moves the epoch, not the leader
    n.handle(BeginQuorumEpochRequest(2, None, 2, 1, 3), 1)
    fetch = [m for _, m in n.take_messages() if isinstance(m, FetchRequest)][0]
    n.handle(FetchResponse(fetch.correlation_id, 0, 0, 0, LeaderIdAndEpoch(1024, 4)), 2)
    assert n.epoch == 4 and n.leader_id is None


def test_propose_on_a_follower_names_the_leader():
    n = node(node_id=2)
    n.handle(BeginQuorumEpochRequest(1, None, 2, 1, 3), 0)
    with pytest.raises(NotLeaderError) as e:
        n.propose(["x"])
    assert (e.value.leader_id, e.value.epoch) == (1, 3)


# ---------------------------------------------------------------- replication
def test_leader_commits_earlier_epochs_only_through_an_entry_of_its_own():
    n = node(log=log_of(1, 1, 1))
    elect(n)
    start = n.state.epoch_start_offset
    assert start == 3
    # A follower holding the old entries, but not the marker, commits nothing.
    n.handle(FetchRequest(1, None, 2, 500, n.epoch, 3, 1, 0, 0), 0)
    assert n.high_watermark == 0
    n.take_messages()
    n.handle(FetchRequest(2, None, 2, 500, n.epoch, 4, n.epoch, 0, 0), 0)
    assert n.high_watermark == 4


def test_leader_answers_a_diverging_fetch_with_the_epoch_end_and_the_follower_truncates():
    leader = node(log=log_of(1, 1, 3, 3))
    elect(leader)
    leader.handle(FetchRequest(1, None, 2, 500, leader.epoch, 4, 2, 0, 0), 0)  # follower: 1 1 2 2
    (_, resp), = leader.take_messages()
    assert resp.diverging_epoch == EpochEndOffset(1, 2)

    follower = node(node_id=2, log=log_of(1, 1, 2, 2))
    follower.handle(BeginQuorumEpochRequest(1, None, 2, 1, leader.epoch), 0)
    fetch = [m for _, m in follower.take_messages() if isinstance(m, FetchRequest)][0]
    assert (fetch.fetch_offset, fetch.last_fetched_epoch) == (4, 2)
    current = LeaderIdAndEpoch(1, leader.epoch)
    follower.handle(FetchResponse(fetch.correlation_id, 0, 0, 0, current, diverging_epoch=resp.diverging_epoch), 1)
    assert follower.log.end_offset == 2
    again = [m for _, m in follower.take_messages() if isinstance(m, FetchRequest)][0]
    assert (again.fetch_offset, again.last_fetched_epoch) == (2, 1)


def test_a_fetch_below_the_log_start_is_answered_with_the_snapshot_and_fetch_snapshot_installs_it():
    leader = node(voters=(1,), log=log_of(1, 1, 1))
    leader.tick(leader.next_deadline())
    leader.propose(["x"])
    sid = leader.snapshot(4, b"state@4")
    assert leader.log.start_offset == 4
    leader.handle(FetchRequest(1, None, 9, 500, leader.epoch, 0, 0, 0, 0), 0)
    (_, resp), = leader.take_messages()
    assert resp.snapshot_id == sid
    leader.handle(FetchSnapshotRequest(2, None, 9, leader.epoch, sid, 0), 0)
    (_, snap), = leader.take_messages()
    assert isinstance(snap, FetchSnapshotResponse) and snap.unaligned_records == b"state@4"

    observer = node(node_id=9, voters=(1,))
    observer.take_messages()
    observer.handle(BeginQuorumEpochRequest(1, None, 9, 1, leader.epoch), 0)
    fetch = [m for _, m in observer.take_messages() if isinstance(m, FetchRequest)][0]
    observer.handle(FetchResponse(fetch.correlation_id, 0, 5, 4, LeaderIdAndEpoch(1, leader.epoch), snapshot_id=sid), 1)
    (_, req), = observer.take_messages()
    assert isinstance(req, FetchSnapshotRequest)
    current = LeaderIdAndEpoch(1, leader.epoch)
    observer.handle(FetchSnapshotResponse(req.correlation_id, 0, sid, current, 7, 0, b"state@4"), 2)
    assert observer.log.latest_snapshot.blob == b"state@4"
    assert (observer.log.start_offset, observer.high_watermark) == (4, 4)


def test_a_leader_cut_off_from_the_majority_resigns_after_the_check_quorum_timeout():
    n = node()
    elect(n, now=0)
    cfg = RaftConfig()
    n.tick(1.5 * cfg.fetch_timeout_ms + 1)
    assert n.role == "resigned"
    ends = [m for _, m in n.take_messages()]
    assert {type(m).__name__ for m in ends} == {"EndQuorumEpochRequest"}


def test_requests_from_another_cluster_are_refused():
    store = MemoryQuorumStateStore()
    n = RaftNode(2, (1, 2, 3), MemoryRaftLog(), store, rng=random.Random(0), now_ms=0, cluster_id="A")
    n.handle(VoteRequest(1, "B", 2, 4, 1, 0, 0, False), 0)
    (_, resp), = n.take_messages()
    assert resp.error_code == 104 and not resp.vote_granted and n.epoch == 0


def test_a_restarted_leader_comes_back_resigned_and_followers_of_it_stop_waiting():
    store, log = MemoryQuorumStateStore(), MemoryRaftLog()
    n = node(store=store, log=log)
    elect(n)
    again = node(store=store, log=log, now=20_000)
    assert again.role == "resigned" and again.epoch == n.epoch
    # A follower fetching from it is told it no longer leads, and stops waiting on it.
    f = node(node_id=2)
    f.handle(BeginQuorumEpochRequest(1, None, 2, 1, n.epoch), 0)
    fetch = [m for _, m in f.take_messages() if isinstance(m, FetchRequest)][0]
    again.handle(fetch, 1)
    (_, resp), = again.take_messages()
    assert resp.error_code == 6 and resp.current_leader == LeaderIdAndEpoch(-1, n.epoch)
    f.handle(resp, 2)
    assert f.role == "unattached" and f.epoch == n.epoch


def test_end_quorum_epoch_lets_the_first_preferred_successor_stand_at_once():
    from kbroker.raft import EndQuorumEpochRequest

    f = node(node_id=2)
    f.handle(BeginQuorumEpochRequest(1, None, 2, 1, 3), 0)
    f.take_messages()
    f.handle(EndQuorumEpochRequest(7, None, 1, 3, (2, 3)), 100)
    assert f.role == "unattached" and f.next_deadline() == 100
    f.tick(100)
    assert f.role == "prospective"


def test_figure_8_an_earlier_epoch_entry_on_a_majority_is_not_committed_and_may_be_replaced():
    """The Raft paper's figure 8 with three voters, driven message by message."""
    cfg = RaftConfig(max_fetch_entries=1)  # so the old entry travels without the new leader's marker

    def voter(i, entries, state):
        log, store = MemoryRaftLog(), MemoryQuorumStateStore()
        log.append(Entry(o, e, p) for o, (e, p) in enumerate(entries))
        store.write(state)
        return RaftNode(i, (1, 2, 3), log, store, rng=random.Random(i), now_ms=0, config=cfg)

    s1 = voter(1, [(1, "a"), (2, "x")], ElectionState(3, 3, None))  # led epoch 2, wrote x alone
    s2 = voter(2, [(1, "a")], ElectionState(3, 3, None))
    s3 = voter(3, [(1, "a"), (3, "y")], ElectionState(3, 3, 3))  # led epoch 3, wrote y alone
    nodes = {1: s1, 2: s2, 3: s3}
    for n in nodes.values():
        n.take_messages()

    def route(src, dst, now):
        """Deliver src's messages for dst (dropping the rest); return how many."""
        msgs = [m for d, m in src.take_messages() if d == dst.node_id]
        for m in msgs:
            dst.handle(m, now)
        return len(msgs)

    # S1 wins epoch 4 with S2's vote (its log, ending in epoch 2, is ahead of S2's).
    s1.tick(s1.next_deadline())
    route(s1, s2, 1), route(s2, s1, 2)  # pre-vote
    route(s1, s2, 3), route(s2, s1, 4)  # vote
    assert s1.role == "leader" and s1.epoch == 4
    # S2 learns of the epoch and fetches x, one entry at a time.
    route(s1, s2, 5)
    while route(s2, s1, 6) and route(s1, s2, 7):
        if s2.log.end_offset == 2:
            break
    assert s2.log.entries(1, 1)[0].payload == "x"
    route(s2, s1, 8)  # S2 fetches from offset 2: x is on a majority now
    assert s1.high_watermark < 2, "x is from epoch 2: counting replicas must not commit it"
    # S1 dies.  S2 times out on it; S3 (last epoch 3) learns epoch 4 from S2, then wins epoch 5 with
    # S2's vote -- S2's log ends in epoch 2, behind S3's -- and replaces x with y on S2.
    now = s2.next_deadline()
    s2.tick(now)
    assert s2.role == "prospective"
    s2.take_messages()
    for _ in range(6):
        if s3.role == "leader":
            break
        now = max(now, s3.next_deadline())
        s3.tick(now)
        route(s3, s2, now), route(s2, s3, now)
        route(s3, s2, now), route(s2, s3, now)
    assert s3.role == "leader" and s3.epoch == 5
    for _ in range(10):
        route(s3, s2, now)
        route(s2, s3, now)
    assert [e.payload for e in s2.log.entries(0, 10)][:2] == ["a", "y"]
    assert s2.high_watermark >= 2
