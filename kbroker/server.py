"""The network side: listeners, connections, and the request pipeline.

Each connection runs three steps concurrently in its own nursery:

* the *reader* receives bytes, splits frames (refusing a size prefix above
  ``socket.request.max.bytes`` before allocating anything) and decodes them
  while earlier requests are still being handled;
* the *processor* handles requests one at a time, in order — Kafka does the
  same, and it is what keeps a producer's pipelined batches in order;
* the *writer* sends responses strictly in request order.

A frame that cannot be decoded ends the connection (Kafka closes it too); a
request the codec reads but the handler finds invalid gets a Kafka error
code.  An unexpected exception in a handler is logged and closes only that
connection: the broker keeps serving everyone else.
"""

from __future__ import annotations

import errno
import logging
import signal
import socket

import trio

from protocol import (
    FrameReader,
    FrameTooLarge,
    ProtocolError,
    UnsupportedVersion,
    api_versions_fallback_body,
    decode_request,
    encode_response,
)
from protocol.codec import API_VERSIONS

from . import apis
from .broker import Broker
from .config import Config

log = logging.getLogger("kbroker.server")

READ_SIZE = 1 << 20
MAX_QUEUED = 64  # requests read ahead per connection before we stop reading


class Connection:
    def __init__(self, broker: Broker, stream: trio.SocketStream, conn_id: int):
        self.broker = broker
        self.stream = stream
        self.id = conn_id
        try:
            self.peer = stream.socket.getpeername()
        except OSError:
            self.peer = ("?", 0)
        self.frames = FrameReader(broker.config["socket.request.max.bytes"])
        self.idle_ms = broker.config["connections.max.idle.ms"]
        self._reading = trio.CancelScope()

    def stop_reading(self) -> None:
        """Read no more requests; those already read are still answered."""
        self._reading.cancel()

    async def run(self) -> None:
        requests_send, requests_recv = trio.open_memory_channel(MAX_QUEUED)
        responses_send, responses_recv = trio.open_memory_channel(MAX_QUEUED)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write, responses_recv, nursery.cancel_scope)
                nursery.start_soon(self._process, requests_recv, responses_send)
                with self._reading:
                    await self._read(requests_send)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            with trio.CancelScope(shield=True):
                await self.stream.aclose()

    async def _read(self, requests_send) -> None:
        async with requests_send:
            while True:
                deadline = trio.current_time() + self.idle_ms / 1000 if self.idle_ms >= 0 else float("inf")
                with trio.move_on_at(deadline) as idle:
                    data = await self.stream.receive_some(READ_SIZE)
                if idle.cancelled_caught:
                    log.info("closing idle connection from %s:%s", *self.peer[:2])
                    return
                if not data:
                    return
                self.frames.feed(data)
                while True:
                    try:
                        frame = self.frames.next_frame()
                    except FrameTooLarge as e:
                        log.warning("closing connection from %s:%s: %s", *self.peer[:2], e)
                        return
                    if frame is None:
                        break
                    item = self._decode(frame)
                    if item is None:
                        return
                    await requests_send.send(item)

    def _decode(self, frame):
        try:
            return decode_request(frame)
        except UnsupportedVersion as e:
            if e.header.api_key == API_VERSIONS:
                # Answer in the v0 layout so the client learns our range (KIP-511).
                return e.header, _FALLBACK
            log.warning(
                "closing connection from %s:%s: %s (client %r)", *self.peer[:2], e, e.header.client_id
            )
            return None
        except ProtocolError as e:
            log.warning("closing connection from %s:%s: malformed request: %s", *self.peer[:2], e)
            log.debug("the malformed request began with %s", bytes(frame[:256]).hex())
            return None

    async def _process(self, requests_recv, responses_send) -> None:
        # Closing the response channel when processing ends lets the writer
        # drain what is queued and stop.
        apis.client_address.set(self.peer)
        async with responses_send, requests_recv:
            async for header, body in requests_recv:
                if body is _FALLBACK:
                    response = api_versions_fallback_body()
                else:
                    try:
                        response = await apis.dispatch(self.broker, header, body)
                    except apis.CloseConnection as e:
                        log.warning("closing connection from %s:%s: %s", *self.peer[:2], e)
                        return
                    except Exception:
                        log.exception(
                            "error handling %s v%d from %s:%s; closing the connection",
                            apis.api_name(header.api_key),
                            header.api_version,
                            *self.peer[:2],
                        )
                        return
                if response is None:  # acks=0 produce: no answer at all
                    continue
                try:
                    chunks = encode_response(header, response, chunks=True)
                except ProtocolError:
                    log.exception("cannot encode the response to %s v%d", header.api_key, header.api_version)
                    return
                await responses_send.send(chunks)

    async def _write(self, responses_recv, cancel_scope) -> None:
        async with responses_recv:
            async for chunks in responses_recv:
                for chunk in chunks:
                    await self.stream.send_all(chunk)
        # The processor is done (clean end, or an error closed the connection).
        cancel_scope.cancel()


_FALLBACK = object()


class Server:
    """Owns the listeners and the connections; the broker owns everything else."""

    def __init__(self, broker: Broker):
        self.broker = broker
        self.config = broker.config
        self._next_conn = 0
        self._connections: set[Connection] = set()
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
                    for _name, _host, l in self._listeners:
                        accepting.start_soon(self._accept_loop, l, nursery)
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

    async def _accept_loop(self, listener: trio.SocketListener, nursery) -> None:
        max_conn = self.config["max.connections"]
        while True:
            try:
                stream = await listener.accept()
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS):
                    log.error("accept failed (%s); pausing 100 ms", e)
                    await trio.sleep(0.1)
                    continue
                raise
            if len(self._connections) >= max_conn:
                log.warning("max.connections (%d) reached; refusing a connection", max_conn)
                await stream.aclose()
                continue
            self._next_conn += 1
            conn = Connection(self.broker, stream, self._next_conn)
            self._connections.add(conn)
            nursery.start_soon(self._run_connection, conn)

    async def _run_connection(self, conn: Connection) -> None:
        try:
            conn.stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        try:
            await conn.run()
        except OSError as e:
            log.debug("connection %d ended: %s", conn.id, e)
        finally:
            self._connections.discard(conn)
            if not self._connections:
                self._all_closed.set()
                self._all_closed = trio.Event()


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
                    await server.drain()
                nursery.cancel_scope.cancel()
                break


def run(config: Config) -> None:
    """Run a broker in this process until SIGINT or SIGTERM."""
    trio.run(_main, config)
