"""The network side: listeners, connections, and the request pipeline.

Theory of operation
-------------------
A connection is one trio task running one loop: read a frame, decode it,
handle it, write the answer, and only then read the next frame.  That is
Kafka's own rule -- the broker mutes a channel while a request from it is in
flight -- and it is what bounds a connection's cost: at most one request and
one response (itself capped by ``fetch.max.bytes``) exist per connection, plus
at most one frame of unread bytes (``socket.request.max.bytes``) and one
``READ_SIZE`` read.  Clients that pipeline (librdkafka keeps up to five
requests in flight) lose nothing: their requests wait in the socket buffer
and are answered in order, which is also what keeps a producer's pipelined
batches in order.  A client that pipelines Fetches and never reads its
answers stalls only itself: its one answer sits in the send buffer, and
``connections.max.idle.ms`` (counted from the last byte that moved in either
direction) closes it.

Requests with many array elements are decoded, and answered, in a worker
thread (:mod:`kbroker.offload`), and every decode has an element budget
(:data:`MAX_REQUEST_ELEMENTS`), so a small hostile request cannot freeze
everyone else on the trio thread or turn a few megabytes of wire bytes into
gigabytes of Python objects.

Every connection is a fault boundary.  A peer that resets (ECONNRESET), goes
away while we write (EPIPE), or times out ends its own connection and is
logged at debug; a frame that cannot be decoded closes it with a warning
(Kafka closes too); a request the codec reads but the handler finds invalid
gets a Kafka error code; an unexpected exception in a handler is logged with
its traceback and closes only that connection.  Trio reports failures of
tasks inside nurseries as exception groups, so the boundary in
:meth:`Server._run_connection` matches with ``except*``: nothing raised by
one connection can reach the accept loop and stop the broker.
"""

from __future__ import annotations

import errno
import logging
import signal
import socket
from collections import Counter

import trio

from protocol import (
    FrameReader,
    FrameTooLarge,
    ProtocolError,
    TooManyElements,
    UnsupportedVersion,
    api_versions_fallback_body,
    decode_request,
    encode_response,
)
from protocol.codec import API_VERSIONS

from . import apis, offload
from .broker import Broker
from .config import Config

log = logging.getLogger("kbroker.server")

READ_SIZE = 1 << 20
SEND_SLICE = 256 * 1024  # idle time is measured per slice, so a slow reader that keeps reading is not idle
# Array elements decoded on the trio thread (a few milliseconds); a request
# with more is decoded, and answered, in a worker thread.
INLINE_ELEMENTS = 1_000
# Array elements one request may hold.  Decoding costs tens of microseconds
# and a few hundred bytes per element, so this caps a decode at a few
# seconds of one worker thread and tens of megabytes, while leaving room for
# any real client: a consumer fetching or committing 100,000 partitions in
# one request is far beyond what Kafka clients send.
MAX_REQUEST_ELEMENTS = 100_000


class _Closed(Exception):
    """The connection ends here (already logged)."""


class Connection:
    def __init__(self, broker: Broker, stream: trio.SocketStream, conn_id: int, listener: str = ""):
        self.broker = broker
        self.stream = stream
        self.id = conn_id
        self.listener = listener
        try:
            self.peer = stream.socket.getpeername()
        except OSError:
            self.peer = ("?", 0)
        self.frames = FrameReader(broker.config["socket.request.max.bytes"])
        self.idle_ms = broker.config["connections.max.idle.ms"]
        self._draining = False
        self._receiving: trio.CancelScope | None = None

    def stop_reading(self) -> None:
        """Read no more requests; the one in flight (and any already buffered whole) is still answered."""
        self._draining = True
        if self._receiving is not None:
            self._receiving.cancel()

    def _deadline(self) -> float:
        return trio.current_time() + self.idle_ms / 1000 if self.idle_ms >= 0 else float("inf")

    async def run(self) -> None:
        apis.client_address.set(self.peer)
        apis.listener_name.set(self.listener)
        try:
            while True:
                frame = await self._next_frame()
                if frame is None:
                    return
                header, body, large = await self._decode(frame)
                del frame  # the body keeps only what it needs (record views)
                response = await self._handle(header, body)
                if response is not None:  # None: an acks=0 Produce gets no answer at all
                    await self._send(response, large)
        except _Closed:
            pass
        finally:
            with trio.CancelScope(shield=True):
                await self.stream.aclose()

    async def _next_frame(self):
        """The next whole frame, or None when the peer closed, idled out, or we drain."""
        while True:
            try:
                frame = self.frames.next_frame()
            except FrameTooLarge as e:
                log.warning("closing connection from %s:%s: %s", *self.peer[:2], e)
                return None
            if frame is not None:
                return frame
            if self._draining:
                return None
            with trio.CancelScope(deadline=self._deadline()) as scope:
                self._receiving = scope
                try:
                    data = await self.stream.receive_some(READ_SIZE)
                finally:
                    self._receiving = None
            if scope.cancelled_caught:
                if not self._draining:
                    log.info("closing idle connection from %s:%s", *self.peer[:2])
                return None
            if not data:
                return None
            self.frames.feed(data)

    async def _decode(self, frame):
        """(header, body, large): ``large`` when the request was too big to decode inline.

        Decoding costs per array element, not per byte (a 1 MB Produce is a
        handful of elements and record views; a 1 MB Metadata may be half a
        million topic names), so the inline attempt stops at
        :data:`INLINE_ELEMENTS` and only a request over that is decoded
        again in a worker thread, under the full budget.  The wasted work is
        bounded by the inline budget: the count is checked before the
        elements are read.
        """
        try:
            try:
                return (*decode_request(frame, max_elements=INLINE_ELEMENTS), False)
            except TooManyElements:
                pass
            return (*await offload.run(lambda: decode_request(frame, max_elements=MAX_REQUEST_ELEMENTS)), True)
        except UnsupportedVersion as e:
            if e.header.api_key == API_VERSIONS:
                # Answer in the v0 layout so the client learns our range (KIP-511).
                return e.header, _FALLBACK, False
            log.warning("closing connection from %s:%s: %s (client %r)", *self.peer[:2], e, e.header.client_id)
        except ProtocolError as e:
            log.warning("closing connection from %s:%s: malformed request: %s", *self.peer[:2], e)
            log.debug("the malformed request began with %s", bytes(frame[:256]).hex())
        raise _Closed

    async def _handle(self, header, body):
        """The response body; raises _Closed when the request cannot be answered."""
        if body is _FALLBACK:
            return header, api_versions_fallback_body()
        try:
            response = await apis.dispatch(self.broker, header, body)
        except apis.CloseConnection as e:
            log.warning("closing connection from %s:%s: %s", *self.peer[:2], e)
            raise _Closed from None
        except Exception:
            log.exception(
                "error handling %s v%d from %s:%s; closing the connection",
                apis.api_name(header.api_key),
                header.api_version,
                *self.peer[:2],
            )
            raise _Closed from None
        return None if response is None else (header, response)

    async def _send(self, answer, large: bool) -> None:
        """Encode and write an answer.  The answer to a large request (one
        that named thousands of topics, say) is about as costly to encode as
        the request was to decode, so it is encoded off the trio thread too;
        Fetch and Produce, large in bytes but few in elements (records travel
        by reference), stay inline."""
        header, response = answer
        try:
            if large:
                chunks = await offload.run(lambda: encode_response(header, response, chunks=True))
            else:
                chunks = encode_response(header, response, chunks=True)
        except ProtocolError:
            log.exception("cannot encode the response to %s v%d", header.api_key, header.api_version)
            raise _Closed from None
        for chunk in _coalesce(chunks):
            view = memoryview(chunk)
            for start in range(0, len(view), SEND_SLICE):
                with trio.move_on_at(self._deadline()) as scope:
                    await self.stream.send_all(view[start : start + SEND_SLICE])
                if scope.cancelled_caught:
                    log.info("closing connection from %s:%s: it reads no answers", *self.peer[:2])
                    raise _Closed


_FALLBACK = object()
COALESCE_BELOW = 64 * 1024


def _coalesce(chunks):
    """The encoder's chunks with runs of small ones joined into one buffer.

    An answer is encoded as a list of pieces so that record data can be sent
    by reference; but one send per small piece costs a system call each (a
    Metadata answer is a few of them), which dominated a client's Metadata
    loop.  Small pieces are copied together, large ones still go out as the
    views they are.
    """
    pending = bytearray()
    for chunk in chunks:
        if len(chunk) < COALESCE_BELOW:
            pending += chunk
            if len(pending) >= COALESCE_BELOW:
                yield pending
                pending = bytearray()
            continue
        if pending:
            yield pending
            pending = bytearray()
        yield chunk
    if pending:
        yield pending

# A routine end of a connection: the peer reset it, went away mid-write, or
# the socket failed under us.  Logged at debug, never more.
_ROUTINE = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)  # OSError covers ConnectionError


class Server:
    """Owns the listeners and the connections; the broker owns everything else."""

    def __init__(self, broker: Broker):
        self.broker = broker
        self.config = broker.config
        self._next_conn = 0
        self._connections: set[Connection] = set()
        self._per_ip: Counter[str] = Counter()
        self._listeners: list[tuple[str, str, trio.SocketListener]] = []
        self._accepting = trio.CancelScope()
        self._all_closed = trio.Event()
        self.listening: list[tuple[str, int]] = []

    async def bind(self) -> dict[str, int]:
        """Open every listener; returns the bound port by listener name (port 0 picks one)."""
        bound = {}
        for lst in self.config.listeners:
            try:
                ls = await trio.open_tcp_listeners(lst.port, host=lst.host or None)
            except OSError as e:
                raise SystemExit(f"kbroker: cannot listen on {lst.host}:{lst.port}: {e.strerror}") from None
            port = ls[0].socket.getsockname()[1]
            self._listeners.extend((lst.name, lst.host, l) for l in ls)
            self.listening.append((lst.host, port))
            bound[lst.name] = port
        return bound

    async def accept(self) -> None:
        """Accept connections until :meth:`drain` (or cancellation); connections live here."""
        async with trio.open_nursery() as nursery:
            with self._accepting:
                logged = set()
                for name, host, l in self._listeners:
                    port = l.socket.getsockname()[1]
                    if (name, port) not in logged:  # "localhost" may bind IPv4 and IPv6
                        logged.add((name, port))
                        log.info("kbroker %s listening on %s:%s (%s)", self.broker.node_id, host, port, name)
                async with trio.open_nursery() as accepting:
                    for name, _host, l in self._listeners:
                        accepting.start_soon(self._accept_loop, name, l, nursery)
            for _name, _host, l in self._listeners:
                await l.aclose()

    async def drain(self) -> None:
        """Stop accepting, stop reading, and wait until every connection has
        answered what it already read (a graceful shutdown)."""
        self._accepting.cancel()
        for conn in list(self._connections):
            conn.stop_reading()
        if self._connections:
            await self._all_closed.wait()

    async def _accept_loop(self, name: str, listener: trio.SocketListener, nursery) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS):
                    log.error("accept failed (%s); pausing 100 ms", e)
                    await trio.sleep(0.1)
                    continue
                raise
            host = _peer_host(stream)
            refusal = self._refusal(host)
            if refusal:
                log.warning("refusing a connection from %s: %s", host, refusal)
                with trio.CancelScope(shield=True):
                    await stream.aclose()
                continue
            self._next_conn += 1
            conn = Connection(self.broker, stream, self._next_conn, name)
            self._connections.add(conn)
            self._per_ip[host] += 1
            nursery.start_soon(self._run_connection, conn, host)

    def _refusal(self, host: str) -> str | None:
        """Why a new connection from ``host`` is refused, or None.

        Read from the effective config on every accept, so that dynamic
        changes of ``max.connections`` and the per-IP limits take effect at
        once (as in Kafka, existing connections are kept).
        """
        config = self.broker.config
        if len(self._connections) >= config["max.connections"]:
            return f"max.connections ({config['max.connections']}) reached"
        limit = _per_ip_overrides(config).get(host, config["max.connections.per.ip"])
        if self._per_ip[host] >= limit:
            return f"max.connections.per.ip ({limit}) reached"
        return None

    async def _run_connection(self, conn: Connection, host: str) -> None:
        """Run one connection; whatever it raises ends here (see the module docstring)."""
        try:
            conn.stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        try:
            await conn.run()
        except* _ROUTINE as group:
            log.debug("connection %d from %s ended: %s", conn.id, host, _first(group))
        except* Exception as group:
            log.error("connection %d from %s failed", conn.id, host, exc_info=group)
        finally:
            self._connections.discard(conn)
            self._per_ip[host] -= 1
            if self._per_ip[host] <= 0:
                del self._per_ip[host]
            if not self._connections:
                self._all_closed.set()
                self._all_closed = trio.Event()


def _peer_host(stream: trio.SocketStream) -> str:
    try:
        return stream.socket.getpeername()[0]
    except OSError:
        return "?"


def _per_ip_overrides(config) -> dict[str, int]:
    """``max.connections.per.ip.overrides``: "host:count,host:count" (Kafka's format)."""
    out = {}
    for item in (config["max.connections.per.ip.overrides"] or "").split(","):
        host, sep, count = item.strip().rpartition(":")
        if sep and host and count.strip().isdigit():
            out[host.strip()] = int(count)
    return out


def _first(group: BaseExceptionGroup) -> BaseException:
    while isinstance(group, BaseExceptionGroup):
        group = group.exceptions[0]
    return group


async def serve(config: Config, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Run a broker until cancelled; reports the :class:`Server` (with ``.broker``) when ready.

    Listeners are bound before the broker registers itself, so that the
    endpoints it advertises carry the real ports (``listeners`` may ask for
    port 0).  Cancellation closes the broker cleanly (logs flushed, the
    clean-shutdown marker written); call :meth:`Server.drain` first to let
    connections finish what they already read.
    """
    broker = Broker(config)
    server = Server(broker)
    async with trio.open_nursery() as nursery:
        try:
            bound = await server.bind()
            await broker.start(nursery, bound_ports=bound)
            nursery.start_soon(server.accept)
            task_status.started(server)
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await broker.close()
            nursery.cancel_scope.cancel()


SHUTDOWN_GRACE_SECONDS = 10


async def _main(config: Config) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(serve, config)
            async for signum in signals:
                log.info("received %s; shutting down", signal.Signals(signum).name)
                with trio.move_on_after(SHUTDOWN_GRACE_SECONDS):
                    # A cluster node first leaves cleanly (fenced, leadership
                    # handed over) while every task still runs; then the
                    # connections finish what they read.
                    await server.broker.leave_cluster()
                    await server.drain()
                nursery.cancel_scope.cancel()
                break


def run(config: Config) -> None:
    """Run a broker in this process until SIGINT or SIGTERM."""
    trio.run(_main, config)
