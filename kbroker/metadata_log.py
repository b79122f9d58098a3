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

import base64
import logging
import os
import uuid

import trio

from protocol.envelopes import decode_metadata_record, encode_metadata_record
from protocol.records import decode_batch, encode_batch

from .config import ConfigError, parse_properties
from .crashpoints import crash_point
from .log.config import LogConfig
from .log.errors import KafkaStorageError
from .log.partition_log import PartitionLog

log = logging.getLogger("kbroker.metadata")



META_PROPERTIES = "meta.properties"


def new_uuid() -> str:
    """A random id in Kafka's Uuid string form (url-safe base64, no padding).

    Like Kafka's ``Uuid.randomUuid``: never a reserved id (all zeros, or 1,
    the metadata topic's id) and never one starting with ``-``, which a
    command line would read as a flag (``kbroker format -t -abc...``).
    """
    while True:
        u = uuid.uuid4()
        text = base64.urlsafe_b64encode(u.bytes).decode().rstrip("=")
        if u.int > 1 and not text.startswith("-"):
            return text


_new_cluster_id = new_uuid


class FormatError(Exception):
    """``kbroker format`` cannot format these directories; the message says why."""


def read_meta_properties(log_dir: str) -> dict[str, str] | None:
    """The ``meta.properties`` of ``log_dir`` as a dict, or None if it has none.

    The file is a Java properties file (Kafka writes it with
    ``Properties.store``), so it is read with the same parser as
    server.properties.  An unreadable file raises OSError.
    """
    path = os.path.join(log_dir, META_PROPERTIES)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    return parse_properties(data.decode("latin-1"), path)


def write_meta_properties(log_dir: str, node_id: int, cluster_id: str, directory_id: str) -> None:
    """Write Kafka's v1 ``meta.properties`` durably (temp file, fsync, rename, fsync dir)."""
    path = os.path.join(log_dir, META_PROPERTIES)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"#\nversion=1\nnode.id={node_id}\ncluster.id={cluster_id}\ndirectory.id={directory_id}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir_strict(log_dir)


def check_meta_properties(log_dir: str, props: dict[str, str], node_id: int, cluster_id: str | None) -> None:
    """Refuse a directory that belongs to another node or another cluster.

    A node must never join a quorum, or register as a broker, with data
    written for a different node id or cluster: the metadata it holds would
    be taken for this cluster's.
    """
    path = os.path.join(log_dir, META_PROPERTIES)
    stored_node = props.get("node.id")
    if stored_node is not None:
        try:
            stored = int(stored_node)
        except ValueError:
            raise ConfigError(f"node.id: {path} has a node.id that is not a number: {stored_node!r}") from None
        if stored != node_id:
            raise ConfigError(
                f"node.id: {path} belongs to node.id {stored_node}, but this broker is node.id {node_id}"
            )
    if cluster_id and props.get("cluster.id") not in (None, cluster_id):
        raise ConfigError(f"cluster.id: {path} belongs to cluster {props.get('cluster.id')}, not {cluster_id}")


def read_or_create_meta_properties(log_dir: str, node_id: int, cluster_id: str | None = None) -> str:
    """The cluster id recorded in ``meta.properties``, creating the file on first start.

    Creating it here (rather than requiring ``kbroker format`` first, as
    Kafka does) is what lets a single node start with no setup at all.
    """
    props = read_meta_properties(log_dir)
    if props is not None:
        check_meta_properties(log_dir, props, node_id, cluster_id)
        if props.get("cluster.id"):
            return props["cluster.id"]
    cid = cluster_id or new_uuid()
    write_meta_properties(log_dir, node_id, cid, new_uuid())
    return cid


def format_directories(directories: list[str], node_id: int, cluster_id: str, *,
                       ignore_formatted: bool = False, metadata_dir: str | None = None,
                       out=print) -> list[str]:
    """``kafka-storage.sh format`` for ``meta.properties``: the directories written.

    As Kafka's formatter does, every directory already formatted is first
    checked against this node and cluster (a mismatch is refused even with
    ``ignore_formatted``); then any formatted directory stops the whole
    format unless ``ignore_formatted``, in which case only the empty ones
    are written.  Each gets its own directory.id.
    """
    existing: dict[str, dict[str, str]] = {}
    for d in directories:
        try:
            props = read_meta_properties(d)
        except OSError as e:
            raise FormatError(f"cannot read {os.path.join(d, META_PROPERTIES)}: {e.strerror or e}") from None
        if props is not None:
            try:
                check_meta_properties(d, props, node_id, cluster_id)
            except ConfigError as e:
                raise FormatError(str(e)) from None
            existing[d] = props
    if existing and not ignore_formatted:
        first = next(iter(existing))
        raise FormatError(f"Log directory {first} is already formatted. "
                          f"Use --ignore-formatted to ignore this directory and format the others.")
    empty = [d for d in directories if d not in existing]
    if not empty:
        out("All of the log directories are already formatted.")
        return []
    taken = {p.get("directory.id") for p in existing.values()}
    for d in empty:
        directory_id = new_uuid()
        while directory_id in taken:  # ids must be unique across this node's directories
            directory_id = new_uuid()
        taken.add(directory_id)
        kind = "metadata directory" if d == metadata_dir else "data directory"
        out(f"Formatting {kind} {d}.")
        try:
            os.makedirs(d, exist_ok=True)
            write_meta_properties(d, node_id, cluster_id, directory_id)
        except OSError as e:
            raise FormatError(f"Error while writing meta.properties file {d}: {e.strerror or e}") from None
    return empty


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

