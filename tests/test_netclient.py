"""PeerConnection, the client side of node-to-node requests: every failure is a RequestFailed, never a hang or a crash."""

from __future__ import annotations

import struct

import pytest
import trio

from kbroker.netclient import PeerConnection, RequestFailed
from protocol import ApiKey, FrameReader, decode_request, encode_response

BODY = {"client_software_name": "t", "client_software_version": "1"}


async def serve(behaviour, task_status=trio.TASK_STATUS_IGNORED):
    """A listener on a free port whose connections run ``behaviour(stream, frame)`` for each request."""

    async def handler(stream):
        frames = FrameReader()
        try:
            while True:
                data = await stream.receive_some(1 << 16)
                if not data:
                    return
                frames.feed(data)
                while (frame := frames.next_frame()) is not None:
                    await behaviour(stream, frame)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handler, listeners)


async def answer(stream, frame):
    header, _ = decode_request(frame)
    await stream.send_all(encode_response(header, {"error_code": 0, "api_keys": [], "throttle_time_ms": 0}))


@pytest.fixture
async def port_of(nursery):
    async def start(behaviour):
        return await nursery.start(serve, behaviour)

    return start


async def test_a_request_is_answered_and_the_connection_reused(port_of):
    port = await port_of(answer)
    conn = PeerConnection("127.0.0.1", port, client_id="t")
    for _ in range(3):
        resp = await conn.request(ApiKey.API_VERSIONS, 3, BODY, timeout=5)
        assert resp.error_code == 0
    await conn.aclose()


async def test_a_peer_that_closes_mid_answer_is_a_failed_request_and_the_next_one_reconnects(port_of):
    calls = []

    async def half_then_close(stream, frame):
        calls.append(1)
        if len(calls) == 1:
            header, _ = decode_request(frame)
            whole = encode_response(header, {"error_code": 0, "api_keys": [], "throttle_time_ms": 0})
            await stream.send_all(whole[: len(whole) // 2])
            await stream.aclose()
            return
        await answer(stream, frame)

    port = await port_of(half_then_close)
    conn = PeerConnection("127.0.0.1", port, client_id="t")
    with pytest.raises(RequestFailed, match="closed"):
        await conn.request(ApiKey.API_VERSIONS, 3, BODY, timeout=5)
    resp = await conn.request(ApiKey.API_VERSIONS, 3, BODY, timeout=5)
    assert resp.error_code == 0 and len(calls) == 2
    await conn.aclose()


async def test_a_silent_peer_times_out(port_of):
    async def never(stream, frame):
        await trio.sleep_forever()

    port = await port_of(never)
    conn = PeerConnection("127.0.0.1", port, client_id="t")
    with trio.fail_after(10):
        with pytest.raises(RequestFailed, match="no answer"):
            await conn.request(ApiKey.API_VERSIONS, 3, BODY, timeout=0.2)
    await conn.aclose()


async def test_garbage_and_a_wrong_correlation_id_are_failed_requests(port_of):
    async def garbage(stream, frame):
        await stream.send_all(struct.pack(">i", 3) + b"\xff\xff\xff")

    conn = PeerConnection("127.0.0.1", await port_of(garbage), client_id="t")
    with pytest.raises(RequestFailed):
        await conn.request(ApiKey.API_VERSIONS, 3, BODY, timeout=5)

    async def other_cid(stream, frame):
        header, _ = decode_request(frame)
        await stream.send_all(encode_response(header._replace(correlation_id=header.correlation_id + 1),
                                              {"error_code": 0, "api_keys": [], "throttle_time_ms": 0}))

    conn2 = PeerConnection("127.0.0.1", await port_of(other_cid), client_id="t")
    with pytest.raises(RequestFailed, match="correlation id"):
        await conn2.request(ApiKey.API_VERSIONS, 3, BODY, timeout=5)
    await conn.aclose()
    await conn2.aclose()


async def test_nobody_listening_is_a_failed_request():
    with trio.socket.socket() as s:  # a port that was free a moment ago: connection refused
        await s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conn = PeerConnection("127.0.0.1", port, client_id="t")
    with pytest.raises(RequestFailed):
        await conn.request(ApiKey.API_VERSIONS, 3, BODY, timeout=5)
