"""Requests and responses: headers, bodies and version rules, for both ends of a connection.

Server side: :func:`decode_request` turns a frame into a :class:`RequestHeader`
and a body; :func:`encode_response` turns a body into a framed response for
that header.  Client side: :func:`encode_request` and :func:`decode_response`.

Header versions follow from the API's flexible versions (request header v2 and
response header v1 for flexible versions, v1 and v0 otherwise), with Kafka's
one exception: an ApiVersions response always uses response header v0, so a
client that does not yet know what we support can read it.  For the same
reason an ApiVersions request in a version we do not know is answered in the
v0 body layout (see :func:`encode_response`).
"""

from __future__ import annotations

import importlib
import struct
from typing import Any, NamedTuple

from . import types as T
from .errors import ErrorCode, ProtocolError
from .messages import API_INDEX, ApiInfo, ApiKey
from .messages.headers import RequestHeader as _REQUEST_HEADER
from .messages.headers import ResponseHeader as _RESPONSE_HEADER
from .schema import Message

_HEAD = struct.Struct(">hhi")
_I32 = struct.Struct(">i")

API_VERSIONS = int(ApiKey.API_VERSIONS)


class RequestHeader(NamedTuple):
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None = None
    tagged_fields: dict | None = None


class UnsupportedVersion(ProtocolError):
    """A request for an API key or version this codec does not know.

    Carries what could be read of the header: Kafka answers an ApiVersions
    request in an unknown version (error 35, v0 layout), and closes the
    connection for anything else.
    """

    def __init__(self, message: str, header: RequestHeader):
        super().__init__(message)
        self.header = header


def api_info(api_key: int) -> ApiInfo | None:
    return API_INDEX.get(api_key)


_modules: dict[int, Any] = {}


def _module(api_key: int):
    mod = _modules.get(api_key)
    if mod is None:
        info = API_INDEX.get(api_key)
        if info is None:
            raise ProtocolError(f"unknown API key {api_key}")
        mod = importlib.import_module(f".messages.{info.module}", __package__)
        _modules[api_key] = mod
    return mod


def request_schema(api_key: int) -> Message:
    """The request :class:`~protocol.schema.Message` for an API key."""
    return _module(api_key).REQUEST


def response_schema(api_key: int) -> Message:
    """The response :class:`~protocol.schema.Message` for an API key."""
    return _module(api_key).RESPONSE


def supported_versions(api_key: int) -> tuple[int, int]:
    """The versions this codec can read and write (Kafka's ``validVersions``)."""
    return API_INDEX[api_key].valid


def advertised_versions(api_key: int) -> tuple[int, int]:
    """The range a Kafka 4.2 broker advertises in ApiVersions.

    Two quirks carry over from Kafka: Produce is advertised from version 0
    although versions 0-2 are refused when used (KAFKA-18659: older librdkafka
    turns compression off when it sees a higher minimum), and a version marked
    unstable is not advertised.
    """
    info = API_INDEX[api_key]
    low, high = info.valid
    if api_key == ApiKey.PRODUCE:
        low = 0
    if info.latest_unstable:
        high -= 1
    return low, high


def _is_flexible(rng, version: int) -> bool:
    return rng is not None and rng[0] <= version <= rng[1]


def request_header_version(api_key: int, api_version: int) -> int:
    info = API_INDEX.get(api_key)
    if info is None:
        return 1
    return 2 if _is_flexible(info.request_flexible, api_version) else 1


def response_header_version(api_key: int, api_version: int) -> int:
    if api_key == API_VERSIONS:
        return 0
    info = API_INDEX[api_key]
    return 1 if _is_flexible(info.response_flexible, api_version) else 0


# -- server side --------------------------------------------------------------


def peek_header(frame) -> tuple[int, int, int]:
    """(api_key, api_version, correlation_id) from the first 8 bytes of a request."""
    if len(frame) < 8:
        raise ProtocolError(f"request of {len(frame)} bytes is shorter than a request header")
    return _HEAD.unpack_from(frame, 0)


def decode_request(frame, *, strict: bool = False, max_elements: int | None = None) -> tuple[RequestHeader, Any]:
    """Decode a request frame (without its size prefix) into (header, body).

    Bytes after the body are ignored unless ``strict``: Kafka's own parser
    stops at the end of the message, and real clients rely on it (librdkafka
    2.x sends three extra bytes with an all-topics Metadata v13 request).
    Tools checking a client's exact encoding pass ``strict=True``.

    ``max_elements`` caps the array elements of the whole message (header
    and body, nested arrays included); a message over it is refused with a
    :class:`ProtocolError` before the excess is decoded.  Servers set it so
    that decode time and memory are bounded by a number they chose, not by
    what a peer packs into a large frame.

    Raises :class:`UnsupportedVersion` for an unknown API key or version, and
    :class:`ProtocolError` for anything malformed.
    """
    api_key, api_version, correlation_id = peek_header(frame)
    info = API_INDEX.get(api_key)
    if info is None:
        raise UnsupportedVersion(
            f"unknown API key {api_key}", RequestHeader(api_key, api_version, correlation_id)
        )
    reader = T.BufferReader(frame, max_elements=max_elements)
    if not info.valid[0] <= api_version <= info.valid[1]:
        header = RequestHeader(api_key, api_version, correlation_id)
        # Best effort at the client id, for logs; the body is not read.
        try:
            reader.pos = 8
            header = header._replace(client_id=T.String(False, True)._parse(reader, None, ""))
        except ProtocolError:
            pass
        raise UnsupportedVersion(
            f"{info.name} v{api_version} is not supported (supported: {info.valid[0]}-{info.valid[1]})",
            header,
        )
    hv = 2 if _is_flexible(info.request_flexible, api_version) else 1
    h = _REQUEST_HEADER.decode(reader, hv, exact=False)
    header = RequestHeader(api_key, api_version, correlation_id, h.client_id, h.get(T.UNKNOWN_TAGS))
    body = _module(api_key).REQUEST.decode(reader, api_version, exact=strict)
    return header, body


def encode_response(header: RequestHeader, body, *, chunks: bool = False):
    """Encode a response body for ``header``'s API and version, with its size prefix.

    With ``chunks=True`` returns a list of buffers (big record buffers by
    reference) for a scatter/gather send instead of one bytes object.

    An ApiVersions request in a version we do not support is answered in the
    v0 layout, as Kafka does, so the client can read the error and our range.
    """
    api_key, version = header.api_key, header.api_version
    schema = response_schema(api_key)
    if api_key == API_VERSIONS and not schema.supports(version):
        version = 0
    w = T.ChunkWriter()
    w.write(b"\0\0\0\0")  # size, patched below
    hv = response_header_version(api_key, version)
    _RESPONSE_HEADER.encode_into({"correlation_id": header.correlation_id}, hv, w)
    schema.encode_into(body, version, w)
    parts = w.chunks()
    first = parts[0]
    _I32.pack_into(first, 0, w.size - 4)
    if chunks:
        return parts
    return b"".join(parts)


def api_versions_fallback_body(api_keys: list | None = None):
    """The body of an ApiVersions answer to an unsupported version (error 35).

    Like Kafka, it lists only ApiVersions' own range by default, so the client
    can retry with a version we speak; ``api_keys`` lets a tool (the capture
    proxy) answer for another server's range.
    """
    lo, hi = advertised_versions(API_VERSIONS)
    keys = api_keys or [{"api_key": API_VERSIONS, "min_version": lo, "max_version": hi}]
    return {"error_code": int(ErrorCode.UNSUPPORTED_VERSION), "api_keys": keys}


# -- client side --------------------------------------------------------------


def encode_request(
    api_key: int, api_version: int, body, *, correlation_id: int, client_id: str | None = "kbroker"
) -> bytes:
    """Encode a request with its header and size prefix."""
    info = API_INDEX.get(api_key)
    if info is None:
        raise ProtocolError(f"unknown API key {api_key}")
    w = T.ChunkWriter()
    w.write(b"\0\0\0\0")
    hv = 2 if _is_flexible(info.request_flexible, api_version) else 1
    _REQUEST_HEADER.encode_into(
        {
            "request_api_key": api_key,
            "request_api_version": api_version,
            "correlation_id": correlation_id,
            "client_id": client_id,
        },
        hv,
        w,
    )
    request_schema(api_key).encode_into(body, api_version, w)
    parts = w.chunks()
    _I32.pack_into(parts[0], 0, w.size - 4)
    return b"".join(parts)


def decode_response(api_key: int, api_version: int, frame) -> tuple[int, Any]:
    """Decode a response frame (without size prefix) into (correlation_id, body)."""
    reader = T.BufferReader(frame)
    hv = response_header_version(api_key, api_version)
    h = _RESPONSE_HEADER.decode(reader, hv, exact=False)
    body = response_schema(api_key).decode(reader, api_version)
    return h.correlation_id, body
