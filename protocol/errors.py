"""Kafka error codes and the one exception type for malformed input.

Everything in :mod:`protocol` that reads bytes raises :class:`ProtocolError`
(and nothing else) when the bytes are not what Kafka would send, so callers
need exactly one ``except`` clause to turn bad input into an error response
or a clean connection close.
"""

from __future__ import annotations


class ProtocolError(ValueError):
    """Input bytes (or a value to encode) that do not fit the Kafka protocol.

    The message says what was wrong and where (message, field path, byte
    offset when known).
    """
