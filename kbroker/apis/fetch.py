"""Fetch: slices of partition logs, with long polling woken by appends.

Records leave as the bytes on disk (one ``pread`` per partition) and are sent
by reference, never re-encoded.  Size limits follow KIP-74: ``max_bytes`` for
the whole response and ``partition_max_bytes`` per partition, except that
the first batch of the first partition with data is returned whole even when
it is larger, so a consumer can always make progress.

Incremental fetch sessions (KIP-227) are answered sessionlessly: a request
that asks for a new session gets session id 0, which tells the client no
session was created and it keeps sending full fetch requests.  That is a
correct answer by the protocol, and what a broker with no session cache slots
would do.
"""

import trio

from protocol import ApiKey, ErrorCode

from ..log.errors import OffsetOutOfRange
from ..raft.wire import METADATA_TOPIC, METADATA_TOPIC_ID
from . import handles


def _collect(broker, body):
    """One pass over the requested partitions: (responses, bytes, partitions, done_early).

    The response is capped by the smaller of the request's ``max_bytes`` and
    the broker's ``fetch.max.bytes``, as in Kafka.  A partition listed twice
    is answered once: Kafka keys a fetch by partition, so the repeat is
    dropped rather than read (and sent) again.
    """
    cap = broker.config["fetch.max.bytes"]
    budget = min(body.max_bytes, cap) if body.max_bytes > 0 else cap
    seen = set()
    first_with_data = True
    total = 0
    has_error = False
    responses = []
    partitions = []
    for topic in body.topics:
        t, missing = broker.resolve_topic(topic.topic, topic.topic_id)
        out_parts = []
        for fp in topic.partitions:
            key = (topic.topic, topic.topic_id, fp.partition)
            if key in seen:
                continue
            seen.add(key)
            entry = {
                "partition_index": fp.partition,
                "error_code": 0,
                "high_watermark": -1,
                "last_stable_offset": -1,
                "log_start_offset": -1,
                "aborted_transactions": None,
                "preferred_read_replica": -1,
                "records": b"",
            }
            out_parts.append(entry)
            part, err = broker.leader_partition(t, fp.partition, fp.current_leader_epoch, missing)
            if part is None:
                entry["error_code"] = err
                has_error = True
                continue
            partitions.append(part)
            hw = part.high_watermark
            entry["high_watermark"] = hw
            entry["last_stable_offset"] = hw
            entry["log_start_offset"] = part.log_start_offset
            limit = min(fp.partition_max_bytes, budget)
            if fp.fetch_offset == hw and part.log_start_offset <= hw:
                continue  # caught up: nothing to read, nothing wrong
            try:
                res = part.log.read(fp.fetch_offset, max(limit, 0), min_one_batch=first_with_data, max_offset=hw)
            except OffsetOutOfRange:
                entry["error_code"] = ErrorCode.OFFSET_OUT_OF_RANGE
                has_error = True
                continue
            data = res.records
            n = len(data)
            if n:
                entry["records"] = data
                first_with_data = False
                budget -= n
                total += n
        responses.append({"topic": topic.topic, "topic_id": topic.topic_id, "partitions": out_parts})
    return responses, total, partitions, has_error


def _is_metadata_fetch(body) -> bool:
    """A replica's Fetch of ``__cluster_metadata`` (Raft's); a consumer's is answered as an unknown topic."""
    replica = body.replica_id >= 0 or (body.replica_state is not None and body.replica_state.replica_id >= 0)
    return replica and any(t.topic == METADATA_TOPIC or t.topic_id == METADATA_TOPIC_ID for t in body.topics)


@handles(ApiKey.FETCH)
async def handle(broker, header, body):
    if broker.quorum is not None and _is_metadata_fetch(body):
        from .quorum import raft_rpc  # Raft's own Fetch of __cluster_metadata

        return await raft_rpc(broker, header, body)
    if body.replica_id >= 0 or (body.replica_state and body.replica_state.replica_id >= 0):
        # Follower fetches arrive with replication; until then no broker follows us.
        return {"throttle_time_ms": 0, "error_code": ErrorCode.NOT_LEADER_OR_FOLLOWER, "session_id": 0, "responses": []}
    if body.session_id != 0:
        return {"throttle_time_ms": 0, "error_code": ErrorCode.FETCH_SESSION_ID_NOT_FOUND, "session_id": 0, "responses": []}
    deadline = trio.current_time() + max(body.max_wait_ms, 0) / 1000
    min_bytes = max(body.min_bytes, 1)
    while True:
        responses, total, partitions, has_error = _collect(broker, body)
        if total >= min_bytes or has_error or not partitions or trio.current_time() >= deadline:
            break
        woken = trio.Event()
        for p in partitions:
            p.add_waiter(woken)
        try:
            with trio.move_on_at(deadline):
                await woken.wait()
        finally:
            for p in partitions:
                p.remove_waiter(woken)
    return {"throttle_time_ms": 0, "error_code": 0, "session_id": 0, "responses": responses}
