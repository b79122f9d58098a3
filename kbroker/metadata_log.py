"""``__cluster_metadata``: the log of KRaft metadata records, and ``meta.properties``.

Records are stored as Kafka stores them: each record batch holds records whose
values are framed KRaft metadata records (see :mod:`protocol.envelopes`).  The
log is a normal partition log; with a quorum of one, an append is committed
once it is on disk, so appends are fsynced before the change is applied and
acknowledged.
"""

from __future__ import annotations

import logging
import os
import uuid
import base64

import trio

from protocol.envelopes import decode_metadata_record, encode_metadata_record
from protocol.records import decode_batch, encode_batch

from .log.config import LogConfig
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
            raise SystemExit(
                f"kbroker: {path} belongs to node.id {stored_node}, but this broker is node.id {node_id}"
            )
        if cluster_id and props.get("cluster.id") not in (None, cluster_id):
            raise SystemExit(
                f"kbroker: {path} belongs to cluster {props.get('cluster.id')}, not {cluster_id}"
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
        would."""
        values = [encode_metadata_record(name, body) for name, body in records]
        batch = bytearray(encode_batch([(None, v) for v in values]))
        info = self.plog.append(batch, assign_offsets=True)
        job = self.plog.prepare_flush()
        await trio.to_thread.run_sync(job.run)
        self.plog.complete_flush(job)
        return [
            (info.first_offset + i, *_name_and_body(decode_metadata_record(v)))
            for i, v in enumerate(values)
        ]


def _name_and_body(decoded) -> tuple[str, object]:
    name, _version, body = decoded
    return name, body

