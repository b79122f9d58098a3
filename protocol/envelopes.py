"""The framings Kafka wraps around schema'd records inside record batches.

* KRaft metadata records (``__cluster_metadata``): a record's value is an
  unsigned-varint frame version (1), the record type (the schema's apiKey)
  and the schema version, each as an unsigned varint, then the body.
* Coordinator records (``__consumer_offsets``, ``__transaction_state``): the
  key is an int16 record type (the key schema's apiKey) then the key body in
  version 0... of its own schema; the value is an int16 version then the value
  body.  A null value is a tombstone.
"""

from __future__ import annotations

import struct

from . import types as T
from .errors import ProtocolError
from .messages import coordinator_records, metadata_records

METADATA_FRAME_VERSION = 1
_I16 = struct.Struct(">h")


def encode_metadata_record(name: str, body, version: int | None = None) -> bytes:
    """Encode a KRaft metadata record value; ``version`` defaults to the newest."""
    schema = getattr(metadata_records, name)
    v = schema.valid[1] if version is None else version
    return (
        T.write_uvarint(METADATA_FRAME_VERSION)
        + T.write_uvarint(schema.api_key)
        + T.write_uvarint(v)
        + schema.encode(body, v)
    )


def decode_metadata_record(data) -> tuple[str, int, object]:
    """(record name, version, body) of a KRaft metadata record value."""
    r = T.BufferReader(data)
    frame_version = T.read_uvarint(r)
    if frame_version not in (0, 1):
        raise ProtocolError(f"unknown metadata record frame version {frame_version}")
    rtype = T.read_uvarint(r)
    version = T.read_uvarint(r)
    schema = metadata_records.BY_TYPE.get(rtype)
    if schema is None:
        raise ProtocolError(f"unknown metadata record type {rtype}")
    return schema.name, version, schema.decode(r, version)


def encode_coordinator_key(name: str, body) -> bytes:
    schema = getattr(coordinator_records, name)
    return _I16.pack(schema.api_key) + schema.encode(body, schema.valid[1])


def encode_coordinator_value(name: str, body, version: int | None = None) -> bytes:
    schema = getattr(coordinator_records, name)
    v = schema.valid[1] if version is None else version
    return _I16.pack(v) + schema.encode(body, v)


def decode_coordinator_key(data, family: str = "GROUP") -> tuple[str, object]:
    """(key schema name, body); the leading int16 says which key schema.

    ``family`` picks the internal topic's table: "GROUP" (__consumer_offsets),
    "SHARE" or "TRANSACTION".
    """
    r = T.BufferReader(data)
    rtype = T.INT16._parse(r, None, "")
    schema = getattr(coordinator_records, f"{family}_KEYS").get(rtype)
    if schema is None:
        raise ProtocolError(f"unknown coordinator record type {rtype}")
    # Key schemas have a single version; legacy offset keys (types 0 and 1) share it.
    return schema.name, schema.decode(r, schema.valid[1])


def decode_coordinator_value(key_name: str, data) -> tuple[int, object] | None:
    """(version, body) of the value belonging to a key of ``key_name``; None for a tombstone."""
    if data is None:
        return None
    value_name = key_name[: -len("Key")] + "Value"
    schema = getattr(coordinator_records, value_name, None)
    if schema is None:
        raise ProtocolError(f"no value schema for {key_name}")
    r = T.BufferReader(data)
    version = T.INT16._parse(r, None, "")
    return version, schema.decode(r, version)
