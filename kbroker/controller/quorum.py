"""The metadata quorum as one node sees it: Raft, the committed image, and the way to the active controller.

Theory of operation
-------------------
In a cluster the metadata log is ``__cluster_metadata-0`` replicated by Raft
(:mod:`kbroker.raft`).  Every node -- voter or not -- follows the same rule:
**the image holds exactly the committed prefix of the log**.  The Raft shell
reports each move of the high watermark; :meth:`MetadataQuorum._apply_loop`
then decodes the newly committed entries in order and hands them to the
broker, which applies them to its image and brings its partitions, configs
and groups in line.  A node whose log starts after what it has applied (it
was sent a snapshot) rebuilds its image from the snapshot first.

The **active controller** is the Raft leader once it has applied its own
epoch's first entry: only then does its image hold everything committed
before it, so decisions computed from that image are sound.  Decisions are
made there and nowhere else: :meth:`submit` proposes the records and returns
once they are committed and applied (or raises :class:`NotControllerError`
when leadership is lost first -- the records may still commit under the next
leader, exactly as a Kafka client may see a retried CreateTopics answered
TOPIC_ALREADY_EXISTS).

Every other node reaches the active controller through :meth:`call` (Kafka's
controller RPCs: BrokerRegistration, BrokerHeartbeat, AllocateProducerIds)
and :meth:`forward` (a client's admin request wrapped in an Envelope, as
Kafka's brokers forward them), retrying on NOT_CONTROLLER and lost
connections until the request's deadline.  A combined node whose own
controller is active still goes through its controller listener: one path,
tested by every request.

Brokers register (BrokerRegistration: the broker epoch is the offset of its
RegisterBrokerRecord) and then heartbeat every ``broker.heartbeat.interval.ms``.
The active controller fences a broker it has not heard from for
``broker.session.timeout.ms`` (FenceBrokerRecord: it leaves Metadata answers
and new placements) and unfences it at its next heartbeat.  A new active
controller gives every broker a full session before fencing it.
"""

from __future__ import annotations

import contextvars
import logging
import time
from typing import Callable

import trio

from protocol import ApiKey, ErrorCode, decode_response, encode_request, encode_response
from protocol.codec import RequestHeader
from protocol.envelopes import decode_metadata_record, encode_metadata_record

from ..netclient import PeerConnection, RequestFailed
from ..raft import LEADER_CHANGE, HighWatermarkChanged, NotLeaderError, RaftConfig, RoleChanged, SnapshotLoaded
from ..raft.records import decode_snapshot, encode_snapshot
from ..raft.shell import RaftShell

log = logging.getLogger("kbroker.controller")

# How long a request to the active controller keeps retrying (leader
# elections included) before the caller gives up.
CALL_TIMEOUT_S = 30.0
RETRY_BACKOFF_S = 0.05


# True while a request is handled as the controller: it came in on a
# controller listener (directly, or unwrapped from an Envelope).  Such a
# request is decided here or refused, never forwarded again.
as_controller: contextvars.ContextVar[bool] = contextvars.ContextVar("as_controller", default=False)


class NotControllerError(Exception):
    """This node is not the active controller (any more); the caller retries elsewhere."""


def raft_config(config) -> RaftConfig:
    return RaftConfig(
        election_timeout_ms=config["controller.quorum.election.timeout.ms"],
        fetch_timeout_ms=config["controller.quorum.fetch.timeout.ms"],
        election_backoff_max_ms=config["controller.quorum.election.backoff.max.ms"],
        request_timeout_ms=config["controller.quorum.request.timeout.ms"],
        retry_backoff_ms=config["controller.quorum.retry.backoff.ms"],
        # Kafka's fetches are bounded by bytes (8 MiB); entries are small
        # metadata records, so a thousand per answer keeps a burst (one
        # CreateTopics of hundreds of partitions) to one or two round trips.
        max_fetch_entries=1000,
    )


class MetadataQuorum:
    def __init__(
        self,
        node_id: int,
        cluster_id: str,
        voters: dict[int, tuple[str, int]],
        raft_log,
        store,
        *,
        config: RaftConfig,
        apply: Callable[[list[tuple[int, str, object]]], None],
        load_snapshot: Callable[[int, list[tuple[str, object]]], None],
        after_apply: Callable[[], object],
        image_records: Callable[[], list[tuple[str, object]]] = list,
        snapshot_bytes: int = 20 * 1024 * 1024,
    ) -> None:
        self.node_id = node_id
        self.cluster_id = cluster_id
        self.voters = voters
        self._apply = apply
        self._load_snapshot = load_snapshot
        self._after_apply = after_apply
        self._image_records = image_records
        self.snapshot_bytes = snapshot_bytes
        self._bytes_since_snapshot = 0
        self.shell = RaftShell(node_id, voters, raft_log, store, config=config, cluster_id=cluster_id,
                               on_event=self._on_event)
        self.applied = 0  # the next offset to apply: the image holds [0, applied)
        snap = raft_log.latest_snapshot
        if snap is not None:
            self._install(snap)
        self._committed = trio.Event()
        self._applied_changed = trio.Event()
        self._sync_due = trio.Event()
        self._channels: dict[int, PeerConnection] = {}
        self.last_heartbeat: dict[int, float] = {}
        self._announced_active = False  # "is the active controller" logged for this leadership

    @property
    def node(self):
        return self.shell.node

    # ------------------------------------------------------------------ lifecycle
    async def start(self, nursery: trio.Nursery) -> None:
        await nursery.start(self.shell.run)
        nursery.start_soon(self._apply_loop)
        nursery.start_soon(self._sync_loop)

    async def close(self) -> None:
        await self.shell.resign()
        for conn in self._channels.values():
            await conn.aclose()

    async def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait (at most ``timeout`` s) until ``predicate()`` holds after some committed records are applied."""
        with trio.move_on_after(timeout):
            while not predicate():
                await self._applied_changed.wait()
            return True
        return predicate()

    def reapply(self) -> None:
        """Run the after-apply step again even if nothing new is committed (the broker's state changed)."""
        self._sync_due.set()

    def _on_event(self, event) -> None:
        if isinstance(event, (HighWatermarkChanged, SnapshotLoaded)):
            self._committed.set()
        if isinstance(event, RoleChanged):
            self._announced_active = False
            self._committed.set()  # re-check whether we became active
            # A submit waiting for its commit must learn that leadership went.
            self._applied_changed.set()
            self._applied_changed = trio.Event()

    # ------------------------------------------------------------------ applying
    def _install(self, snap) -> None:
        records = []
        for value in decode_snapshot(snap.blob):
            name, _version, body = decode_metadata_record(value)
            records.append((name, body))
        self._load_snapshot(snap.snapshot_id.end_offset, records)
        self.applied = snap.snapshot_id.end_offset

    async def _apply_loop(self) -> None:
        while True:
            await self._committed.wait()
            self._committed = trio.Event()
            while True:
                log_ = self.node.log
                if self.applied < log_.start_offset:
                    self._install(log_.latest_snapshot)
                hw = self.node.high_watermark
                if self.applied >= hw:
                    break
                entries = log_.entries(self.applied, min(hw - self.applied, 1000))
                if not entries:
                    break
                batch = []
                for e in entries:
                    if e.payload is not LEADER_CHANGE:
                        name, _version, body = decode_metadata_record(e.payload)
                        batch.append((e.offset, name, body))
                        self._bytes_since_snapshot += len(e.payload)
                if batch:
                    self._apply(batch)
                self.applied = entries[-1].offset + 1
                if self._bytes_since_snapshot >= self.snapshot_bytes:
                    self._snapshot()
                await trio.sleep(0)  # a long catch-up must not starve the connections
            if self.is_active and not self._announced_active:
                self._announced_active = True
                # A new active controller gives every broker a full session.
                self.last_heartbeat.clear()
                log.info("node %d is the active controller (epoch %d, metadata offset %d)",
                         self.node_id, self.node.epoch, self.applied)
            self._applied_changed.set()
            self._applied_changed = trio.Event()
            self._sync_due.set()

    async def _sync_loop(self) -> None:
        """The broker's follow-up work (partition logs, configs, groups), off the apply path.

        Creating the logs of a hundred new partitions takes a while; the next
        committed records must not wait for it, nor the requests waiting for
        them.  Rounds coalesce: the broker keeps what changed until it syncs.
        """
        while True:
            await self._sync_due.wait()
            self._sync_due = trio.Event()
            await self._after_apply()

    def shell_now_ms(self) -> float:
        return trio.current_time() * 1000.0

    async def fence_expired(self, controller, submit, session_timeout_ms: int) -> None:
        """On the active controller: fence brokers not heard from for ``broker.session.timeout.ms``."""
        if not self.is_active:
            return
        now = trio.current_time()
        for b in list(controller.image.brokers.values()):
            if b.fenced:
                continue
            seen = self.last_heartbeat.setdefault(b.broker_id, now)
            if (now - seen) * 1000 > session_timeout_ms:
                def decide(broker_id=b.broker_id):
                    current = controller.image.brokers.get(broker_id)
                    if current is None or current.fenced:
                        return []
                    return controller.fence_broker(broker_id, current.epoch)

                try:
                    await submit(decide)
                except NotControllerError:
                    return
                log.warning("broker %d fenced: no heartbeat for %d ms", b.broker_id, session_timeout_ms)

    def _snapshot(self) -> None:
        """Write the image as the snapshot at ``applied`` and let the log drop what it covers.

        Every node snapshots on its own (as Kafka's do), from its own image:
        the image is exactly the committed log below ``applied``, so every
        node's snapshot at one offset holds the same records.
        """
        end = self.applied
        log_ = self.node.log
        if end <= log_.start_offset:
            return
        epoch = log_.epoch_of(end - 1)
        values = [encode_metadata_record(name, body) for name, body in self._image_records()]
        blob = encode_snapshot(values, end_offset=end, epoch=epoch, timestamp=int(time.time() * 1000))
        try:
            sid = self.shell.snapshot(end, blob)
        except ValueError as e:  # not below the high watermark yet: try again after the next batch
            log.debug("snapshot at %d deferred: %s", end, e)
            return
        self._bytes_since_snapshot = 0
        log.info("metadata snapshot at offset %d (epoch %d): %d records, %d bytes",
                 sid.end_offset, sid.epoch, len(values), len(blob))

    @property
    def is_active(self) -> bool:
        s = self.node.state
        return self.node.role == "leader" and self.applied > s.epoch_start_offset

    @property
    def leader_id(self) -> int | None:
        lid = self.node.leader_id
        return lid if self.node.role in ("leader", "follower") and lid in self.voters else None

    # ------------------------------------------------------------------ the active controller
    def next_offset(self) -> int:
        """The offset the next proposed record gets (Kafka's broker epoch for a registration)."""
        return self.node.log.end_offset

    async def submit(self, records: list) -> None:
        """Commit ``(name, body)`` records and wait until they are applied here (active controller only).

        The caller serializes submissions (the broker's metadata lock), so the
        records were computed from an image that no other pending proposal
        can change underneath them.
        """
        if not self.is_active:
            raise NotControllerError(f"node {self.node_id} is not the active controller")
        epoch = self.node.epoch
        values = [encode_metadata_record(name, body) for name, body in records]
        try:
            last = self.shell.propose(values)
        except NotLeaderError as e:
            raise NotControllerError(str(e)) from None
        with trio.move_on_after(CALL_TIMEOUT_S):
            while self.applied <= last:
                if self.node.epoch != epoch or self.node.role != "leader":
                    raise NotControllerError(f"lost leadership of epoch {epoch} before offset {last} committed")
                await self._applied_changed.wait()  # set by every apply and every role change
            return
        raise NotControllerError(f"offset {last} not committed within {CALL_TIMEOUT_S:.0f}s")

    # ------------------------------------------------------------------ reaching the active controller
    def _channel(self, node_id: int) -> PeerConnection:
        conn = self._channels.get(node_id)
        if conn is None:
            host, port = self.voters[node_id]
            conn = self._channels[node_id] = PeerConnection(host, port, client_id=f"kbroker-{self.node_id}")
        return conn

    async def call(self, api_key: ApiKey, version: int, body, *, timeout: float = CALL_TIMEOUT_S):
        """Send a controller RPC to the active controller; retries NOT_CONTROLLER and lost connections.

        Raises :class:`RequestFailed` when no controller answered in time.
        """
        deadline = trio.current_time() + timeout
        last_error = "no controller is known"
        while trio.current_time() < deadline:
            leader = self.leader_id
            if leader is None:
                with trio.move_on_after(0.2):
                    await self.shell.changed.wait()
                continue
            try:
                response = await self._channel(leader).request(
                    api_key, version, body, timeout=max(0.1, min(deadline - trio.current_time(), 10.0)))
            except RequestFailed as e:
                last_error = str(e)
                await trio.sleep(RETRY_BACKOFF_S)
                continue
            if response.error_code == ErrorCode.NOT_CONTROLLER:
                last_error = f"node {leader} is not the active controller yet"
                await trio.sleep(RETRY_BACKOFF_S)
                continue
            return response
        raise RequestFailed(f"{ApiKey(api_key).name}: no answer from the active controller: {last_error}")

    async def forward(self, header: RequestHeader, body, client_host: bytes = b"", *, timeout: float = CALL_TIMEOUT_S):
        """A client's request, handled by the active controller (Kafka's Envelope forwarding); returns its body."""
        frame = encode_request(header.api_key, header.api_version, body, correlation_id=header.correlation_id,
                               client_id=header.client_id)
        response = await self.call(ApiKey.ENVELOPE, 0, {
            "request_data": frame[4:], "request_principal": None, "client_host_address": client_host,
        }, timeout=timeout)
        if response.error_code != ErrorCode.NONE or response.response_data is None:
            raise RequestFailed(f"the controller refused the forwarded request: error {response.error_code}")
        _cid, inner = decode_response(header.api_key, header.api_version, response.response_data)
        return inner


def wrap_response(header: RequestHeader, body) -> bytes:
    """An encoded response for an Envelope's ``response_data`` (no size prefix)."""
    return bytes(encode_response(header, body))[4:]

