"""``__cluster_metadata``: the log of KRaft metadata records, and ``meta.properties``.

Records are stored as Kafka stores them: each record batch holds records whose
values are framed KRaft metadata records (see :mod:`protocol.envelopes`).  The
log is a normal partition log; with a quorum of one, an append is committed
once it is on disk, so appends are fsynced before the change is applied and
acknowledged.

An append that fails (the write, or the fsync) leaves the log possibly holding
records the image never got, which a restart would replay: the caller must
cut the log back with :meth:`MetadataLog.rollback` -- and treat a failed
rollback as fatal -- before answering anything.  Each operation is one batch,
so a torn write is cut off whole by recovery (CRC) after a crash.
"""

from __future__ import annotations

import logging
import os
import uuid
import base64

import trio

from protocol.envelopes import decode_metadata_record, encode_metadata_record
from protocol.records import decode_batch, encode_batch

from .config import ConfigError
from .crashpoints import crash_point
from .log.config import LogConfig
from .log.errors import KafkaStorageError
from .log.partition_log import PartitionLog

log = logging.getLogger("kbroker.metadata")



def _new_cluster_id() -> str:
    # Kafka's cluster ids are url-safe base64 of a random uuid, without padding.
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def read_or_create_meta_properties(log_dir: str, node_id: int, cluster_id: str | None = None) -> str:
    """The cluster id recorded in ``meta.properties``, creating the file on first start."""
    path = os.path.join(log_dir, "meta.properties")
    props = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith("#") and "=" in line:
                    k, v = line.split("=", 1)
                    props[k.strip()] = v.strip()
        stored_node = props.get("node.id")
        if stored_node is not None and int(stored_node) != node_id:
            raise ConfigError(
                f"node.id: {path} belongs to node.id {stored_node}, but this broker is node.id {node_id}"
            )
        if cluster_id and props.get("cluster.id") not in (None, cluster_id):
            raise ConfigError(
                f"cluster.id: {path} belongs to cluster {props.get('cluster.id')}, not {cluster_id}"
            )
        if props.get("cluster.id"):
            return props["cluster.id"]
    cid = cluster_id or _new_cluster_id()
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"#\nversion=1\nnode.id={node_id}\ncluster.id={cid}\ndirectory.id={_new_cluster_id()}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return cid


class MetadataLog:
    def __init__(self, plog: PartitionLog):
        self.plog = plog

    # The metadata log is never trimmed by retention (snapshots will do that).
    CONFIG = LogConfig(retention_ms=-1, retention_bytes=-1, segment_bytes=64 * 1024 * 1024)

    def replay(self):
        """(offset, record name, record) for every record, in order."""
        offset = self.plog.log_start_offset
        end = self.plog.log_end_offset
        while offset < end:
            res = self.plog.read(offset, 1 << 20, min_one_batch=True)
            data = memoryview(res.records)
            if len(data) == 0:
                break
            pos = 0
            while pos < len(data):
                header, records = decode_batch(data, pos)
                for r in records:
                    name, _version, body = decode_metadata_record(r.value)
                    yield r.offset, name, body
                pos += header.total_size
                offset = header.next_offset

    async def append(self, records: list) -> list[tuple[int, str, object]]:
        """Append ``(name, body)`` records as one batch and fsync it (off the
        trio thread); returns ``(offset, name, record)`` decoded back from
        what was written, so that the live path applies exactly what a replay
        would.

        Raises OSError or :class:`KafkaStorageError` if the batch may not be
        durable; the log may then hold part or all of it (see the module doc).
        """
        values = [encode_metadata_record(name, body) for name, body in records]
        batch = bytearray(encode_batch([(None, v) for v in values]))
        info = self.plog.append(batch, assign_offsets=True)
        crash_point("metadata.append")
        job = self.plog.prepare_flush()
        await trio.to_thread.run_sync(job.run)
        try:
            self.plog.complete_flush(job)
        except OSError as e:
            # The records are durable; only the recovery-point checkpoint (a
            # start-up shortcut) is stale, and recovery re-reads from it.
            log.warning("metadata log: recovery point not written: %s", e)
        return [
            (info.first_offset + i, *_name_and_body(decode_metadata_record(v)))
            for i, v in enumerate(values)
        ]

    @property
    def end_offset(self) -> int:
        return self.plog.log_end_offset

    @property
    def offline(self) -> bool:
        """True once the log's directory has failed: no append is possible until a restart."""
        return self.plog.offline

    async def rollback(self, offset: int) -> None:
        """Cut the log back to ``offset`` (its end before a failed append) and
        make the cut durable.  Raises OSError / KafkaStorageError if that is
        not certain: the caller must then stop rather than go on.

        Works on a log whose directory was just taken offline by the failure
        (that is the usual case): it fsyncs the segment's own descriptor
        rather than going through the flush path, which refuses offline logs
        and needs a fresh descriptor that EMFILE would deny.
        """
        segments_before = len(self.plog.segments)
        try:
            self.plog.truncate_to(offset)
        except OSError as e:
            # The cut itself may have happened before a checkpoint write
            # failed; only the log end decides, below.
            log.warning("metadata log: truncation to %d reported %s", offset, e)
        if self.plog.log_end_offset != offset:
            raise KafkaStorageError(
                f"metadata log ends at {self.plog.log_end_offset} after truncation to {offset}"
            )
        await trio.to_thread.run_sync(os.fsync, self.plog.active_segment.fd)
        if len(self.plog.segments) != segments_before:
            await trio.to_thread.run_sync(_fsync_dir_strict, self.plog.path)


def _fsync_dir_strict(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _name_and_body(decoded) -> tuple[str, object]:
    name, _version, body = decoded
    return name, body

