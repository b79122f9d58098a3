"""A sans-IO codec for the Apache Kafka wire protocol.

No sockets, no event loop: bytes in, Python objects out, and back.  Message
layouts are generated from Kafka's own JSON definitions (``protocol.messages``);
record batches, compression and framing are written by hand beside them.

Server side::

    reader = FrameReader(max_frame_size)
    reader.feed(data)
    while (frame := reader.next_frame()) is not None:
        header, body = decode_request(frame)
        ...
        sock.send(encode_response(header, response_body))

Client side: :func:`encode_request` and :func:`decode_response`.

Bodies are :class:`construct.Container` objects (dicts with attribute
access) with snake_case field names from the specs; decoding fills in the
defaults of fields a version lacks, encoding accepts any mapping and uses
defaults for the fields it leaves out.  Every malformed input raises
:class:`ProtocolError`.
"""

from .codec import (
    RequestHeader,
    UnsupportedVersion,
    advertised_versions,
    api_info,
    api_versions_fallback_body,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    peek_header,
    request_schema,
    response_schema,
    supported_versions,
)
from .errors import ErrorCode, ProtocolError, TooManyElements
from .framing import FrameReader, FrameTooLarge, frame
from .messages import API_INDEX, ApiKey

__all__ = [
    "API_INDEX",
    "ApiKey",
    "ErrorCode",
    "FrameReader",
    "FrameTooLarge",
    "ProtocolError",
    "RequestHeader",
    "TooManyElements",
    "UnsupportedVersion",
    "advertised_versions",
    "api_info",
    "api_versions_fallback_body",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
    "frame",
    "peek_header",
    "request_schema",
    "response_schema",
    "supported_versions",
]
