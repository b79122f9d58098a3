"""The records the group coordinator writes to ``__consumer_offsets``.

They are Kafka's own coordinator records (see :mod:`protocol.envelopes`):

* ``OffsetCommitKey(group, topic, partition)`` -> ``OffsetCommitValue``
  (value version 3, or 1 when the commit carries an explicit expiry, as
  Kafka writes them); a null value deletes the offset.
* ``GroupMetadataKey(group)`` -> ``GroupMetadataValue`` (version 3): the
  classic group's generation, protocol, leader and every member with its
  subscription and assignment; a null value deletes the group.

The state machine produces :class:`CoordinatorRecord` values (plain data, so
tests can look at them); the shell encodes them into record batches.
Replaying the log through :func:`decode` and the state machine's ``replay``
rebuilds the same groups and offsets.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from protocol.envelopes import (
    decode_coordinator_key,
    decode_coordinator_value,
    encode_coordinator_key,
    encode_coordinator_value,
)

OFFSET_COMMIT_VALUE_VERSION = 3
OFFSET_COMMIT_VALUE_VERSION_WITH_EXPIRY = 1
GROUP_METADATA_VALUE_VERSION = 3


class CoordinatorRecord(NamedTuple):
    group_id: str  # decides the partition
    key_name: str
    key: dict
    value_name: str
    value: dict | None  # None: a tombstone
    value_version: int | None = None

    @property
    def is_tombstone(self) -> bool:
        return self.value is None


class OffsetAndMetadata(NamedTuple):
    offset: int
    leader_epoch: int  # -1 when unknown
    metadata: str
    commit_timestamp: int
    expire_timestamp: int | None = None


def offset_commit_record(group_id: str, topic: str, partition: int, om: OffsetAndMetadata) -> CoordinatorRecord:
    if om.expire_timestamp is not None:
        version = OFFSET_COMMIT_VALUE_VERSION_WITH_EXPIRY
    else:
        version = OFFSET_COMMIT_VALUE_VERSION
    value = {
        "offset": om.offset,
        "leader_epoch": om.leader_epoch,
        "metadata": om.metadata,
        "commit_timestamp": om.commit_timestamp,
        "expire_timestamp": om.expire_timestamp if om.expire_timestamp is not None else -1,
    }
    return CoordinatorRecord(
        group_id, "OffsetCommitKey", {"group": group_id, "topic": topic, "partition": partition},
        "OffsetCommitValue", value, version,
    )


def offset_tombstone(group_id: str, topic: str, partition: int) -> CoordinatorRecord:
    return CoordinatorRecord(
        group_id, "OffsetCommitKey", {"group": group_id, "topic": topic, "partition": partition},
        "OffsetCommitValue", None,
    )


def group_metadata_record(group, assignment: dict[str, bytes]) -> CoordinatorRecord:
    """A classic group as of now, with ``assignment`` (member id -> bytes) for its members."""
    members = []
    for m in group.members.values():
        members.append(
            {
                "member_id": m.member_id,
                "group_instance_id": m.group_instance_id,
                "client_id": m.client_id,
                "client_host": m.client_host,
                "rebalance_timeout": m.rebalance_timeout_ms,
                "session_timeout": m.session_timeout_ms,
                "subscription": m.metadata(group.protocol_name) or b"",
                "assignment": assignment.get(m.member_id, b""),
            }
        )
    value = {
        "protocol_type": group.protocol_type or "",
        "generation": group.generation_id,
        "protocol": group.protocol_name,
        "leader": group.leader_id,
        "current_state_timestamp": group.state_timestamp if group.state_timestamp is not None else -1,
        "members": members,
    }
    return CoordinatorRecord(
        group.group_id, "GroupMetadataKey", {"group": group.group_id}, "GroupMetadataValue", value,
        GROUP_METADATA_VALUE_VERSION,
    )


def empty_group_metadata_record(group) -> CoordinatorRecord:
    """A group just created: no generation, no members yet."""
    value = {
        "protocol_type": group.protocol_type or "",
        "generation": 0,
        "protocol": None,
        "leader": None,
        "current_state_timestamp": group.state_timestamp if group.state_timestamp is not None else -1,
        "members": [],
    }
    return CoordinatorRecord(
        group.group_id, "GroupMetadataKey", {"group": group.group_id}, "GroupMetadataValue", value,
        GROUP_METADATA_VALUE_VERSION,
    )


def group_tombstone(group_id: str) -> CoordinatorRecord:
    return CoordinatorRecord(group_id, "GroupMetadataKey", {"group": group_id}, "GroupMetadataValue", None)


def encode(record: CoordinatorRecord) -> tuple[bytes, bytes | None]:
    """(key, value) bytes for a record batch; value None for a tombstone."""
    key = encode_coordinator_key(record.key_name, record.key)
    if record.value is None:
        return key, None
    return key, encode_coordinator_value(record.value_name, record.value, record.value_version)


def decode(key: bytes, value: bytes | None):
    """(key schema name, key body, value body or None) of a stored record."""
    name, key_body = decode_coordinator_key(key, "GROUP")
    decoded = decode_coordinator_value(name, value)
    return name, key_body, (decoded[1] if decoded is not None else None)


# -- the embedded consumer protocol -------------------------------------------------

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")


def subscription_topics(metadata: bytes) -> set[str] | None:
    """Topics of a ``ConsumerProtocolSubscription`` (any version), or None if malformed.

    Every version starts with the version (int16) and the v0 fields, so the
    topics are read with the v0 layout whatever the version says.
    """
    try:
        pos = 0
        (_version,) = _I16.unpack_from(metadata, pos)
        pos += 2
        (count,) = _I32.unpack_from(metadata, pos)
        pos += 4
        if count < 0:
            return None
        topics = set()
        for _ in range(count):
            (n,) = _I16.unpack_from(metadata, pos)
            pos += 2
            if n < 0 or pos + n > len(metadata):
                return None
            topics.add(bytes(metadata[pos:pos + n]).decode("utf-8"))
            pos += n
        return topics
    except (struct.error, UnicodeDecodeError):
        return None
