"""Request handlers, one module per API family, registered by API key.

A handler is ``async def handle(broker, header, body) -> response body`` (or
None for a request that gets no answer: an acks=0 Produce).  It declares the
versions it serves with :func:`handles`; ApiVersions advertises exactly the
registered keys, so an API is never advertised before it works.
"""

from __future__ import annotations

import contextvars
import importlib
import ipaddress
from typing import Awaitable, Callable, NamedTuple

from protocol import ApiKey, advertised_versions

from ..controller.quorum import NotControllerError, as_controller
from ..netclient import RequestFailed


class CloseConnection(Exception):
    """The request cannot be answered; the connection is closed (as Kafka does)."""


class Handler(NamedTuple):
    func: Callable[..., Awaitable]
    versions: tuple[int, int]


HANDLERS: dict[int, Handler] = {}

# The peer address of the connection whose request is being handled; the
# server sets it once in each connection's processing task.
client_address: contextvars.ContextVar[tuple] = contextvars.ContextVar("client_address", default=("", 0))


# The name of the listener the connection arrived on ("PLAINTEXT",
# "EXTERNAL", ...); empty outside a connection.
listener_name: contextvars.ContextVar[str] = contextvars.ContextVar("listener_name", default="")


def endpoint_of(registration):
    """The endpoint a broker advertises on the listener this request came in on, or None.

    Kafka answers with the endpoints of the request's own listener: a client
    that reached the cluster through EXTERNAL must be sent EXTERNAL
    addresses, never the internal ones it may not be able to reach.  A
    broker without that listener is left out (None).  Outside a connection
    (no listener known) the first endpoint stands in.
    """
    name = listener_name.get()
    for e in registration.endpoints:
        if not name or e.name == name:
            return e
    return None


def client_host() -> str:
    """The requesting client's address as Kafka shows it ("/127.0.0.1")."""
    host = client_address.get()[0]
    return f"/{host}" if host else ""


def handles(api_key: ApiKey, versions: tuple[int, int] | None = None):
    """Register a handler; ``versions`` defaults to the range Kafka 4.2 advertises."""

    def register(func):
        HANDLERS[int(api_key)] = Handler(func, versions or advertised_versions(api_key))
        return func

    return register


def api_name(api_key: int) -> str:
    try:
        return ApiKey(api_key).name
    except ValueError:
        return f"api key {api_key}"


# Admin requests the active controller decides: in a cluster, a node that
# gets one from a client forwards it there (Kafka's Envelope forwarding).
FORWARDED = frozenset({
    ApiKey.CREATE_TOPICS, ApiKey.DELETE_TOPICS, ApiKey.CREATE_PARTITIONS, ApiKey.ALTER_CONFIGS,
    ApiKey.INCREMENTAL_ALTER_CONFIGS,
})


def on_controller_listener(broker) -> bool:
    name = listener_name.get()
    return bool(name) and name in {n.upper() for n in broker.config["controller.listener.names"]}


async def dispatch(broker, header, body):
    handler = HANDLERS.get(header.api_key)
    if handler is None or not handler.versions[0] <= header.api_version <= handler.versions[1]:
        raise CloseConnection(f"{api_name(header.api_key)} v{header.api_version} is not served")
    if broker.quorum is None:
        return await handler.func(broker, header, body)
    if header.api_key in FORWARDED and not as_controller.get():
        if not on_controller_listener(broker):
            try:
                packed = ipaddress.ip_address(client_address.get()[0]).packed
            except ValueError:
                packed = b""
            try:
                return await broker.quorum.forward(header, body, packed)
            except RequestFailed as e:
                raise CloseConnection(f"{api_name(header.api_key)} not forwarded to the controller: {e}") from None
        token = as_controller.set(True)  # sent straight to our controller listener
        try:
            return await handler.func(broker, header, body)
        except NotControllerError as e:
            raise CloseConnection(str(e)) from None
        finally:
            as_controller.reset(token)
    return await handler.func(broker, header, body)


_MODULES = (
    "api_versions",
    "metadata",
    "produce",
    "fetch",
    "list_offsets",
    "topics",
    "producer_ids",
    "groups",
    "configs",
    "cluster",
    "records",
    "log_dirs",
    "leader_epoch",
    "describe_topic_partitions",
    "quorum",
)

for _m in _MODULES:
    importlib.import_module(f"{__name__}.{_m}")
