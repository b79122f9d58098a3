"""Splitting a byte stream into Kafka frames (a 4-byte big-endian size, then the frame).

Sans-IO in the manner of h11: feed it whatever bytes arrived, ask it for
complete frames.  The size prefix is checked against ``max_frame_size``
*before* anything is allocated for the frame, so a 2 GB prefix costs an
error, not 2 GB.
"""

from __future__ import annotations

import struct

from .errors import ProtocolError

_SIZE = struct.Struct(">i")


class FrameTooLarge(ProtocolError):
    """A size prefix above the configured maximum (or negative)."""

    def __init__(self, size: int, limit: int):
        super().__init__(f"frame of {size} bytes exceeds the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class FrameReader:
    """Collects bytes and hands out whole frames, without their size prefix.

    Frames are returned as ``bytearray`` so that a decoded body's zero-copy
    views (``records``) are writable: the broker patches base offsets in place.
    """

    def __init__(self, max_frame_size: int = 100 * 1024 * 1024):
        self.max_frame_size = max_frame_size
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data) -> None:
        """Add received bytes."""
        if self._pos and self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as frames."""
        return len(self._buf) - self._pos

    def pending_frame_size(self) -> int | None:
        """Size of the frame being received, once its prefix has arrived (checked)."""
        if len(self._buf) - self._pos < 4:
            return None
        size = _SIZE.unpack_from(self._buf, self._pos)[0]
        if size < 0 or size > self.max_frame_size:
            raise FrameTooLarge(size, self.max_frame_size)
        return size

    def next_frame(self) -> bytearray | None:
        """The next complete frame, or None until more bytes are fed.

        Raises :class:`FrameTooLarge` for a bad size prefix; the stream cannot
        be resynchronised after that, so the connection should be closed.
        """
        size = self.pending_frame_size()
        if size is None:
            return None
        start = self._pos + 4
        end = start + size
        if end > len(self._buf):
            return None
        frame = self._buf[start:end]
        self._pos = end
        # Compact once the consumed prefix dominates, so memory stays bounded
        # without moving bytes after every frame.
        if self._pos > 65536 and self._pos * 2 > len(self._buf):
            del self._buf[: self._pos]
            self._pos = 0
        return frame

    def at_frame_boundary(self) -> bool:
        """True when no partial frame is buffered (a clean place for the peer to close)."""
        return self._pos == len(self._buf)


def frame(payload) -> bytes:
    """Prefix ``payload`` with its size."""
    return _SIZE.pack(len(payload)) + bytes(payload)
