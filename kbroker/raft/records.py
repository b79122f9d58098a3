"""Raft entries as Kafka record batches, and snapshots as Kafka checkpoint files.

``__cluster_metadata`` holds what Kafka's holds, byte for byte in layout, so
that its files and its Fetch answers are what a Kafka tool expects:

* an entry whose payload is ``bytes`` is one record (null key, the payload as
  value -- a framed KRaft metadata record, see :mod:`protocol.envelopes`);
  consecutive such entries of one epoch share a batch whose
  ``partition_leader_epoch`` is that epoch, which is how the epoch of every
  entry survives on disk and on the wire;
* the epoch marker a new leader writes first (:data:`LEADER_CHANGE`) is a
  control batch holding one ``LeaderChangeMessage`` record, as Kafka's leader
  writes one (control key: version 0, type 2);
* a snapshot (``<offset>-<epoch>.checkpoint``) is a run of batches that
  starts with a ``SnapshotHeaderRecord`` control batch and ends with a
  ``SnapshotFooterRecord`` one; the metadata records between them rebuild
  the image as it was below the snapshot's end offset.
"""

from __future__ import annotations

import struct
from typing import Sequence

from protocol.messages.data import LeaderChangeMessage, SnapshotFooterRecord, SnapshotHeaderRecord
from protocol.records import decode_records, encode_batch

from .log import LEADER_CHANGE, Entry

_CONTROL_KEY = struct.Struct(">hh")
LEADER_CHANGE_TYPE = 2
SNAPSHOT_HEADER_TYPE = 3
SNAPSHOT_FOOTER_TYPE = 4
# Records per batch: bounds one batch's size for a large proposal or snapshot.
MAX_BATCH_RECORDS = 1000


def _control_batch(kind: int, value: bytes, *, base_offset: int, epoch: int, timestamp: int | None = None) -> bytes:
    return encode_batch([(_CONTROL_KEY.pack(0, kind), value, (), timestamp)], base_offset=base_offset,
                        is_control=True, partition_leader_epoch=epoch)


def encode_entries(entries: Sequence[Entry], *, leader_id: int = -1) -> bytes:
    """Record batches holding ``entries`` (consecutive offsets), one batch per run of one epoch and kind."""
    out = bytearray()
    i = 0
    n = len(entries)
    while i < n:
        first = entries[i]
        if first.payload is LEADER_CHANGE:
            body = {"version": 0, "leader_id": leader_id, "voters": [], "granting_voters": []}
            out += _control_batch(LEADER_CHANGE_TYPE, LeaderChangeMessage.encode(body, 0),
                                  base_offset=first.offset, epoch=first.epoch)
            i += 1
            continue
        j = i + 1
        while (j < n and j - i < MAX_BATCH_RECORDS and entries[j].epoch == first.epoch
               and entries[j].payload is not LEADER_CHANGE):
            j += 1
        out += encode_batch([(None, e.payload) for e in entries[i:j]], base_offset=first.offset,
                            partition_leader_epoch=first.epoch)
        i = j
    return bytes(out)


def decode_entries(buf) -> list[Entry]:
    """The entries in ``buf`` (whole batches); control batches other than LEADER_CHANGE are skipped."""
    out: list[Entry] = []
    for header, records in decode_records(buf):
        epoch = header.partition_leader_epoch
        if header.is_control:
            for r in records:
                if r.key is not None and len(r.key) >= 4 and _CONTROL_KEY.unpack_from(r.key)[1] == LEADER_CHANGE_TYPE:
                    out.append(Entry(r.offset, epoch, LEADER_CHANGE))
            continue
        out.extend(Entry(r.offset, epoch, bytes(r.value)) for r in records)
    return out


def encode_snapshot(values: Sequence[bytes], *, end_offset: int, epoch: int, timestamp: int = 0) -> bytes:
    """A checkpoint file's bytes: header, ``values`` (framed metadata records), footer.

    Offsets inside a snapshot are positions, not log offsets (as in Kafka's
    snapshots), so the batches count from 0.
    """
    out = bytearray(_control_batch(SNAPSHOT_HEADER_TYPE,
                                   SnapshotHeaderRecord.encode({"version": 0, "last_contained_log_timestamp": timestamp}, 0),
                                   base_offset=0, epoch=epoch, timestamp=timestamp))
    pos = 1
    for i in range(0, len(values), MAX_BATCH_RECORDS):
        chunk = values[i : i + MAX_BATCH_RECORDS]
        out += encode_batch([(None, v) for v in chunk], base_offset=pos, partition_leader_epoch=epoch,
                            base_timestamp=timestamp)
        pos += len(chunk)
    out += _control_batch(SNAPSHOT_FOOTER_TYPE, SnapshotFooterRecord.encode({"version": 0}, 0),
                          base_offset=pos, epoch=epoch, timestamp=timestamp)
    return bytes(out)


class SnapshotFormatError(ValueError):
    """A checkpoint without its header or footer: cut short, or not a snapshot."""


def decode_snapshot(blob) -> list[bytes]:
    """The metadata record values of a checkpoint made by :func:`encode_snapshot` (or by Kafka)."""
    values: list[bytes] = []
    kinds: list[int] = []
    for header, records in decode_records(blob):
        if header.is_control:
            kinds.extend(_CONTROL_KEY.unpack_from(r.key)[1] for r in records if r.key and len(r.key) >= 4)
            continue
        values.extend(bytes(r.value) for r in records)
    if not kinds or kinds[0] != SNAPSHOT_HEADER_TYPE or kinds[-1] != SNAPSHOT_FOOTER_TYPE:
        raise SnapshotFormatError("snapshot lacks its header or footer record")
    return values
