"""Raft RPC bodies as plain dataclasses, one per Kafka message, one partition each.

The KRaft quorum replicates a single partition (``__cluster_metadata-0``), so
the topic/partition nesting of Kafka's JSON schemas is flattened away here:
each dataclass holds the fields of the one ``PartitionData`` entry plus the
request-level fields that matter to the state machine.  Field names are the
snake_case of Kafka's (``VoteRequest.json``: ``ReplicaEpoch`` ->
``replica_epoch``, ...), so the trio shell can translate to and from the
generated protocol messages field by field.

``correlation_id`` stands for the request header's correlation id: a response
echoes its request's, and a node ignores a response it is no longer waiting
for (a duplicate, or an answer to a request sent in an earlier role).

Records travel as :class:`~kbroker.raft.log.Entry` tuples rather than encoded
batches: encoding is the shell's business.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .log import Entry, SnapshotId


@dataclass(frozen=True, slots=True)
class LeaderIdAndEpoch:
    leader_id: int  # -1 when unknown
    leader_epoch: int


@dataclass(frozen=True, slots=True)
class EpochEndOffset:
    epoch: int
    end_offset: int


@dataclass(frozen=True, slots=True)
class VoteRequest:
    correlation_id: int
    cluster_id: str | None
    voter_id: int  # the destination
    replica_epoch: int  # the epoch the candidate is (pre-vote: would be) in
    replica_id: int  # the candidate
    last_offset_epoch: int
    last_offset: int  # the candidate's log end offset
    pre_vote: bool


@dataclass(frozen=True, slots=True)
class VoteResponse:
    correlation_id: int
    error_code: int
    leader_id: int
    leader_epoch: int
    vote_granted: bool


@dataclass(frozen=True, slots=True)
class BeginQuorumEpochRequest:
    correlation_id: int
    cluster_id: str | None
    voter_id: int
    leader_id: int
    leader_epoch: int


@dataclass(frozen=True, slots=True)
class BeginQuorumEpochResponse:
    correlation_id: int
    error_code: int
    leader_id: int
    leader_epoch: int


@dataclass(frozen=True, slots=True)
class EndQuorumEpochRequest:
    correlation_id: int
    cluster_id: str | None
    leader_id: int
    leader_epoch: int
    preferred_successors: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class EndQuorumEpochResponse:
    correlation_id: int
    error_code: int
    leader_id: int
    leader_epoch: int


@dataclass(frozen=True, slots=True)
class FetchRequest:
    correlation_id: int
    cluster_id: str | None
    replica_id: int
    max_wait_ms: int
    current_leader_epoch: int
    fetch_offset: int
    last_fetched_epoch: int
    log_start_offset: int
    high_watermark: int  # what the fetcher already knows, so the leader may park the fetch


@dataclass(frozen=True, slots=True)
class FetchResponse:
    correlation_id: int
    error_code: int
    high_watermark: int
    log_start_offset: int
    current_leader: LeaderIdAndEpoch
    diverging_epoch: EpochEndOffset | None = None
    snapshot_id: SnapshotId | None = None
    records: tuple[Entry, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class FetchSnapshotRequest:
    correlation_id: int
    cluster_id: str | None
    replica_id: int
    current_leader_epoch: int
    snapshot_id: SnapshotId
    position: int


@dataclass(frozen=True, slots=True)
class FetchSnapshotResponse:
    correlation_id: int
    error_code: int
    snapshot_id: SnapshotId
    current_leader: LeaderIdAndEpoch
    size: int
    position: int
    unaligned_records: bytes


Request = VoteRequest | BeginQuorumEpochRequest | EndQuorumEpochRequest | FetchRequest | FetchSnapshotRequest
Response = VoteResponse | BeginQuorumEpochResponse | EndQuorumEpochResponse | FetchResponse | FetchSnapshotResponse
Message = Request | Response
