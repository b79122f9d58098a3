"""One outbound connection to another node, speaking the Kafka protocol as a client.

Nodes talk to each other the way Kafka's do: a voter sends Vote and Fetch to
the others' controller listeners, a broker sends BrokerRegistration and
forwarded admin requests (Envelope) to the active controller.  Every such
conversation goes through a :class:`PeerConnection`.

A connection carries one request at a time and waits for its answer before
the next.  That is what the server on the other side does anyway (it reads
the next request of a connection only after answering the last), and it
keeps this class small: no correlation table, no reader task.  A caller that
must not queue behind a long poll uses a connection of its own.

Any failure -- refused, reset, timed out, an answer that does not decode --
closes the connection and raises :class:`RequestFailed`; the next request
reconnects.  Callers treat it as a lost message: the Raft state machine
retries on its own timers, the controller channel retries until its deadline.
"""

from __future__ import annotations

import itertools
import logging

import trio

from protocol import FrameReader, ProtocolError, decode_response, encode_request

log = logging.getLogger("kbroker.netclient")

MAX_RESPONSE_BYTES = 256 * 1024 * 1024
_READ_SIZE = 1 << 20


class RequestFailed(Exception):
    """The request may or may not have reached the peer; no answer came back."""


class PeerConnection:
    def __init__(self, host: str, port: int, *, client_id: str, connect_timeout: float = 5.0) -> None:
        self.host = host
        self.port = port
        self.client_id = client_id
        self.connect_timeout = connect_timeout
        self._stream: trio.SocketStream | None = None
        self._frames = FrameReader(MAX_RESPONSE_BYTES)
        self._lock = trio.Lock()
        self._cids = itertools.count(1)

    def __repr__(self) -> str:
        return f"PeerConnection({self.host}:{self.port})"

    async def request(self, api_key: int, version: int, body, *, timeout: float):
        """Send one request and return the decoded response body."""
        async with self._lock:
            ok = False
            try:
                with trio.fail_after(timeout):
                    if self._stream is None:
                        with trio.fail_after(self.connect_timeout):
                            self._stream = await trio.open_tcp_stream(self.host, self.port)
                        self._frames = FrameReader(MAX_RESPONSE_BYTES)
                    cid = next(self._cids) & 0x7FFFFFFF
                    await self._stream.send_all(
                        encode_request(api_key, version, body, correlation_id=cid, client_id=self.client_id)
                    )
                    while (frame := self._frames.next_frame()) is None:
                        data = await self._stream.receive_some(_READ_SIZE)
                        if not data:
                            raise RequestFailed(f"{self.host}:{self.port} closed the connection")
                        self._frames.feed(data)
                    got_cid, response = decode_response(api_key, version, frame)
                    if got_cid != cid:
                        raise RequestFailed(f"{self.host}:{self.port} answered correlation id {got_cid}, not {cid}")
                    ok = True
                    return response
            except trio.TooSlowError:
                raise RequestFailed(f"no answer from {self.host}:{self.port} within {timeout:.1f}s") from None
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, ProtocolError) as e:
                raise RequestFailed(f"{self.host}:{self.port}: {e}") from None
            finally:
                if not ok:
                    # Cancelled, failed or half-read: the stream's state is unknown.
                    await self._close()

    async def _close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            with trio.CancelScope(shield=True):
                try:
                    await stream.aclose()
                except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                    pass

    async def aclose(self) -> None:
        await self._close()
