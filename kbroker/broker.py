"""The broker: configuration, the metadata image, the logs and the partitions it hosts.

Start-up order matters for durability: read ``meta.properties`` (cluster id,
node id), replay ``__cluster_metadata`` into the image, open the partition
logs (recovering them after an unclean stop), then register this broker's
endpoints.  Shutdown reverses it and writes each log directory's
clean-shutdown marker last, so a SIGKILL at any point leads to recovery on
the next start.
"""

from __future__ import annotations

import logging
import os
import time
import uuid

import trio

from protocol import ApiKey, ErrorCode
from protocol.codec import RequestHeader

from . import metadata_log
from .config import Config, ConfigError
from .crashpoints import crash_point
from .controller.controller import Controller, TopicResult
from .controller.quorum import MetadataQuorum, as_controller, raft_config
from .group.coordinator import GroupCoordinator
from .log.config import LogConfig, validate_topic_config
from .log.errors import LogError
from .log.manager import LogManager
from .metadata.errors import MetadataLogFatal, MetadataWriteFailed
from .metadata.image import BROKER_RESOURCE, TOPIC_RESOURCE, MetadataImage, TopicImage
from .netclient import RequestFailed
from .partition import Partition
from .raft.disklog import DiskRaftLog
from .raft.store import FileQuorumStateStore

log = logging.getLogger("kbroker.broker")

METADATA_TOPIC = "__cluster_metadata"
# How long InitProducerId waits for a block of ids from the active controller.
PRODUCER_ID_BLOCK_WAIT_S = 5.0
# How long one stretch of partition-log work may hold the trio thread.
SYNC_SLICE_SECONDS = 0.005
ZERO_UUID = uuid.UUID(int=0)


class ProducerIdsUnavailable(Exception):
    """No block of producer ids could be had from the controller in time (retriable for the client)."""


def _broker_log_properties(config: Config) -> dict[str, str]:
    """The broker settings that give topic configs their defaults, as strings."""
    return {
        row.name: row.value
        for row in config.items()
        if row.value is not None and row.source != "DEFAULT_CONFIG"
    }


def _unanswerable(reason: str) -> Exception:
    """The request cannot be answered truthfully while the broker stops: its
    connection is closed (imported late: the handlers import this module)."""
    from .apis import CloseConnection

    return CloseConnection(reason)


class Broker:
    def __init__(self, config: Config):
        # ``static_config``: properties file and --override.  ``config`` is the
        # effective one: dynamic broker configs from the image layered on top.
        self.static_config = config
        self.config = config
        self.node_id: int = config["node.id"]
        self.log_dirs: list[str] = [os.path.abspath(d) for d in config["log.dirs"]]
        self.image = MetadataImage()
        self.broker_log_props = _broker_log_properties(config)
        self.default_log_config = LogConfig.from_broker_properties(self.broker_log_props)
        self.partitions: dict[tuple[str, int], Partition] = {}
        self.logs: LogManager | None = None
        self.metadata: metadata_log.MetadataLog | None = None
        self.cluster_id: str = ""
        self.controller = Controller(
            self.image,
            validate_topic_config=validate_topic_config,
            defaults={
                "num.partitions": config["num.partitions"],
                "default.replication.factor": config["default.replication.factor"],
            },
            max_replication_factor=1,  # until followers replicate (issue 9)
        )
        self._producer_ids_next = 0
        self._producer_ids_end = 0
        self._metadata_lock = trio.Lock()
        # Set (to the reason) once the metadata log is in a state this process
        # cannot trust; no further change is accepted and the broker stops.
        self.fatal: str | None = None
        self._nursery: trio.Nursery | None = None
        self._sync_lock = trio.Lock()
        # Partitions placed here whose log could not be created: the reason.
        # They answer KAFKA_STORAGE_ERROR; every sync (and start) retries them.
        self.storage_errors: dict[tuple[str, int], str] = {}
        self.groups = GroupCoordinator(self)
        # A cluster (controller.quorum.voters names other nodes): the metadata
        # log is replicated by Raft and decisions are made by the active
        # controller (kbroker.controller.quorum).  None for the single node.
        self.clustered = config.clustered
        self.is_broker = "broker" in config["process.roles"]
        self.quorum: MetadataQuorum | None = None
        self.broker_epoch = -1
        self.registered = trio.Event()
        self._left = False  # leave_cluster() has run
        self._own_raft_log: DiskRaftLog | None = None  # in metadata.log.dir, outside the LogManager
        # What the committed records applied since the last sync changed
        # (None: everything), see _after_apply.
        self._dirty_topics: set[str] | None = None
        self._broker_config_changed = True
        self._swept = False

    # -- lifecycle ---------------------------------------------------------------
    async def start(self, nursery: trio.Nursery, bound_ports: dict[str, int] | None = None) -> None:
        """Open everything and register; ``bound_ports`` (listener name -> port)
        replaces port 0 in the advertised endpoints with the port actually bound."""
        self._nursery = nursery
        self.bound_ports = bound_ports or {}
        if self.clustered:
            await self._start_clustered(nursery)
            return
        for d in self.log_dirs:
            os.makedirs(d, exist_ok=True)
        self.cluster_id = metadata_log.read_or_create_meta_properties(
            self.log_dirs[0], self.node_id, self.config["cluster.id"] if "cluster.id" in self.config else None
        )
        self.logs = LogManager(self.log_dirs, self.default_log_config, topic_config=self._log_config_or_none)
        self.logs.high_watermark = self._high_watermark
        mlog = self.logs.get(METADATA_TOPIC, 0) or self.logs.create(
            METADATA_TOPIC, 0, metadata_log.MetadataLog.CONFIG, log_dir=self.log_dirs[0]
        )
        self.metadata = metadata_log.MetadataLog(mlog)
        for offset, name, record in self.metadata.replay():
            self.image.apply(name, record, offset)
        self.image.cluster_id = self.cluster_id
        self._apply_dynamic_config()
        await self._register()
        await self._sync_partitions()
        await self.groups.start(nursery)
        nursery.start_soon(self.logs.run_retention, self.config["log.retention.check.interval.ms"])
        nursery.start_soon(self.logs.run_cleaner, self.config["log.cleaner.backoff.ms"])
        # Kafka's default (Long.MAX) means "no scheduled flush"; kbroker's flusher is also what
        # applies flush.ms / flush.messages, so it must still look at least every second.
        nursery.start_soon(self.logs.run_flusher, min(max(self.config["log.flush.scheduler.interval.ms"], 1), 1000))

    async def _start_clustered(self, nursery: trio.Nursery) -> None:
        """Start as one node of a cluster: follow (or lead) the quorum, register, then serve.

        Unlike the single node, nothing waits here for the quorum: the
        listeners must already answer Vote and Fetch for a leader to be
        elected at all.  The image fills as committed records arrive; the
        broker registers in the background and loads its groups once it has
        caught up to its own registration.
        """
        self.cluster_id = self._clustered_cluster_id()  # before anything is created on disk
        self.image.cluster_id = self.cluster_id
        self.logs = LogManager(self.log_dirs, self.default_log_config, topic_config=self._log_config_or_none)
        self.logs.high_watermark = self._high_watermark
        mdir = self._metadata_dir()
        if mdir in self.log_dirs:
            mlog = self.logs.get(METADATA_TOPIC, 0) or self.logs.create(
                METADATA_TOPIC, 0, DiskRaftLog.CONFIG, log_dir=mdir
            )
            raft_log = DiskRaftLog.over(mlog)
        else:
            # metadata.log.dir outside log.dirs: the metadata log has a
            # directory of its own, which no partition log shares (Kafka's rule).
            raft_log = self._own_raft_log = await trio.to_thread.run_sync(DiskRaftLog.open, mdir)
        store = FileQuorumStateStore(os.path.join(raft_log.path, "quorum-state"))
        self.quorum = MetadataQuorum(
            self.node_id, self.cluster_id, self.config.quorum_voters, raft_log, store,
            config=raft_config(self.config), apply=self._apply_committed, load_snapshot=self._load_snapshot,
            after_apply=self._after_apply, image_records=lambda: self.image.to_records(),
            snapshot_bytes=self.config["metadata.log.max.record.bytes.between.snapshots"],
        )
        await self.quorum.start(nursery)
        if self.is_broker:
            nursery.start_soon(self._registration_loop)
        if "controller" in self.config["process.roles"]:
            nursery.start_soon(self._fencing_loop)
        nursery.start_soon(self.logs.run_retention, self.config["log.retention.check.interval.ms"])
        nursery.start_soon(self.logs.run_cleaner, self.config["log.cleaner.backoff.ms"])
        nursery.start_soon(self.logs.run_flusher, min(max(self.config["log.flush.scheduler.interval.ms"], 1), 1000))

    def _metadata_dir(self) -> str:
        """``metadata.log.dir``, else the first of ``log.dirs`` (Kafka's default)."""
        mdir = self.config["metadata.log.dir"]
        return os.path.abspath(mdir) if mdir else self.log_dirs[0]

    def _clustered_cluster_id(self) -> str:
        """The cluster id every log dir agrees on; a cluster node must be formatted (or given cluster.id)."""
        wanted = self.config["cluster.id"] if "cluster.id" in self.config else None
        found: str | None = None
        dirs = list(dict.fromkeys([*self.log_dirs, self._metadata_dir()]))
        for d in dirs:
            props = metadata_log.read_meta_properties(d)
            if props is None:
                continue
            metadata_log.check_meta_properties(d, props, self.node_id, wanted or found)
            found = found or props.get("cluster.id")
        cid = wanted or found
        if not cid:
            raise ConfigError(
                f"log.dirs: {dirs[0]} is not formatted; a node of a cluster needs the cluster's id: "
                f"run `kbroker format -t <cluster id> -c <server.properties>` (ids from `kbroker random-uuid`), "
                f"or set cluster.id")
        for d in dirs:
            os.makedirs(d, exist_ok=True)
            metadata_log.read_or_create_meta_properties(d, self.node_id, cid)
        return cid

    # -- following the quorum (clustered) -------------------------------------------
    def _apply_committed(self, batch: list[tuple[int, str, object]]) -> None:
        for offset, name, record in batch:
            self._note_change(name, record)
            self.image.apply(name, record, offset)

    def _note_change(self, name: str, record) -> None:
        """Remember what a record changes, for the next :meth:`_after_apply` (before it is applied)."""
        if name == "TopicRecord":
            topic = record.name
        elif name in ("PartitionRecord", "PartitionChangeRecord", "RemoveTopicRecord"):
            t = self.image.topics_by_id.get(record.topic_id)
            topic = t.name if t is not None else None
        elif name == "ConfigRecord":
            if record.resource_type == BROKER_RESOURCE:
                self._broker_config_changed = True
                self._dirty_topics = None  # new defaults for every topic without an override
                return
            if record.resource_type != TOPIC_RESOURCE:
                return
            topic = record.resource_name
        else:
            return
        if topic is not None and self._dirty_topics is not None:
            self._dirty_topics.add(topic)

    def _load_snapshot(self, end_offset: int, records: list[tuple[str, object]]) -> None:
        image = MetadataImage()
        image.cluster_id = self.cluster_id
        for name, record in records:
            image.apply(name, record)
        image.offset = end_offset - 1
        # Whatever was derived from the old image is keyed by its version:
        # the new one must never reuse a number.
        image.version += self.image.version + 1
        self.image = image
        self.controller.image = image
        self._dirty_topics = None
        self._broker_config_changed = True

    async def _after_apply(self) -> None:
        if self._broker_config_changed:
            self._broker_config_changed = False
            self._apply_dynamic_config()
        dirty, self._dirty_topics = self._dirty_topics, set()
        if self.caught_up and not self._swept:
            # The first sync that may delete: logs of topics deleted while
            # this node was away go now.
            self._swept = True
            dirty = None
        if dirty is None or dirty:
            await self._sync_partitions(dirty)
        if not self.groups.started and self.caught_up:
            # Caught up to our own registration: every __consumer_offsets
            # partition placed here before it is known, so loading is complete.
            await self.groups.start(self._nursery)

    async def _controlled_shutdown(self) -> None:
        """Ask the active controller to fence this broker now, so clients stop being sent here.

        Kafka's controlled shutdown, minus moving leadership (with one replica
        per partition there is nowhere to move it until replication lands).
        The active controller's own broker does it too, through its own
        controller listener (still serving: see :meth:`leave_cluster`).
        Bounded: a shutdown never waits on an unreachable quorum.
        """
        if not self.is_broker or self.broker_epoch < 0:
            return
        with trio.move_on_after(2):
            try:
                await self.quorum.call(ApiKey.BROKER_HEARTBEAT, 1, {
                    "broker_id": self.node_id, "broker_epoch": self.broker_epoch,
                    "current_metadata_offset": self.quorum.applied - 1, "want_fence": True,
                    "want_shut_down": True,
                }, timeout=2)
            except RequestFailed as e:
                log.info("controlled shutdown: %s", e)

    async def _fencing_loop(self) -> None:
        timeout = self.config["broker.session.timeout.ms"]
        while True:
            await trio.sleep(min(timeout / 4000, 1.0))
            await self.quorum.fence_expired(self.controller, self.submit, timeout)

    async def _registration_loop(self) -> None:
        """BrokerRegistration, then BrokerHeartbeat every broker.heartbeat.interval.ms, for the process's life."""
        incarnation = uuid.uuid4()
        endpoints = [
            e._replace(port=self.bound_ports.get(e.name, e.port)) if e.port == 0 else e
            for e in self.config.advertised_listeners
        ]
        interval = self.config["broker.heartbeat.interval.ms"] / 1000
        while True:
            await self._register_with_controller(incarnation, endpoints, interval)
            await self._heartbeat_until_refused(interval)
            self.broker_epoch = -1

    async def _register_with_controller(self, incarnation, endpoints, interval: float) -> None:
        while self.broker_epoch < 0:
            try:
                resp = await self.quorum.call(ApiKey.BROKER_REGISTRATION, 4, {
                    "broker_id": self.node_id, "cluster_id": self.cluster_id, "incarnation_id": incarnation,
                    "listeners": [{"name": e.name, "host": e.host, "port": e.port, "security_protocol": 0}
                                  for e in endpoints],
                    "features": [], "rack": self.config["broker.rack"], "log_dirs": [],
                    "previous_broker_epoch": -1,
                })
            except RequestFailed as e:
                log.warning("broker registration: %s; retrying", e)
                continue
            if resp.error_code != ErrorCode.NONE:
                log.error("broker registration refused: %s; retrying in %.1fs",
                          ErrorCode(resp.error_code).name, interval)
                await trio.sleep(interval)
                continue
            self.broker_epoch = resp.broker_epoch
            log.info("registered as broker %d (epoch %d)", self.node_id, self.broker_epoch)
            self.registered.set()
            self.quorum.reapply()  # the group load and the stray-log cleanup may now be due

    async def _heartbeat_until_refused(self, interval: float) -> None:
        """BrokerHeartbeat every ``interval``; returns when the controller no longer knows this registration."""
        while True:
            await trio.sleep(interval)
            try:
                resp = await self.quorum.call(ApiKey.BROKER_HEARTBEAT, 1, {
                    "broker_id": self.node_id, "broker_epoch": self.broker_epoch,
                    # Once leaving, heartbeats keep asking to be fenced: an
                    # ordinary one would unfence a broker that is shutting down.
                    "current_metadata_offset": self.quorum.applied - 1, "want_fence": self._left,
                    "want_shut_down": self._left,
                }, timeout=max(interval, 1.0))
            except RequestFailed as e:
                log.debug("broker heartbeat: %s", e)
                continue
            if resp.error_code in (ErrorCode.STALE_BROKER_EPOCH, ErrorCode.BROKER_ID_NOT_REGISTERED):
                log.warning("broker heartbeat refused (%s); registering again", ErrorCode(resp.error_code).name)
                return

    async def leave_cluster(self) -> None:
        """A graceful stop's first step in a cluster: fenced at the controller, then Raft leadership handed over.

        Runs while the node still serves (its own controller may be the one
        that fences it); bounded, so an unreachable quorum never holds up a stop.
        """
        if self.quorum is None or self._left:
            return
        self._left = True
        await self._controlled_shutdown()
        with trio.move_on_after(2):
            await self.quorum.shell.resign()

    async def close(self) -> None:
        if self.quorum is not None:
            with trio.move_on_after(2):
                await self.leave_cluster()
                await self.quorum.close()
        if self.logs is not None:
            if self.fatal is not None and self.metadata is not None and not self.metadata.offline:
                # No clean-shutdown marker for the metadata log's directory:
                # the next start must recover (CRC-check) its tail.
                self.logs.mark_offline(os.path.dirname(self.metadata.plog.path), self.fatal)
            await trio.to_thread.run_sync(self._close_sync)

    def _close_sync(self) -> None:
        self.logs.close()
        if self._own_raft_log is not None:
            self._own_raft_log.close()

    def _log_config_or_none(self, topic: str) -> LogConfig | None:
        if topic == METADATA_TOPIC:
            return DiskRaftLog.CONFIG if self.clustered else metadata_log.MetadataLog.CONFIG
        return self.log_config_for(topic) if topic in self.image.topics else None

    def _high_watermark(self, topic: str, partition: int) -> int | None:
        p = self.partitions.get((topic, partition))
        return p.high_watermark if p is not None else None

    async def _register(self) -> None:
        endpoints = [
            e._replace(port=self.bound_ports.get(e.name, e.port)) if e.port == 0 else e
            for e in self.config.advertised_listeners
        ]
        current = self.image.brokers.get(self.node_id)
        wanted = [(e.name, e.host, e.port) for e in endpoints]
        if current is not None and [(e.name, e.host, e.port) for e in current.endpoints] == wanted and not current.fenced:
            return
        epoch = (current.epoch + 1) if current else 0
        await self.submit(self.controller.register_broker(self.node_id, endpoints, epoch=epoch))

    # -- metadata changes ----------------------------------------------------------
    async def submit(self, records) -> None:
        """Append controller records to the metadata log, apply them, and act on them.

        ``records`` is a list of ``(name, body)`` or a function returning one,
        called under the metadata lock: a decision made from the image must
        not race another change of it.

        The image changes only after the records are durable, so an answer
        never mentions a change a restart would not replay.  If the append or
        its fsync fails the change is neither applied nor acknowledged
        (:class:`MetadataWriteFailed`), and the log is cut back to where it
        was; if even that fails the log may hold records the image lacks, the
        state Kafka's controller treats as fatal, and the broker stops
        (:class:`MetadataLogFatal`).
        """
        if self.quorum is not None:
            # Commit through Raft; the apply loop applies (here and on every
            # node) and syncs partitions.  NotControllerError goes up: the
            # request is retried against the new active controller.  The lock
            # also covers the decision, so that two requests never decide
            # from the same image (two CreateTopics of one name).
            async with self._metadata_lock:
                if callable(records):
                    records = records()
                if records:
                    await self.quorum.submit(records)
            return
        # One change at a time: records must reach the image in log order,
        # and the fsync inside append yields to other tasks.
        async with self._metadata_lock:
            if callable(records):
                records = records()
            if not records:
                return
            if self.fatal is not None:
                raise _unanswerable(self.fatal)
            if self.metadata.offline:
                # Its directory failed earlier (and the log was rolled back to
                # match the image); Kafka needs a restart to bring it back.
                raise MetadataWriteFailed("the metadata log directory is offline until the broker is restarted")
            start = self.metadata.end_offset
            try:
                written = await self.metadata.append(records)
            except (OSError, LogError) as e:
                await self._rollback_metadata(start, e)
                raise MetadataWriteFailed(f"the metadata log could not be written: {e}") from e
            crash_point("metadata.apply")
            for offset, name, record in written:
                self.image.apply(name, record, offset)
        if any(name == "ConfigRecord" and body["resource_type"] == BROKER_RESOURCE for name, body in records):
            self._apply_dynamic_config()
        await self._sync_partitions()

    async def _rollback_metadata(self, offset: int, cause: Exception) -> None:
        try:
            await self.metadata.rollback(offset)
        except (OSError, LogError) as e:
            reason = (
                f"metadata log write failed ({cause}) and could not be rolled back to offset {offset} ({e}); "
                "stopping: the log may hold records this broker never applied"
            )
            log.critical("%s", reason)
            self.fatal = reason
            if self._nursery is not None:
                self._nursery.start_soon(self._stop_fatally, reason)
            raise _unanswerable(reason) from cause
        log.error("metadata log write failed, rolled back to offset %d: %s", offset, cause)

    async def _stop_fatally(self, reason: str) -> None:
        # Raising in the serve nursery cancels every task, closes the logs
        # (without the clean-shutdown marker, see close) and ends the process
        # with this reason as its one line on stderr.
        raise MetadataLogFatal(reason)

    def _apply_dynamic_config(self) -> None:
        """Layer the dynamic broker configs of the image over the static config.

        Cluster-wide defaults (ConfigRecords for BROKER resource "") and this
        node's own (resource "<node.id>"), as DescribeConfigs reports them.
        Log settings among them (``log.retention.ms``...) become the defaults
        of topics without an override; ``_sync_partitions`` then hands the
        new LogConfigs to the partition logs.
        """
        try:
            cfg = self.static_config.updated(self.image.broker_configs(""), per_broker=False).updated(
                self.image.broker_configs(self.node_id), per_broker=True
            )
            props = _broker_log_properties(cfg)
            default_log_config = LogConfig.from_broker_properties(props)
        except (ConfigError, ValueError) as e:
            log.error("dynamic broker configs not applied: %s", e)
            return
        if cfg == self.config:
            return
        self.config = cfg
        self.broker_log_props = props
        self.default_log_config = default_log_config
        if self.logs is not None:
            self.logs.default_config = default_log_config

    async def _sync_partitions(self, only: set[str] | None = None) -> None:
        """Make the local logs match the image: open logs for partitions placed
        here, drop those whose topic is gone.

        The image is the committed truth and is never touched here.  A log
        that cannot be created (EMFILE, ENOSPC: the log manager takes its
        directory offline) leaves its partition in :attr:`storage_errors`,
        answering KAFKA_STORAGE_ERROR, and is tried again at the next sync or
        start -- the image does not shrink to match the disk.  Creating
        thousands of logs yields to other tasks every few milliseconds, and
        one sync runs at a time (the image may change while it yields; the
        next sync picks that up).

        ``only``: the names of the topics that changed (a cluster node applies
        a few committed records at a time, and walking every topic for each
        would make a change cost the size of the cluster); None for all.
        """
        async with self._sync_lock:
            wanted: set[tuple[str, int]] = set()
            todo = []
            if only is None:
                topics = list(self.image.topics.values())
            else:
                topics = [self.image.topics[n] for n in only if n in self.image.topics]
            for t in topics:
                placed = [p for p in t.partitions.values() if self.node_id in p.replicas]
                if placed:
                    todo.append((t.name, self.log_config_for(t.name), placed))
                    wanted.update((t.name, p.partition_id) for p in placed)
            slice_end = trio.current_time() + SYNC_SLICE_SECONDS
            for name, cfg, placed in todo:
                config_checked = False
                for p in placed:
                    if trio.current_time() > slice_end:
                        await trio.sleep(0)
                        slice_end = trio.current_time() + SYNC_SLICE_SECONDS
                        if name not in self.image.topics:
                            break  # deleted meanwhile; the sync after that deletion drops it
                    key = (name, p.partition_id)
                    part = self.partitions.get(key)
                    if part is not None:
                        part.leader_epoch = p.leader_epoch
                        plog = part.log
                    else:
                        try:
                            plog = self.logs.get(name, p.partition_id)
                            if plog is None and self.quorum is not None:
                                # A cluster node creates logs while it also
                                # serves the quorum: the directory and file
                                # work (mostly waiting on the file system)
                                # goes to a worker thread.  Only this task
                                # creates or deletes logs (the sync lock).
                                plog = await trio.to_thread.run_sync(self.logs.create, name, p.partition_id, cfg)
                                if name not in self.image.topics:
                                    break  # deleted meanwhile; that deletion's sync drops the log
                            elif plog is None:
                                plog = self.logs.create(name, p.partition_id, cfg)
                        except (OSError, LogError) as e:
                            if key not in self.storage_errors:
                                log.error("cannot create the log of %s-%d (KAFKA_STORAGE_ERROR until it can): %s",
                                          name, p.partition_id, e)
                            self.storage_errors[key] = str(e)
                            continue
                        self.storage_errors.pop(key, None)
                        self.partitions[key] = Partition(name, p.partition_id, plog, leader_epoch=p.leader_epoch)
                    if not config_checked and plog.config != cfg:
                        # Once per topic: update_config walks every log.  A log
                        # loaded before the image was replayed has the default config.
                        self.logs.update_config(name, cfg)
                    config_checked = True
            for key in list(self.partitions) if only is None else [k for k in self.partitions if k[0] in only]:
                if key not in wanted:
                    del self.partitions[key]
            for key in list(self.storage_errors):
                if key not in wanted and (only is None or key[0] in only):
                    del self.storage_errors[key]
            if only is not None and all(n in self.image.topics for n in only):
                return  # nothing was removed: no log can have become a stray
            if not self.caught_up:
                # A cluster node filling its image from the quorum has not yet
                # heard of every topic: a log it does not know may be one it
                # has simply not reached.  Deleting waits for the catch-up.
                return
            # Logs of partitions no longer placed here, including topics deleted while we were down.
            for key, _plog in self.logs:
                if key not in wanted and key[0] != METADATA_TOPIC and (only is None or key[0] in only):
                    self.logs.delete(*key)

    @property
    def caught_up(self) -> bool:
        """The image holds every change committed before this process started.

        Always so for the single node (it replays its whole log first).  A
        cluster node knows it once it has applied its own registration,
        which was committed after everything that came before it.
        """
        if self.quorum is None:
            return True
        return self.broker_epoch >= 0 and self.quorum.applied > self.broker_epoch

    def log_config_for(self, topic: str) -> LogConfig:
        overrides = self.image.topic_configs(topic)
        if not overrides:
            return self.default_log_config
        return LogConfig.from_topic_configs(overrides, self.default_log_config)

    def partition(self, topic: str, index: int) -> Partition | None:
        return self.partitions.get((topic, index))

    def resolve_topic(self, name: str | None, topic_id: uuid.UUID = ZERO_UUID) -> tuple[TopicImage | None, ErrorCode]:
        """The topic a request names (by id when it gives one), and the error for not finding it."""
        if topic_id != ZERO_UUID:
            return self.image.topics_by_id.get(topic_id), ErrorCode.UNKNOWN_TOPIC_ID
        return self.image.topics.get(name), ErrorCode.UNKNOWN_TOPIC_OR_PARTITION

    def leader_partition(
        self,
        topic: TopicImage | None,
        index: int,
        current_leader_epoch: int = -1,
        missing: ErrorCode = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
    ) -> tuple[Partition | None, ErrorCode]:
        """The partition if this broker leads it in the epoch the client believes
        current, else the error Kafka answers with: unknown topic or partition,
        NOT_LEADER_OR_FOLLOWER, or FENCED/UNKNOWN_LEADER_EPOCH for a client
        behind or ahead of the leader's epoch."""
        if topic is None:
            return None, missing
        if index not in topic.partitions:
            return None, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        part = self.partitions.get((topic.name, index))
        if part is None and (topic.name, index) in self.storage_errors:
            return None, ErrorCode.KAFKA_STORAGE_ERROR
        if part is None or topic.partitions[index].leader != self.node_id:
            return None, ErrorCode.NOT_LEADER_OR_FOLLOWER
        if part.offline:  # its log dir failed (see LogManager.mark_offline)
            return None, ErrorCode.KAFKA_STORAGE_ERROR
        if current_leader_epoch >= 0 and current_leader_epoch != part.leader_epoch:
            if current_leader_epoch < part.leader_epoch:
                return None, ErrorCode.FENCED_LEADER_EPOCH
            return None, ErrorCode.UNKNOWN_LEADER_EPOCH
        return part, ErrorCode.NONE

    # -- helpers for handlers --------------------------------------------------------
    async def create_topics(self, specs: list[dict], *, validate_only: bool = False):
        """Create topics; returns controller TopicResults in request order."""
        if self.quorum is not None and not as_controller.get():
            return await self._create_topics_remote(specs, validate_only)
        if validate_only:
            return self.controller.create_topics(specs)[1]
        results = []

        def decide():
            records, results[:] = self.controller.create_topics(specs)
            return records

        try:
            await self.submit(decide)
        except MetadataWriteFailed as e:
            for r in results:
                if r.error == ErrorCode.NONE:
                    r.error, r.message = ErrorCode.KAFKA_STORAGE_ERROR, str(e)
        return results

    async def _create_topics_remote(self, specs: list[dict], validate_only: bool):
        """A broker's own CreateTopics (auto-creation, ``__consumer_offsets``), sent to the active controller."""
        body = {"topics": [{
            "name": s["name"], "num_partitions": s.get("num_partitions", -1),
            "replication_factor": s.get("replication_factor", -1),
            "assignments": [{"partition_index": p, "broker_ids": b} for p, b in (s.get("assignments") or ())],
            "configs": [{"name": k, "value": v} for k, v in (s.get("configs") or {}).items()],
        } for s in specs], "timeout_ms": 30000, "validate_only": validate_only}
        header = RequestHeader(int(ApiKey.CREATE_TOPICS), 7, 0, f"kbroker-{self.node_id}")
        try:
            resp = await self.quorum.forward(header, body)
        except RequestFailed as e:
            return [TopicResult(s["name"], ErrorCode.REQUEST_TIMED_OUT, str(e)) for s in specs]
        return [TopicResult(t.name, ErrorCode(t.error_code), t.error_message, t.topic_id, t.num_partitions,
                            t.replication_factor) for t in resp.topics]

    async def allocate_producer_id(self) -> int:
        if self._producer_ids_next >= self._producer_ids_end:
            if self.quorum is not None:
                # Bounded: the client retries (COORDINATOR_LOAD_IN_PROGRESS, as
                # Kafka answers while a broker waits for its next block).
                with trio.move_on_after(PRODUCER_ID_BLOCK_WAIT_S):
                    await self.registered.wait()
                if self.broker_epoch < 0:
                    raise ProducerIdsUnavailable("this broker is not registered yet")
                try:
                    resp = await self.quorum.call(ApiKey.ALLOCATE_PRODUCER_IDS, 0,
                                                  {"broker_id": self.node_id, "broker_epoch": self.broker_epoch},
                                                  timeout=PRODUCER_ID_BLOCK_WAIT_S)
                except RequestFailed as e:
                    raise ProducerIdsUnavailable(str(e)) from None
                if resp.error_code != ErrorCode.NONE:
                    raise ProducerIdsUnavailable(f"AllocateProducerIds: {ErrorCode(resp.error_code).name}")
                first, count = resp.producer_id_start, resp.producer_id_len
            else:
                recs, first = self.controller.allocate_producer_ids(self.node_id, 0)
                await self.submit(recs)
                count = 1000
            self._producer_ids_next, self._producer_ids_end = first, first + count
        pid = self._producer_ids_next
        self._producer_ids_next += 1
        return pid

    def now_ms(self) -> int:
        return int(time.time() * 1000)


__all__ = ["Broker", "METADATA_TOPIC"]
