"""Seeded event simulation of a Raft quorum, in the spirit of Kafka's RaftEventSimulationTest.

Theory of operation
-------------------
One ``random.Random(seed)`` decides everything: message delays, drops and
duplicates, each node's own randomness, which node crashes when, where the
network splits.  Time is a number; the event heap holds message deliveries,
node timers (each node's ``next_deadline()``), and scenario actions.  Nodes
are real :class:`~kbroker.raft.RaftNode` objects over a
:class:`~kbroker.raft.MemoryRaftLog` and a
:class:`~kbroker.raft.MemoryQuorumStateStore` that the simulator keeps across
a crash: everything a node wrote is durable, everything in its memory (role,
timers, parked fetches, the high watermark) is lost.  A crash also loses the
messages addressed to that incarnation, like a reset TCP connection.

After every event the invariants are checked, incrementally:

* at most one leader per epoch;
* a committed entry is never lost or changed: the first time any node's high
  watermark covers an offset, ``(epoch, payload)`` is recorded globally; every
  later node that commits that offset must hold the same entry, no node
  truncates below its own high watermark, and a snapshot a node installs must
  carry the digest of exactly the committed prefix it claims;
* a node's high watermark never goes back (within one incarnation: a
  restarted node starts again from its log start, as a Kafka node does) and
  never passes its own log end;
* Leader completeness, which makes "every node's committed log is a prefix of
  the leader's" hold: a new leader of epoch *E* holds every entry committed
  by the leaders of epochs below *E*; and every offset a node commits is
  compared with the log of the highest-epoch leader when that one holds it.

Liveness: each scenario ends by healing the network and requiring, within a
bound of simulated time, that a proposal made after the heal is committed and
that every live node's high watermark reaches it.

Every seed runs 3 voters (even seeds) or 5 (odd) plus one observer, Kafka's
default timeouts, and a fetch size of 1, 3 or 64 entries; a client proposes
to a random current leader every 200 ms.  Scenarios (``SCENARIOS``):
initial election; leader crash (half the time after a graceful resign) and
restart; partitioned leader; an isolated voter returning without disturbing
the leader (pre-vote); minority/majority partition (the majority must make
progress during it); heavy loss (20-40 % drops, 10 % duplicates); restarts
with snapshots (never more than a minority down); chaos (any node crashes
and comes back at once, including right after granting a vote, a majority may
be down, slow lossy links, snapshots).

Replay a seed (``-v`` prints every delivery and transition)::

    python -m tests.raft.simulate --scenario leader_crash --seed 1234 -v
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import random
import sys
from dataclasses import dataclass
from typing import Callable

from kbroker.raft import (
    HighWatermarkChanged,
    MemoryQuorumStateStore,
    MemoryRaftLog,
    NotLeaderError,
    RaftConfig,
    RaftNode,
    RoleChanged,
    SnapshotLoaded,
    VoteResponse,
)


class InvariantViolation(AssertionError):
    pass


class LivenessFailure(AssertionError):
    pass


def replay_command(scenario: str, seed: int) -> str:
    return f"python -m tests.raft.simulate --scenario {scenario} --seed {seed} -v"


@dataclass
class NetConfig:
    min_delay: int = 1
    max_delay: int = 20
    drop: float = 0.0
    duplicate: float = 0.0


class SimNode:
    def __init__(self, node_id: int) -> None:
        self.id = node_id
        self.log = MemoryRaftLog()
        self.store = MemoryQuorumStateStore()
        self.raft: RaftNode | None = None
        self.incarnation = 0
        self.scheduled = float("inf")
        self.hw = 0
        self.checked = 0  # offsets below this were compared with the global committed record


class Simulation:
    def __init__(self, seed: int, voters: int, observers: int = 1, config: RaftConfig | None = None,
                 trace: bool = False) -> None:
        self.rng = random.Random(seed)
        self.config = config or RaftConfig()
        self.trace = trace
        self.now = 0.0
        self._heap: list = []
        self._seq = 0
        self.voter_ids = list(range(1, voters + 1))
        self.observer_ids = list(range(voters + 1, voters + 1 + observers))
        self.nodes = {i: SimNode(i) for i in self.voter_ids + self.observer_ids}
        self.net = NetConfig()
        self.groups: dict[int, int] | None = None  # node -> partition group; None = fully connected
        self.committed: list[tuple[int, object]] = []  # offset -> (epoch, payload), dense from 0
        self.prefix_digest: list[int] = [0]  # digest of committed[:i]
        self.committed_by_term: dict[int, int] = {}  # leader epoch -> committed end it reached
        self.leaders: dict[int, int] = {}  # epoch -> leader id
        self.proposed_at: dict[str, float] = {}
        self.proposal_seq = 0
        self.snapshots_loaded = 0
        self.events = 0
        self.crash_after_vote = 0.0  # probability that a voter restarts right after granting a vote
        self.recoveries: list[tuple[str, float]] = []  # (what, simulated ms until progress)
        self._first_commit_since: dict[float, int] = {}
        self._scan_from: dict[float, int] = {}

    # ------------------------------------------------------------ scheduling
    def at(self, t: float, kind: str, *data) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, kind, data))

    def log_trace(self, text: str) -> None:
        if self.trace:
            print(f"{self.now:10.1f} {text}")

    def start(self, i: int) -> None:
        n = self.nodes[i]
        assert n.raft is None
        n.incarnation += 1
        n.raft = RaftNode(i, self.voter_ids, n.log, n.store, rng=random.Random(self.rng.randrange(1 << 32)),
                          now_ms=self.now, config=self.config)
        n.hw = n.raft.high_watermark
        n.checked = n.hw  # what lies above is compared again as the new incarnation commits it
        n.scheduled = float("inf")
        self.log_trace(f"node {i} starts (incarnation {n.incarnation})")
        self._drain(n)

    def crash(self, i: int) -> None:
        n = self.nodes[i]
        if n.raft is None:
            return
        self.log_trace(f"node {i} crashes as {n.raft.state}")
        n.raft = None
        n.scheduled = float("inf")

    def _bounce(self, i: int) -> None:
        if self.nodes[i].raft is not None:
            self.crash(i)
            self.start(i)

    def live(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.raft is not None]

    def connected(self, a: int, b: int) -> bool:
        return self.groups is None or self.groups.get(a) == self.groups.get(b)

    def partition(self, *sides: list[int]) -> None:
        self.groups = {i: k for k, side in enumerate(sides) for i in side}
        self.log_trace(f"partition {sides}")

    def heal(self) -> None:
        self.groups = None
        self.log_trace("heal")

    # ------------------------------------------------------------ the loop
    def _drain(self, n: SimNode) -> None:
        raft = n.raft
        if raft is None:
            return
        for dest, msg in raft.take_messages():
            self._send(n.id, dest, msg)
            if (
                self.crash_after_vote
                and isinstance(msg, VoteResponse)
                and msg.vote_granted
                and self.rng.random() < self.crash_after_vote
            ):
                # Crash the voter right after it voted and bring it straight
                # back: only a persisted vote keeps it from voting again.
                self.at(self.now, "call", lambda i=n.id: self._bounce(i))
        for ev in raft.take_events():
            self._on_event(n, ev)
        self._check_node(n)
        d = raft.next_deadline()
        if d != n.scheduled:
            n.scheduled = d
            if d != float("inf"):
                self.at(max(d, self.now), "timer", n.id, n.incarnation, d)

    def _send(self, src: int, dst: int, msg) -> None:
        net = self.net
        if not self.connected(src, dst) or self.rng.random() < net.drop:
            self.log_trace(f"drop {src}->{dst} {msg}")
            return
        copies = 2 if self.rng.random() < net.duplicate else 1
        inc = self.nodes[dst].incarnation
        for _ in range(copies):
            self.at(self.now + self.rng.uniform(net.min_delay, net.max_delay), "msg", src, dst, inc, msg)

    def step(self) -> bool:
        if not self._heap:
            return False
        t, _, kind, data = heapq.heappop(self._heap)
        self.now = max(self.now, t)
        self.events += 1
        if kind == "msg":
            src, dst, inc, msg = data
            n = self.nodes[dst]
            if n.raft is None or n.incarnation != inc or not self.connected(src, dst):
                return True
            self.log_trace(f"{src}->{dst} {msg}")
            n.raft.handle(msg, self.now)
            self._drain(n)
        elif kind == "timer":
            i, inc, d = data
            n = self.nodes[i]
            if n.raft is None or n.incarnation != inc or n.scheduled != d:
                return True
            n.scheduled = float("inf")
            n.raft.tick(self.now)
            self._drain(n)
        else:
            data[0]()
        return True

    def run_until(self, t: float, stop: Callable[[], bool] | None = None) -> bool:
        while self._heap and self._heap[0][0] <= t:
            self.step()
            if stop is not None and stop():
                return True
        self.now = max(self.now, t)
        return False

    def every(self, start: float, period: float, action: Callable[[], None]) -> None:
        def fire() -> None:
            action()
            self.at(self.now + period, "call", fire)

        self.at(start, "call", fire)

    # ------------------------------------------------------------ invariants
    def fail(self, text: str) -> None:
        raise InvariantViolation(f"t={self.now:.1f}: {text}")

    def _on_event(self, n: SimNode, ev) -> None:
        raft = n.raft
        if isinstance(ev, RoleChanged):
            self.log_trace(f"node {n.id} -> {ev.role} epoch {ev.epoch} leader {ev.leader_id}")
            if ev.role == "leader":
                prev = self.leaders.setdefault(ev.epoch, n.id)
                if prev != n.id:
                    self.fail(f"two leaders in epoch {ev.epoch}: {prev} and {n.id}")
                self._check_leader_completeness(n, ev.epoch)
        elif isinstance(ev, SnapshotLoaded):
            self.snapshots_loaded += 1
            snap = n.log.latest_snapshot
            end = ev.end_offset
            if end > len(self.committed):
                self.fail(f"node {n.id} loaded snapshot at {end} beyond anything committed ({len(self.committed)})")
            if snap.blob != self.snapshot_blob(end):
                self.fail(f"node {n.id} loaded snapshot at {end} whose content is not the committed prefix")
            n.checked = max(n.checked, end)
        elif isinstance(ev, HighWatermarkChanged):
            hw = ev.high_watermark
            if hw < n.hw:
                self.fail(f"node {n.id} high watermark back from {n.hw} to {hw}")
            start = max(n.checked, n.log.start_offset)
            new = n.log.entries(start, hw - start) if hw > start else []
            if start + len(new) < hw:
                self.fail(f"node {n.id} high watermark {hw} beyond its log end {n.log.end_offset}")
            top = self._top_leader()
            for e in new:
                self._commit(n, e.offset, e.epoch, e.payload)
                if top is not None and top.log.start_offset <= e.offset < top.log.end_offset:
                    te = top.log.entries(e.offset, 1)[0]
                    if (te.epoch, te.payload) != (e.epoch, e.payload):
                        self.fail(f"node {n.id} committed {e} but the leader {top.id} holds {te}")
            n.hw = hw
            n.checked = max(n.checked, hw)
            if raft is not None and raft.role == "leader":
                t = raft.epoch
                self.committed_by_term[t] = max(self.committed_by_term.get(t, 0), hw)

    def _commit(self, n: SimNode, offset: int, epoch: int, payload) -> None:
        if offset < len(self.committed):
            if self.committed[offset] != (epoch, payload):
                self.fail(f"node {n.id} commits offset {offset} as {(epoch, payload)}, "
                          f"already committed as {self.committed[offset]}")
            return
        if offset != len(self.committed):
            self.fail(f"node {n.id} commits offset {offset} with a gap (committed up to {len(self.committed)})")
        self.committed.append((epoch, payload))
        # A chained digest, not hash(): str hashes change between processes and a replay must print the same.
        link = f"{self.prefix_digest[-1]}|{epoch}|{payload!r}".encode()
        self.prefix_digest.append(int.from_bytes(hashlib.blake2b(link, digest_size=8).digest(), "big"))

    def snapshot_blob(self, end: int) -> bytes:
        return f"{end}:{self.prefix_digest[end]}".encode()

    def _top_leader(self) -> SimNode | None:
        best = None
        for n in self.nodes.values():
            if n.raft is not None and n.raft.role == "leader" and (best is None or n.raft.epoch > best.raft.epoch):
                best = n
        return best

    def _check_leader_completeness(self, n: SimNode, epoch: int) -> None:
        need = max((end for t, end in self.committed_by_term.items() if t < epoch), default=0)
        if n.log.end_offset < need:
            self.fail(f"leader {n.id} of epoch {epoch} ends at {n.log.end_offset}, entries up to {need} were committed")
        start = n.log.start_offset
        if start > need:
            return
        for e in n.log.entries(start, need - start):
            if self.committed[e.offset] != (e.epoch, e.payload):
                self.fail(f"leader {n.id} of epoch {epoch} holds {e}, committed was {self.committed[e.offset]}")

    def _check_node(self, n: SimNode) -> None:
        raft = n.raft
        if raft.high_watermark < n.hw:
            self.fail(f"node {n.id} high watermark back from {n.hw} to {raft.high_watermark}")
        if raft.high_watermark > n.log.end_offset:
            self.fail(f"node {n.id} high watermark {raft.high_watermark} beyond its log end {n.log.end_offset}")

    # ------------------------------------------------------------ workload
    def propose_somewhere(self) -> None:
        leaders = [n for n in self.live() if n.raft.role == "leader"]
        if not leaders:
            return
        n = self.rng.choice(leaders)
        self.proposal_seq += 1
        payload = f"p{self.proposal_seq}"
        try:
            n.raft.propose([payload])
        except NotLeaderError:
            return
        self.proposed_at[payload] = self.now
        self._drain(n)

    def snapshot_somewhere(self, min_entries: int = 10) -> None:
        for n in self.live():
            hw = n.raft.high_watermark
            if hw - n.log.start_offset >= min_entries and hw <= len(self.committed):
                n.raft.snapshot(hw, self.snapshot_blob(hw))
                self.log_trace(f"node {n.id} snapshots at {hw}")

    def progressed_since(self, t0: float, nodes: list[int]) -> bool:
        """The first proposal made at or after t0 that got committed is covered by every listed node's high watermark.

        (Not the latest one: with proposals arriving all the time, a node one
        fetch behind would never catch the latest.)"""
        off = self._first_commit_since.get(t0)
        if off is None:
            for o in range(self._scan_from.get(t0, 0), len(self.committed)):
                payload = self.committed[o][1]
                when = self.proposed_at.get(payload) if isinstance(payload, str) else None
                if when is not None and when >= t0:
                    off = self._first_commit_since[t0] = o
                    break
            else:
                self._scan_from[t0] = len(self.committed)
                return False
        return all(self.nodes[i].raft is not None and self.nodes[i].raft.high_watermark > off for i in nodes)

    def expect_progress(self, nodes: list[int], within: float, what: str) -> None:
        t0 = self.now
        deadline = t0 + within
        if self.run_until(deadline, stop=lambda: self.progressed_since(t0, nodes)):
            self.recoveries.append((what, self.now - t0))
        else:
            states = {i: (n.raft.state if n.raft else "down", n.raft.high_watermark if n.raft else None)
                      for i, n in self.nodes.items()}
            raise LivenessFailure(f"t={self.now:.1f}: no progress {what} within {within} ms: {states}")


# ---------------------------------------------------------------- scenarios
PROPOSE_EVERY = 200
PROGRESS_BOUND = 15_000  # simulated ms; the worst seen over thousands of seeds is under 10 s


def _setup(seed: int, trace: bool, snapshots: bool = False) -> Simulation:
    rng = random.Random(seed)
    # Small fetch responses split an old leader's entries from the new
    # leader's epoch marker, which is where commit-by-counting goes wrong.
    config = RaftConfig(max_fetch_entries=rng.choice([1, 3, 64]))
    sim = Simulation(seed, voters=3 if seed % 2 == 0 else 5, observers=1, config=config, trace=trace)
    sim.net = NetConfig(min_delay=1, max_delay=rng.choice([5, 20, 50]), drop=0.01, duplicate=0.01)
    for i in sim.nodes:
        sim.start(i)
    sim.every(rng.uniform(0, PROPOSE_EVERY), PROPOSE_EVERY, sim.propose_somewhere)
    if snapshots:
        sim.every(500, 500, lambda: sim.snapshot_somewhere(5))
    return sim


def _all(sim: Simulation) -> list[int]:
    return [n.id for n in sim.live()]


def _stable(sim: Simulation) -> int:
    sim.expect_progress(_all(sim), PROGRESS_BOUND, "in the initial election")
    leader = sim._top_leader()
    assert leader is not None
    return leader.id


def initial_election(sim: Simulation) -> None:
    sim.expect_progress(_all(sim), PROGRESS_BOUND, "in the initial election")


def leader_crash(sim: Simulation) -> None:
    leader = _stable(sim)
    sim.run_until(sim.now + sim.rng.uniform(0, 1000))
    if sim.rng.random() < 0.5:
        # A clean shutdown: the leader resigns (EndQuorumEpoch) and stops a moment later.
        n = sim.nodes[leader]
        if n.raft is not None:
            n.raft.resign(sim.now)
            sim._drain(n)
        sim.run_until(sim.now + sim.rng.uniform(0, 50))
    sim.crash(leader)
    sim.expect_progress(_all(sim), PROGRESS_BOUND, "after the leader crashed")
    sim.run_until(sim.now + sim.rng.uniform(0, 3000))
    sim.start(leader)
    sim.expect_progress(_all(sim), PROGRESS_BOUND, "after the old leader restarted")


def partitioned_leader(sim: Simulation) -> None:
    leader = _stable(sim)
    sim.partition([leader], [i for i in sim.nodes if i != leader])
    sim.run_until(sim.now + sim.rng.uniform(1000, 8000))
    sim.heal()
    sim.expect_progress(_all(sim), PROGRESS_BOUND, "after the partition healed")


def isolated_voter_returns(sim: Simulation) -> None:
    """KIP-996's promise: a voter cut off long enough to time out comes back without deposing the leader."""
    leader = _stable(sim)
    sim.net = NetConfig(min_delay=1, max_delay=sim.net.max_delay, drop=0.0, duplicate=0.01)
    sim.run_until(sim.now + 2 * sim.config.request_timeout_ms)  # let anything the lossy start left in flight settle
    leader = sim._top_leader().id
    epoch = sim.nodes[leader].raft.epoch
    victim = sim.rng.choice([i for i in sim.voter_ids if i != leader])
    sim.partition([victim], [i for i in sim.nodes if i != victim])
    sim.run_until(sim.now + sim.rng.uniform(3000, 10000))
    if sim.nodes[victim].raft.epoch != epoch:
        sim.fail(f"isolated voter {victim} moved to epoch {sim.nodes[victim].raft.epoch} on its own (pre-vote)")
    sim.heal()
    sim.expect_progress(_all(sim), PROGRESS_BOUND, "after the isolated voter returned")
    for n in sim.live():
        if n.raft.epoch != epoch or n.raft.leader_id != leader:
            sim.fail(f"node {n.id} is at {n.raft.state}: the returning voter {victim} disturbed leader {leader} "
                     f"of epoch {epoch}")


def partitioned_minority_majority(sim: Simulation) -> None:
    _stable(sim)
    voters = list(sim.voter_ids)
    sim.rng.shuffle(voters)
    minority = voters[: len(voters) // 2]
    majority = voters[len(voters) // 2 :]
    for o in sim.observer_ids:
        (minority if sim.rng.random() < 0.5 else majority).append(o)
    sim.partition(minority, majority)
    sim.expect_progress(majority, PROGRESS_BOUND, "on the majority side of a partition")
    sim.run_until(sim.now + sim.rng.uniform(0, 4000))
    sim.heal()
    sim.expect_progress(_all(sim), PROGRESS_BOUND, "after the partition healed")


def heavy_loss(sim: Simulation) -> None:
    sim.net = NetConfig(min_delay=1, max_delay=50, drop=sim.rng.uniform(0.2, 0.4), duplicate=0.1)
    sim.run_until(sim.rng.uniform(5000, 10000))
    sim.net = NetConfig(min_delay=1, max_delay=20, drop=0.0, duplicate=0.01)
    sim.expect_progress(_all(sim), PROGRESS_BOUND, "after the message loss stopped")


def restarts_with_snapshots(sim: Simulation) -> None:
    _stable(sim)
    ids = list(sim.nodes)
    # Crash and restart nodes at random, never more than a minority of voters at once.
    end = sim.now + 12000
    while sim.now < end:
        sim.run_until(sim.now + sim.rng.uniform(200, 1500))
        down_voters = [i for i in sim.voter_ids if sim.nodes[i].raft is None]
        i = sim.rng.choice(ids)
        if sim.nodes[i].raft is None:
            sim.start(i)
        elif i not in sim.voter_ids or len(down_voters) + 1 <= (len(sim.voter_ids) - 1) // 2:
            sim.crash(i)
    for i in ids:
        if sim.nodes[i].raft is None:
            sim.start(i)
    sim.expect_progress(_all(sim), PROGRESS_BOUND, "after the restarts")


def chaos(sim: Simulation) -> None:
    """Short-lived crashes of any node (a majority may be down at once), slow and lossy links, snapshots.

    Elections overlap with crashes here, which is what exposes a vote that was
    not persisted, or a leader that commits an earlier epoch's entry by
    counting replicas (the Raft paper's figure 8)."""
    sim.net = NetConfig(min_delay=1, max_delay=sim.rng.choice([20, 100, 300]), drop=0.05, duplicate=0.05)
    sim.crash_after_vote = 0.3
    ids = list(sim.nodes)
    end = sim.rng.uniform(10000, 20000)
    while sim.now < end:
        sim.run_until(sim.now + sim.rng.uniform(50, 800))
        i = sim.rng.choice(ids)
        if sim.nodes[i].raft is not None:
            sim.crash(i)
            sim.at(sim.now + sim.rng.uniform(0, 400), "call", lambda i=i: sim.nodes[i].raft is None and sim.start(i))
    sim.run_until(sim.now + 500)
    for i in ids:
        if sim.nodes[i].raft is None:
            sim.start(i)
    sim.net = NetConfig(min_delay=1, max_delay=20, drop=0.0, duplicate=0.01)
    sim.crash_after_vote = 0.0
    sim.expect_progress(_all(sim), PROGRESS_BOUND, "after the chaos stopped")


SCENARIOS: dict[str, tuple[Callable[[Simulation], None], bool]] = {
    "initial_election": (initial_election, False),
    "leader_crash": (leader_crash, False),
    "partitioned_leader": (partitioned_leader, False),
    "isolated_voter_returns": (isolated_voter_returns, False),
    "partitioned_minority_majority": (partitioned_minority_majority, False),
    "heavy_loss": (heavy_loss, False),
    "restarts_with_snapshots": (restarts_with_snapshots, True),
    "chaos": (chaos, True),
}


def run(scenario: str, seed: int, trace: bool = False) -> Simulation:
    body, snapshots = SCENARIOS[scenario]
    sim = _setup(seed, trace, snapshots)
    try:
        body(sim)
    except AssertionError as e:
        raise type(e)(f"{scenario} seed {seed}: {e}\nreplay: {replay_command(scenario, seed)}") from e
    return sim


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenario", choices=sorted(SCENARIOS), required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("-v", "--verbose", action="store_true", help="trace every event")
    args = p.parse_args(argv)
    sim = run(args.scenario, args.seed, trace=args.verbose)
    print(f"ok: {args.scenario} seed {args.seed}: {sim.events} events, t={sim.now:.0f} ms, "
          f"{len(sim.committed)} committed, {len(sim.leaders)} epochs with a leader, "
          f"{sim.snapshots_loaded} snapshots loaded")
    for what, ms in sim.recoveries:
        print(f"  progress {what}: {ms:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
