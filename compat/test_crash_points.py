"""Deterministic crash points (kbroker/crashpoints.py), against real processes.

For every name in ``crashpoints.POINTS``:

1. a broker is started normally and given acknowledged state to lose: records,
   commits, topics (what the point's scenario needs);
2. it is stopped and started again with ``KBROKER_CRASH_POINT=<name>:<count>``;
   the scenario drives the operation that reaches the point until the process
   SIGKILLs itself there (a deadline: a point that is never reached fails the
   test).  If the point is already reached while the broker starts (the metadata
   log is appended to when the broker registers), that crash is recovered from
   and checked too, and the count goes up until the point is reached by the
   scenario's own operation;
3. the broker is started WITHOUT the variable and must come up with every
   acknowledged record, commit and topic intact, nothing half-made, and offsets
   never reused (a new record lands at or after the old high watermark).

A point that no scenario knows how to reach fails loudly, so a new point added to
POINTS is never silently untested.  Each run lands in the abuse catalogue.
"""

from __future__ import annotations

import signal
import time
from typing import Any, Optional

import pytest

from compat import abuse, kraw
from compat.abuse import WAIT, Case
from compat.conftest import EXTERNAL, BrokerStartError, unique_name
from kbroker import crashpoints

ENV = crashpoints.ENV
MAX_COUNT = 8  # how far the count is raised while the point is still reached during start-up
DRIVE_TIMEOUT = 30.0  # seconds for the scenario's operation to reach the point

_last_ts = {"old": int(time.time() * 1000) - 2 * 3600 * 1000, "now": 0}


def _next_ts(old: bool = False) -> int:
    """Record timestamps at least 10 ms apart (segment.ms=1 then rolls on every batch);
    ``old``: two hours in the past (beyond a one-hour retention.ms)."""
    if old:
        _last_ts["old"] += 10
        return _last_ts["old"]
    _last_ts["now"] = max(_last_ts["now"] + 10, int(time.time() * 1000))
    return _last_ts["now"]


class Scenario:
    """Reaches one crash point.  ``setup`` runs on a normal broker and leaves
    acknowledged state; ``drive`` runs on the armed broker until it dies;
    ``verify`` runs after the restart without the crash point."""

    settings: dict[str, Any] = {}  # every start
    armed_settings: dict[str, Any] = {}  # only the armed start (background passes that should run now)
    startup_crash_is_the_point = False  # a crash while the armed broker starts is the one we want
    first_count = 3  # arm the n-th time the point is reached: the armed broker acknowledges a few first

    def __init__(self) -> None:
        self.base = unique_name("cp-base")
        self.base_acked: dict[int, bytes] = {}
        self.acked = 0
        self.lost = 0
        self.notes: dict[str, Any] = {}

    # -- helpers
    def sock(self, b):
        return kraw.connect(b.host, b.port, WAIT)

    def create(self, b, name: str, partitions: int = 1, configs: Optional[dict] = None) -> None:
        with self.sock(b) as s:
            err, msg = abuse.create_topics(s, [abuse.creatable(name, partitions, configs)])[name]
        assert err == 0, f"CreateTopics {name}: {err} {msg}"

    def produce(self, b, topic: str, values: list[bytes], partition: int = 0, key: Optional[bytes] = None,
                old: bool = False) -> dict[int, bytes]:
        """One batch per value (explicit, increasing timestamps); {offset: value} acknowledged."""
        out = {}
        with self.sock(b) as s:
            for v in values:
                err, off = abuse.produce(s, topic, partition, abuse.batch([v], key=key, timestamps=[_next_ts(old)]))
                assert err == 0, f"produce to {topic}-{partition}: error {err}"
                out[off] = v
        return out

    # -- the three phases
    def setup(self, b) -> None:
        self.create(b, self.base, 1)
        self.base_acked = self.produce(b, self.base, [b"base-%d" % i for i in range(20)])

    def drive(self, b) -> None:
        raise NotImplementedError

    def verify(self, b) -> None:
        self.check_records(b, self.base, self.base_acked)

    def check_records(self, b, topic: str, acked: dict[int, bytes], partition: int = 0,
                      may_be_deleted: bool = False) -> None:
        """Acknowledged records are at their offsets (those below the log start too, unless
        retention may have removed them), and a new record lands after all of them."""
        got, hw, start = abuse.read_partition(b.host, b.port, topic, partition)
        if may_be_deleted:
            self.notes["log_start_after_restart"] = start
        self.acked += len(acked)
        for off, v in acked.items():
            if may_be_deleted and off < start:
                continue
            if off not in got or got[off].value != v:
                self.lost += 1
        stray = [o for o in got if o in acked and got[o].value != acked[o]]
        assert not stray, f"{topic}-{partition}: offsets {stray[:5]} hold other records than acknowledged"
        top = max(acked, default=-1)
        with self.sock(b) as s:
            err, base = abuse.produce(s, topic, partition, abuse.batch([b"after-restart"], timestamps=[_next_ts()]))
        assert err == 0, f"produce to {topic}-{partition} after the restart: error {err}"
        assert base >= max(top + 1, hw), f"{topic}-{partition}: new record at offset {base}, " \
                                         f"acknowledged up to {top}, high watermark {hw}: an offset was reused"


def _ops_until_dead(b, op, timeout: float = DRIVE_TIMEOUT) -> int:
    """Call ``op(i)`` until the broker process is gone; the number of calls made.
    Errors from a dying broker are expected."""
    deadline = time.monotonic() + timeout
    i = 0
    while b.alive():
        if time.monotonic() > deadline:
            raise AssertionError(f"the crash point was not reached in {timeout:.0f}s ({i} operations)")
        try:
            op(i)
        except (OSError, ConnectionError, AssertionError):
            if b.alive():
                # not the crash yet: an operation failed on a live broker
                time.sleep(0.05)
                if b.alive():
                    raise
        i += 1
    return i


def _wait_dead(b, timeout: float = DRIVE_TIMEOUT) -> None:
    abuse.wait_for(lambda: not b.alive(), timeout, "the background pass to reach the crash point", 0.05)


# -- the scenarios -----------------------------------------------------------------------------


class Append(Scenario):
    """log.append: any produce."""

    def drive(self, b):
        self.attempted = _ops_until_dead(b, lambda i: self.base_acked.update(
            self.produce(b, self.base, [b"drive-%d" % i])))


class SegmentRoll(Scenario):
    """segment.roll: segment.ms=1 and timestamps 10 ms apart: every batch rolls."""

    def setup(self, b):
        super().setup(b)
        self.topic = unique_name("cp-roll")
        self.create(b, self.topic, 1, {"segment.ms": 1})
        self.topic_acked = self.produce(b, self.topic, [b"roll-%d" % i for i in range(5)])

    def drive(self, b):
        _ops_until_dead(b, lambda i: self.topic_acked.update(self.produce(b, self.topic, [b"drive-%d" % i])))

    def verify(self, b):
        super().verify(b)
        self.check_records(b, self.topic, self.topic_acked)


class IndexWrite(SegmentRoll):
    """index.write: an index entry per batch (index.interval.bytes=0), persisted when a
    segment rolls."""

    def setup(self, b):
        Scenario.setup(self, b)
        self.topic = unique_name("cp-index")
        self.create(b, self.topic, 1, {"segment.ms": 1, "index.interval.bytes": 0})
        self.topic_acked = self.produce(b, self.topic, [b"index-%d" % i for i in range(5)])


class RetentionDelete(Scenario):
    """retention.delete: records two hours old in many segments, retention.ms one hour;
    the armed broker checks retention every 100 ms."""

    armed_settings = {"log.retention.check.interval.ms": 100}
    startup_crash_is_the_point = True
    first_count = 1

    def setup(self, b):
        super().setup(b)
        self.topic = unique_name("cp-retention")
        self.create(b, self.topic, 1, {"segment.ms": 1, "retention.ms": 3600000})
        self.topic_acked = self.produce(b, self.topic, [b"old-%d" % i for i in range(10)], old=True)

    def drive(self, b):
        _wait_dead(b)

    def verify(self, b):
        super().verify(b)
        self.check_records(b, self.topic, self.topic_acked, may_be_deleted=True)


class CompactionSwap(Scenario):
    """compaction.swap: a compacted topic with a segment per batch and overwritten keys;
    the armed broker's cleaner runs every 100 ms."""

    armed_settings = {"log.cleaner.backoff.ms": 100}
    startup_crash_is_the_point = True
    first_count = 1

    def setup(self, b):
        super().setup(b)
        self.topic = unique_name("cp-compact")
        self.create(b, self.topic, 1, {"cleanup.policy": "compact", "segment.ms": 1,
                                       "min.cleanable.dirty.ratio": 0.01})
        self.latest: dict[bytes, tuple[int, bytes]] = {}
        for rnd in range(6):
            for k in range(5):
                key = b"k%d" % k
                (off, v), = self.produce(b, self.topic, [b"%s-v%d" % (key, rnd)], key=key).items()
                self.latest[key] = (off, v)

    def drive(self, b):
        _wait_dead(b)

    def verify(self, b):
        super().verify(b)
        got, hw, _ = abuse.read_partition(b.host, b.port, self.topic)
        self.notes["records_left"] = len(got)
        self.acked += len(self.latest)
        for key, (off, v) in self.latest.items():
            if off not in got or got[off].value != v or got[off].key != key:
                self.lost += 1
        # compaction may drop overwritten records, never change one
        for off, r in got.items():
            k = r.key
            assert r.value.startswith(k + b"-v"), f"offset {off}: key {k!r} holds {r.value!r}"
        assert hw == max(off for off, _ in self.latest.values()) + 1


class TopicDelete(Scenario):
    """topic.delete: DeleteTopics of a topic with data; after the restart it is gone
    (or, if the deletion did not become durable, whole), and a topic created again
    under its name starts empty."""

    first_count = 1

    def setup(self, b):
        super().setup(b)
        self.victim = unique_name("cp-delete")
        self.create(b, self.victim, 2)
        self.victim_acked = self.produce(b, self.victim, [b"doomed-%d" % i for i in range(5)])

    def drive(self, b):
        def op(i):
            with self.sock(b) as s:
                kraw.call(s, abuse.DELETE_TOPICS, 4, {"topic_names": [self.victim], "timeout_ms": 10000})
        _ops_until_dead(b, op)

    def verify(self, b):
        super().verify(b)
        if self.victim in abuse.topic_names(b.host, b.port):
            self.notes["victim"] = "still there"
            self.check_records(b, self.victim, self.victim_acked)
            return
        self.notes["victim"] = "deleted"
        abuse.wait_for(lambda: self._recreate(b), WAIT, f"re-creating {self.victim}", 0.1)
        got, hw, _ = abuse.read_partition(b.host, b.port, self.victim)
        assert not got and hw == 0, f"re-created {self.victim} holds {len(got)} records of the deleted one"

    def _recreate(self, b) -> bool:
        with self.sock(b) as s:
            err, msg = abuse.create_topics(s, [abuse.creatable(self.victim, 2)])[self.victim]
        if err == abuse.TOPIC_ALREADY_EXISTS:  # the deletion may still be finishing
            return False
        assert err == 0, f"re-creating {self.victim}: {err} {msg}"
        abuse.wait_for(lambda: self._usable(b, self.victim, 2), WAIT, f"{self.victim} to be usable")
        return True

    def _usable(self, b, name: str, partitions: int) -> bool:
        with self.sock(b) as s:
            md = abuse.metadata(s, [name])
        t = md.topics[0]
        return t.error_code == 0 and len(t.partitions) == partitions and all(p.leader_id >= 0 for p in t.partitions)


class MetadataChange(TopicDelete):
    """metadata.append / metadata.apply: CreateTopics one at a time until the crash.
    Acknowledged topics exist whole after the restart; the one in flight exists whole
    or not at all; every partition of every topic takes a record."""

    first_count = 3

    def setup(self, b):
        Scenario.setup(self, b)
        self.answered: list[str] = []
        self.tried: list[str] = []

    def drive(self, b):
        def op(i):
            name = unique_name("cp-meta")
            self.tried.append(name)
            with self.sock(b) as s:
                err, msg = abuse.create_topics(s, [abuse.creatable(name, 3)])[name]
            assert err == 0, f"CreateTopics {name}: {err} {msg}"
            self.answered.append(name)
        _ops_until_dead(b, op)

    def verify(self, b):
        Scenario.verify(self, b)
        names = abuse.topic_names(b.host, b.port)
        self.acked += len(self.answered)
        self.lost += sum(1 for n in self.answered if n not in names)
        in_flight = [n for n in self.tried if n not in self.answered]
        self.notes.update(topics_acked=len(self.answered),
                          in_flight="created" if in_flight and in_flight[0] in names else "absent")
        with self.sock(b) as s:
            for n in self.tried:
                if n not in names:
                    continue
                assert self._usable(b, n, 3), f"{n} exists but not with 3 led partitions"
                for p in range(3):
                    err, _ = abuse.produce(s, n, p, abuse.batch([b"x"]))
                    assert err == 0, f"{n}-{p} exists but does not take a record: error {err}"


class OffsetCommit(Scenario):
    """offset.commit: commits of growing offsets until the crash; after the restart the
    group's offset is the last acknowledged one, or the one in flight."""

    def setup(self, b):
        super().setup(b)
        self.group = unique_name("cp-group")
        with self.sock(b) as s:
            abuse.commit_until_ready(s, self.group, self.base, {0: 5})
        self.ok, self.tried = [5], [5]

    def drive(self, b):
        def op(i):
            off = 6 + i
            self.tried.append(off)
            with self.sock(b) as s:
                errs = abuse.commit(s, self.group, self.base, {0: off})
            if errs == {0: 0}:
                self.ok.append(off)
        _ops_until_dead(b, op)

    def verify(self, b):
        super().verify(b)
        with self.sock(b) as s:
            got = abuse.committed(s, self.group, self.base, [0])[0]
        self.acked += len(self.ok)
        self.notes.update(last_acked_commit=self.ok[-1], committed_after_restart=got)
        if got < self.ok[-1] or got not in self.tried:
            self.lost += 1


SCENARIOS: dict[str, type[Scenario]] = {
    "log.append": Append,
    "segment.roll": SegmentRoll,
    "index.write": IndexWrite,
    "retention.delete": RetentionDelete,
    "compaction.swap": CompactionSwap,
    "topic.delete": TopicDelete,
    "metadata.append": MetadataChange,
    "metadata.apply": MetadataChange,
    "offset.commit": OffsetCommit,
}


# -- the test ----------------------------------------------------------------------------------


def _killed_by_the_point(b) -> None:
    code = b.proc.returncode
    assert code == -signal.SIGKILL, f"the broker died with exit code {code}, not by its crash point (SIGKILL)"


def _start_armed(b, point: str, count: int) -> bool:
    """Start with the point armed; True if it is up, False if it died at the point while starting."""
    b.env[ENV] = f"{point}:{count}"
    try:
        b.start()
        return True
    except BrokerStartError as e:
        if not str(e).startswith("kbroker exited"):
            raise  # it hung (and was killed by the fixture): not a crash point
        _killed_by_the_point(b)
        return False
    finally:
        del b.env[ENV]


@pytest.mark.parametrize("point", sorted(crashpoints.POINTS))
def test_crash_point_recovery(start_broker, point):
    if EXTERNAL:
        pytest.skip("needs a broker process of its own")
    if point not in SCENARIOS:
        pytest.fail(f"crash point {point!r} is in crashpoints.POINTS but no scenario here reaches it: "
                    f"add one to SCENARIOS in {__file__}")
    sc = SCENARIOS[point]()
    case = Case(f"crash at {point}")
    abuse.CATALOGUE.append(case)
    b = start_broker(sc.settings, offsets_topic_num_partitions=1)
    sc.setup(b)
    b.stop()
    startup_crashes = 0
    count = sc.first_count
    try:
        b.overrides.update({k: str(v) for k, v in sc.armed_settings.items()})
        while True:
            up = _start_armed(b, point, count)
            if up:
                sc.drive(b)
                _killed_by_the_point(b)
                break
            startup_crashes += 1
            if sc.startup_crash_is_the_point:
                break
            # reached while starting: recover from that crash (it must work too), then arm later
            for k in sc.armed_settings:
                b.overrides.pop(k, None)
            b.start()
            acked = sc.acked
            Scenario.verify(sc, b)  # the base records survived that crash too (losses count)
            sc.acked = acked
            b.stop()
            b.overrides.update({k: str(v) for k, v in sc.armed_settings.items()})
            count += 1
            assert count <= sc.first_count + MAX_COUNT, f"{point} is reached {count} times in every start-up"
        for k in sc.armed_settings:
            b.overrides.pop(k, None)
        t0 = time.monotonic()
        b.start()
        case.note(count=count, startup_crashes=startup_crashes, recovery_start_s=round(time.monotonic() - t0, 2))
        sc.verify(b)
        case.survived = True
    finally:
        case.acked, case.lost = sc.acked, sc.lost
        case.note(**sc.notes)
        if case.survived is None:
            case.survived = b.alive()
    assert sc.lost == 0, f"{sc.lost} acknowledged items lost after a crash at {point}"
    case.passed = True
