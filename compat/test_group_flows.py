"""Consumer-group flows end to end with real clients.

* membership changes with confluent-kafka members in their own processes
  (join, clean leave, SIGKILL and session expiry);
* commit and resume (nothing committed comes back, nothing is skipped);
* independent groups on one topic;
* committed offsets and group listings across broker restarts (SIGTERM and
  SIGKILL);
* the same basic flow with kafka-python, aiokafka and kafkajs;
* librdkafka with the KIP-848 ``consumer`` group protocol.

Every wait has a deadline; member processes are killed when a test ends.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Callable, Optional, Sequence

import pytest

from compat.clients import (
    Msg,
    Rec,
    _recs_from_js,
    kafkajs_available,
    make_messages,
    produce_confluent,
    run_js,
)

pytestmark = pytest.mark.groups

REPO = Path(__file__).resolve().parent.parent
SESSION_MS = 6000  # the broker's default group.min.session.timeout.ms
HEARTBEAT_MS = 500
CLASSIC = {"session.timeout.ms": SESSION_MS, "heartbeat.interval.ms": HEARTBEAT_MS}


def group_id() -> str:
    return f"gf-{uuid.uuid4().hex[:10]}"


def wait_for(what: str, check: Callable[[], object], timeout: float, interval: float = 0.1,
             describe: Optional[Callable[[], object]] = None):
    """Poll check() until it returns something truthy; fail with a description at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() >= deadline:
            state = describe() if describe else None
            raise AssertionError(f"not within {timeout:.0f}s: {what}" + (f"; state: {state}" if state is not None else ""))
        time.sleep(interval)


def is_split(assignments: Sequence[set], partitions: int) -> bool:
    """Every member owns something, nobody shares, and together they own every partition."""
    if not assignments or any(not a for a in assignments):
        return False
    union: set = set()
    for a in assignments:
        if union & a:
            return False
        union |= a
    return union == set(range(partitions))


def per_partition(placements) -> dict[int, int]:
    return dict(Counter(p for p, _ in placements))


def check_exactly(expected: Sequence[Msg], got: Sequence[Rec], what: str, may_repeat: frozenset = frozenset()) -> None:
    """got holds every expected value exactly once and nothing else.

    ``may_repeat``: values whose commit was refused because a rebalance had
    started; Kafka's promise for them is at least once, so they may come again."""
    counts = Counter(r.value for r in got)
    dups = sorted(v for v, n in counts.items() if n > 1 and v not in may_repeat)
    assert not dups, f"{what}: {len(dups)} values delivered more than once, e.g. {dups[:5]}"
    want = {m.value for m in expected}
    extra = sorted(set(counts) - want)
    missing = sorted(want - set(counts))
    assert not extra, f"{what}: {len(extra)} unexpected values (already committed?), e.g. {extra[:5]}"
    assert not missing, f"{what}: {len(missing)} values never delivered, e.g. {missing[:5]}"


def check_offsets_from(got: Sequence[Rec], start: dict[int, int], end: dict[int, int], what: str) -> None:
    """Per partition, got's offsets are exactly start[p] .. end[p]-1 in order."""
    by_p: dict[int, list[int]] = defaultdict(list)
    for r in got:
        by_p[r.partition].append(r.offset)
    for p in set(start) | set(end) | set(by_p):
        want = list(range(start.get(p, 0), end.get(p, 0)))
        assert sorted(by_p.get(p, [])) == want, \
            f"{what}: partition {p} offsets {sorted(by_p.get(p, []))[:10]}... expected {want[:1]}..{want[-1:]}"


# ---------------------------------------------------------------------------
# confluent-kafka helpers (in this process)
# ---------------------------------------------------------------------------


def confluent_conf(bootstrap: str, group: str, extra: Optional[dict] = None, classic: bool = True) -> dict:
    conf = {"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
            "enable.auto.commit": False, "fetch.wait.max.ms": 100}
    if classic:
        conf.update(CLASSIC)
    conf.update(extra or {})
    return conf


def to_rec(m) -> Rec:
    return Rec(m.partition(), m.offset(), m.key(), m.value(), tuple(m.headers() or ()))


def confluent_consume_quota(bootstrap: str, topic: str, group: str, quota: dict[int, int], *,
                            timeout: float = 40, extra: Optional[dict] = None, classic: bool = True) -> list[Rec]:
    """Process (and commit, one by one, synchronously) exactly quota[p] records of each partition,
    then close.  Records beyond a partition's quota are neither processed nor committed."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(confluent_conf(bootstrap, group, extra, classic))
    taken: dict[int, int] = defaultdict(int)
    out: list[Rec] = []
    try:
        c.subscribe([topic])
        deadline = time.monotonic() + timeout
        while any(taken[p] < q for p, q in quota.items()):
            assert time.monotonic() < deadline, f"quota {quota} not reached within {timeout}s; took {dict(taken)}"
            m = c.poll(0.2)
            if m is None:
                continue
            assert not m.error(), m.error()
            p = m.partition()
            if taken[p] >= quota.get(p, 0):
                continue
            out.append(to_rec(m))
            taken[p] += 1
            c.commit(message=m, asynchronous=False)
            if taken[p] >= quota.get(p, 0):
                c.pause([TopicPartition(topic, p)])
    finally:
        c.close()
    return out


def confluent_consume_count(bootstrap: str, topic: str, group: str, count: int, *, timeout: float = 40,
                            extra: Optional[dict] = None, classic: bool = True) -> list[Rec]:
    """Consume until count records (or the deadline), commit synchronously, close."""
    from confluent_kafka import Consumer

    c = Consumer(confluent_conf(bootstrap, group, extra, classic))
    out: list[Rec] = []
    try:
        c.subscribe([topic])
        deadline = time.monotonic() + timeout
        while len(out) < count and time.monotonic() < deadline:
            for m in c.consume(500, timeout=0.2):
                assert not m.error(), m.error()
                out.append(to_rec(m))
        if out:
            c.commit(asynchronous=False)
    finally:
        c.close()
    return out


def admin_for(bootstrap: str):
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": bootstrap})


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    from confluent_kafka import ConsumerGroupTopicPartitions

    admin = admin_for(bootstrap)  # kept referenced until the result is in
    res = admin.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group)], request_timeout=15)[group].result(20)
    return {tp.partition: tp.offset for tp in res.topic_partitions if tp.topic == topic and tp.offset >= 0}


def describe_group(bootstrap: str, group: str):
    admin = admin_for(bootstrap)
    return admin.describe_consumer_groups([group], request_timeout=15)[group].result(20)


# ---------------------------------------------------------------------------
# 1. confluent members in their own processes: join, leave, SIGKILL
# ---------------------------------------------------------------------------


def member_main(spec: dict) -> None:
    """Child process: one confluent consumer in spec's group; prints JSON lines
    {"event": ..., "assignment": [...]} on every assignment change; closes
    cleanly (LeaveGroup) on a "close" line or EOF on stdin."""
    from confluent_kafka import Consumer

    def say(**kw):
        print(json.dumps(kw), flush=True)

    owned: set = set()
    stop = threading.Event()

    def on_assign(c, parts):
        owned.update(p.partition for p in parts)
        say(event="assign", assignment=sorted(owned))

    def on_revoke(c, parts):
        owned.difference_update(p.partition for p in parts)
        say(event="revoke", assignment=sorted(owned))

    def on_lost(c, parts):
        owned.difference_update(p.partition for p in parts)
        say(event="lost", assignment=sorted(owned))

    def read_stdin():
        for line in sys.stdin:
            if line.strip() == "close":
                break
        stop.set()

    threading.Thread(target=read_stdin, daemon=True).start()
    c = Consumer(spec["conf"])
    c.subscribe([spec["topic"]], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost)
    say(event="subscribed", assignment=[])
    deadline = time.monotonic() + spec.get("lifetime", 120)
    while not stop.is_set() and time.monotonic() < deadline:
        m = c.poll(0.1)
        if m is not None and m.error():
            say(event="error", error=str(m.error()))
    c.close()
    say(event="closed", assignment=sorted(owned))


class Member:
    """A member process and what it last reported."""

    def __init__(self, name: str, bootstrap: str, topic: str, group: str, extra: Optional[dict] = None,
                 log_dir: Optional[Path] = None):
        self.name = name
        spec = {"topic": topic, "conf": {**confluent_conf(bootstrap, group, extra), "client.id": name}}
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.stderr_path = (log_dir or Path("/tmp")) / f"{name}-{uuid.uuid4().hex[:6]}.stderr"
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "compat.test_group_flows", "member", json.dumps(spec)],
                                     cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._stderr, text=True)
        self.lock = threading.Lock()
        self.assignment: set = set()
        self.events: list[dict] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            with self.lock:
                ev["t"] = time.monotonic()
                self.events.append(ev)
                if "assignment" in ev:
                    self.assignment = set(ev["assignment"])

    def owned(self) -> set:
        with self.lock:
            return set(self.assignment)

    def saw(self, event: str) -> bool:
        with self.lock:
            return any(e["event"] == event for e in self.events)

    def errors(self) -> list:
        with self.lock:
            return [e for e in self.events if e["event"] == "error"]

    def close(self, timeout: float = 20) -> int:
        self.proc.stdin.write("close\n")
        self.proc.stdin.flush()
        return self.proc.wait(timeout)

    def sigkill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._stderr.close()

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def __repr__(self) -> str:
        return f"{self.name}{sorted(self.owned())}"


def broker_view(bootstrap: str, group: str, kind: str = "CLASSIC") -> tuple[int, list[set]]:
    """(number of members, each member's assignment) as the broker describes them."""
    from confluent_kafka import ConsumerGroupType

    d = describe_group(bootstrap, group)
    assert d.type == getattr(ConsumerGroupType, kind), f"group type {d.type}, expected {kind}"
    return len(d.members), [{tp.partition for tp in m.assignment.topic_partitions} for m in d.members]


def test_confluent_processes_join_leave_and_sigkill(broker, make_topic, tmp_path):
    t = make_topic(6)
    g = group_id()
    members = [Member(f"m{i}", broker.bootstrap, t.name, g, log_dir=tmp_path) for i in range(3)]
    state = lambda: (members, [m.stderr() for m in members if m.proc.poll() is not None])  # noqa: E731
    try:
        # Three members: disjoint, covering, two each (both of librdkafka's default assignors balance).
        wait_for("3 members split 6 partitions", lambda: is_split([m.owned() for m in members], 6), 30,
                 describe=state)
        assert sorted(len(m.owned()) for m in members) == [2, 2, 2], members
        wait_for("broker describes 3 members with the same split",
                 lambda: (lambda n, a: n == 3 and is_split(a, 6))(*broker_view(broker.bootstrap, g)), 10,
                 interval=0.3, describe=lambda: broker_view(broker.bootstrap, g))

        # Clean close: LeaveGroup, so the rebalance must not wait for the session timeout.
        leaving, rest = members[0], members[1:]
        t0 = time.monotonic()
        assert leaving.close() == 0, leaving.stderr()
        assert leaving.saw("closed")
        wait_for("2 members split 6 partitions after a LeaveGroup",
                 lambda: is_split([m.owned() for m in rest], 6), SESSION_MS / 1000 + 15, describe=state)
        took = time.monotonic() - t0
        assert sorted(len(m.owned()) for m in rest) == [3, 3], rest
        assert took < SESSION_MS / 1000, \
            f"rebalance after a clean close took {took:.1f}s: as long as a session timeout, was the leave ignored?"
        wait_for("broker describes 2 members",
                 lambda: (lambda n, a: n == 2 and is_split(a, 6))(*broker_view(broker.bootstrap, g)), 10,
                 interval=0.3, describe=lambda: broker_view(broker.bootstrap, g))

        # SIGKILL: no leave; the broker must expire the member after session.timeout.ms.
        victim, last = rest
        t0 = time.monotonic()
        victim.sigkill()
        wait_for("the last member owns all 6 partitions after the other's session expired",
                 lambda: last.owned() == set(range(6)), SESSION_MS / 1000 + 15, describe=state)
        took = time.monotonic() - t0
        # The victim's last heartbeat was at most a heartbeat interval (plus scheduling) before the kill.
        assert took > SESSION_MS / 1000 - 3 * HEARTBEAT_MS / 1000, \
            f"a killed member's partitions moved after {took:.1f}s, before session.timeout.ms={SESSION_MS}"
        wait_for("broker describes 1 member owning all 6",
                 lambda: broker_view(broker.bootstrap, g) == (1, [set(range(6))]), 10,
                 interval=0.3, describe=lambda: broker_view(broker.bootstrap, g))
        assert last.proc.poll() is None, last.stderr()
        assert not any(m.errors() for m in members if m is not victim), [m.errors() for m in members]
        assert last.close() == 0, last.stderr()
    finally:
        for m in members:
            m.cleanup()


# ---------------------------------------------------------------------------
# 2. commit and resume; 3. two groups
# ---------------------------------------------------------------------------


def test_confluent_commit_and_resume_exactly(broker, topic):
    g = group_id()
    msgs = make_messages(150)
    placements = produce_confluent(broker.bootstrap, topic.name, msgs)
    counts = per_partition(placements)
    quota = {p: n // 3 for p, n in counts.items()}
    first = confluent_consume_quota(broker.bootstrap, topic.name, g, quota)
    check_offsets_from(first, {}, quota, "first member")
    assert committed_offsets(broker.bootstrap, g, topic.name) == {p: q for p, q in quota.items() if q}

    rest = sum(counts.values()) - sum(quota.values())
    second = confluent_consume_count(broker.bootstrap, topic.name, g, rest)
    check_offsets_from(second, quota, counts, "resumed member")
    by_value = {m.value: m for m in msgs}
    check_exactly(msgs, first + second, "first + resumed")
    assert all(by_value[r.value].key == r.key for r in second)
    assert committed_offsets(broker.bootstrap, g, topic.name) == counts


def test_two_groups_each_get_everything(broker, topic):
    from confluent_kafka import Consumer

    before = make_messages(90, tag="before")
    produce_confluent(broker.bootstrap, topic.name, before)
    consumers = {g: Consumer(confluent_conf(broker.bootstrap, g)) for g in (group_id(), group_id())}
    got: dict[str, list[Rec]] = {g: [] for g in consumers}
    after = make_messages(90, tag="after")
    try:
        for c in consumers.values():
            c.subscribe([topic.name])
        produced_after = False
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            for g, c in consumers.items():
                for m in c.consume(500, timeout=0.1):
                    assert not m.error(), m.error()
                    got[g].append(to_rec(m))
            if not produced_after and all(len(v) >= len(before) for v in got.values()):
                produce_confluent(broker.bootstrap, topic.name, after)  # while both groups are live
                produced_after = True
            if produced_after and all(len(v) >= len(before) + len(after) for v in got.values()):
                break
        for c in consumers.values():
            c.commit(asynchronous=False)
    finally:
        for c in consumers.values():
            c.close()
    assert produced_after, {g: len(v) for g, v in got.items()}
    for g, recs in got.items():
        check_exactly(before + after, recs, f"group {g}")
        assert committed_offsets(broker.bootstrap, g, topic.name) == per_partition(
            [(r.partition, r.offset) for r in recs])


# ---------------------------------------------------------------------------
# 4. broker restarts
# ---------------------------------------------------------------------------


def check_group_listed(bootstrap: str, group: str, topic: str, offsets: dict[int, int], when: str) -> None:
    from confluent_kafka import ConsumerGroupState, ConsumerGroupType

    admin = admin_for(bootstrap)
    listed = admin.list_consumer_groups(request_timeout=15).result(20)
    assert group in {x.group_id for x in listed.valid}, f"{when}: {group} not listed: {listed.valid} {listed.errors}"
    d = describe_group(bootstrap, group)
    assert d.group_id == group
    assert d.state == ConsumerGroupState.EMPTY, f"{when}: state {d.state}"
    assert not d.members, f"{when}: members {d.members}"
    assert not d.is_simple_consumer_group, f"{when}: the group lost its protocol type 'consumer'"
    assert d.type == ConsumerGroupType.CLASSIC, f"{when}: group type {d.type}"
    assert committed_offsets(bootstrap, group, topic) == offsets, f"{when}: committed offsets"


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_committed_offsets_survive_broker_restart(start_broker, how):
    from compat.conftest import create_topic

    b = start_broker()
    t = create_topic(b.bootstrap, f"restart-{uuid.uuid4().hex[:8]}", 3)
    g = group_id()

    def restart():
        if how == "sigterm":
            assert b.stop() == 0, b.log_text()
        else:
            b.kill()
        b.start()

    msgs = make_messages(120)
    placements = produce_confluent(b.bootstrap, t.name, msgs)
    counts = per_partition(placements)
    quota = {p: n // 2 for p, n in counts.items()}
    first = confluent_consume_quota(b.bootstrap, t.name, g, quota)
    check_group_listed(b.bootstrap, g, t.name, quota, "before the restart")

    restart()
    check_group_listed(b.bootstrap, g, t.name, quota, f"after a {how} restart")
    second = confluent_consume_count(b.bootstrap, t.name, g, len(msgs) - len(first))
    check_offsets_from(second, quota, counts, f"resumed after a {how} restart")
    check_exactly(msgs, first + second, "before + after the restart")

    # The commits made after the first restart survive a second one as well.
    restart()
    check_group_listed(b.bootstrap, g, t.name, counts, f"after a second {how} restart")
    more = make_messages(40, tag="more")
    produce_confluent(b.bootstrap, t.name, more)
    third = confluent_consume_count(b.bootstrap, t.name, g, len(more))
    check_exactly(more, third, "after the second restart")


# ---------------------------------------------------------------------------
# 5. the basic flow with kafka-python, aiokafka and kafkajs
# ---------------------------------------------------------------------------


def test_kafka_python_two_members_split_then_resume(broker, make_topic):
    from kafka import KafkaConsumer
    from kafka.errors import CommitFailedError, RebalanceInProgressError

    t = make_topic(6)
    g = group_id()
    stop = threading.Event()
    lock = threading.Lock()
    owned: dict[int, set] = {0: set(), 1: set()}
    got: dict[int, list[Rec]] = {0: [], 1: []}
    failures: list = []
    uncommitted: set = set()
    committed: dict[int, int] = {}  # partition -> next offset, from commits the broker accepted

    def new_consumer():
        c = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=g, auto_offset_reset="earliest",
                          enable_auto_commit=False, session_timeout_ms=SESSION_MS,
                          heartbeat_interval_ms=HEARTBEAT_MS, fetch_max_wait_ms=100)
        # Client workaround, not a broker matter: kafka-python 3.0.12 strands a leader's finished
        # JoinGroup/SyncGroup when poll() times out mid-join and the rejoin was triggered by new topic
        # metadata (its need_rejoin() turns False once the leader has assigned, so the completed join
        # task is never consumed: no assignment, no heartbeats, session expiry).  The broker answered
        # every request of such a run correctly.  Knowing the topic before joining avoids that rejoin.
        assert c.partitions_for_topic(t.name) == set(range(6))
        c.subscribe([t.name])
        return c

    def run(i):
        try:
            c = new_consumer()
            try:
                while not stop.is_set():
                    batch = c.poll(timeout_ms=200)
                    recs = [Rec(r.partition, r.offset, r.key, r.value) for rs in batch.values() for r in rs]
                    mine = {tp.partition for tp in c.assignment()}
                    if not {r.partition for r in recs} <= mine:
                        failures.append((i, f"read partitions {sorted({r.partition for r in recs})}, "
                                            f"assigned {sorted(mine)}"))
                    if recs:
                        try:
                            c.commit()
                            with lock:
                                for r in recs:
                                    committed[r.partition] = max(committed.get(r.partition, 0), r.offset + 1)
                        except (CommitFailedError, RebalanceInProgressError):
                            # A rebalance began after this poll (kafka-python's leader also
                            # rejoins when its topic metadata changes): the broker rightly
                            # refuses the old generation's commit, and these may be redelivered.
                            with lock:
                                uncommitted.update(r.value for r in recs)
                    with lock:
                        got[i] += recs
                        owned[i] = mine
            finally:
                c.close()
        except Exception as e:  # reported by the main thread
            failures.append((i, repr(e)))

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in (0, 1)]
    for th in threads:
        th.start()
    msgs = make_messages(200)
    try:
        snapshot = lambda: (dict(owned), {i: len(v) for i, v in got.items()}, failures)  # noqa: E731
        wait_for("kafka-python: 2 members split 6 partitions", lambda: is_split(list(owned.values()), 6), 30,
                 describe=snapshot)
        produce_confluent(broker.bootstrap, t.name, msgs)
        def consumed_and_committed():
            # A refused commit leaves its records to be read and committed again by the
            # partition's next owner; the resumed member below must find all of it committed.
            with lock:
                recs = got[0] + got[1]
                if len({r.value for r in recs}) < len(msgs):
                    return False
                return all(committed.get(r.partition, 0) > r.offset for r in recs)
        wait_for("kafka-python: all messages consumed and committed", lambda: consumed_and_committed() or failures,
                 30, describe=lambda: (*snapshot(), dict(committed)))
    finally:
        stop.set()
        for th in threads:
            th.join(30)
    assert not failures, failures
    assert not any(th.is_alive() for th in threads), "a kafka-python member did not close"
    # Ownership is checked per poll above, not against the first split: kafka-python 3.0.12 can strand
    # a member whose poll() timed out mid-join (its completed join is never consumed, so it stops
    # heartbeating); the broker then rightly expires it and hands its partitions to the other member.
    check_exactly(msgs, got[0] + got[1], "kafka-python members", frozenset(uncommitted))

    more = make_messages(50, tag="more")
    produce_confluent(broker.bootstrap, t.name, more)
    c = new_consumer()
    resumed: list[Rec] = []
    try:
        deadline = time.monotonic() + 30
        while len(resumed) < len(more) and time.monotonic() < deadline:
            for rs in c.poll(timeout_ms=200).values():
                resumed += [Rec(r.partition, r.offset, r.key, r.value) for r in rs]
        c.commit()
    finally:
        c.close()
    check_exactly(more, resumed, "kafka-python resumed member")


def test_aiokafka_two_members_split_then_resume(broker, make_topic):
    from aiokafka import AIOKafkaConsumer

    t = make_topic(6)
    g = group_id()
    msgs = make_messages(200)
    more = make_messages(50, tag="more")

    def new_consumer():
        return AIOKafkaConsumer(t.name, bootstrap_servers=broker.bootstrap, group_id=g,
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                session_timeout_ms=SESSION_MS, heartbeat_interval_ms=HEARTBEAT_MS,
                                fetch_max_wait_ms=100)

    async def wait(what, check, timeout):
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
            await asyncio.sleep(0.1)

    async def main():
        stop = asyncio.Event()
        owned: dict[int, set] = {0: set(), 1: set()}
        got: dict[int, list[Rec]] = {0: [], 1: []}

        async def member(i):
            c = new_consumer()
            await c.start()
            try:
                while not stop.is_set():
                    batch = await c.getmany(timeout_ms=200)
                    recs = [Rec(r.partition, r.offset, r.key, r.value) for rs in batch.values() for r in rs]
                    mine = {tp.partition for tp in c.assignment()}
                    assert {r.partition for r in recs} <= mine, f"member {i} read partitions it was not assigned"
                    if recs:
                        await c.commit()
                    got[i] += recs
                    owned[i] = mine
            finally:
                await c.stop()

        tasks = [asyncio.create_task(member(i)) for i in (0, 1)]
        try:
            await wait(f"aiokafka: 2 members split 6 partitions {owned}", lambda: is_split(list(owned.values()), 6)
                       or any(x.done() for x in tasks), 30)
            split = {i: set(s) for i, s in owned.items()}
            await asyncio.to_thread(produce_confluent, broker.bootstrap, t.name, msgs)
            await wait("aiokafka: all messages consumed", lambda: sum(len(v) for v in got.values()) >= len(msgs)
                       or any(x.done() for x in tasks), 30)
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 30)
        assert is_split(list(split.values()), 6), split
        # Ownership is checked per getmany() above: under load a member can miss its session and
        # the broker rightly moves its partitions to the other one.
        check_exactly(msgs, got[0] + got[1], "aiokafka members")

        await asyncio.to_thread(produce_confluent, broker.bootstrap, t.name, more)
        c = new_consumer()
        await c.start()
        resumed: list[Rec] = []
        try:
            deadline = time.monotonic() + 30
            while len(resumed) < len(more) and time.monotonic() < deadline:
                for rs in (await c.getmany(timeout_ms=200)).values():
                    resumed += [Rec(r.partition, r.offset, r.key, r.value) for r in rs]
            await c.commit()
        finally:
            await c.stop()
        check_exactly(more, resumed, "aiokafka resumed member")

    asyncio.run(asyncio.wait_for(main(), 120))


@pytest.mark.skipif(not kafkajs_available(), reason="node or compat/js/node_modules missing (npm ci --prefix compat/js)")
def test_kafkajs_group_members_commit_and_resume(broker, make_topic):
    t = make_topic(6)
    g = group_id()
    msgs = make_messages(200)
    spec = {"bootstrap": broker.bootstrap, "topic": t.name, "groupId": g, "members": 2,
            "splitPartitions": 6, "count": len(msgs), "settleMs": 1000, "timeoutMs": 40000,
            "produceAfterSplit": [{"key": m.key.decode(), "value": m.value.decode()} for m in msgs]}
    out = run_js("group_flow.js", spec, timeout=60)
    assert is_split([set(a) for a in out["split"]], 6), out["split"]
    recs = _recs_from_js(out["records"])
    check_exactly(msgs, recs, "kafkajs members")
    for i, a in enumerate(out["split"]):
        mine = {r["partition"] for r in out["records"] if r["member"] == i}
        assert mine <= set(a), f"kafkajs member {i} read {mine}, owned {a}"
    assert {int(p): int(o) for p, o in out["committed"].items() if int(o) >= 0} == \
        per_partition([(r.partition, r.offset) for r in recs])

    more = make_messages(50, tag="more")
    produce_confluent(broker.bootstrap, t.name, more)
    spec2 = {"bootstrap": broker.bootstrap, "topic": t.name, "groupId": g, "members": 1,
             "count": len(more), "settleMs": 1500, "timeoutMs": 40000}
    out2 = run_js("group_flow.js", spec2, timeout=60)
    check_exactly(more, _recs_from_js(out2["records"]), "kafkajs second run of the group")


# ---------------------------------------------------------------------------
# 6. KIP-848 (group.protocol=consumer) with librdkafka
# ---------------------------------------------------------------------------


def test_confluent_kip848_split_leave_and_resume(broker, make_topic):
    from confluent_kafka import Consumer

    t = make_topic(6)
    g = group_id()
    conf = confluent_conf(broker.bootstrap, g, {"group.protocol": "consumer"}, classic=False)
    a, b = Consumer({**conf, "client.id": "a"}), Consumer({**conf, "client.id": "b"})
    got: dict[str, list[Rec]] = {"a": [], "b": []}
    closed = {"a": False, "b": False}

    def poll(name, c):
        m = c.poll(0.1)
        if m is None:
            return
        assert not m.error(), m.error()
        got[name].append(to_rec(m))
        c.commit(message=m, asynchronous=False)

    def owned(c) -> set:
        return {tp.partition for tp in c.assignment()}

    msgs = make_messages(120)
    more = make_messages(60, tag="more")
    try:
        a.subscribe([t.name])
        b.subscribe([t.name])

        def both_split():
            poll("a", a)
            poll("b", b)
            return is_split([owned(a), owned(b)], 6)

        # The broker's heartbeat interval (group.consumer.heartbeat.interval.ms, 5 s by default) paces this.
        wait_for("KIP-848: 2 members split 6 partitions", both_split, 40, interval=0,
                 describe=lambda: (owned(a), owned(b)))
        split = {"a": owned(a), "b": owned(b)}
        wait_for("KIP-848: broker describes 2 members with the clients' split",
                 lambda: sorted(map(sorted, broker_view(broker.bootstrap, g, "CONSUMER")[1]))
                 == sorted(map(sorted, split.values())), 15, interval=0.3,
                 describe=lambda: broker_view(broker.bootstrap, g, "CONSUMER"))
        produce_confluent(broker.bootstrap, t.name, msgs)

        def all_consumed():
            poll("a", a)
            poll("b", b)
            return len(got["a"]) + len(got["b"]) >= len(msgs)

        wait_for("KIP-848: all messages consumed", all_consumed, 30, interval=0,
                 describe=lambda: (len(got["a"]), len(got["b"])))
        for name in ("a", "b"):
            assert {r.partition for r in got[name]} <= split[name], f"{name} read partitions it did not own"
        check_exactly(msgs, got["a"] + got["b"], "KIP-848 members")

        a.close()
        closed["a"] = True

        def b_owns_all():
            poll("b", b)
            return owned(b) == set(range(6))

        wait_for("KIP-848: the remaining member owns all 6 after the other left", b_owns_all, 30, interval=0,
                 describe=lambda: owned(b))
        wait_for("KIP-848: broker describes 1 member owning all 6",
                 lambda: broker_view(broker.bootstrap, g, "CONSUMER") == (1, [set(range(6))]), 15, interval=0.3,
                 describe=lambda: broker_view(broker.bootstrap, g, "CONSUMER"))
        produce_confluent(broker.bootstrap, t.name, more)
        n0 = len(got["b"])

        def b_got_more():
            poll("b", b)
            return len(got["b"]) - n0 >= len(more)

        wait_for("KIP-848: the remaining member consumed the new messages", b_got_more, 30, interval=0,
                 describe=lambda: len(got["b"]) - n0)
        check_exactly(msgs + more, got["a"] + got["b"], "KIP-848 before and after the leave")
    finally:
        for name, c in (("a", a), ("b", b)):
            if not closed[name]:
                c.close()

    # A fresh member of the group resumes after everything committed.
    last = make_messages(30, tag="last")
    produce_confluent(broker.bootstrap, t.name, last)
    resumed = confluent_consume_count(broker.bootstrap, t.name, g, len(last),
                                      extra={"group.protocol": "consumer"}, classic=False)
    check_exactly(last, resumed, "KIP-848 resumed member")


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "member":
    member_main(json.loads(sys.argv[2]))
