"""Metadata: brokers, topics and partition leaders, from the metadata image.

Any broker answers for the whole cluster, so clients can bootstrap from any
of them.  Topics asked for by name are auto-created when both the broker
(``auto.create.topics.enable``) and the request (v4+) allow it.

Theory of operation: answers from encoded bytes
-----------------------------------------------
Metadata is the request a broker hears most (every client asks at start,
every ``metadata.max.age.ms``, and after every error), and a cluster change
brings a storm of them.  Building each topic entry as a dict and walking it
field by field through the codec cost about 2 ms of CPU for 50 topics x 4
partitions; yet between two changes of the image every answer lists the same
entries.  So the entries are encoded once and spliced into each answer as
bytes (:class:`protocol.types.EncodedElements`):

* what is cached is a pure function of the image and of the request's
  layout: a topic's entry depends on the image, the API version and whether
  topic authorized operations were asked for; the broker list on the image,
  the API version and the listener the request came in on (each broker's
  endpoint for that listener);
* everything is cached per image object.  The broker lists and the
  all-topics run are valid for one ``MetadataImage.version``, which every
  applied record bumps; a topic's entry is valid while the topic object and
  its own ``TopicImage.version`` (bumped when one of its partitions is added
  or changes) are the ones it was encoded from.  So the first answer after
  any change (topic created or deleted, partitions added, leader or ISR
  changed, broker registered, fenced or unfenced) rebuilds what it needs and
  no more, and no answer is ever built from a stale cache;
* what varies per request is never cached: correlation id and throttle (the
  codec writes them), cluster and controller id, the subset of topics asked
  for and in what order, unknown or invalid names, auto-creation.

The encoded bytes carry the construct of the layout they were made for, so
splicing them into another version fails loudly instead of misframing.
"""

from __future__ import annotations

import uuid
import weakref

from protocol import ApiKey, ErrorCode, response_schema
from protocol.types import EncodedElements, SplicedElements

from ..controller.controller import topic_name_error
from . import endpoint_of, handles, listener_name
from .cluster import CLUSTER_OPERATIONS, operations_bitfield
from .describe_topic_partitions import TOPIC_OPERATIONS_BITS

ZERO_UUID = uuid.UUID(int=0)
UNKNOWN_OPERATIONS = -2147483648
INTERNAL_TOPICS = frozenset({"__consumer_offsets", "__transaction_state", "__share_group_state"})
CLUSTER_OPERATIONS_BITS = operations_bitfield(CLUSTER_OPERATIONS)
RESPONSE = response_schema(ApiKey.METADATA)
# A request naming more topics than this leaves what is not cached yet as plain
# entries (the server encodes the answer to such a large request off the event
# loop); the server decodes requests of up to 1,000 elements inline.
FILL_LIMIT = 1_000
# In a cluster, how long an auto-creating Metadata request waits for this
# node to apply the new topic before answering LEADER_NOT_AVAILABLE for it.
AUTO_CREATE_WAIT_S = 1.0


def broker_list(image) -> list[dict]:
    """The live brokers with their endpoint on this request's listener, by id."""
    out = []
    for b in sorted(image.live_brokers(), key=lambda b: b.broker_id):
        e = endpoint_of(b)
        if e is None:
            continue
        out.append({"node_id": b.broker_id, "host": e.host, "port": e.port, "rack": b.rack})
    return out


def topic_entry(t, ops: int = UNKNOWN_OPERATIONS) -> dict:
    """One topic's entry as plain values: what the cache encodes, and the reference its tests compare with.

    It depends on the topic alone (name, id, partitions), which is what lets
    an entry be kept across changes to other topics.
    """
    parts = []
    for p in sorted(t.partitions.values(), key=lambda p: p.partition_id):
        parts.append(
            {
                "error_code": ErrorCode.NONE if p.leader >= 0 else ErrorCode.LEADER_NOT_AVAILABLE,
                "partition_index": p.partition_id,
                "leader_id": p.leader,
                "leader_epoch": p.leader_epoch,
                "replica_nodes": p.replicas,
                "isr_nodes": p.isr,
                "offline_replicas": [],
            }
        )
    return {
        "error_code": ErrorCode.NONE,
        "name": t.name,
        "topic_id": t.topic_id,
        "is_internal": t.name in INTERNAL_TOPICS,
        "partitions": parts,
        "topic_authorized_operations": ops,
    }


class _Encoded:
    """What one image object encodes to.

    Topic entries are kept per layout (API version, operations flag) and
    per topic, each valid while the topic object and its ``version`` are the
    ones it was encoded from: a change to one topic re-encodes that topic
    only, which is what keeps a storm of Metadata requests during a storm of
    changes cheap.  The all-topics run and the broker lists are valid for one
    image ``version`` and dropped at the next.
    """

    __slots__ = ("version", "entries", "all_topics", "brokers")

    def __init__(self):
        self.version = -1
        # (api version, ops) -> {topic id: (TopicImage, its version, encoded entry)}
        self.entries: dict[tuple[int, int], dict] = {}
        self.all_topics: dict[tuple[int, int], EncodedElements] = {}  # (api version, ops)
        self.brokers: dict[tuple[int, str], EncodedElements] = {}  # (api version, listener)

    def at(self, version: int) -> "_Encoded":
        if version != self.version:
            self.version = version
            self.all_topics = {}
            self.brokers = {}
        return self

    def topic(self, image, t, api_version: int, ops: int, fill: bool = True):
        """The topic's encoded entry; on a miss with ``fill`` False, its plain entry (see _requested)."""
        entries = self.entries.setdefault((api_version, ops), {})
        hit = entries.get(t.topic_id)
        if not _current(hit, t):
            if not fill:
                return topic_entry(t, ops)
            if len(entries) > 2 * len(image.topics) + 64:
                # Deleted topics' entries are otherwise only dropped by the next all-topics answer.
                entries = self.entries[(api_version, ops)] = {
                    k: e for k, e in entries.items() if image.topics_by_id.get(k) is e[0]}
            hit = entries[t.topic_id] = _encode_topic(t, api_version, ops)
        return hit[2]

    def every_topic(self, image, api_version: int, ops: int) -> EncodedElements:
        key = (api_version, ops)
        enc = self.all_topics.get(key)
        if enc is None:
            old = self.entries.get(key, {})
            fresh = {}
            for t in image.topics.values():
                hit = old.get(t.topic_id)
                fresh[t.topic_id] = hit if _current(hit, t) else _encode_topic(t, api_version, ops)
            self.entries[key] = fresh  # and so deleted topics' entries go
            element = RESPONSE.array_field(api_version, "topics").element
            enc = EncodedElements.concat(element, [hit[2] for hit in fresh.values()])
            self.all_topics[key] = enc
        return enc

    def broker_list(self, image, api_version: int) -> EncodedElements:
        key = (api_version, listener_name.get())
        enc = self.brokers.get(key)
        if enc is None:
            enc = RESPONSE.encode_elements(api_version, "brokers", broker_list(image))
            self.brokers[key] = enc
        return enc


def _current(hit, t) -> bool:
    """Whether a cached (topic, version, entry) was encoded from ``t`` as it is now."""
    return hit is not None and hit[0] is t and hit[1] == t.version


def _encode_topic(t, api_version: int, ops: int) -> tuple:
    return t, t.version, RESPONSE.encode_elements(api_version, "topics", [topic_entry(t, ops)])


# One cache per image object (a test may run several brokers in a process;
# a restarted or rebuilt image is a new object), dropped with the image.
_encoded: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def encoded(image) -> _Encoded:
    """The cache for ``image`` as it is now (what an older version derived is dropped)."""
    enc = _encoded.get(image)
    if enc is None:
        enc = _encoded[image] = _Encoded()
    return enc.at(image.version)


def _error_entry(code, name, ops, topic_id=None) -> dict:
    entry = {"error_code": code, "name": name, "partitions": [], "topic_authorized_operations": ops}
    if topic_id is not None:
        entry["topic_id"] = topic_id
    return entry


@handles(ApiKey.METADATA)
async def handle(broker, header, body):
    v = header.api_version
    # Without an authorizer every operation is allowed; Kafka then reports all
    # it supports on a topic, and on the cluster (v8-10), when asked.
    ops = TOPIC_OPERATIONS_BITS if body.include_topic_authorized_operations else UNKNOWN_OPERATIONS
    image = broker.image
    if body.topics is None:
        topics = encoded(image).every_topic(image, v, ops)
    else:
        topics = await _requested(broker, image, body, v, ops)
        image = broker.image  # auto-creation may have changed (or replaced) it
    return {
        "throttle_time_ms": 0,
        "brokers": encoded(image).broker_list(image, v),
        "cluster_id": broker.cluster_id,
        "controller_id": broker.node_id,
        "topics": topics,
        "cluster_authorized_operations": (
            CLUSTER_OPERATIONS_BITS if body.include_cluster_authorized_operations else UNKNOWN_OPERATIONS
        ),
    }


async def _requested(broker, image, body, v: int, ops: int) -> SplicedElements:
    """The entries for the topics a request names, in its order.

    Known topics are spliced from the cache; errors stay plain entries, so a
    request naming a hundred thousand unknown topics is still encoded with
    the rest of its answer (off the event loop when it is that large).  For
    the same reason a request naming more than :data:`FILL_LIMIT` topics does
    not fill the cache: its misses stay plain entries too, rather than
    encoding thousands of entries here, on the event loop.
    """
    cache = encoded(image)
    fill = len(body.topics) <= FILL_LIMIT
    topics = SplicedElements()
    to_create = []
    for req in body.topics:
        name = req.name
        if name is None and req.topic_id != ZERO_UUID:
            t = image.topics_by_id.get(req.topic_id)
            if t is None:
                topics.append(_error_entry(ErrorCode.UNKNOWN_TOPIC_ID, None, ops, req.topic_id))
            else:
                topics.append(cache.topic(image, t, v, ops, fill))
            continue
        t = image.topics.get(name)
        if t is not None:
            topics.append(cache.topic(image, t, v, ops, fill))
            continue
        if topic_name_error(name or ""):
            topics.append(_error_entry(ErrorCode.INVALID_TOPIC_EXCEPTION, name, ops))
        elif body.allow_auto_topic_creation and broker.config["auto.create.topics.enable"] and not name.startswith("__"):
            to_create.append(name)
            topics.append(name)  # a placeholder, resolved below
        else:
            topics.append(_error_entry(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, name, ops))
    if to_create:
        results = await broker.create_topics([{"name": n} for n in dict.fromkeys(to_create)])
        errors = {r.name: r for r in results}
        if broker.quorum is not None:
            # Created by the active controller: give this node's image a
            # moment to apply it, so the client gets partitions at once.
            made = [r.name for r in results if r.error in (ErrorCode.NONE, ErrorCode.TOPIC_ALREADY_EXISTS)]
            await broker.quorum.wait_until(lambda: all(n in broker.image.topics for n in made), AUTO_CREATE_WAIT_S)
        image = broker.image
        cache = encoded(image)
        for i, item in enumerate(topics):
            if isinstance(item, str):
                t = image.topics.get(item)
                if t is not None:
                    topics[i] = cache.topic(image, t, v, ops, fill)
                else:
                    r = errors.get(item)
                    if r is None:
                        code = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                    elif r.error in (ErrorCode.NONE, ErrorCode.TOPIC_ALREADY_EXISTS):
                        # Created, not yet known here: Kafka's answer for a
                        # topic being created (the client retries).
                        code = ErrorCode.LEADER_NOT_AVAILABLE
                    else:
                        code = r.error
                    topics[i] = _error_entry(code, item, ops)
    return topics
