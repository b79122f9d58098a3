"""The group coordinator's trio shell around :class:`~kbroker.group.state.GroupCoordinatorState`.

It does the three things the state machine may not:

* **IO**: records a step produced are encoded into one record batch per
  ``__consumer_offsets`` partition and appended through the broker's
  partition objects before any response of that step is released.  The
  topic (compacted, ``offsets.topic.num.partitions`` partitions) is created
  on first use.  At start-up every partition is replayed into the state
  machine, so a restart loses neither groups nor offsets.
* **Write, then apply, then answer** (Kafka's ``CoordinatorResult``): a step
  whose records cannot be appended (full disk, I/O error, partition not
  here) leaves no trace in memory and is answered with the coordinator
  error Kafka maps that failure to -- NOT_COORDINATOR for a storage error,
  COORDINATOR_NOT_AVAILABLE when the partition is missing -- so the client
  rediscovers the coordinator and retries instead of being told "ok" about
  a commit a restart would not find.  See :meth:`GroupCoordinator._execute`.
* **Time**: one task sleeps until the earliest timer deadline (or until a
  request changes the timers) and then runs the due timers, one step each;
  there is no polling.  The task is a fault boundary: a timer that raises
  or cannot write is undone, logged and retried later; the broker serves on.
* **Waiting**: a parked JoinGroup/SyncGroup awaits a :class:`Waiter` (a
  trio event plus a response slot) that a later step completes.

Wiring: the broker creates one ``GroupCoordinator(broker)`` and calls
``await coordinator.start(nursery)`` once its partitions are open.
"""

from __future__ import annotations

import logging
import time

import trio

from protocol import ErrorCode, ProtocolError
from protocol.records import LOG_OVERHEAD, decode_batch, encode_batch, read_batch_header

from ..crashpoints import crash_point
from ..log.errors import KafkaStorageError
from . import records as R
from .classic import join_error, sync_error
from .placement import partition_for
from .state import GroupConfig, GroupCoordinatorState, Result

log = logging.getLogger("kbroker.group")

OFFSETS_TOPIC = "__consumer_offsets"
# In a cluster, how long a FindCoordinator may wait for __consumer_offsets to be created.
CREATE_WAIT_S = 5.0
_LOAD_READ_BYTES = 1 << 20
# A timer whose step failed (its records could not be written, or it raised) runs again this much
# later: soon enough that a session still expires once the disk has room, late enough that a
# full disk does not turn the timer task into a busy loop of failing appends.
TIMER_RETRY_MS = 1000


class AppendFailed(Exception):
    """Records of one step could not be made durable.

    ``error_code`` is what the client is answered (Kafka's mapping of a
    coordinator write failure); ``written`` lists the encoded ``(key, value)``
    records that did reach the log before the failure (a step spanning
    several ``__consumer_offsets`` partitions), so memory can follow the log.
    """

    def __init__(self, message: str, error_code: ErrorCode, written: list):
        super().__init__(message)
        self.error_code = error_code
        self.written = written


class Waiter:
    """A parked request: set once, read once."""

    __slots__ = ("event", "response")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.response = None

    async def wait(self):
        await self.event.wait()
        return self.response


class ImageTopics:
    """The broker's metadata image as the state machine's view of topics."""

    def __init__(self, image):
        self.image = image

    def lookup(self, name):
        t = self.image.topics.get(name)
        return (t.topic_id, len(t.partitions)) if t is not None else None

    def name_of(self, topic_id):
        t = self.image.topics_by_id.get(topic_id)
        return t.name if t is not None else None

    def names(self):
        return self.image.topics.keys()


def _now_ms() -> int:
    return int(time.time() * 1000)


class GroupCoordinator:
    def __init__(self, broker, *, clock=_now_ms):
        self.broker = broker
        self.config = GroupConfig.from_broker_config(broker.config)
        self.state = GroupCoordinatorState(self.config)
        self.clock = clock
        self._wakeup = trio.Event()
        self._sleeping_until: int | None = None  # the timer task's deadline; -1 while it runs
        self._started = False
        self._create_lock = trio.Lock()
        # __consumer_offsets partitions whose replay failed: their groups are refused rather than
        # served from a half-loaded state (Kafka leaves such a coordinator partition unloaded).
        self.unloaded: set[int] = set()

    # -- lifecycle ---------------------------------------------------------------------
    @property
    def started(self) -> bool:
        return self._started

    async def start(self, nursery: trio.Nursery) -> None:
        """Load ``__consumer_offsets`` (if it exists) and start the timer task."""
        if self._started:
            return
        self._load()
        self._started = True
        nursery.start_soon(self._run_timers)

    def _load(self) -> None:
        started = time.monotonic()
        t = self.broker.image.topics.get(OFFSETS_TOPIC)
        count = 0
        if t is not None:
            for index in sorted(t.partitions):
                part = self.broker.partition(OFFSETS_TOPIC, index)
                if part is None:
                    continue
                try:
                    count += self._replay_partition(part)
                except Exception:
                    # A fault boundary: one unreadable partition must not stop the broker, nor the
                    # groups of the other partitions.
                    log.exception("could not load %s-%d; its groups answer COORDINATOR_NOT_AVAILABLE "
                                  "until a restart", OFFSETS_TOPIC, index)
                    self.unloaded.add(index)
        self._apply(self.state.on_loaded(self.clock()))
        if t is not None:
            log.info(
                "loaded %d groups (%d with offsets) from %d records of %s in %.0f ms",
                len(self.state.groups), len(self.state.offsets), count, OFFSETS_TOPIC,
                (time.monotonic() - started) * 1000,
            )

    def _replay_partition(self, part) -> int:
        plog = part.log
        offset = plog.log_start_offset
        end = plog.log_end_offset
        count = 0
        while offset < end:
            res = plog.read(offset, _LOAD_READ_BYTES, min_one_batch=True)
            data = memoryview(res.records)
            if len(data) == 0:
                break
            pos = 0
            while pos + LOG_OVERHEAD <= len(data):
                header = read_batch_header(data, pos) if pos + 61 <= len(data) else None
                if header is None or pos + header.total_size > len(data):
                    break
                try:
                    header, recs = decode_batch(data, pos)
                except ProtocolError as e:
                    log.error("%s-%d: skipping an unreadable batch at offset %d: %s",
                              OFFSETS_TOPIC, part.index, header.base_offset, e)
                    recs = []
                if not header.is_control:
                    for r in recs:
                        if r.key is None:
                            continue
                        try:
                            name, key, value = R.decode(r.key, r.value)
                        except ProtocolError as e:
                            log.warning("%s-%d offset %d: unknown record skipped: %s",
                                        OFFSETS_TOPIC, part.index, r.offset, e)
                            continue
                        self.state.replay(name, key, value)
                        count += 1
                pos += header.total_size
                offset = header.next_offset
            if pos == 0:
                break  # not even one whole batch came back; stop rather than spin
        return count

    async def _run_timers(self) -> None:
        """Sleep until the earliest deadline, then run what is due; forever.

        A fault boundary: one group's timer failing must not end the broker
        (this task runs in the broker's nursery, so anything escaping it
        would).  The coordinator opens no nursery of its own, so what can
        arrive here is a plain exception, never a group; ``Cancelled`` is a
        BaseException and passes through to shut the task down.
        """
        while True:
            self._wakeup = trio.Event()
            deadline = self.state.next_deadline()
            self._sleeping_until = deadline
            if deadline is None:
                await self._wakeup.wait()
                continue
            delay = (deadline - self.clock()) / 1000
            if delay > 0:
                with trio.move_on_after(delay):
                    await self._wakeup.wait()
                continue
            self._sleeping_until = -1  # running: anything new is looked at on the next pass
            try:
                self.run_due_timers(self.clock())
            except Exception:
                # run_due_timers already contains each timer's failure; this is a bug in the loop
                # itself.  Back off instead of spinning on it.
                log.exception("group coordinator timer loop failed; retrying in %d ms", TIMER_RETRY_MS)
                await trio.sleep(TIMER_RETRY_MS / 1000)

    def run_due_timers(self, now: int) -> None:
        """Run every timer due at ``now``, each as its own step (own checkpoint, own write)."""
        state = self.state
        while (scope := state.timer_scope(now)) is not None:
            key = state.timers.peek_due(now)
            action = state.timers.action_of(key)
            failed = False
            try:
                self._execute(lambda: state.run_timer(now), scope)
            except AppendFailed:
                failed = True  # already logged and undone by _execute
            except Exception:
                log.exception("group coordinator timer %r failed; undone, retrying in %d ms", key, TIMER_RETRY_MS)
                failed = True
            if failed:
                # The undo put a group timer back as due; an undone retention pass re-armed itself
                # before failing, or not at all if it raised.  Either way it comes back later.
                if state.timers.is_scheduled(key):
                    state.timers.postpone(key, now + TIMER_RETRY_MS)
                elif action is not None:
                    state.timers.schedule(key, now + TIMER_RETRY_MS, action)

    # -- effects -------------------------------------------------------------------------
    def _execute(self, step, scope, *, crash: str | None = None) -> Result:
        """Run one state-machine step with write-then-apply semantics.

        ``scope`` names the groups the step may change as it decides
        (membership steps); they are checkpointed first.  Offset changes are
        deferred by the state machine itself (``Result.effects``) and need no
        checkpoint, which keeps the commit path free of copies.

        If the records are appended, the deferred effects are applied, parked
        requests the step finished are woken and the result is returned for
        the caller to answer.  If not, the checkpoint is restored, nothing is
        applied or woken (requests parked before the step stay parked, as the
        restored groups expect) and :class:`AppendFailed` is raised for the
        caller to answer with its ``error_code``.  An exception from the step
        itself is undone the same way and re-raised.
        """
        cp = self.state.checkpoint(scope) if scope else None
        try:
            res = step()
        except BaseException:
            if cp is not None:
                self.state.restore(cp)
            raise
        if res.records:
            try:
                self._append(res.records)
            except AppendFailed as e:
                if cp is not None:
                    self.state.restore(cp)
                self._replay_written(e.written)
                log.warning("could not write %d records to %s: %s; answering %s, nothing applied",
                            len(res.records), OFFSETS_TOPIC, e, e.error_code.name)
                raise
            if crash is not None:
                crash_point(crash)
        res.apply()
        self._deliver(res)
        return res

    def _replay_written(self, written: list) -> None:
        """Apply records that reached the log before a multi-partition write failed."""
        for key, value in written:
            name, k, v = R.decode(key, value)
            self.state.replay(name, k, v)

    def _apply(self, res: Result) -> None:
        """Deliver the start-up step (timers armed after loading); it has nothing to undo to."""
        if res.records:
            try:
                self._append(res.records)
            except AppendFailed as e:
                log.error("after loading, could not write %d records to %s: %s",
                          len(res.records), OFFSETS_TOPIC, e)
                return
        res.apply()
        self._deliver(res)

    def _deliver(self, res: Result) -> None:
        for waiter, response in res.completions:
            if waiter is not None:
                waiter.response = response
                waiter.event.set()
        # Wake the timer task only if a deadline now comes before the one it sleeps until.
        asleep = self._sleeping_until
        if asleep is not None and asleep < 0:
            return
        deadline = self.state.next_deadline()
        if deadline is not None and (asleep is None or deadline < asleep):
            self._wakeup.set()

    def num_partitions(self) -> int:
        t = self.broker.image.topics.get(OFFSETS_TOPIC)
        if t is not None and t.partitions:
            return len(t.partitions)
        return self.broker.config["offsets.topic.num.partitions"]

    def partition_for(self, group_id: str) -> int:
        return partition_for(group_id, self.num_partitions())

    def _append(self, records: list) -> None:
        """Append one batch per ``__consumer_offsets`` partition; :class:`AppendFailed` if any fails.

        One batch is all-or-nothing in the log, and a step's records almost
        always belong to one group, hence one partition.  Steps that span
        partitions (group deletion, offset retention) stop at the first
        failure and report what was written before it.

        The append is synchronous (no await), so no other task can observe
        the step's state between its decision and its write.
        """
        n = self.num_partitions()
        by_partition: dict[int, list] = {}
        for rec in records:
            by_partition.setdefault(partition_for(rec.group_id, n), []).append(R.encode(rec))
        written: list = []
        for index, kvs in by_partition.items():
            part = self.broker.partition(OFFSETS_TOPIC, index)
            if part is None:
                # Kafka answers a write to a partition it cannot find (UNKNOWN_TOPIC_OR_PARTITION)
                # with COORDINATOR_NOT_AVAILABLE: retriable, the client looks again.
                raise AppendFailed(f"{OFFSETS_TOPIC}-{index} is not hosted here",
                                   ErrorCode.COORDINATOR_NOT_AVAILABLE, written)
            try:
                # Internal writes skip Produce's client-facing checks: straight to the log.
                part.append_internal(bytearray(encode_batch(kvs)))
            except (KafkaStorageError, OSError) as e:
                # Kafka maps KAFKA_STORAGE_ERROR on the coordinator's partition to NOT_COORDINATOR:
                # the client finds the coordinator again (possibly moved, once there is a cluster).
                raise AppendFailed(f"{OFFSETS_TOPIC}-{index}: {e}", ErrorCode.NOT_COORDINATOR, written) from e
            written.extend(kvs)

    async def ensure_topic(self) -> ErrorCode:
        """Create ``__consumer_offsets`` on first use; COORDINATOR_NOT_AVAILABLE if that fails."""
        if OFFSETS_TOPIC in self.broker.image.topics:
            return ErrorCode.NONE
        async with self._create_lock:
            if OFFSETS_TOPIC in self.broker.image.topics:
                return ErrorCode.NONE
            cfg = self.broker.config
            spec = {
                "name": OFFSETS_TOPIC,
                "num_partitions": cfg["offsets.topic.num.partitions"],
                "replication_factor": cfg["offsets.topic.replication.factor"],
                "configs": {
                    "cleanup.policy": "compact",
                    "compression.type": "producer",
                    "segment.bytes": str(cfg["offsets.topic.segment.bytes"]),
                },
            }
            quorum = self.broker.quorum
            # In a cluster the active controller creates it, and may be away:
            # a FindCoordinator waits a few seconds at most (the client asks again).
            result = None
            with trio.move_on_after(CREATE_WAIT_S if quorum is not None else float("inf")):
                (result,) = await self.broker.create_topics([spec])
            if result is None:
                log.warning("%s not created within %.0f s (is the controller quorum up?)", OFFSETS_TOPIC,
                            CREATE_WAIT_S)
                return ErrorCode.COORDINATOR_NOT_AVAILABLE
            if result.error not in (ErrorCode.NONE, ErrorCode.TOPIC_ALREADY_EXISTS):
                log.error("cannot create %s: %s %s", OFFSETS_TOPIC, result.error.name, result.message or "")
                return ErrorCode.COORDINATOR_NOT_AVAILABLE
            if result.error == ErrorCode.NONE:
                log.info("created %s with %d partitions", OFFSETS_TOPIC, spec["num_partitions"])
            if quorum is not None and not await quorum.wait_until(
                    lambda: OFFSETS_TOPIC in self.broker.image.topics, 1.0):
                return ErrorCode.COORDINATOR_NOT_AVAILABLE
        return ErrorCode.NONE

    # -- operations ------------------------------------------------------------------------
    # Each takes a ``failed(code)`` that builds the operation's answer for a write that failed.
    def _refused(self, group_id: str) -> ErrorCode | None:
        """Why this broker cannot serve ``group_id`` now, or None.

        In a cluster a group belongs to the broker leading its
        ``__consumer_offsets`` partition (NOT_COORDINATOR elsewhere: the
        client asks FindCoordinator again), and nothing is served before the
        broker has loaded its partitions (COORDINATOR_LOAD_IN_PROGRESS).
        """
        if self.broker.quorum is not None:
            if not self._started:
                return ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
            if self.coordinator_of(group_id) != self.broker.node_id:
                return ErrorCode.NOT_COORDINATOR
        if self.unloaded and self.partition_for(group_id) in self.unloaded:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        return None

    def coordinator_of(self, group_id: str) -> int | None:
        """The broker leading ``group_id``'s ``__consumer_offsets`` partition, per the image (None if unknown)."""
        t = self.broker.image.topics.get(OFFSETS_TOPIC)
        if t is None:
            return None
        p = t.partitions.get(self.partition_for(group_id))
        if p is None or p.leader < 0:
            return None
        return p.leader

    async def _parkable(self, op, req, failed):
        refusal = self._refused(req.group_id)
        if refusal:
            return failed(refusal)
        waiter = Waiter()
        try:
            res = self._execute(lambda: op(req, self.clock(), waiter), (req.group_id,))
        except AppendFailed as e:
            return failed(e.error_code)
        if res.response is not None:
            return res.response
        return await waiter.wait()

    async def join(self, req):
        return await self._parkable(self.state.join, req, lambda code: join_error(code, req.member_id))

    async def sync(self, req):
        return await self._parkable(self.state.sync, req, sync_error)

    def _now_op(self, group_id, step, scope, failed, *, crash=None):
        refusal = self._refused(group_id)
        if refusal:
            return failed(refusal)
        try:
            return self._execute(step, scope, crash=crash).response
        except AppendFailed as e:
            return failed(e.error_code)

    async def heartbeat(self, req):
        # A classic heartbeat only moves timers and never writes: no checkpoint, which matters
        # because it is the most frequent request of a large group.
        return self._now_op(req.group_id, lambda: self.state.heartbeat(req, self.clock()), (),
                            lambda code: {"error_code": code})

    async def leave(self, req):
        return self._now_op(req.group_id, lambda: self.state.leave(req, self.clock()), (req.group_id,),
                            lambda code: {"error_code": code, "members": []})

    async def commit_offsets(self, req):
        # Offsets are effects, applied only after the write: no checkpoint needed.
        return self._now_op(
            req.group_id, lambda: self.state.commit_offsets(req, self.clock()), (),
            lambda code: {t: {p.partition: code for p in parts} for t, parts in req.topics.items()},
            crash="offset.commit",
        )

    async def fetch_offsets(self, group_id, topics, *, require_stable=False, member_id=None, member_epoch=-1):
        refusal = self._refused(group_id)
        if refusal:
            return refusal, []
        return self.state.fetch_offsets(group_id, topics, self.clock(), require_stable=require_stable,
                                        member_id=member_id, member_epoch=member_epoch)

    async def delete_offsets(self, group_id, topics):
        return self._now_op(group_id, lambda: self.state.delete_offsets(group_id, topics, self.clock()), (),
                            lambda code: (code, {}))

    async def list_groups(self, states=(), types=()):
        return self.state.list_groups(states, types)

    async def describe_group(self, group_id):
        return self.state.describe_group(group_id)

    async def consumer_heartbeat(self, req):
        topics = ImageTopics(self.broker.image)
        return self._now_op(
            req.group_id, lambda: self.state.consumer_heartbeat(req, self.clock(), topics=topics), (req.group_id,),
            lambda code: self.state._hb_response(code, None),
        )

    async def consumer_group_describe(self, group_id):
        return self.state.consumer_group_describe(group_id, ImageTopics(self.broker.image))

    async def delete_groups(self, group_ids):
        """One step per group: each group's records go to its own partition, so each is all-or-nothing."""
        answers = []
        for gid in group_ids:
            answers.extend(self._now_op(gid, lambda gid=gid: self.state.delete_groups([gid], self.clock()), (gid,),
                                        lambda code, gid=gid: [(gid, code)]))
        return answers


__all__ = ["GroupCoordinator", "Waiter", "AppendFailed", "OFFSETS_TOPIC", "TIMER_RETRY_MS"]
