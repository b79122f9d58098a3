"""The group coordinator's trio shell around :class:`~kbroker.group.state.GroupCoordinatorState`.

It does the three things the state machine may not:

* **IO**: records a step produced are encoded into one record batch per
  ``__consumer_offsets`` partition and appended through the broker's
  partition objects before any response of that step is released.  The
  topic (compacted, ``offsets.topic.num.partitions`` partitions) is created
  on first use.  At start-up every partition is replayed into the state
  machine, so a restart loses neither groups nor offsets.
* **Time**: one task sleeps until the earliest timer deadline (or until a
  request changes the timers) and then runs ``tick``; there is no polling.
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

from . import records as R
from .placement import partition_for
from .state import GroupConfig, GroupCoordinatorState, Result

log = logging.getLogger("kbroker.group")

OFFSETS_TOPIC = "__consumer_offsets"
_LOAD_READ_BYTES = 1 << 20


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

    # -- lifecycle ---------------------------------------------------------------------
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
                if part is not None:
                    count += self._replay_partition(part)
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
                res = self.state.tick(self.clock())
            except Exception:
                log.exception("group coordinator timer failed")
                continue
            self._apply(res)

    # -- effects -------------------------------------------------------------------------
    def _apply(self, res: Result) -> None:
        if res.records:
            try:
                self._append(res.records)
            except Exception:
                # The in-memory state already moved on; a restart would replay the older records.
                log.exception("could not append %d records to %s", len(res.records), OFFSETS_TOPIC)
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
        n = self.num_partitions()
        by_partition: dict[int, list] = {}
        for rec in records:
            by_partition.setdefault(partition_for(rec.group_id, n), []).append(R.encode(rec))
        for index, kvs in by_partition.items():
            part = self.broker.partition(OFFSETS_TOPIC, index)
            if part is None:
                log.error("%s-%d is not hosted here; %d records lost", OFFSETS_TOPIC, index, len(kvs))
                continue
            # Internal writes skip Produce's client-facing checks: straight to the log.
            part.append_internal(bytearray(encode_batch(kvs)))

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
            (result,) = await self.broker.create_topics([spec])
            if result.error not in (ErrorCode.NONE, ErrorCode.TOPIC_ALREADY_EXISTS):
                log.error("cannot create %s: %s %s", OFFSETS_TOPIC, result.error.name, result.message or "")
                return ErrorCode.COORDINATOR_NOT_AVAILABLE
            log.info("created %s with %d partitions", OFFSETS_TOPIC, spec["num_partitions"])
        return ErrorCode.NONE

    # -- operations ------------------------------------------------------------------------
    async def _parkable(self, op, req):
        waiter = Waiter()
        res = op(req, self.clock(), waiter)
        self._apply(res)
        if res.response is not None:
            return res.response
        return await waiter.wait()

    async def join(self, req):
        return await self._parkable(self.state.join, req)

    async def sync(self, req):
        return await self._parkable(self.state.sync, req)

    def _now_op(self, op, *args, **kw):
        res = op(*args, self.clock(), **kw)
        self._apply(res)
        return res.response

    async def heartbeat(self, req):
        return self._now_op(self.state.heartbeat, req)

    async def leave(self, req):
        return self._now_op(self.state.leave, req)

    async def commit_offsets(self, req):
        return self._now_op(self.state.commit_offsets, req)

    async def fetch_offsets(self, group_id, topics, *, require_stable=False, member_id=None, member_epoch=-1):
        return self.state.fetch_offsets(group_id, topics, self.clock(), require_stable=require_stable,
                                        member_id=member_id, member_epoch=member_epoch)

    async def delete_offsets(self, group_id, topics):
        return self._now_op(self.state.delete_offsets, group_id, topics)

    async def list_groups(self, states=(), types=()):
        return self.state.list_groups(states, types)

    async def describe_group(self, group_id):
        return self.state.describe_group(group_id)

    async def consumer_heartbeat(self, req):
        return self._now_op(self.state.consumer_heartbeat, req, topics=ImageTopics(self.broker.image))

    async def consumer_group_describe(self, group_id):
        return self.state.consumer_group_describe(group_id, ImageTopics(self.broker.image))

    async def delete_groups(self, group_ids):
        return self._now_op(self.state.delete_groups, group_ids)


__all__ = ["GroupCoordinator", "Waiter", "OFFSETS_TOPIC"]
