"""Raw Kafka frames over a plain socket, for the fixtures and the bad-input tests.

Only the few requests the tests need, laid out by hand with ``struct`` from
Kafka's message definitions (classic, non-flexible versions):

* request header v1: int16 api_key, int16 api_version, int32 correlation_id,
  int16-length client_id;
* response header v0: int32 correlation_id;
* every frame: int32 big-endian length, then that many bytes.
"""

from __future__ import annotations

import socket
import struct
import time
from typing import Optional

API_METADATA = 3
API_API_VERSIONS = 18


def request_frame(api_key: int, api_version: int, correlation_id: int, body: bytes = b"",
                  client_id: Optional[str] = "kbroker-compat") -> bytes:
    if client_id is None:
        cid = struct.pack(">h", -1)
    else:
        raw = client_id.encode()
        cid = struct.pack(">h", len(raw)) + raw
    payload = struct.pack(">hhi", api_key, api_version, correlation_id) + cid + body
    return struct.pack(">i", len(payload)) + payload


def api_versions_request(correlation_id: int, version: int = 0) -> bytes:
    """ApiVersions with an empty v0 body (also what a client sends when probing)."""
    return request_frame(API_API_VERSIONS, version, correlation_id)


def metadata_request(correlation_id: int, topics: Optional[list[str]] = None) -> bytes:
    """Metadata v1: ``topics=None`` asks for all topics, ``[]`` for none."""
    if topics is None:
        body = struct.pack(">i", -1)
    else:
        body = struct.pack(">i", len(topics))
        for t in topics:
            body += struct.pack(">h", len(t)) + t.encode()
    return request_frame(API_METADATA, 1, correlation_id, body)


def recv_exact(sock: socket.socket, n: int) -> bytes:
    """Read exactly n bytes; b'' if the peer closed first (partial data dropped)."""
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return b""
        buf += chunk
    return bytes(buf)


def read_frame(sock: socket.socket) -> Optional[bytes]:
    """One response frame's payload, or None if the connection closed."""
    head = recv_exact(sock, 4)
    if not head:
        return None
    (size,) = struct.unpack(">i", head)
    if size < 0 or size > 64 << 20:
        raise ValueError(f"implausible response size {size}")
    body = recv_exact(sock, size)
    if len(body) != size:
        return None
    return body


def parse_api_versions_v0(payload: bytes) -> tuple[int, int, dict[int, tuple[int, int]]]:
    """(correlation_id, error_code, {api_key: (min, max)}) from a v0-layout answer."""
    corr, err, n = struct.unpack_from(">ihi", payload, 0)
    pos = 10
    apis = {}
    for _ in range(max(n, 0)):
        key, lo, hi = struct.unpack_from(">hhh", payload, pos)
        apis[key] = (lo, hi)
        pos += 6
    return corr, err, apis


def connect(host: str, port: int, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def metadata_answers(host: str, port: int, timeout: float = 2.0) -> bool:
    """True when a Metadata request on a fresh connection gets its answer."""
    try:
        with connect(host, port, timeout) as sock:
            sock.sendall(metadata_request(4242, []))
            frame = read_frame(sock)
            return frame is not None and struct.unpack_from(">i", frame)[0] == 4242
    except (OSError, ValueError, struct.error):
        return False


def wait_until_ready(host: str, port: int, deadline: float, alive=lambda: True) -> bool:
    """Poll until a Metadata request answers, the deadline passes, or alive() is False."""
    while time.monotonic() < deadline:
        if not alive():
            return False
        if metadata_answers(host, port):
            return True
        time.sleep(0.05)
    return False


# -- any API, through the protocol package ---------------------------------------------
#
# The hand-laid frames above stay independent of the codec under test; the abuse suite
# needs every API and version, so it encodes with ``protocol`` (its own unit tests check
# it against Kafka's definitions and a second implementation).


def encode(api_key: int, version: int, body: dict, correlation_id: int,
           client_id: Optional[str] = "kbroker-compat") -> bytes:
    """A framed request (size prefix included) for any API and version."""
    from protocol import encode_request

    return encode_request(api_key, version, body, correlation_id=correlation_id, client_id=client_id)


def decode(api_key: int, version: int, payload: bytes):
    """(correlation_id, body) of a response frame's payload."""
    from protocol import decode_response

    return decode_response(api_key, version, payload)


def call(sock: socket.socket, api_key: int, version: int, body: dict, correlation_id: int = 1):
    """Send one request on ``sock`` and return the decoded answer body.

    Raises ConnectionError if the broker closes instead of answering, and
    AssertionError if the answer carries another correlation id."""
    sock.sendall(encode(api_key, version, body, correlation_id))
    frame = read_frame(sock)
    if frame is None:
        raise ConnectionError(f"the broker closed the connection instead of answering api {api_key} v{version}")
    corr, answer = decode(api_key, version, frame)
    assert corr == correlation_id, f"correlation id {corr}, expected {correlation_id}"
    return answer


def request(host: str, port: int, api_key: int, version: int, body: dict, timeout: float = 10.0):
    """One request on a fresh connection; the decoded answer body."""
    with connect(host, port, timeout) as sock:
        return call(sock, api_key, version, body)


def reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the kernel sends a TCP RST instead of a FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()
