"""The trio shell around :class:`~kbroker.raft.node.RaftNode`: time, sockets and waiting.

Theory of operation
-------------------
The state machine is synchronous and does no IO, so the shell is small.
Every call into the node (a message received, a timer, a proposal) is
followed by :meth:`RaftShell._pump`, which takes what the node produced and
carries it out at once, without awaiting:

* a **request** for another node goes into that peer's outbound lane (a
  bounded queue; when it is full the message is dropped -- a lost message,
  which Raft's timers already handle);
* a **response** goes to the inbound request it answers: the server's
  handler for Vote, Fetch... is parked in :meth:`RaftShell.serve` on a
  waiter keyed by (requesting node, correlation id).  A parked Fetch (the
  leader's long poll) simply waits there until the node answers it;
* **events** (high watermark moved, role changed, snapshot loaded) are passed
  to the owner's callbacks, which only record them and wake their own tasks.

One timer task sleeps until ``next_deadline()`` or until a pump says the
deadline may have moved, then ticks.  Because the pump runs inside the
caller's synchronous step, the node is only ever touched between awaits --
trio's single thread is the lock.

Each peer gets two lanes, each one :class:`~kbroker.netclient.PeerConnection`:
Fetch and FetchSnapshot on one, Vote and the epoch RPCs on the other, so an
election request never waits behind a fetch the leader is holding for half
a second.  A lane sends one request at a time and hands the decoded answer
back to the node; a failure is a lost message.

Time is trio's monotonic clock in milliseconds: only differences matter to
the node, and the clock must not jump when the wall clock does.
"""

from __future__ import annotations

import contextlib
import logging
import random
from typing import Callable

import trio

from protocol import ErrorCode, ProtocolError

from ..netclient import PeerConnection, RequestFailed
from . import wire
from .log import RaftLog
from .messages import (
    BeginQuorumEpochRequest,
    EndQuorumEpochRequest,
    FetchRequest,
    FetchSnapshotRequest,
    Message,
    VoteRequest,
)
from .node import RaftNode
from .state import HighWatermarkChanged, RaftConfig, RoleChanged, SnapshotLoaded
from .store import QuorumStateStore

log = logging.getLogger("kbroker.raft")

LANE_DEPTH = 64
INTERVAL_S = 60.0  # between two log lines about the same misconfigured peer
_REQUESTS = (VoteRequest, BeginQuorumEpochRequest, EndQuorumEpochRequest, FetchRequest, FetchSnapshotRequest)


def sender_of(request: Message) -> int:
    """The node a request came from (where its answer goes)."""
    if isinstance(request, (BeginQuorumEpochRequest, EndQuorumEpochRequest)):
        return request.leader_id
    return request.replica_id


def _now_ms() -> float:
    return trio.current_time() * 1000.0


class RaftStorageFailed(Exception):
    """The metadata log or quorum-state file could not be written: this node stops (Kafka treats it as fatal).

    Raised in the shell's nursery, so it ends the process whichever task met
    the failure -- a request handler's connection must not swallow it.
    """


class _Waiter:
    __slots__ = ("event", "response")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.response: Message | None = None


class RaftShell:
    """Runs one :class:`RaftNode` for this process; see the module docstring."""

    def __init__(
        self,
        node_id: int,
        voters: dict[int, tuple[str, int]],
        log_: RaftLog,
        store: QuorumStateStore,
        *,
        config: RaftConfig,
        cluster_id: str,
        on_event: Callable[[object], None] = lambda e: None,
    ) -> None:
        self.node_id = node_id
        self.voters = dict(voters)
        self.config = config
        self.cluster_id = cluster_id
        self.on_event = on_event
        self.node = RaftNode(node_id, voters, log_, store, rng=random.Random(), now_ms=_now_ms(), config=config,
                             cluster_id=cluster_id)
        self._waiters: dict[tuple[int, int], _Waiter] = {}
        self._lanes: dict[tuple[int, str], trio.MemorySendChannel] = {}
        self._wake = trio.Event()
        self._nursery: trio.Nursery | None = None
        self.changed = trio.Event()  # set (and replaced) whenever the role or high watermark changes
        self._complained: dict[int, float] = {}
        self._inflight = 0  # requests the lanes are sending or awaiting (a resignation waits for them)

    # ------------------------------------------------------------------ lifecycle
    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for peer in self.voters:
                if peer != self.node_id:
                    for kind in ("fetch", "control"):
                        send, recv = trio.open_memory_channel(LANE_DEPTH)
                        self._lanes[(peer, kind)] = send
                        nursery.start_soon(self._lane, peer, kind, recv)
            self._pump()  # what the constructor produced (a restarted leader's Resigned state, ...)
            task_status.started()
            await self._timer()

    async def resign(self, grace: float = 1.0) -> None:
        """Hand leadership over before shutting down (EndQuorumEpoch), and give the message a moment to leave."""
        if self.node.role != "leader":
            return
        self.node.resign(_now_ms())
        self._pump()
        with trio.move_on_after(grace):
            while self._inflight or any(s.statistics().current_buffer_used for s in self._lanes.values()):
                await trio.sleep(0.01)

    # ------------------------------------------------------------------ inputs
    def _complain(self, peer: int, text: str) -> None:
        """Log a lasting misconfiguration once a minute per peer, not once per retry."""
        now = trio.current_time()
        if now - self._complained.get(peer, -INTERVAL_S) >= INTERVAL_S:
            self._complained[peer] = now
            log.error("raft: %s", text)

    async def serve(self, request: Message) -> Message:
        """Hand an inbound request to the node and wait for its answer (a parked Fetch waits here)."""
        if request.cluster_id is not None and request.cluster_id != self.cluster_id:
            self._complain(sender_of(request), f"refusing {type(request).__name__} from node {sender_of(request)}: "
                                               f"its cluster id {request.cluster_id} is not this cluster's "
                                               f"({self.cluster_id}): INCONSISTENT_CLUSTER_ID")
        key = (sender_of(request), request.correlation_id)
        waiter = _Waiter()
        self._waiters[key] = waiter
        try:
            with self._fatal_on_disk_error():
                self.node.handle(request, _now_ms())
            self._pump()
            limit = (self.config.fetch_max_wait_ms + self.config.request_timeout_ms) / 1000
            with trio.move_on_after(limit):
                await waiter.event.wait()
        finally:
            self._waiters.pop(key, None)
        if waiter.response is None:
            return wire.error_response(request, int(ErrorCode.REQUEST_TIMED_OUT))
        return waiter.response

    def propose(self, payloads: list[bytes]) -> int:
        """Append on the leader (raises NotLeaderError elsewhere); returns the last offset."""
        with self._fatal_on_disk_error():
            offset = self.node.propose(payloads)
        self._pump()
        return offset

    def snapshot(self, up_to_offset: int, blob: bytes):
        with self._fatal_on_disk_error():
            sid = self.node.snapshot(up_to_offset, blob)
        self._pump()
        return sid

    @contextlib.contextmanager
    def _fatal_on_disk_error(self):
        """A disk failure inside the state machine stops the node (see :class:`RaftStorageFailed`)."""
        try:
            yield
        except OSError as e:
            failure = RaftStorageFailed(f"node {self.node_id}: the metadata log or quorum state could not be "
                                        f"written ({e}); stopping")
            if self._nursery is not None:
                self._nursery.start_soon(_raise, failure)
            raise failure from e

    # ------------------------------------------------------------------ outputs
    def _pump(self) -> None:
        for dest, msg in self.node.take_messages():
            if isinstance(msg, _REQUESTS):
                lane = self._lanes.get((dest, "fetch" if isinstance(msg, (FetchRequest, FetchSnapshotRequest))
                                        else "control"))
                if lane is None:
                    log.debug("raft: no route to node %s for %s", dest, type(msg).__name__)
                    continue
                try:
                    lane.send_nowait(msg)
                except trio.WouldBlock:
                    log.debug("raft: lane to node %s is full; dropping %s", dest, type(msg).__name__)
                except trio.ClosedResourceError:
                    pass
            else:
                waiter = self._waiters.get((dest, msg.correlation_id))
                if waiter is not None and waiter.response is None:
                    waiter.response = msg
                    waiter.event.set()
        for event in self.node.take_events():
            if isinstance(event, RoleChanged):
                log.info("raft: node %d is %s in epoch %d (leader %s)", self.node_id, event.role, event.epoch,
                         event.leader_id)
            if isinstance(event, (RoleChanged, HighWatermarkChanged, SnapshotLoaded)):
                self.changed.set()
                self.changed = trio.Event()
            self.on_event(event)
        self._wake.set()

    async def _timer(self) -> None:
        while True:
            deadline = self.node.next_deadline()
            if deadline != float("inf"):
                # ms -> trio seconds; tick() itself checks which deadlines passed.
                with trio.move_on_at(deadline / 1000.0):
                    await self._wake.wait()
            else:
                await self._wake.wait()
            with self._fatal_on_disk_error():
                self.node.tick(_now_ms())
            self._pump()
            # Our own pump needs no wake-up: next_deadline() is read again
            # right away.  Resetting after it (not before) keeps the wake-ups
            # of other tasks' pumps, which can only happen at the await.
            self._wake = trio.Event()

    async def _lane(self, peer: int, kind: str, queue: trio.MemoryReceiveChannel) -> None:
        host, port = self.voters[peer]
        conn = PeerConnection(host, port, client_id=f"raft-{kind}-{self.node_id}")
        try:
            async for msg in queue:
                api, version, body = wire.request_to_kafka(msg, sender_id=self.node_id)
                timeout = self.config.request_timeout_ms / 1000
                if isinstance(msg, FetchRequest):
                    timeout += msg.max_wait_ms / 1000
                self._inflight += 1
                try:
                    raw = await conn.request(api, version, body, timeout=timeout)
                    response = wire.response_from_kafka(api, version, msg.correlation_id, raw)
                except (RequestFailed, ValueError, ProtocolError) as e:
                    log.debug("raft: %s to node %d lost: %s", type(msg).__name__, peer, e)
                    # Do not spin on a dead peer: the node resends on its own timers.
                    await trio.sleep(self.config.retry_backoff_ms / 1000)
                    continue
                finally:
                    self._inflight -= 1
                if response.error_code == ErrorCode.INCONSISTENT_CLUSTER_ID:
                    self._complain(peer, f"node {peer} refuses our {type(msg).__name__}: INCONSISTENT_CLUSTER_ID "
                                         f"(this node belongs to cluster {self.cluster_id}; was it formatted with "
                                         f"another cluster id than the quorum's?)")
                with self._fatal_on_disk_error():
                    self.node.handle(response, _now_ms())
                self._pump()
        finally:
            await conn.aclose()


async def _raise(failure: BaseException) -> None:
    raise failure
