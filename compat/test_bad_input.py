"""Hostile or broken bytes on a raw socket: an error answer or a clean close, never a
crash or a hang, and other clients keep working."""

from __future__ import annotations

import os
import socket
import struct
import time

import pytest

from compat import kraw
from compat.clients import Msg, consume_kafka_python, produce_kafka_python
from compat.conftest import EXTERNAL, BrokerProcess, ExternalBroker, create_topic, unique_name

WAIT = 10.0  # seconds the broker gets to answer or close


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    """A broker of this module's own: a crash here must not take the others down."""
    if EXTERNAL:
        yield ExternalBroker(EXTERNAL)
        return
    b = BrokerProcess(tmp_path_factory.mktemp("kbroker-bad-input"))
    b.start()
    yield b
    b.stop()


@pytest.fixture
def check_healthy(target, request):
    from compat.conftest import watch_broker

    watch_broker(request, target)
    name = create_topic(target.bootstrap, unique_name(), 1).name

    def check(tag: str) -> None:
        assert target.alive(), f"kbroker died after {tag}"
        placements = produce_kafka_python(target.bootstrap, name, [Msg(b"k", tag.encode())], timeout=20)
        got = consume_kafka_python(target.bootstrap, name, placements[0][1] + 1, timeout=20)
        assert got and got[-1].value == tag.encode()

    return check


def answer_or_close(sock: socket.socket, timeout: float = WAIT) -> bytes | None:
    """The first response frame, or None if the broker closed the connection.

    Fails if the broker neither answers nor closes within `timeout`.
    """
    sock.settimeout(timeout)
    try:
        return kraw.read_frame(sock)
    except ConnectionResetError:
        return None
    except socket.timeout:
        pytest.fail(f"the broker neither answered nor closed within {timeout}s")


def test_api_versions_v99_gets_unsupported_version_in_v0_layout(target, check_healthy):
    with kraw.connect(target.host, target.port) as s:
        s.sendall(kraw.api_versions_request(77, version=99))
        frame = answer_or_close(s)
    assert frame is not None, "expected an ApiVersions error answer, got a close"
    corr, err, apis = kraw.parse_api_versions_v0(frame)
    assert corr == 77
    assert err == 35  # UNSUPPORTED_VERSION
    assert 18 in apis and apis[18][0] == 0 and apis[18][1] >= 3
    check_healthy("api-versions-v99")


def test_api_versions_v0_plain(target):
    with kraw.connect(target.host, target.port) as s:
        s.sendall(kraw.api_versions_request(5, version=0))
        frame = answer_or_close(s)
    corr, err, apis = kraw.parse_api_versions_v0(frame)
    assert (corr, err) == (5, 0)
    for key in (0, 1, 2, 3, 18, 19, 20):  # Produce Fetch ListOffsets Metadata ApiVersions CreateTopics DeleteTopics
        assert key in apis, f"api {key} not advertised"


def test_unknown_api_key(target, check_healthy):
    with kraw.connect(target.host, target.port) as s:
        s.sendall(kraw.request_frame(32000, 0, 9, b"\x00" * 8))
        frame = answer_or_close(s)
    if frame is not None:
        assert struct.unpack_from(">i", frame)[0] == 9
    check_healthy("unknown-api-key")


def test_unsupported_version_of_known_api(target, check_healthy):
    with kraw.connect(target.host, target.port) as s:
        s.sendall(kraw.request_frame(3, 999, 10, struct.pack(">i", -1)))  # Metadata v999
        frame = answer_or_close(s)
    if frame is not None:
        assert struct.unpack_from(">i", frame)[0] == 10
    check_healthy("metadata-v999")


@pytest.mark.parametrize("prefix", [0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 200 * 1024 * 1024],
                         ids=["2GB", "negative-min", "minus-1", "200MB"])
def test_huge_or_negative_length_prefix(target, check_healthy, prefix):
    t0 = time.monotonic()
    with kraw.connect(target.host, target.port) as s:
        s.sendall(struct.pack(">I", prefix) + b"\x00" * 64)
        frame = answer_or_close(s)
    assert frame is None, "a frame larger than socket.request.max.bytes must close the connection"
    assert time.monotonic() - t0 < WAIT
    check_healthy(f"length-{prefix}")


def test_garbage_bytes(target, check_healthy):
    rnd = os.urandom(300)
    cases = [
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + rnd[:100],  # a TLS ClientHello
        struct.pack(">i", len(rnd)) + rnd,                            # right size, random content
        struct.pack(">i", 4) + b"\x00\x12\x00",                      # too short for a header
        struct.pack(">i", 12) + struct.pack(">hhih", 18, 0, 1, 500),  # client id longer than the frame
    ]
    for i, payload in enumerate(cases):
        with kraw.connect(target.host, target.port) as s:
            s.sendall(payload)
            try:
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            answer_or_close(s)
        assert target.alive(), f"kbroker died on garbage case {i}"
    check_healthy("garbage")


def test_truncated_frame_then_close(target, check_healthy):
    for cut in (2, 4, 10, 30):
        frame = kraw.metadata_request(3, ["x" * 40])
        with kraw.connect(target.host, target.port) as s:
            s.sendall(frame[:cut])
    check_healthy("truncated")


def test_many_short_connections(target, check_healthy):
    for _ in range(200):
        with socket.create_connection((target.host, target.port), timeout=5):
            pass
    check_healthy("churn")


def test_pipelined_requests_answered_in_order(target):
    """50 requests in one write: 50 answers with the same correlation ids, in order."""
    with kraw.connect(target.host, target.port) as s:
        s.sendall(b"".join(kraw.api_versions_request(i) if i % 2 else kraw.metadata_request(i, [])
                           for i in range(50)))
        s.settimeout(WAIT)
        ids = [struct.unpack_from(">i", kraw.read_frame(s))[0] for _ in range(50)]
    assert ids == list(range(50))
