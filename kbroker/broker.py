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

from protocol import ErrorCode

from . import metadata_log
from .config import Config, ConfigError
from .controller.controller import Controller
from .group.coordinator import GroupCoordinator
from .log.config import LogConfig, validate_topic_config
from .log.manager import LogManager
from .metadata.image import BROKER_RESOURCE, MetadataImage, TopicImage
from .partition import Partition

log = logging.getLogger("kbroker.broker")

METADATA_TOPIC = "__cluster_metadata"
ZERO_UUID = uuid.UUID(int=0)


def _broker_log_properties(config: Config) -> dict[str, str]:
    """The broker settings that give topic configs their defaults, as strings."""
    return {
        row.name: row.value
        for row in config.items()
        if row.value is not None and row.source != "DEFAULT_CONFIG"
    }


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
        )
        self._producer_ids_next = 0
        self._producer_ids_end = 0
        self._metadata_lock = trio.Lock()
        self.groups = GroupCoordinator(self)

    # -- lifecycle ---------------------------------------------------------------
    async def start(self, nursery: trio.Nursery, bound_ports: dict[str, int] | None = None) -> None:
        """Open everything and register; ``bound_ports`` (listener name -> port)
        replaces port 0 in the advertised endpoints with the port actually bound."""
        self.bound_ports = bound_ports or {}
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
        self._sync_partitions()
        await self.groups.start(nursery)
        nursery.start_soon(self.logs.run_retention, self.config["log.retention.check.interval.ms"])
        nursery.start_soon(self.logs.run_cleaner, self.config["log.cleaner.backoff.ms"])
        # Kafka's default (Long.MAX) means "no scheduled flush"; kbroker's flusher is also what
        # applies flush.ms / flush.messages, so it must still look at least every second.
        nursery.start_soon(self.logs.run_flusher, min(max(self.config["log.flush.scheduler.interval.ms"], 1), 1000))

    async def close(self) -> None:
        if self.logs is not None:
            await trio.to_thread.run_sync(self._close_sync)

    def _close_sync(self) -> None:
        self.logs.close()

    def _log_config_or_none(self, topic: str) -> LogConfig | None:
        if topic == METADATA_TOPIC:
            return metadata_log.MetadataLog.CONFIG
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
    async def submit(self, records: list) -> None:
        """Append controller records to the metadata log, apply them, and act on them."""
        if not records:
            return
        # One change at a time: records must reach the image in log order,
        # and the fsync inside append yields to other tasks.
        async with self._metadata_lock:
            for offset, name, record in await self.metadata.append(records):
                self.image.apply(name, record, offset)
        if any(name == "ConfigRecord" and body["resource_type"] == BROKER_RESOURCE for name, body in records):
            self._apply_dynamic_config()
        self._sync_partitions()

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

    def _sync_partitions(self) -> None:
        """Open logs for partitions placed here; drop those whose topic is gone."""
        wanted = set()
        for t in self.image.topics.values():
            cfg = self.log_config_for(t.name)
            for p in t.partitions.values():
                if self.node_id not in p.replicas:
                    continue
                key = (t.name, p.partition_id)
                wanted.add(key)
                part = self.partitions.get(key)
                if part is None:
                    plog = self.logs.get(t.name, p.partition_id)
                    if plog is None:
                        plog = self.logs.create(t.name, p.partition_id, cfg)
                    elif plog.config != cfg:
                        # Loaded from disk before the image was replayed: default config.
                        self.logs.update_config(t.name, cfg)
                    self.partitions[key] = Partition(t.name, p.partition_id, plog, leader_epoch=p.leader_epoch)
                else:
                    part.leader_epoch = p.leader_epoch
                    if part.log.config != cfg:
                        self.logs.update_config(t.name, cfg)
        for key in list(self.partitions):
            if key not in wanted:
                del self.partitions[key]
        # Logs of partitions no longer placed here, including topics deleted while we were down.
        for key, _plog in self.logs:
            if key not in wanted and key[0] != METADATA_TOPIC:
                self.logs.delete(*key)

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
        results = []
        records = []
        pending: set[str] = set()
        for spec in specs:
            recs, res = self.controller.create_topic(pending=pending, **spec)
            results.append(res)
            if res.error == 0:
                pending.add(res.name)
                records.extend(recs)
        if not validate_only:
            await self.submit(records)
        return results

    async def allocate_producer_id(self) -> int:
        if self._producer_ids_next >= self._producer_ids_end:
            recs, first = self.controller.allocate_producer_ids(self.node_id, 0)
            await self.submit(recs)
            self._producer_ids_next, self._producer_ids_end = first, first + 1000
        pid = self._producer_ids_next
        self._producer_ids_next += 1
        return pid

    def now_ms(self) -> int:
        return int(time.time() * 1000)


__all__ = ["Broker", "METADATA_TOPIC"]
