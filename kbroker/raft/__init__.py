"""KIP-595 Raft for the KRaft metadata quorum, as a pure state machine (see :mod:`kbroker.raft.node`).

No sockets, no clock, no trio here: a shell feeds messages and time in and
carries messages, timers and log writes out.  ``tests/raft`` drives several
nodes over a simulated network from a seed.
"""

from .log import LEADER_CHANGE, Entry, MemoryRaftLog, RaftLog, Snapshot, SnapshotId
from .messages import (
    BeginQuorumEpochRequest,
    BeginQuorumEpochResponse,
    EndQuorumEpochRequest,
    EndQuorumEpochResponse,
    EpochEndOffset,
    FetchRequest,
    FetchResponse,
    FetchSnapshotRequest,
    FetchSnapshotResponse,
    LeaderIdAndEpoch,
    Message,
    VoteRequest,
    VoteResponse,
)
from .node import NotLeaderError, RaftNode
from .state import HighWatermarkChanged, RaftConfig, ReplicaState, RoleChanged, SnapshotLoaded
from .store import ElectionState, FileQuorumStateStore, MemoryQuorumStateStore, QuorumStateStore

__all__ = [
    "LEADER_CHANGE",
    "BeginQuorumEpochRequest",
    "BeginQuorumEpochResponse",
    "ElectionState",
    "EndQuorumEpochRequest",
    "EndQuorumEpochResponse",
    "Entry",
    "EpochEndOffset",
    "FetchRequest",
    "FetchResponse",
    "FetchSnapshotRequest",
    "FetchSnapshotResponse",
    "FileQuorumStateStore",
    "HighWatermarkChanged",
    "LeaderIdAndEpoch",
    "MemoryQuorumStateStore",
    "MemoryRaftLog",
    "Message",
    "NotLeaderError",
    "QuorumStateStore",
    "RaftConfig",
    "RaftLog",
    "RaftNode",
    "ReplicaState",
    "RoleChanged",
    "Snapshot",
    "SnapshotId",
    "SnapshotLoaded",
    "VoteRequest",
    "VoteResponse",
]
